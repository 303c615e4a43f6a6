"""Reading the YAML files users write (scenario files, run configs): one YAML reader, one key
checker, one date reader, one `--set` parser and the `constraints:` section, shared by both.

Every problem in a file is one ConfigError line naming the file and the key, as the file spells
it: "run.yaml: budgets[1]: expected a number >= 0, got -5".
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Iterable

from sim.errors import ConfigError

# the `constraints:` section's keys and the `clv allocate` option (constraint kind) each stands for
CONSTRAINT_KEYS = {"capacity": "capacity", "min_coverage": "min-coverage", "max_share": "max-share"}


# ---- errors and values ---------------------------------------------------------------------------
def fail(file: str, key: str | None, msg: str) -> None:
    """Raise the one-line error about `key` of `file` (None: the file as a whole)."""
    raise ConfigError(f"{file}: {key}: {msg}" if key else f"{file}: {msg}")


def whole_number(file: str, key: str, v: Any, lo: int, hi: int | None = None) -> int:
    """`v` as an int >= lo (and <= hi when given; a float with no fraction is accepted)."""
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer() and math.isfinite(v):
            v = int(v)
        else:
            fail(file, key, f"expected a whole number >= {lo}, got {v!r}")
    if v < lo:
        fail(file, key, f"expected a whole number >= {lo}, got {v!r}")
    if hi is not None and v > hi:
        fail(file, key, f"{v:,} is more than {hi:,}; give at most {hi:,}")
    return int(v)


def non_negative_number(file: str, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        fail(file, key, f"expected a number >= 0, got {v!r}")
    return float(v)


def positive_number(file: str, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        fail(file, key, f"expected a number > 0, got {v!r}")
    return float(v)


def list_value(file: str, key: str, v: Any, allow_empty: bool = True) -> list:
    """`v` checked to be a YAML list (None is the empty list when `allow_empty`)."""
    if v is None and allow_empty:
        return []
    if isinstance(v, str) or not isinstance(v, list):
        fail(file, key, f"expected a list, e.g. [a, b], got {v!r}")
    if not v and not allow_empty:
        fail(file, key, "is empty; give at least one")
    return v


def check_mapping(file: str, key: str | None, raw: Any, known: Iterable[str], expected: str) -> dict:
    """`raw`, checked to be a mapping with only `known` keys (an unknown key is named in full,
    e.g. "values.horizn"); `expected` says what to write instead of a non-mapping."""
    if not isinstance(raw, dict):
        fail(file, key, expected)
    known = tuple(known)
    for k in raw:
        if k not in known:
            import difflib

            near = difflib.get_close_matches(str(k), known, n=1, cutoff=0.75)
            hint = f"did you mean {near[0]}? " if near else ""
            fail(file, f"{key}.{k}" if key else str(k)[:80], f"unknown key; {hint}known: {', '.join(known)}")
    return raw


def read_date(v: Any) -> str | None:
    """The calendar date `v` stands for, as YYYY-MM-DD, or None when it is not a date. Accepts a
    date or date-time (YAML reads 2024-07-01 as a date) and the texts YYYY-MM-DD, YYYYMMDD and
    ISO date-times. The one date reader of options and files; callers word their own errors."""
    if isinstance(v, dt.datetime):
        return str(v.date())
    if isinstance(v, dt.date):
        return str(v)
    if not isinstance(v, str):
        return None
    t = v.strip()
    for parse in (
        dt.date.fromisoformat,
        lambda s: dt.datetime.strptime(s, "%Y%m%d").date(),
        lambda s: dt.datetime.fromisoformat(s).date(),
    ):
        try:
            return str(parse(t))
        except ValueError:
            continue
    return None


# ---- files ---------------------------------------------------------------------------------------
def read_yaml(path: Path, what: str, start_from: str) -> Any:
    """The YAML document of a `what` file (scenario, run config); a missing file, a folder or bad
    YAML is a one-line ConfigError naming the file (and the line), saying where to start from."""
    from sim.user_yaml import UserYamlError, load_yaml_file

    file = str(path)
    if not path.exists():
        fail(file, None, f"{what} file not found; {start_from}")
    if path.is_dir():
        fail(file, None, f"is a folder, not a {what} YAML file")
    try:
        return load_yaml_file(path)
    except UserYamlError as e:
        fail(file, None, str(e))


# ---- --set KEY=VALUE -----------------------------------------------------------------------------
def parse_sets(items: list[str], example: str = "policy.steps=20000", name: str = "KEY") -> dict[str, Any]:
    """`--set KEY=VALUE` overrides. Values are read as JSON when they can be, else as YAML, else kept
    as text, so numbers, lists, true/false and null come out typed (`budgets=[100,200]`,
    `learning_rate=1e-4`, `holdout_end=null`). `example` is a KEY=VALUE shown when one is malformed (`name`: what
    the caller calls a KEY, e.g. NAME for hyperparameters)."""
    from sim.user_yaml import UserYamlError, load_yaml_text

    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        k = k.strip()
        if not sep or not k or any(not part for part in k.split(".")):
            raise ConfigError("set", value=repr(item), message=f"expected {name}=VALUE, e.g. {{key:set}} {example}")
        if not v.strip():
            out[k] = None
            continue
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            try:
                out[k] = load_yaml_text(v)
            except UserYamlError:
                out[k] = v
    return out


def apply_sets(doc: dict, sets: dict[str, Any]) -> dict:
    """A copy of `doc` with the overrides of `parse_sets` in place (dotted keys reach into sections)."""
    doc = copy.deepcopy(doc)
    for key, value in sets.items():
        parts = key.split(".")
        node = doc
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError("set", value=key, message=f"{'.'.join(parts[: i + 1])} is not a section")
            node = nxt
        node[parts[-1]] = value
    return doc


# ---- the constraints: section --------------------------------------------------------------------
def constraint_texts(file: str, raw: dict) -> dict[str, tuple[str, ...]]:
    """The `constraints` section's texts by kind (capacity, min_coverage, max_share), each checked
    to parse as its `clv allocate` option does; errors name the key, e.g. constraints.capacity[0]."""
    from optimizer.problem import parse_constraint

    out: dict[str, tuple[str, ...]] = {}
    for k, kind in CONSTRAINT_KEYS.items():
        items = list_value(file, f"constraints.{k}", raw.get(k))
        for i, text in enumerate(items):
            key = f"constraints.{k}[{i}]"
            if not isinstance(text, str):
                fail(file, key, f"expected SCOPE:NAME=LIMIT text, got {text!r}")
            try:
                parse_constraint(kind, text)
            except ConfigError as e:
                fail(file, key, str(e))
        out[k] = tuple(items)
    return out


def parsed_constraints(constraints: dict[str, tuple[str, ...]]) -> list:
    """The optimizer's Constraint objects of a checked `constraints` section (budget not included)."""
    from optimizer.problem import parse_constraint

    return [parse_constraint(kind, t) for k, kind in CONSTRAINT_KEYS.items() for t in constraints.get(k, ())]


def check_constraint_names(file: str, constraints: dict[str, tuple[str, ...]], world, which: str) -> None:
    """Every constraint names a segment, channel or action that `world` has (`which` says which
    world in the message)."""
    from optimizer.problem import parse_constraint, unknown_target

    for k, kind in CONSTRAINT_KEYS.items():
        for i, text in enumerate(constraints.get(k, ())):
            problem = unknown_target(parse_constraint(kind, text), world, which)
            if problem:
                fail(file, f"constraints.{k}[{i}]", problem)
