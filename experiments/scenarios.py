"""Scenario experiments on Ray (`clv scenarios FILE --out DIR`): a grid of cells
(policy x budget x seed) over one calibrated world, each cell a Ray task.

The scenario file (YAML, paths relative to its folder)::

    name: bank_budget_sweep
    world: world.json          # written by `clv calibrate` (its book parquet beside it)
    population: book           # book (digital twins of the world's book) | new
    customers: 3000            # default: the whole book (population book); required for new
    horizon: 52                # periods simulated per cell
    seeds: 3                   # or an explicit list [0, 1, 2]
    policies: [bau, greedy_uplift]      # baseline names or folders written by `clv train`
    budgets: [null, 1000, 2000]          # null = the policy runs without a budget
    constraints:               # as the options of `clv allocate`
      capacity: ["channel:rm_call=50"]
      min_coverage: []
      max_share: []
    values: {horizon: 26, replications: 2}   # value tables of the budget cells
    ope:                       # optional: offline evaluation of every policy on a logged history
      history: bank_history    # a history folder with decisions (as `clv ope HISTORY_DIR`)
      estimators: [dm, ips, snips, dr]
      bootstrap: 500
      start: 2024-07-01        # evaluate the decisions from this date (optional; also end)

A cell (`run_cell`):

- budget null: the policy is simulated for `horizon` periods (`sim.population.simulate`), and so is
  "none" on the same seed (the same digital twins: common customers), for the incremental CLV and
  the marketing ROI (metrics as `experiments.evaluate`);
- budget B: the value table of every allowed first-period action with the policy as continuation
  (`optimizer.value_sources.values_from_simulation`), the best plan under B and the constraints
  (`optimizer.allocate.allocate`), then `horizon` periods where period 0 applies the plan (customers
  without a planned action are not contacted) and the policy decides afterwards; the same metrics
  plus the plan's objective, bound, gap and spend. A plan that cannot satisfy the constraints gives
  a row with status "infeasible" and no metrics.

A cell's numbers depend only on the scenario and the cell (seeded simulation, deterministic
solvers, one BLAS/torch thread), never on the worker that runs it or the order: the same scenario
gives identical results with 1 or N workers, and a retried cell gives the same row.

Outputs in DIR: `cells/<cell_id>.parquet` and `cells/<cell_id>.periods.parquet` (each written
atomically as the cell finishes; `cell_id` hashes everything that decides the cell's numbers, so
a changed scenario never reuses a stale cell and a re-run skips the cells already done),
`running/<cell_id>.pid` while a cell runs (the pid of the Ray worker running it),
`results.parquet` (one row per cell, in cell order), `periods.parquet` (per cell and period: alive,
contacts, reward, cost and customers per lifecycle stage), `summary.json` (per policy x budget:
mean and 95% interval over seeds of every metric), `timings.json` and `scenario.json` (the
resolved scenario); with an `ope:` section, `ope.json` (per policy: the estimates with their
intervals, the logged policy's value and the diagnostics of `experiments.ope.evaluate_offline`,
run in-process with the policy acting in the scenario's world; reused while its inputs digest
matches); and `report.html` (`experiments.report.write_report`, rewritten by every run).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from policies.plan import PlanThenPolicy, plan_actions
from policies.registry import BASELINE_NAMES
from sim.errors import ConfigError

KEYS = ("name", "world", "population", "customers", "horizon", "seeds", "policies", "budgets",
        "constraints", "values", "ope")
CONSTRAINT_KEYS = {"capacity": "capacity", "min_coverage": "min-coverage", "max_share": "max-share"}
VALUES_KEYS = ("horizon", "replications")
CELL_VERSION = 1          # bump when run_cell's numbers change: every cell id changes with it
METRICS = ("clv", "incremental_clv", "retention", "marketing_roi", "cross_sell_rate", "active_share",
           "contacts", "cost", "discounted_cost", "clv_none")
PLAN_METRICS = ("plan_objective", "plan_bound", "plan_gap", "plan_spend", "plan_assigned")
PERIOD_COLUMNS = ("alive", "contacts", "reward", "cost")
OPE_FILE_KEYS = {"n_boot": "bootstrap"}   # OPESettings field -> key of the ope: section, where they differ
OPE_KEYS = ("history", "estimators", "estimand", "bootstrap", "start", "end", "seed", "folds", "reward_model",
            "clip", "discount")
OPE_VERSION = 1           # bump when the offline evaluation's numbers change: ope.json is recomputed


# ---- the scenario file ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """A validated scenario: absolute paths, explicit seeds, constraints as option texts."""
    name: str
    file: str
    world: str                       # absolute path of the world JSON
    book: str | None                 # absolute path of its book (population book)
    population: str
    customers: int | None
    horizon: int
    seeds: tuple[int, ...]
    policies: tuple[str, ...]        # labels, as written in the file
    policy_paths: tuple[str, ...]    # the baseline name, or the absolute path of a trained policy
    budgets: tuple[float | None, ...]
    constraints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    values_horizon: int = 52
    values_replications: int = 4
    ope: dict[str, Any] | None = None    # the OPE settings (absolute history path), or None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"], d["policies"], d["policy_paths"], d["budgets"] = (
            list(self.seeds), list(self.policies), list(self.policy_paths), list(self.budgets))
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


def _fail(file: str, key: str | None, msg: str) -> None:
    raise ConfigError(f"{file}: {key}: {msg}" if key else f"{file}: {msg}")


def _int(file: str, key: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer() and math.isfinite(v):
            v = int(v)
        else:
            _fail(file, key, f"expected a whole number >= {lo}, got {v!r}")
    if v < lo:
        _fail(file, key, f"expected a whole number >= {lo}, got {v!r}")
    return int(v)


def _str_list(file: str, key: str, v: Any, allow_empty: bool = True) -> list:
    if v is None and allow_empty:
        return []
    if isinstance(v, str) or not isinstance(v, list):
        _fail(file, key, f"expected a list, e.g. [a, b], got {v!r}")
    if not v and not allow_empty:
        _fail(file, key, "is empty; give at least one")
    return v


def _mapping(file: str, key: str | None, raw: Any, known, expected: str) -> dict:
    """`raw`, checked to be a mapping with only `known` keys (an unknown key is named in full,
    e.g. "values.horizn"); `expected` says what to write instead of a non-mapping."""
    if not isinstance(raw, dict):
        _fail(file, key, expected)
    for k in raw:
        if k not in known:
            _fail(file, f"{key}.{k}" if key else str(k), f"unknown key; known: {', '.join(known)}")
    return raw


def read_yaml(path: Path, what: str, start_from: str) -> Any:
    """The YAML document of a `what` file (scenario, run config); a missing file, a folder or bad
    YAML is a one-line ConfigError naming the file (and the line), saying where to start from."""
    import yaml
    file = str(path)
    if not path.exists():
        _fail(file, None, f"{what} file not found; {start_from}")
    if path.is_dir():
        _fail(file, None, f"is a folder, not a {what} YAML file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        _fail(file, None, f"not valid YAML: {where}{getattr(e, 'problem', None) or str(e).splitlines()[0]}")
    except UnicodeDecodeError:
        _fail(file, None, "not a text (YAML) file")


def constraint_texts(file: str, raw: dict) -> dict[str, tuple[str, ...]]:
    """The `constraints` section's texts by kind (capacity, min_coverage, max_share), each checked
    to parse as its `clv allocate` option does; errors name the key, e.g. constraints.capacity[0]."""
    from optimizer.problem import parse_constraint
    out: dict[str, tuple[str, ...]] = {}
    for k, kind in CONSTRAINT_KEYS.items():
        items = _str_list(file, f"constraints.{k}", raw.get(k))
        for i, text in enumerate(items):
            key = f"constraints.{k}[{i}]"
            if not isinstance(text, str):
                _fail(file, key, f"expected SCOPE:NAME=LIMIT text, got {text!r}")
            try:
                parse_constraint(kind, text)
            except ConfigError as e:
                _fail(file, key, str(e))
        out[k] = tuple(items)
    return out


def parsed_constraints(constraints: dict[str, tuple[str, ...]]) -> list:
    """The optimizer's Constraint objects of a checked `constraints` section (budget not included)."""
    from optimizer.problem import parse_constraint
    return [parse_constraint(kind, t) for k, kind in CONSTRAINT_KEYS.items() for t in constraints.get(k, ())]


