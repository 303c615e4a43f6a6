"""The scenario file of `clv scenarios FILE`: read and check it (`load_scenario`) into a `Scenario`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policies.registry import BASELINE_NAMES
from sim.errors import ConfigError
from sim.population import POPULATIONS

from ..config import (
    CONSTRAINT_KEYS,
    check_constraint_names,
    check_mapping,
    constraint_texts,
    fail,
    list_value,
    read_date,
    read_yaml,
    whole_number,
)

KEYS = (
    "name",
    "world",
    "population",
    "customers",
    "horizon",
    "seeds",
    "policies",
    "budgets",
    "constraints",
    "values",
    "ope",
)
VALUES_KEYS = ("horizon", "replications")
OPE_FILE_KEYS = {"n_boot": "bootstrap"}  # OPESettings field -> key of the ope: section, where they differ
OPE_KEYS = (
    "history",
    "estimators",
    "estimand",
    "bootstrap",
    "start",
    "end",
    "seed",
    "folds",
    "reward_model",
    "clip",
    "discount",
)


# ---- the scenario file ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """A validated scenario: absolute paths, explicit seeds, constraints as option texts."""

    name: str
    file: str
    world: str  # absolute path of the world JSON
    book: str | None  # absolute path of its book (population book)
    population: str
    customers: int | None
    horizon: int
    seeds: tuple[int, ...]
    policies: tuple[str, ...]  # labels, as written in the file
    policy_paths: tuple[str, ...]  # the baseline name, or the absolute path of a trained policy
    budgets: tuple[float | None, ...]
    constraints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    values_horizon: int = 52
    values_replications: int = 4
    ope: dict[str, Any] | None = None  # the OPE settings (absolute history path), or None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"], d["policies"], d["policy_paths"], d["budgets"] = (
            list(self.seeds),
            list(self.policies),
            list(self.policy_paths),
            list(self.budgets),
        )
        d["constraints"] = {k: list(v) for k, v in self.constraints.items()}
        d["values"] = {"horizon": self.values_horizon, "replications": self.values_replications}
        del d["values_horizon"], d["values_replications"]
        return d

    def cells(self) -> list[dict[str, Any]]:
        """Every (policy, budget, seed), in cell order: policies, then budgets, then seeds."""
        out = []
        for p, path in zip(self.policies, self.policy_paths):
            for b in self.budgets:
                for s in self.seeds:
                    out.append({"index": len(out), "policy": p, "policy_path": path, "budget": b, "seed": s})
        return out


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Every problem is a ConfigError of one line naming the
    file and the key, e.g. "scen.yaml: policies[2]: unknown policy 'gredy'; known: ..."."""
    path = Path(path)
    file = str(path)
    doc = read_yaml(path, "scenario", "start from a copy of examples/scenario_bank.yaml")
    check_mapping(file, None, doc, KEYS, f"expected a mapping with the keys {', '.join(KEYS)}")
    base = path.resolve().parent

    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        fail(file, "name", f"expected a non-empty text, got {name!r}")

    # world and its book
    if "world" not in doc or doc["world"] in (None, ""):
        fail(file, "world", "missing; give the world JSON written by `clv calibrate`")
    if not isinstance(doc["world"], str):
        fail(file, "world", f"expected a path, got {doc['world']!r}")
    world_path = (base / doc["world"]).resolve()
    if not world_path.is_file():
        fail(
            file,
            "world",
            f"{doc['world']}: "
            + (
                "is a folder, not a world JSON file"
                if world_path.is_dir()
                else "not found; create it with `clv calibrate`"
            ),
        )
    from sim.world import WorldModel

    try:
        world = WorldModel.load(world_path)
    except ConfigError as e:
        fail(file, "world", str(e))

    population = doc.get("population", "book")
    if population not in POPULATIONS:
        fail(file, "population", f"expected book or new, got {population!r}")
    book = None
    if population == "book":
        bp = world.book_path(world_path)
        if bp is None or not bp.is_file():
            fail(file, "world", f"{doc['world']}: its book ({bp}) is missing; use population: new or recalibrate")
        book = str(bp.resolve())

    customers = doc.get("customers")
    if customers is not None:
        customers = whole_number(file, "customers", customers, 1)
    elif population == "new":
        fail(file, "customers", "population new needs a number of customers")
    horizon = whole_number(file, "horizon", doc.get("horizon", 52), 1)

    seeds_raw = doc.get("seeds", 1)
    if isinstance(seeds_raw, list):
        if not seeds_raw:
            fail(file, "seeds", "is empty; give a number of seeds or a list of seeds")
        seeds = [whole_number(file, f"seeds[{i}]", s, 0) for i, s in enumerate(seeds_raw)]
        dup = [s for i, s in enumerate(seeds) if s in seeds[:i]]
        if dup:
            fail(file, "seeds", f"seed {dup[0]} is given twice")
    else:
        seeds = list(range(whole_number(file, "seeds", seeds_raw, 1)))

    if "policies" not in doc:
        fail(file, "policies", "missing; give a list of policies, e.g. [bau, greedy_uplift]")
    labels, paths = [], []
    for i, p in enumerate(list_value(file, "policies", doc["policies"], allow_empty=False)):
        key = f"policies[{i}]"
        if not isinstance(p, str) or not p.strip():
            fail(file, key, f"expected a policy name or folder, got {p!r}")
        if p in labels:
            fail(file, key, f"policy {p!r} is given twice")
        if p in BASELINE_NAMES:
            paths.append(p)
        elif (base / p).exists():
            paths.append(str((base / p).resolve()))
        else:
            fail(
                file, key, f"unknown policy {p!r}; known: {', '.join(BASELINE_NAMES)} or a folder written by clv train"
            )
        labels.append(p)

    budgets_raw = doc.get("budgets", [None])
    budgets: list[float | None] = []
    for i, b in enumerate(list_value(file, "budgets", budgets_raw, allow_empty=False)):
        key = f"budgets[{i}]"
        if b is None:
            budgets.append(None)
        else:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
                fail(file, key, f"expected a number >= 0 or null (no budget), got {b!r}")
            if b < 0:
                fail(file, key, f"a budget must be >= 0, got {b!r}")
            if population == "new":
                fail(file, key, "a budget needs population: book (value tables are built on the book)")
            budgets.append(float(b))
        if budgets[-1] in budgets[:-1]:
            fail(file, key, f"budget {b!r} is given twice")

    cons_raw = check_mapping(
        file,
        "constraints",
        doc.get("constraints") or {},
        CONSTRAINT_KEYS,
        "expected a mapping with capacity, min_coverage, max_share",
    )
    constraints = constraint_texts(file, cons_raw)
    check_constraint_names(file, constraints, world, "the world")

    vals = check_mapping(
        file, "values", doc.get("values") or {}, VALUES_KEYS, "expected a mapping {horizon: N, replications: N}"
    )
    from optimizer.value_sources import DEFAULT_HORIZON, DEFAULT_REPLICATIONS

    vh = whole_number(file, "values.horizon", vals.get("horizon", DEFAULT_HORIZON), 1)
    vr = whole_number(file, "values.replications", vals.get("replications", DEFAULT_REPLICATIONS), 1)
    ope = _ope_section(file, base, doc["ope"]) if "ope" in doc else None
    return Scenario(
        name=name,
        file=str(path.resolve()),
        world=str(world_path),
        book=book,
        population=population,
        customers=customers,
        horizon=horizon,
        seeds=tuple(seeds),
        policies=tuple(labels),
        policy_paths=tuple(paths),
        budgets=tuple(budgets),
        constraints=constraints,
        values_horizon=vh,
        values_replications=vr,
        ope=ope,
    )


