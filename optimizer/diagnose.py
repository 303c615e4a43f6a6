"""Infeasibility diagnosis: which constraints conflict, and the smallest budget that would do.

Only minimum-coverage rows force anything to happen (with none of them, "contact nobody" meets
every limit), so a problem is infeasible in one of two ways:

1. counts: coverage asks for more customers than eligibility, capacities and action caps allow.
   Customers of one segment with the same eligible actions are interchangeable for these rows,
   so an LP over (segment, eligibility pattern) groups is exact (it is a flow problem); a
   deletion filter (Chinneck & Dravnieks 1991) shrinks the set to a minimal conflicting one.
2. money: the counts can be met, but not within the budget (or the spend shares). The smallest
   budget is the optimum of "minimise spend subject to every other constraint", solved with the
   same machinery as the allocation itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim.errors import ClvError, ConfigError

from .problem import AllocationProblem
from .solve import choose_method, solve
from .values import ValueTable


@dataclass
class Diagnosis:
    feasible: bool
    conflicts: list[str] = field(default_factory=list)  # constraint names, e.g. "min-coverage segment:small"
    message: str = ""
    smallest_budget: float | None = None  # None: no budget would do (or no budget row)

    def to_dict(self) -> dict:
        return {
            "feasible": self.feasible,
            "conflicts": self.conflicts,
            "message": self.message,
            "smallest_budget": self.smallest_budget,
        }


class InfeasibleError(ClvError):
    """The constraints cannot all hold; str() is the one-line diagnosis."""

    def __init__(self, diagnosis: Diagnosis, source: str):
        self.diagnosis, self.source = diagnosis, source
        super().__init__(f"{source}: infeasible: {diagnosis.message}")

    def __reduce__(self):  # pickled with its diagnosis, so it crosses to and from Ray workers intact
        return (self.__class__, (self.diagnosis, self.source))


COUNT_KINDS = ("capacity", "min-coverage")


def _count_lp_feasible(problem: AllocationProblem, keep: list[int]) -> bool:
    """Exact feasibility of the count rows in `keep` (capacity and min-coverage), by an LP over
    groups of interchangeable customers."""
    from ortools.linear_solver.python import model_builder as mb

    t = problem.table
    pattern = np.packbits(t.eligible, axis=1, bitorder="little")
    key = np.concatenate([t.segment[:, None].astype(np.int64), pattern.astype(np.int64)], axis=1)
    groups, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    size = np.bincount(inv, weights=t.count, minlength=len(groups))
    first = np.zeros(len(groups), dtype=np.int64)
    first[inv[::-1]] = np.arange(t.n)[::-1]
    elig = t.eligible[first]
    gseg = t.segment[first]
    m = mb.Model()
    y = {}
    for g in range(len(groups)):
        for j in np.flatnonzero(elig[g]):
            y[g, j] = m.new_num_var(0.0, float(size[g]), f"y{g}_{j}")
        if elig[g].any():
            m.add(mb.LinearExpr.sum([y[g, j] for j in np.flatnonzero(elig[g])]) <= float(size[g]))
    for k in keep:
        terms, coefs = [], []
        for (g, j), var in y.items():
            c = problem.P[k, gseg[g], j]
            if c:
                terms.append(var)
                coefs.append(float(c))
        if terms:
            m.add(mb.LinearExpr.weighted_sum(terms, coefs) <= float(problem.b[k]))
        elif problem.b[k] < 0:
            return False
    m.minimize(0.0)
    s = mb.Solver("GLOP")
    return s.solve(m) in (mb.SolveStatus.OPTIMAL, mb.SolveStatus.FEASIBLE)


def _describe(problem: AllocationProblem, ks: list[int]) -> str:
    t = problem.table
    sizes = t.segment_sizes()
    parts = []
    for k in ks:
        c = problem.constraints[k]
        if c.kind == "min-coverage":
            s = t.segments.index(c.key)
            reach = int(t.count[(t.segment == s) & t.eligible.any(axis=1)].sum())
            parts.append(
                f"{c.spec} needs {int(-problem.b[k]):,} of {int(sizes[s]):,} customers "
                f"({reach:,} eligible for any action)"
            )
        else:
            parts.append(c.spec)
    return "; ".join(parts)


def _forcing_and_count_rows(problem: AllocationProblem) -> tuple[list[int], list[int]]:
    """(min-coverage rows that ask for at least one customer, all capacity and coverage rows)."""
    cons = problem.constraints
    return (
        [k for k, c in enumerate(cons) if c.kind == "min-coverage" and problem.b[k] < 0],
        [k for k, c in enumerate(cons) if c.kind in COUNT_KINDS],
    )


def quick_check(problem: AllocationProblem) -> bool:
    """Cheap necessary conditions (no full solve): the count rows can hold, and the budget covers
    the cheapest way to meet each coverage row on its own. False means `diagnose` will explain."""
    cons = problem.constraints
    cov, counts = _forcing_and_count_rows(problem)
    if not cov:
        return True
    if not _count_lp_feasible(problem, counts):
        return False
    kb = problem.budget_index()
    if kb is None:
        return True
    t = problem.table
    need = 0.0
    cheapest = np.where(t.eligible, t.cost, np.inf).min(axis=1)
    for k in cov:
        s = t.segments.index(cons[k].key)
        rows = np.flatnonzero((t.segment == s) & np.isfinite(cheapest))
        order = rows[np.argsort(cheapest[rows], kind="stable")]
        cum = np.cumsum(t.count[order])
        m = int(np.searchsorted(cum, -problem.b[k])) + 1
        units = np.minimum(t.count[order[:m]], np.maximum(-problem.b[k] - np.concatenate([[0], cum[: m - 1]]), 0))
        need += float((units * cheapest[order[:m]]).sum())
    return need <= cons[kb].limit * (1 + 1e-9) + 1e-9


def diagnose(problem: AllocationProblem, min_budget_solver=None) -> Diagnosis:
    """Decide feasibility; when infeasible, name a minimal set of conflicting constraints and the
    smallest budget that would do. `min_budget_solver(problem) -> (spend, feasible)` solves
    "minimise spend" (defaults to `min_spend`)."""
    cons = problem.constraints
    cov, counts = _forcing_and_count_rows(problem)
    if not cov:
        return Diagnosis(True)
    if not _count_lp_feasible(problem, counts):
        conflict = list(counts)
        for k in list(conflict):  # deletion filter
            trial = [x for x in conflict if x != k]
            if not _count_lp_feasible(problem, trial):
                conflict = trial
        names = [cons[k].name for k in conflict]
        return Diagnosis(
            False,
            names,
            "no budget would do: "
            + _describe(problem, conflict)
            + (" (beyond what eligibility allows)" if len(conflict) == 1 else " cannot all hold"),
            None,
        )
    kb = problem.budget_index()
    # money: minimise spend under every constraint except the budget
    others = [k for k in range(problem.K) if k != kb]
    spend_problem = AllocationProblem(problem.table, [cons[k] for k in others])
    if min_budget_solver is None:
        min_budget_solver = min_spend
    spend, ok = min_budget_solver(spend_problem)
    if not ok:
        share = [k for k in others if cons[k].kind == "max-share"]
        names = [cons[k].name for k in cov + share]
        return Diagnosis(
            False,
            names,
            "the spend shares cannot hold together with coverage: " + _describe(problem, cov + share),
            None,
        )
    if kb is not None and spend > cons[kb].limit * (1 + 1e-9) + 1e-9:
        budget = cons[kb].limit
        smallest = math.ceil(spend * 100) / 100
        return Diagnosis(
            False,
            [cons[kb].name] + [cons[k].name for k in cov],
            f"--budget {budget:g} is too small for "
            + _describe(problem, cov)
            + f"; the smallest budget that would do is {smallest:,.2f}",
            smallest,
        )
    return Diagnosis(True, smallest_budget=spend)


def min_spend(problem: AllocationProblem) -> tuple[float, bool]:
    """Smallest spend meeting every constraint of `problem` (the budget diagnosis): the plan that
    maximises -cost, by the engine `auto` picks."""
    t = problem.table
    neg = ValueTable(
        ids=t.ids,
        id_type=t.id_type,
        segment=t.segment,
        segments=t.segments,
        actions=t.actions,
        channels=t.channels,
        action_channel=t.action_channel,
        value=-t.cost,
        cost=t.cost,
        eligible=t.eligible,
        count=t.count,
        source=t.source,
    )
    spend_problem = AllocationProblem(neg, problem.constraints)
    try:
        a = solve(spend_problem, choose_method(spend_problem, "auto"))
    except ConfigError:
        return float("nan"), False
    if a is None:
        return float("nan"), False
    return -a.objective, True