def check_constraint_names(file: str, constraints: dict[str, tuple[str, ...]], world, which: str) -> None:
    """Every constraint names a segment, channel or action that `world` has (`which` says which
    world in the message)."""
    from optimizer.problem import parse_constraint
    known = {"segment": [s.name for s in world.segments],
             "channel": list(dict.fromkeys(a.channel or "no_channel" for a in world.catalogue.actions[1:])),
             "action": list(world.catalogue.names[1:])}
    for k, kind in CONSTRAINT_KEYS.items():
        for i, text in enumerate(constraints.get(k, ())):
            c = parse_constraint(kind, text)
            if c.key not in known[c.scope]:
                _fail(file, f"constraints.{k}[{i}]", f"no {c.scope} {c.key!r} in {which} "
                                                     f"(it has {', '.join(known[c.scope])})")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Every problem is a ConfigError of one line naming the
    file and the key, e.g. "scen.yaml: policies[2]: unknown policy 'gredy'; known: ...". """
    path = Path(path)
    file = str(path)
    doc = read_yaml(path, "scenario", "start from a copy of examples/scenario_bank.yaml")
    _mapping(file, None, doc, KEYS, f"expected a mapping with the keys {', '.join(KEYS)}")
    base = path.resolve().parent

    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        _fail(file, "name", f"expected a non-empty text, got {name!r}")

    # world and its book
    if "world" not in doc or doc["world"] in (None, ""):
        _fail(file, "world", "missing; give the world JSON written by `clv calibrate`")
    if not isinstance(doc["world"], str):
        _fail(file, "world", f"expected a path, got {doc['world']!r}")
    world_path = (base / doc["world"]).resolve()
    if not world_path.is_file():
        _fail(file, "world", f"{doc['world']}: " + ("is a folder, not a world JSON file" if world_path.is_dir()
                                                    else "not found; create it with `clv calibrate`"))
    from sim.world import WorldModel
    try:
        world = WorldModel.load(world_path)
    except ConfigError as e:
        _fail(file, "world", str(e))

    population = doc.get("population", "book")
    if population not in ("book", "new"):
        _fail(file, "population", f"expected book or new, got {population!r}")
    book = None
    if population == "book":
        bp = world.book_path(world_path)
        if bp is None or not bp.is_file():
            _fail(file, "world", f"{doc['world']}: its book ({bp}) is missing; use population: new or recalibrate")
        book = str(bp.resolve())

    customers = doc.get("customers")
    if customers is not None:
        customers = _int(file, "customers", customers, 1)
    elif population == "new":
        _fail(file, "customers", "population new needs a number of customers")
    horizon = _int(file, "horizon", doc.get("horizon", 52), 1)

    seeds_raw = doc.get("seeds", 1)
    if isinstance(seeds_raw, list):
        if not seeds_raw:
            _fail(file, "seeds", "is empty; give a number of seeds or a list of seeds")
        seeds = [_int(file, f"seeds[{i}]", s, 0) for i, s in enumerate(seeds_raw)]
        dup = [s for i, s in enumerate(seeds) if s in seeds[:i]]
        if dup:
            _fail(file, "seeds", f"seed {dup[0]} is given twice")
    else:
        seeds = list(range(_int(file, "seeds", seeds_raw, 1)))

    if "policies" not in doc:
        _fail(file, "policies", "missing; give a list of policies, e.g. [bau, greedy_uplift]")
    labels, paths = [], []
    for i, p in enumerate(_str_list(file, "policies", doc["policies"], allow_empty=False)):
        key = f"policies[{i}]"
        if not isinstance(p, str) or not p.strip():
            _fail(file, key, f"expected a policy name or folder, got {p!r}")
        if p in labels:
            _fail(file, key, f"policy {p!r} is given twice")
        if p in BASELINE_NAMES:
            paths.append(p)
        elif (base / p).exists():
            paths.append(str((base / p).resolve()))
        else:
            _fail(file, key, f"unknown policy {p!r}; known: {', '.join(BASELINE_NAMES)} or a folder written by "
                             "clv train")
        labels.append(p)

    budgets_raw = doc.get("budgets", [None])
    budgets: list[float | None] = []
    for i, b in enumerate(_str_list(file, "budgets", budgets_raw, allow_empty=False)):
        key = f"budgets[{i}]"
        if b is None:
            budgets.append(None)
        else:
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
                _fail(file, key, f"expected a number >= 0 or null (no budget), got {b!r}")
            if b < 0:
                _fail(file, key, f"a budget must be >= 0, got {b!r}")
            if population == "new":
                _fail(file, key, "a budget needs population: book (value tables are built on the book)")
            budgets.append(float(b))
        if budgets[-1] in budgets[:-1]:
            _fail(file, key, f"budget {b!r} is given twice")

    cons_raw = _mapping(file, "constraints", doc.get("constraints") or {}, CONSTRAINT_KEYS,
                        "expected a mapping with capacity, min_coverage, max_share")
    constraints = constraint_texts(file, cons_raw)
    check_constraint_names(file, constraints, world, "the world")

    vals = _mapping(file, "values", doc.get("values") or {}, VALUES_KEYS,
                    "expected a mapping {horizon: N, replications: N}")
    from optimizer.value_sources import DEFAULT_HORIZON, DEFAULT_REPLICATIONS
    vh = _int(file, "values.horizon", vals.get("horizon", DEFAULT_HORIZON), 1)
    vr = _int(file, "values.replications", vals.get("replications", DEFAULT_REPLICATIONS), 1)
    ope = _ope_section(file, base, doc["ope"]) if "ope" in doc else None
    return Scenario(name=name, file=str(path.resolve()), world=str(world_path), book=book, population=population,
                    customers=customers, horizon=horizon, seeds=tuple(seeds), policies=tuple(labels),
                    policy_paths=tuple(paths), budgets=tuple(budgets), constraints=constraints,
                    values_horizon=vh, values_replications=vr, ope=ope)


def _date_text(file: str, key: str, v: Any) -> str | None:
    import datetime as dt
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return str(v.date())
    if isinstance(v, dt.date):          # YAML reads 2024-07-01 as a date
        return str(v)
    if isinstance(v, str):
        try:
            return str(dt.date.fromisoformat(v.strip()))
        except ValueError:
            pass
    _fail(file, key, f"expected a date YYYY-MM-DD, got {v!r}")
    return None


def _ope_section(file: str, base: Path, raw: Any) -> dict[str, Any]:
    """The validated `ope:` section: OPESettings fields plus the history's absolute path."""
    _mapping(file, "ope", raw, OPE_KEYS, "expected a mapping {history: FOLDER, estimators: [dm, ips, snips, dr], "
                                         "bootstrap: N, start: YYYY-MM-DD}")
    h = raw.get("history")
    if h in (None, ""):
        _fail(file, "ope.history", "missing; give a history folder with a decisions table (as for `clv ope`)")
    if not isinstance(h, str):
        _fail(file, "ope.history", f"expected a folder path, got {h!r}")
    hp = (base / h).resolve()
    if not hp.exists():
        _fail(file, "ope.history", f"{h}: history folder not found")
    if not hp.is_dir():
        _fail(file, "ope.history", f"{h}: is a file, not a history folder")
    if not any((hp / f"decisions.{ext}").is_file() for ext in ("csv", "parquet")):
        _fail(file, "ope.history", f"{h}: has no decisions table (decisions.csv or decisions.parquet with "
                                   "customer_id, date, action, propensity) to evaluate policies on")
    from experiments.ope import DEFAULT_ESTIMATORS, OPESettings
    est = raw.get("estimators", list(DEFAULT_ESTIMATORS))
    if isinstance(est, str):
        est = [e.strip() for e in est.split(",") if e.strip()]
    est = _str_list(file, "ope.estimators", est, allow_empty=False)
    for i, e in enumerate(est):
        if not isinstance(e, str) or not e.strip():
            _fail(file, f"ope.estimators[{i}]", f"expected an estimator name, got {e!r}")
    estimand = raw.get("estimand", "per_decision")
    if not isinstance(estimand, str):
        _fail(file, "ope.estimand", f"expected per_decision or per_customer, got {estimand!r}")
    kw: dict[str, Any] = {"estimand": estimand, "estimators": tuple(e.strip() for e in est),
                          "n_boot": _int(file, "ope.bootstrap", raw.get("bootstrap", 500), 10),
                          "seed": _int(file, "ope.seed", raw.get("seed", 0), 0),
                          "folds": _int(file, "ope.folds", raw.get("folds", 5), 1),
                          "reward_model": raw.get("reward_model", "ridge"),
                          "start": _date_text(file, "ope.start", raw.get("start")),
                          "end": _date_text(file, "ope.end", raw.get("end"))}
    for k in ("clip", "discount"):
        v = raw.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            _fail(file, f"ope.{k}", f"expected a number, got {v!r}")
        kw[k] = None if v is None else float(v)
    if kw["start"] and kw["end"] and kw["end"] <= kw["start"]:
        _fail(file, "ope.end", f"{kw['end']} is not after ope.start {kw['start']}")
    try:
        settings = OPESettings(**kw)
    except ConfigError as e:      # OPESettings' keys, as this file calls them
        raise ConfigError(f"{file}: {e.about(lambda k: 'ope.' + OPE_FILE_KEYS.get(k, k))}") from None
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()}
    out["history"] = str(hp)
    return out


