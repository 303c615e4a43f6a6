"""The allocation engines behind one call: pick the engine (`exact` or `lagrangian`), solve, and
return the plan with its bound, gap and duals (`solve`; None when no feasible plan was found).

No feasibility diagnosis here (optimizer.diagnose builds on these engines; optimizer.allocate puts
the two together). `Allocation` explains a plan (totals, usage, shadow prices, per-customer rows)
in the shape the CLI writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from sim.errors import ConfigError

from .problem import AllocationProblem
from .values import ValueTable

if TYPE_CHECKING:  # for the annotation only: optimizer.diagnose builds on this module
    from .diagnose import Diagnosis

METHODS = ("auto", "exact", "lagrangian")
EXACT_AUTO_MAX_OPTIONS = 5_000  # customer-level tables above this go to the Lagrangian engine
DEFAULT_MIP_SOLVER = "SCIP"


@dataclass
class Allocation:
    problem: AllocationProblem
    method: str
    solver: str
    status: str  # "optimal" | "feasible" (gap > 0 or time limit)
    units: np.ndarray  # (n, J) customers of row i given action j (int64)
    objective: float
    bound: float
    gap: float
    multipliers: np.ndarray  # (K,) prices of the coupling rows (<= form)
    seconds: float
    iterations: int = 0
    diagnosis: Diagnosis | None = None
    extra: dict = field(default_factory=dict)

    # --- totals ----------------------------------------------------------------------------
    def segment_totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(assigned customers, spend, value), each per (segment, action): one pass over the plan."""
        t = self.problem.table
        shape = (len(t.segments), t.n_actions)
        counts, cost_sj, value_sj = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        _add_rows(counts, t.segment, self.units)
        _add_rows(cost_sj, t.segment, self.units * t.cost)
        _add_rows(value_sj, t.segment, self.units * t.value)
        return counts, cost_sj, value_sj

    def cash_totals(self) -> np.ndarray | None:
        """(S, J) cash spend (catalogue cost of the contacts made) per (segment, action); None when the
        value table has no cash_cost column."""
        t = self.problem.table
        if t.cash_cost is None:
            return None
        acc = np.zeros((len(t.segments), t.n_actions))
        _add_rows(acc, t.segment, self.units * t.cash_cost)
        return acc

    def counts_and_spend(self) -> tuple[np.ndarray, np.ndarray]:
        """(S, J) assigned customers and (S,) spend."""
        counts, cost_sj, _ = self.segment_totals()
        return counts, cost_sj.sum(axis=1)

    def totals(
        self, aggregates: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, cash: np.ndarray | None = None
    ) -> dict[str, list[dict]]:
        """Per segment, channel and action: assigned, spend (= incremental_cost, the budget's cost
        column), cash_spend (catalogue cost; None when unknown) and value."""
        t = self.problem.table
        counts, cost_sj, value_sj = aggregates or self.segment_totals()
        cash = self.cash_totals() if cash is None else cash

        def money(cost: float, cash_part) -> dict:
            return {
                "spend": cost,
                "incremental_cost": cost,
                "cash_spend": None if cash is None else float(cash_part.sum()),
            }

        sizes = t.segment_sizes()
        by_seg = [
            {
                "segment": s,
                "customers": int(sizes[i]),
                "assigned": int(counts[i].sum()),
                "coverage": float(counts[i].sum() / sizes[i]) if sizes[i] else 0.0,
                **money(float(cost_sj[i].sum()), None if cash is None else cash[i]),
                "value": float(value_sj[i].sum()),
            }
            for i, s in enumerate(t.segments)
        ]
        by_act = [
            {
                "action": a,
                "channel": t.channels[t.action_channel[j]],
                "assigned": int(counts[:, j].sum()),
                **money(float(cost_sj[:, j].sum()), None if cash is None else cash[:, j]),
                "value": float(value_sj[:, j].sum()),
            }
            for j, a in enumerate(t.actions)
        ]
        by_chan = []
        for c, name in enumerate(t.channels):
            cols = t.action_channel == c
            by_chan.append(
                {
                    "channel": name,
                    "assigned": int(counts[:, cols].sum()),
                    **money(float(cost_sj[:, cols].sum()), None if cash is None else cash[:, cols]),
                    "value": float(value_sj[:, cols].sum()),
                }
            )
        return {"segment": by_seg, "channel": by_chan, "action": by_act}

    def summary(self) -> dict:
        """The JSON document of `clv allocate` (keys users' scripts rely on come first)."""
        p = self.problem
        aggregates = self.segment_totals()
        counts, spend = aggregates[0], aggregates[1].sum(axis=1)
        usage = p.usage_from_counts(counts, spend)
        cash = self.cash_totals()
        return {
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "spend": float(spend.sum()),
            # `spend` is the table's cost column (what the plan charges to the budget: for `clv values`
            # tables the contact cost added over what the continuation would spend anyway); the cash is
            # the catalogue cost of the contacts made, known when the table has a cash_cost column
            "incremental_cost": float(spend.sum()),
            "cash_spend": None if cash is None else float(cash.sum()),
            "usage": p.describe_usage(usage, counts, spend),
            "shadow_prices": p.shadow_prices(self.multipliers, spend),
            "assigned_customers": int(self.units.sum()),
            "seconds": self.seconds,
            "status": self.status,
            "method": self.method,
            "solver": self.solver,
            "customers": int(p.table.count.sum()),
            "rows": p.table.n,
            "options": p.table.n_options,
            "iterations": self.iterations,
            "totals": self.totals(aggregates, cash),
            **self.extra,
        }

    # --- per-customer plan ---------------------------------------------------------------------
    def plan_frame(self, chunk: int = 262_144) -> pd.DataFrame:
        """One row per customer (per (row, action) with units for segment-level tables), with the
        explanation: value, priced cost (multipliers x the row's use of each constraint), their
        difference, and the best alternative's priced net value (none counts as 0)."""
        t, p = self.problem.table, self.problem
        Pl = np.tensordot(self.multipliers, p.P, axes=1)
        Ql = self.multipliers @ p.Q
        pieces = []
        acts = np.asarray(t.actions + ["none"], dtype=object)
        chans = np.asarray(t.channels + [""], dtype=object)
        act_chan = np.concatenate([t.action_channel, [len(t.channels)]])
        segs = np.asarray(t.segments, dtype=object)
        for lo in range(0, t.n, chunk):
            hi = min(lo + chunk, t.n)
            s = t.segment[lo:hi]
            units = self.units[lo:hi]
            priced_cost = Pl[s] + Ql[s][:, None] * t.cost[lo:hi]
            net = np.where(t.eligible[lo:hi], t.value[lo:hi] - priced_cost, -np.inf)
            netn = np.concatenate([net, np.zeros((hi - lo, 1))], axis=1)
            if t.customer_level:
                assigned = units.sum(axis=1) > 0
                j = np.where(assigned, np.argmax(units, axis=1), t.n_actions)
                rows = np.arange(hi - lo)
                u = np.ones(hi - lo, dtype=np.int64)
            else:
                rr, jj = np.nonzero(units)
                rest = t.count[lo:hi] - units.sum(axis=1)
                rn = np.flatnonzero(rest > 0)
                rows = np.concatenate([rr, rn])
                j = np.concatenate([jj, np.full(len(rn), t.n_actions)])
                u = np.concatenate([units[rr, jj], rest[rn]])
                order = np.lexsort((j, rows))
                rows, j, u = rows[order], j[order], u[order]
            chosen = netn[rows, j]
            other = netn[rows].copy()
            other[np.arange(len(rows)), j] = -np.inf
            ru = np.argmax(other, axis=1)
            ru_net = other[np.arange(len(rows)), ru]
            pc = np.concatenate([priced_cost, np.zeros((hi - lo, 1))], axis=1)[rows, j]
            vals = np.concatenate([t.value[lo:hi], np.zeros((hi - lo, 1))], axis=1)[rows, j]
            costs = np.concatenate([t.cost[lo:hi], np.zeros((hi - lo, 1))], axis=1)[rows, j]
            frame = pd.DataFrame(
                {
                    "customer_id": t.user_ids(t.ids[lo:hi][rows]),
                    "segment": segs[s[rows]],
                    "action": acts[j],
                    "channel": chans[act_chan[j]],
                    "value": vals,
                    "cost": costs,
                    "priced_cost": pc,
                    "net_value": chosen,
                    "runner_up": acts[ru],
                    "runner_up_net_value": ru_net,
                    "margin": chosen - ru_net,
                    "priced_best": chosen >= ru_net - 1e-9,
                }
            )
            if t.cash_cost is not None:  # the contact's catalogue price beside the budget's incremental cost
                cash = np.concatenate([t.cash_cost[lo:hi], np.zeros((hi - lo, 1))], axis=1)[rows, j]
                frame.insert(frame.columns.get_loc("cost") + 1, "cash_cost", cash)
            if not t.customer_level:
                frame.insert(3, "units", u)
            pieces.append(frame)
        return pd.concat(pieces, ignore_index=True)


