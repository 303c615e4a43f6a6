"""Efficient frontier: the best plan's value for each budget, the marginal value of a unit of
budget and every shadow price, each solve warm-started from the previous budget's multipliers."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from sim.errors import ConfigError

from .allocate import allocate, choose_method
from .diagnose import InfeasibleError, diagnose
from .problem import AllocationProblem, budget_constraint

DUAL_TOL = 1e-5  # relative accuracy of each budget's dual solve; the certified gap is reported anyway
GAP_TARGET = 5e-4  # a budget whose certified gap is above this gets a tighter dual solve


def frontier(
    problem: AllocationProblem,
    budgets: list[float],
    method: str = "auto",
    solver: str = "SCIP",
    time_limit: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """One point per budget (ascending). `problem` holds the other constraints; a budget row is
    added (or its limit replaced). Budgets below what coverage needs are reported as infeasible."""
    if not budgets:
        raise ConfigError("budgets", "give at least one budget")
    budgets = sorted(float(b) for b in budgets)
    if any(not np.isfinite(b) or b < 0 for b in budgets):
        raise ConfigError("budgets", "every budget must be a finite number >= 0")
    kb = problem.budget_index()
    if kb is None:
        problem = AllocationProblem(problem.table, [budget_constraint(budgets[0])] + list(problem.constraints))
        kb = 0
    method = choose_method(problem, method)
    t0 = time.perf_counter()
    engine = None
    if method == "lagrangian":
        from .lagrangian import DualEngine

        engine = DualEngine(problem)
    # the smallest budget that coverage needs: one diagnosis for the whole sweep
    diag = diagnose(problem.with_limit(kb, float(np.finfo(float).max) / 4))
    if not diag.feasible:
        raise InfeasibleError(diag, problem.table.source)
    need = diag.smallest_budget or 0.0
    points, lam, prev = [], None, None
    for i, b in enumerate(budgets):
        p = problem.with_limit(kb, b)
        if b < need * (1 - 1e-9) - 1e-9:
            points.append(
                {
                    "budget": b,
                    "status": "infeasible",
                    "objective": None,
                    "bound": None,
                    "gap": None,
                    "spend": None,
                    "marginal_value": None,
                    "shadow_prices": None,
                    "message": f"below the smallest budget that the constraints need ({need:,.2f})",
                }
            )
            if progress:
                progress(i + 1)
            continue
        s = time.perf_counter()
        try:
            if engine is not None:
                from .lagrangian import solve_lagrangian

                engine.p = p
                r = solve_lagrangian(p, lam0=lam, engine=engine, tol=DUAL_TOL)
                if r.feasible and r.gap > GAP_TARGET:  # tighten this budget's dual (its cuts are kept)
                    r = solve_lagrangian(p, lam0=r.multipliers, engine=engine, tol=DUAL_TOL / 100)
                if not r.feasible:
                    raise InfeasibleError(diagnose(p), p.table.source)
                lam = r.multipliers
                counts, seg_spend = p.plan_counts(r.choice)
                point = {
                    "budget": b,
                    "status": "optimal" if r.gap <= 1e-9 else "feasible",
                    "objective": r.objective,
                    "bound": r.bound,
                    "gap": r.gap,
                    "spend": float(seg_spend.sum()),
                    "incremental_cost": float(seg_spend.sum()),
                    "cash_spend": _cash_of_choice(p.table, r.choice),
                    "assigned_customers": int(counts.sum()),
                    "marginal_value": None,
                    "budget_shadow_price": float(r.multipliers[kb]),
                    "shadow_prices": p.shadow_prices(r.multipliers, seg_spend),
                    "seconds": time.perf_counter() - s,
                    "iterations": r.iterations,
                }
            else:
                a = allocate(p, method="exact", solver=solver, time_limit=time_limit, check=False)
                summ = a.summary()
                point = {
                    "budget": b,
                    "status": a.status,
                    "objective": a.objective,
                    "bound": a.bound,
                    "gap": a.gap,
                    "spend": summ["spend"],
                    "incremental_cost": summ["incremental_cost"],
                    "cash_spend": summ["cash_spend"],
                    "assigned_customers": summ["assigned_customers"],
                    "marginal_value": None,
                    "budget_shadow_price": float(a.multipliers[kb]),
                    "shadow_prices": summ["shadow_prices"],
                    "seconds": time.perf_counter() - s,
                    "iterations": a.iterations,
                }
        except InfeasibleError as e:
            points.append(
                {
                    "budget": b,
                    "status": "infeasible",
                    "objective": None,
                    "bound": None,
                    "gap": None,
                    "spend": None,
                    "marginal_value": None,
                    "shadow_prices": None,
                    "message": str(e.diagnosis.message),
                }
            )
            if progress:
                progress(i + 1)
            continue
        if prev is not None and b > prev["budget"]:
            point["marginal_value"] = (point["objective"] - prev["objective"]) / (b - prev["budget"])
        points.append(point)
        prev = point
        if progress:
            progress(i + 1)
    return {
        "budgets": budgets,
        "method": method,
        "smallest_budget": need,
        "points": points,
        "seconds": time.perf_counter() - t0,
        "customers": int(problem.table.count.sum()),
        "constraints": [c.name for k, c in enumerate(problem.constraints) if k != kb],
    }


def _cash_of_choice(t, choice: np.ndarray) -> float | None:
    """Catalogue cost of a one-action-per-row plan (-1 = none); None when the table has no cash_cost."""
    if t.cash_cost is None:
        return None
    rows = np.flatnonzero(choice >= 0)
    return float((t.cash_cost[rows, choice[rows]] * t.count[rows]).sum())


def plot_frontier(doc: dict, path) -> None:
    """Value against budget, with the marginal value of budget (shadow price) beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in doc["points"] if p["objective"] is not None]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    if pts:
        b = np.array([p["budget"] for p in pts])
        v = np.array([p["objective"] for p in pts])
        ub = np.array([p["bound"] for p in pts])
        ax[0].plot(b, v, "o-", label="plan value")
        ax[0].plot(b, ub, ":", color="grey", label="upper bound")
        ax[1].plot(b, [p["budget_shadow_price"] for p in pts], "o-", label="shadow price of budget")
        mv = [(p["budget"], p["marginal_value"]) for p in pts if p["marginal_value"] is not None]
        if mv:
            ax[1].step([m[0] for m in mv], [m[1] for m in mv], where="pre", label="marginal value (between budgets)")
    ax[0].set(xlabel="budget", ylabel="incremental value", title=f"Efficient frontier ({doc['customers']:,} customers)")
    ax[1].set(xlabel="budget", ylabel="value per unit of budget", title="What one more unit of budget is worth")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if doc.get("constraints"):
        fig.suptitle("constraints: " + ", ".join(doc["constraints"]), fontsize=8, y=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