# ---- cell identity --------------------------------------------------------------------------------
def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def fingerprints(sc: Scenario) -> dict[str, str]:
    """Content digests of the inputs: world JSON, book, trained policy folders."""
    out = {"world": _file_digest(sc.world)}
    if sc.book:
        out["book"] = _file_digest(sc.book)
    for label, p in zip(sc.policies, sc.policy_paths):
        if p not in BASELINE_NAMES:
            out[f"policy:{label}"] = _file_digest(p)
    return out


def cell_id(sc: Scenario, cell: dict[str, Any], digests: dict[str, str]) -> str:
    """Short sha256 of everything that decides the cell's numbers (not the scenario's name, not
    the other cells): inputs' contents, population, customers, horizon, the policy, budget, seed,
    and for budget cells the constraints and the value-table settings."""
    key: dict[str, Any] = {"v": CELL_VERSION, "world": digests["world"], "book": digests.get("book"),
                           "population": sc.population, "customers": sc.customers, "horizon": sc.horizon,
                           "policy": cell["policy"] if cell["policy_path"] in BASELINE_NAMES
                           else digests[f"policy:{cell['policy']}"],
                           "budget": cell["budget"], "seed": cell["seed"]}
    if cell["budget"] is not None:
        key["constraints"] = {k: list(v) for k, v in sorted(sc.constraints.items())}
        key["values"] = [sc.values_horizon, sc.values_replications]
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---- one cell -----------------------------------------------------------------------------------
def _limit_threads():
    """One BLAS thread (threadpoolctl) for the cell; torch is set to one thread when loaded."""
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn / scipy
        from contextlib import nullcontext
        return nullcontext()


