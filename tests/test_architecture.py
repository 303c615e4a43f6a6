"""The dependency rules of docs/architecture.md, checked on the source: imports only run downward
(sim <- sim.envs <- policies <- optimizer <- experiments), nothing imports the CLI, sim outside its
envs imports neither gymnasium nor stable-baselines3, and no two modules import each other, even
through a chain or a function-level import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "policies", "optimizer", "experiments")
LAYER = {"sim": 0, "sim.envs": 1, "policies": 2, "optimizer": 3, "experiments": 4}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                todo.extend(child.orelse)
            else:
                todo.append(child)


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports at run time, at the top or inside a function, relative imports
    resolved (imports under `if TYPE_CHECKING:` are for annotations only and do not count)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _internal(mods: set[str]) -> set[str]:
    return {m for m in mods if m in MODULES}


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    return LAYER["sim.envs"] if module.startswith("sim.envs") else LAYER[module.split(".")[0]]


def test_the_source_is_found():
    assert {
        "sim.population",
        "sim.envs.customer",
        "policies.registry",
        "optimizer.allocate",
        "experiments.ope.evaluate",
        "experiments.config",
    } <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_downward(name):
    up = sorted(m for m in _internal(IMPORTS[name]) if _layer(m) > _layer(name))
    assert not up, f"{name} imports a higher layer: {up}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_imports_the_cli(name):
    if name.startswith("experiments.cli"):
        return
    assert not any(m == "experiments.cli" or m.startswith("experiments.cli.") for m in IMPORTS[name]), name


@pytest.mark.parametrize(
    "name", sorted(m for m in MODULES if m.split(".")[0] == "sim" and not m.startswith("sim.envs"))
)
def test_sim_outside_its_envs_needs_no_gymnasium_nor_sb3(name):
    heavy = sorted(m for m in IMPORTS[name] if m.split(".")[0] in ("gymnasium", "stable_baselines3", "sb3_contrib"))
    assert not heavy, f"{name} imports {heavy}"


def test_no_import_cycle_between_modules():
    # a module importing its own package (running the package's __init__) is not counted: that
    # __init__ only re-exports the package's modules
    graph = {n: {m for m in _internal(IMPORTS[n]) if m != n and not n.startswith(m + ".")} for n in MODULES}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(n: str, path: list[str]) -> bool:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle.extend(path[path.index(m) :] + [m] if m in path else [n, m])
                return True
            if state.get(m) is None and visit(m, path + [m]):
                return True
        state[n] = 2
        return False

    for n in sorted(graph):
        if state.get(n) is None and visit(n, [n]):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)