def _add_rows(acc: np.ndarray, seg: np.ndarray, rows: np.ndarray) -> None:
    """acc[s] += sum of rows in segment s (vectorised per segment)."""
    for s in range(acc.shape[0]):
        m = seg == s
        if m.any():
            acc[s] += rows[m].sum(axis=0)


def _units_from_choice(choice: np.ndarray, table: ValueTable) -> np.ndarray:
    units = np.zeros((table.n, table.n_actions), dtype=np.int64)
    on = np.flatnonzero(choice >= 0)
    units[on, choice[on]] = table.count[on]
    return units


def choose_method(problem: AllocationProblem, method: str) -> str:
    if method not in METHODS:
        raise ConfigError("method", value=repr(method), message=f"choose from {', '.join(METHODS)}")
    if method != "auto":
        if method == "lagrangian" and not problem.table.customer_level:
            raise ConfigError(
                "method",
                value="lagrangian",
                message="needs a customer-level table (no count column > 1); segment-level "
                "tables are small: use {key:method} exact",
            )
        return method
    t = problem.table
    return "exact" if (not t.customer_level or t.n_options <= EXACT_AUTO_MAX_OPTIONS) else "lagrangian"


def solve(
    problem: AllocationProblem,
    method: str,
    solver: str = DEFAULT_MIP_SOLVER,
    time_limit: float | None = None,
    lam0: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    engine=None,
) -> Allocation | None:
    """The plan of engine `method` ("exact" or "lagrangian", as chosen by `choose_method`), or None
    when the engine found no feasible plan. `seconds` is left at 0 for the caller to set."""
    if method == "exact":
        return _allocate_exact(problem, solver, time_limit)
    from .lagrangian import solve_lagrangian

    r = solve_lagrangian(problem, lam0=lam0, progress=progress, engine=engine)
    if not r.feasible:
        return None
    return Allocation(
        problem,
        "lagrangian",
        "numpy+GLOP",
        "optimal" if r.gap <= 1e-9 else "feasible",
        _units_from_choice(r.choice, problem.table),
        r.objective,
        r.bound,
        r.gap,
        r.multipliers,
        0.0,
        r.iterations,
        extra={"evaluations": r.evaluations, **({"polished_rows": r.polished_rows} if r.polished_rows else {})},
    )