def _torch_one_thread() -> None:
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _metrics(c, clv_none) -> dict[str, float]:
    from experiments.evaluate import _seed_metrics
    m = _seed_metrics(c, clv_none)
    m["clv_none"] = float(clv_none.mean())
    m["incremental_clv"] = m["clv"] - m["clv_none"]
    m["cost"] = float(c["cost"].mean())
    m["discounted_cost"] = float(c["discounted_cost"].mean())
    return m


def _plan(world, book, sc_dict: dict[str, Any], policy, seed: int, budget: float):
    """(allocation or None when infeasible, message, plan actions per simulated customer (catalogue
    indexes, in simulate's customer order))."""
    import numpy as np
    from optimizer.allocate import allocate
    from optimizer.diagnose import InfeasibleError
    from optimizer.problem import AllocationProblem, budget_constraint
    from optimizer.value_sources import _select, values_from_simulation
    from optimizer.values import ValueTable
    customers = sc_dict["customers"]
    df = values_from_simulation(world, book, customers, horizon=sc_dict["values"]["horizon"],
                                replications=sc_dict["values"]["replications"], seed=seed, continuation=policy)
    n = len(book) if customers is None else int(customers)
    _, ids, _ = _select(book, n, seed)     # the value table's ids, in sample_book order = simulate's order
    actions = np.zeros(n, np.int16)
    if len(df) == 0:
        return None, "no customer has an allowed action", actions
    cons = [budget_constraint(budget)] + parsed_constraints(sc_dict["constraints"])
    problem = AllocationProblem(ValueTable.from_frame(df, source="value table"), cons)
    try:
        alloc = allocate(problem)
    except InfeasibleError as e:
        return None, str(e), actions
    return alloc, "", plan_actions(alloc, world, ids)[0]