def _date_text(file: str, key: str, v: Any) -> str | None:
    if v is None:
        return None
    d = read_date(v)
    if d is None:
        fail(file, key, f"expected a date YYYY-MM-DD, got {v!r}")
    return d


def _ope_section(file: str, base: Path, raw: Any) -> dict[str, Any]:
    """The validated `ope:` section: OPESettings fields plus the history's absolute path."""
    check_mapping(
        file,
        "ope",
        raw,
        OPE_KEYS,
        "expected a mapping {history: FOLDER, estimators: [dm, ips, snips, dr], bootstrap: N, start: YYYY-MM-DD}",
    )
    h = raw.get("history")
    if h in (None, ""):
        fail(file, "ope.history", "missing; give a history folder with a decisions table (as for `clv ope`)")
    if not isinstance(h, str):
        fail(file, "ope.history", f"expected a folder path, got {h!r}")
    hp = (base / h).resolve()
    if not hp.exists():
        fail(file, "ope.history", f"{h}: history folder not found")
    if not hp.is_dir():
        fail(file, "ope.history", f"{h}: is a file, not a history folder")
    if not any((hp / f"decisions.{ext}").is_file() for ext in ("csv", "parquet")):
        fail(
            file,
            "ope.history",
            f"{h}: has no decisions table (decisions.csv or decisions.parquet with "
            "customer_id, date, action, propensity) to evaluate policies on",
        )
    from experiments.ope import DEFAULT_ESTIMATORS, OPESettings

    est = raw.get("estimators", list(DEFAULT_ESTIMATORS))
    if isinstance(est, str):
        est = [e.strip() for e in est.split(",") if e.strip()]
    est = list_value(file, "ope.estimators", est, allow_empty=False)
    for i, e in enumerate(est):
        if not isinstance(e, str) or not e.strip():
            fail(file, f"ope.estimators[{i}]", f"expected an estimator name, got {e!r}")
    estimand = raw.get("estimand", "per_decision")
    if not isinstance(estimand, str):
        fail(file, "ope.estimand", f"expected per_decision or per_customer, got {estimand!r}")
    kw: dict[str, Any] = {
        "estimand": estimand,
        "estimators": tuple(e.strip() for e in est),
        "n_boot": whole_number(file, "ope.bootstrap", raw.get("bootstrap", 500), 10),
        "seed": whole_number(file, "ope.seed", raw.get("seed", 0), 0),
        "folds": whole_number(file, "ope.folds", raw.get("folds", 5), 1),
        "reward_model": raw.get("reward_model", "ridge"),
        "start": _date_text(file, "ope.start", raw.get("start")),
        "end": _date_text(file, "ope.end", raw.get("end")),
    }
    for k in ("clip", "discount"):
        v = raw.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            fail(file, f"ope.{k}", f"expected a number, got {v!r}")
        kw[k] = None if v is None else float(v)
    if kw["start"] and kw["end"] and kw["end"] <= kw["start"]:
        fail(file, "ope.end", f"{kw['end']} is not after ope.start {kw['start']}")
    try:
        settings = OPESettings(**kw)
    except ConfigError as e:  # OPESettings' keys, as this file calls them
        raise ConfigError(f"{file}: {e.about(lambda k: 'ope.' + OPE_FILE_KEYS.get(k, k))}") from None
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}
    out["history"] = str(hp)
    return out