def _allocate_exact(problem: AllocationProblem, solver: str, time_limit: float | None) -> Allocation | None:
    """The MIP plan with GLOP's duals; None when the problem is infeasible."""
    from .exact import MIP_SOLVERS, solve_exact

    solver = solver.upper()
    if solver not in MIP_SOLVERS:
        raise ConfigError(
            "solver", value=repr(solver), message=f"an integer plan needs one of {', '.join(MIP_SOLVERS)}"
        )
    lp = solve_exact(problem, "GLOP")
    if lp.status == "infeasible":
        return None
    hint = None
    if problem.table.customer_level and problem.table.n_options > EXACT_AUTO_MAX_OPTIONS:
        # large customer-level MIPs start from the Lagrangian plan, so a time limit still leaves
        # a plan at least as good as the Lagrangian engine's, with the MIP's own proven bound
        from .lagrangian import solve_lagrangian

        r = solve_lagrangian(problem)
        if r.feasible:
            hint = (r.choice[lp.option_rows] == lp.option_actions).astype(np.float64)
    mip = solve_exact(problem, solver, time_limit=time_limit, hint=hint)
    if mip.status not in ("optimal", "feasible"):
        if mip.status == "infeasible":
            return None
        raise ConfigError(
            f"{solver} found no integer plan within the time limit; raise {{key:time_limit}} or use "
            "{key:method} lagrangian"
        )
    t = problem.table
    units = np.zeros((t.n, t.n_actions), dtype=np.int64)
    units[mip.option_rows, mip.option_actions] = np.rint(mip.units).astype(np.int64)
    obj = float((units * t.value).sum())
    if hint is not None:
        hint_units = np.zeros_like(units)
        hint_units[lp.option_rows, lp.option_actions] = np.rint(hint).astype(np.int64)
        hint_obj = float((hint_units * t.value).sum())
        if hint_obj > obj:  # the MIP stopped (time limit) below its starting plan: keep the better plan
            units, obj = hint_units, hint_obj
    bound = min(mip.bound, lp.objective) if np.isfinite(mip.bound) else lp.objective
    gap = max(bound - obj, 0.0) / max(abs(bound), 1e-12)
    return Allocation(
        problem,
        "exact",
        solver,
        "optimal" if gap <= 1e-6 else "feasible",
        units,
        obj,
        bound,
        gap,
        lp.duals if lp.duals is not None else np.zeros(problem.K),
        0.0,
        extra={"lp_bound": lp.objective, "mip_bound": mip.bound},
    )