def run_cell(spec: dict[str, Any], cell: dict[str, Any]) -> tuple[dict[str, Any], "Any"]:
    """The row and the periods table of one cell. `spec`: {"world": WorldModel or its JSON text,
    "book": DataFrame or None, "scenario": Scenario.to_dict()}; `cell`: an item of
    Scenario.cells() with its "cell_id". Same spec and cell, same numbers."""
    import numpy as np
    import pandas as pd
    from policies.registry import resolve_policy
    from policies.base import as_simulator_policy
    from policies.baselines import make_baseline
    from sim.population import DEFAULT_CHUNK, chunk_seeds, simulate
    from sim.world import WorldModel
    world = spec["world"]
    if isinstance(world, str):
        world = WorldModel.from_dict(json.loads(world))
    book = spec["book"]
    sc = spec["scenario"]
    customers, horizon, seed, budget = sc["customers"], sc["horizon"], int(cell["seed"]), cell["budget"]
    with _limit_threads():
        policy = resolve_policy(cell["policy_path"], world)
        _torch_one_thread()
        fn = as_simulator_policy(policy)
        none = simulate(world, as_simulator_policy(make_baseline("none", world)), horizon, seed, book=book,
                        customers=customers)
        clv_none = none.customers["clv"].to_numpy()
        row: dict[str, Any] = {"cell_id": cell["cell_id"], "cell_index": int(cell["index"]),
                               "policy": cell["policy"], "budget": np.nan if budget is None else float(budget),
                               "seed": seed, "status": "ok", "message": ""}
        plan_cols = {m: np.nan for m in PLAN_METRICS}
        plan_cols["plan_method"] = ""
        if budget is None:
            res = none if cell["policy_path"] == "none" else simulate(world, fn, horizon, seed, book=book,
                                                                       customers=customers)
        else:
            alloc, msg, actions = _plan(world, book, sc, policy, seed, float(budget))
            if alloc is None and msg != "no customer has an allowed action":
                res = None
                row.update(status="infeasible", message=msg)
            else:
                if alloc is not None:
                    s = alloc.summary()
                    plan_cols.update(plan_objective=float(s["objective"]), plan_bound=float(s["bound"]),
                                     plan_gap=float(s["gap"]), plan_spend=float(s["spend"]),
                                     plan_assigned=float(s["assigned_customers"]), plan_method=s["method"])
                n = len(actions)
                starts = [a for a, _, _ in chunk_seeds(seed, n, DEFAULT_CHUNK)]
                res = simulate(world, PlanThenPolicy(actions, fn, starts), horizon, seed, book=book,
                               customers=customers)
    if res is None:
        row.update({m: np.nan for m in METRICS})
        row["customers"] = int(len(clv_none))
    else:
        row.update(_metrics(res.customers, clv_none))
        row["customers"] = int(len(res.customers))
    row.update(plan_cols)
    row["horizon"] = int(horizon)
    keys = {"cell_id": cell["cell_id"], "cell_index": int(cell["index"]), "policy": cell["policy"],
            "budget": row["budget"], "seed": seed}
    if res is None:
        periods = pd.DataFrame({"period": np.arange(horizon)})
        for c in PERIOD_COLUMNS:
            periods[c] = np.nan
    else:
        pf = res.periods
        periods = pf[["period", *PERIOD_COLUMNS, *[c for c in pf.columns if c.startswith("stage_")]]].copy()
        periods[list(PERIOD_COLUMNS)] = periods[list(PERIOD_COLUMNS)].astype(float)
    for k, v in reversed(list(keys.items())):
        periods.insert(0, k, v)
    return row, periods


