"""One cell of a scenario (policy x budget x seed): its identity (`cell_id`, a hash of all that decides
its numbers) and its run (`run_cell`), the same on any worker."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from policies.plan import PlanThenPolicy, plan_actions
from policies.registry import BASELINE_NAMES

from ..config import parsed_constraints
from .file import Scenario

CELL_VERSION = 1  # bump when run_cell's numbers change: every cell id changes with it
METRICS = (
    "clv",
    "incremental_clv",
    "retention",
    "marketing_roi",
    "cross_sell_rate",
    "active_share",
    "contacts",
    "cost",
    "discounted_cost",
    "clv_none",
)
# plan_spend is the allocation's incremental cost (what its budget caps); plan_cash_spend the
# catalogue cost of the contacts it makes
PLAN_METRICS = ("plan_objective", "plan_bound", "plan_gap", "plan_spend", "plan_cash_spend", "plan_assigned")
PERIOD_COLUMNS = ("alive", "contacts", "reward", "cost")


# ---- cell identity --------------------------------------------------------------------------------
def file_digest(path: str | Path) -> str:
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
    out = {"world": file_digest(sc.world)}
    if sc.book:
        out["book"] = file_digest(sc.book)
    for label, p in zip(sc.policies, sc.policy_paths):
        if p not in BASELINE_NAMES:
            out[f"policy:{label}"] = file_digest(p)
    return out


def cell_id(sc: Scenario, cell: dict[str, Any], digests: dict[str, str]) -> str:
    """Short sha256 of everything that decides the cell's numbers (not the scenario's name, not
    the other cells): inputs' contents, population, customers, horizon, the policy, budget, seed,
    and for budget cells the constraints and the value-table settings."""
    key: dict[str, Any] = {
        "v": CELL_VERSION,
        "world": digests["world"],
        "book": digests.get("book"),
        "population": sc.population,
        "customers": sc.customers,
        "horizon": sc.horizon,
        "policy": cell["policy"] if cell["policy_path"] in BASELINE_NAMES else digests[f"policy:{cell['policy']}"],
        "budget": cell["budget"],
        "seed": cell["seed"],
    }
    if cell["budget"] is not None:
        key["constraints"] = {k: list(v) for k, v in sorted(sc.constraints.items())}
        key["values"] = [sc.values_horizon, sc.values_replications]
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---- one cell -----------------------------------------------------------------------------------
def limit_threads():
    """One BLAS thread (threadpoolctl) for the cell; torch is set to one thread when loaded."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn / scipy
        from contextlib import nullcontext

        return nullcontext()


def torch_one_thread() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _metrics(c, clv_none) -> dict[str, float]:
    from experiments.evaluate import seed_metrics

    m = seed_metrics(c, clv_none)
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
    df = values_from_simulation(
        world,
        book,
        customers,
        horizon=sc_dict["values"]["horizon"],
        replications=sc_dict["values"]["replications"],
        seed=seed,
        continuation=policy,
    )
    n = len(book) if customers is None else int(customers)
    _, ids, _ = _select(book, n, seed)  # the value table's ids, in sample_book order = simulate's order
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

    from policies.base import as_simulator_policy
    from policies.baselines import make_baseline
    from policies.registry import resolve_policy
    from sim.population import DEFAULT_CHUNK, chunk_seeds, simulate
    from sim.world import WorldModel

    world = spec["world"]
    if isinstance(world, str):
        world = WorldModel.from_dict(json.loads(world))
    book = spec["book"]
    sc = spec["scenario"]
    customers, horizon, seed, budget = sc["customers"], sc["horizon"], int(cell["seed"]), cell["budget"]
    with limit_threads():
        policy = resolve_policy(cell["policy_path"], world)
        torch_one_thread()
        fn = as_simulator_policy(policy)
        none = simulate(
            world, as_simulator_policy(make_baseline("none", world)), horizon, seed, book=book, customers=customers
        )
        clv_none = none.customers["clv"].to_numpy()
        row: dict[str, Any] = {
            "cell_id": cell["cell_id"],
            "cell_index": int(cell["index"]),
            "policy": cell["policy"],
            "budget": np.nan if budget is None else float(budget),
            "seed": seed,
            "status": "ok",
            "message": "",
        }
        plan_cols = {m: np.nan for m in PLAN_METRICS}
        plan_cols["plan_method"] = ""
        if budget is None:
            res = (
                none
                if cell["policy_path"] == "none"
                else simulate(world, fn, horizon, seed, book=book, customers=customers)
            )
        else:
            alloc, msg, actions = _plan(world, book, sc, policy, seed, float(budget))
            if alloc is None and msg != "no customer has an allowed action":
                res = None
                row.update(status="infeasible", message=msg)
            else:
                if alloc is not None:
                    s = alloc.summary()
                    plan_cols.update(
                        plan_objective=float(s["objective"]),
                        plan_bound=float(s["bound"]),
                        plan_gap=float(s["gap"]),
                        plan_spend=float(s["spend"]),
                        plan_cash_spend=np.nan if s.get("cash_spend") is None else float(s["cash_spend"]),
                        plan_assigned=float(s["assigned_customers"]),
                        plan_method=s["method"],
                    )
                n = len(actions)
                starts = [a for a, _, _ in chunk_seeds(seed, n, DEFAULT_CHUNK)]
                res = simulate(
                    world, PlanThenPolicy(actions, fn, starts), horizon, seed, book=book, customers=customers
                )
    if res is None:
        row.update({m: np.nan for m in METRICS})
        row["customers"] = int(len(clv_none))
    else:
        row.update(_metrics(res.customers, clv_none))
        row["customers"] = int(len(res.customers))
    row.update(plan_cols)
    row["horizon"] = int(horizon)
    keys = {
        "cell_id": cell["cell_id"],
        "cell_index": int(cell["index"]),
        "policy": cell["policy"],
        "budget": row["budget"],
        "seed": seed,
    }
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