# ---- offline evaluation -----------------------------------------------------------------------------
def ope_digest(sc: Scenario, digests: dict[str, str], label: str, policy_path: str) -> str:
    """Short sha256 of everything that decides one policy's offline evaluation."""
    assert sc.ope is not None
    key = {"v": OPE_VERSION, "world": digests["world"], "book": digests.get("book"),
           "history": _file_digest(sc.ope["history"]),
           "policy": label if policy_path in BASELINE_NAMES else digests[f"policy:{label}"],
           "settings": {k: v for k, v in sorted(sc.ope.items()) if k != "history"}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def run_ope(sc: Scenario, out: Path, digests: dict[str, str]) -> tuple[Path | None, int]:
    """Write out/ope.json: per policy, `evaluate_offline` on the scenario's history with the policy
    acting in the scenario's world (bootstrap in-process: the same numbers on any machine). A
    policy whose entry in an existing ope.json has the same inputs digest is not evaluated again.
    Returns (path or None without an `ope:` section, policies evaluated)."""
    if sc.ope is None:
        return None, 0
    from sim.atomic import atomic_write_json
    from sim.world import json_safe
    path = out / "ope.json"
    wanted = {label: ope_digest(sc, digests, label, pp) for label, pp in zip(sc.policies, sc.policy_paths)}
    overall = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            prev = json.loads(path.read_text())
            if prev.get("inputs_digest") == overall:
                return path, 0
            old = {k: v for k, v in (prev.get("policies") or {}).items()
                   if isinstance(v, dict) and v.get("inputs_digest") == wanted.get(k)}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            old = {}
    todo = [(label, pp) for label, pp in zip(sc.policies, sc.policy_paths) if label not in old]
    entries: dict[str, Any] = dict(old)
    if todo:
        from policies.registry import resolve_policy
        from experiments.ope import OPESettings, evaluate_offline, logged_decisions
        from sim.history import load_history
        from sim.world import WorldModel
        world = WorldModel.load(sc.world)
        book = world.read_book(sc.world)
        settings = OPESettings(**{k: (tuple(v) if k == "estimators" else v) for k, v in sc.ope.items()
                                  if k != "history"})
        history = load_history(sc.ope["history"])
        with _limit_threads():
            shared = logged_decisions(history, settings.start, settings.end, world, book)
            for label, pp in todo:
                policy = resolve_policy(pp, world)
                _torch_one_thread()
                res = evaluate_offline(history, settings, policy=policy, world=world, book=book,
                                       logged=shared)
                res.pop("seconds", None)
                res["policy"] = label
                res["inputs_digest"] = wanted[label]
                entries[label] = res
    doc = {"scenario": sc.name, "history": sc.ope["history"], "world": sc.world,
           "settings": {k: v for k, v in sc.ope.items() if k != "history"}, "inputs_digest": overall,
           "policies": {label: entries[label] for label in sc.policies}}
    atomic_write_json(path, json_safe(doc))
    return path, len(todo)


# ---- Ray ----------------------------------------------------------------------------------------
def _cell_task(world_text: str, book, scenario: dict[str, Any], cell: dict[str, Any], running_dir: str):
    """The body of the Ray task: announce the worker's pid in running/<cell_id>.pid, run the cell."""
    from sim.atomic import atomic_write_text
    pid = os.getpid()
    atomic_write_text(Path(running_dir) / f"{cell['cell_id']}.pid", f"{pid}\n")
    t0 = time.perf_counter()
    row, periods = run_cell({"world": world_text, "book": book, "scenario": scenario}, cell)
    return row, periods, {"pid": pid, "host": socket.gethostname(), "seconds": time.perf_counter() - t0}


_REMOTE = None


def _remote():
    global _REMOTE
    if _REMOTE is None:
        import ray
        _REMOTE = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_cell_task)
    return _REMOTE


def _cell_paths(out: Path, cid: str) -> tuple[Path, Path]:
    return out / "cells" / f"{cid}.parquet", out / "cells" / f"{cid}.periods.parquet"


def summarise(results) -> list[dict[str, Any]]:
    """Per policy x budget (in scenario order): mean and 95% interval over seeds of every metric."""
    import numpy as np
    from experiments.evaluate import mean_ci
    out = []
    keys = list(dict.fromkeys(zip(results["policy"], results["budget"].fillna(-1.0))))
    for pol, b in keys:
        bud = results["budget"].isna() if b == -1.0 else results["budget"] == b
        g = results[(results["policy"] == pol) & bud]
        ok = g[g["status"] == "ok"]
        entry: dict[str, Any] = {"policy": pol, "budget": None if b == -1.0 else float(b), "seeds": int(len(g)),
                                 "infeasible": int((g["status"] != "ok").sum())}
        for m in (*METRICS, *PLAN_METRICS):
            if b == -1.0 and m in PLAN_METRICS:
                continue
            entry[m] = mean_ci(ok[m].to_numpy(float) if len(ok) else np.array([])).to_dict()
        out.append(entry)
    return out


def _run_on_ray(sc: Scenario, todo: list[dict[str, Any]], out: Path, address: str | None, n_workers: int,
                timings: dict[str, Any], timings_ray: dict[str, float], progress: Callable[[int], None]) -> int:
    """Run the cells `todo` as Ray tasks, writing each as it finishes; returns the cluster's CPUs
    (or `n_workers` for a local Ray). Ray is started here unless already running, and then shut down."""
    import pandas as pd
    import ray

    from sim.atomic import atomic_write_parquet

    from .ray_session import ray_session
    running = out / "running"
    with ray_session(n_workers, address, timings_ray) as n_workers:
        world_ref = ray.put(Path(sc.world).read_text())
        book_ref = ray.put(pd.read_parquet(sc.book) if sc.book else None)
        scen = sc.to_dict()
        task = _remote()
        # longest first (a budget cell also builds and solves a value table), so that no worker is
        # left with a long cell at the end while the others wait (LPT scheduling); results do
        # not depend on the order
        order = sorted(todo, key=lambda c: c["budget"] is None)
        pending = {task.remote(world_ref, book_ref, scen, c, str(running)): c for c in order}
        finished = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                c = pending.pop(ref)
                try:
                    row, periods, timing = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    for r in pending:
                        ray.cancel(r, force=True)
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, ConfigError):
                        raise ConfigError(f"cell {c['policy']}/budget {c['budget']}/seed {c['seed']}: "
                                          f"{cause}") from None
                    raise
                cpath, ppath = _cell_paths(out, c["cell_id"])
                atomic_write_parquet(ppath, periods)
                atomic_write_parquet(cpath, pd.DataFrame([row]))   # the cell file last: it marks done
                (running / f"{c['cell_id']}.pid").unlink(missing_ok=True)
                timings[c["cell_id"]] = timing
                finished += 1
                progress(finished)
    return n_workers


def _run_in_process(sc: Scenario, todo: list[dict[str, Any]], out: Path, timings: dict[str, Any],
                    progress: Callable[[int], None]) -> None:
    """Run the cells `todo` one after the other in this process (no Ray): the same numbers."""
    import pandas as pd
    from sim.atomic import atomic_write_parquet
    spec = {"world": Path(sc.world).read_text(), "book": pd.read_parquet(sc.book) if sc.book else None,
            "scenario": sc.to_dict()}
    for k, c in enumerate(todo, 1):
        t0 = time.perf_counter()
        row, periods = run_cell(spec, c)
        cpath, ppath = _cell_paths(out, c["cell_id"])
        atomic_write_parquet(ppath, periods)
        atomic_write_parquet(cpath, pd.DataFrame([row]))
        timings[c["cell_id"]] = {"pid": os.getpid(), "host": socket.gethostname(),
                                 "seconds": time.perf_counter() - t0}
        progress(k)


def run_scenario(sc: Scenario, out: str | Path, address: str | None = None, workers: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run (or resume) every cell of the scenario on Ray and write the outputs into `out`
    (`workers=0`: in this process, one cell after the other, without Ray; same numbers).
    Then the offline evaluation of the `ope:` section (ope.json) and report.html.
    Returns the document `clv scenarios --json` prints."""
    import pandas as pd
    from sim.atomic import atomic_write_json, atomic_write_parquet
    from sim.world import json_safe
    t0 = time.perf_counter()
    out = Path(out).resolve()
    (out / "cells").mkdir(parents=True, exist_ok=True)
    running = out / "running"
    running.mkdir(exist_ok=True)
    digests = fingerprints(sc)
    cells = sc.cells()
    for c in cells:
        c["cell_id"] = cell_id(sc, c, digests)
    todo = [c for c in cells if not all(p.exists() for p in _cell_paths(out, c["cell_id"]))]
    skipped = len(cells) - len(todo)
    timings: dict[str, Any] = {}
    timings_ray: dict[str, float] = {}
    n_workers = workers if workers is not None else os.cpu_count() or 1
    if progress:
        progress(skipped, len(cells))
    if todo and workers == 0 and address is None:
        _run_in_process(sc, todo, out, timings, lambda k: progress(skipped + k, len(cells)) if progress else None)
    elif todo:
        n_workers = _run_on_ray(sc, todo, out, address, n_workers, timings, timings_ray,
                                lambda k: progress(skipped + k, len(cells)) if progress else None)
    try:
        running.rmdir()
    except OSError:
        pass
    def load(c: dict[str, Any], k: int):
        # a cell done under another scenario (same numbers, another place in the grid or another
        # label for the same policy) takes this scenario's index and label
        return pd.read_parquet(_cell_paths(out, c["cell_id"])[k]).assign(cell_index=c["index"], policy=c["policy"])
    rows = pd.concat([load(c, 0) for c in cells], ignore_index=True)
    periods = pd.concat([load(c, 1) for c in cells], ignore_index=True)
    rows.insert(0, "scenario", sc.name)
    atomic_write_parquet(out / "results.parquet", rows)
    atomic_write_parquet(out / "periods.parquet", periods)
    summary = summarise(rows)
    atomic_write_json(out / "summary.json", json_safe({"scenario": sc.name, "cells": len(cells),
                                                      "by_policy_budget": summary}))
    atomic_write_json(out / "scenario.json", json_safe({**sc.to_dict(), "fingerprints": digests}))
    t_ope = time.perf_counter()
    ope_path, ope_run = run_ope(sc, out, digests)
    ope_seconds = time.perf_counter() - t_ope
    seconds = time.perf_counter() - t0
    atomic_write_json(out / "timings.json", json_safe({"seconds": seconds, "workers": n_workers, "run": len(todo),
                                                       "skipped": skipped, **timings_ray,
                                                       "ope_seconds": ope_seconds, "ope_policies_run": ope_run,
                                                       "cells": timings}))
    from experiments.report import write_report
    report = write_report(out)       # last: it links every file above
    seconds = time.perf_counter() - t0
    doc = {"scenario": sc.name, "out": str(out), "cells": len(cells), "run": len(todo), "skipped": skipped,
           "workers": n_workers, "results": str(out / "results.parquet"),
           "periods": str(out / "periods.parquet"), "summary": summary}
    if ope_path is not None:
        doc["ope"] = str(ope_path)
        doc["ope_run"] = ope_run
    doc["report"] = str(report)
    doc["seconds"] = round(seconds, 3)
    return doc
