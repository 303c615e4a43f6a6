"""Solve an allocation problem end to end: check feasibility, pick the engine, solve, and when no
plan exists explain why (the conflicting constraints and the smallest budget that would do).

Engines (optimizer.solve): `exact` (OR-Tools MIP for the plan and GLOP's LP relaxation for the
duals; the default for segment-level tables and small customer-level ones) and `lagrangian`
(optimizer.lagrangian, for the whole book). `auto` picks by size.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .diagnose import Diagnosis, InfeasibleError, diagnose, quick_check
from .problem import AllocationProblem
from .solve import DEFAULT_MIP_SOLVER, METHODS, Allocation, choose_method, solve

__all__ = ["Allocation", "METHODS", "allocate", "choose_method"]


def allocate(
    problem: AllocationProblem,
    method: str = "auto",
    solver: str = DEFAULT_MIP_SOLVER,
    time_limit: float | None = None,
    lam0: np.ndarray | None = None,
    check: bool = True,
    progress: Callable[[int], None] | None = None,
    engine=None,
) -> Allocation:
    """The best plan under every constraint, with its bound and gap. Raises InfeasibleError (with a
    diagnosis naming the conflicting constraints and the smallest budget that would do; with
    check=False, without the diagnosis)."""
    t0 = time.perf_counter()
    method = choose_method(problem, method)
    if check and not quick_check(problem):
        raise InfeasibleError(diagnose(problem), problem.table.source)
    result = solve(problem, method, solver, time_limit, lam0=lam0, progress=progress, engine=engine)
    if result is None:
        diag = diagnose(problem) if check else Diagnosis(False, message="no feasible plan")
        if diag.feasible:  # feasible, but the engine did not get there
            diag = Diagnosis(
                False,
                [c.name for c in problem.constraints],
                f"the {method} engine found no feasible plan although one exists; "
                + ("try --method exact" if method == "lagrangian" else "raise --time-limit"),
            )
        raise InfeasibleError(diag, problem.table.source)
    result.seconds = time.perf_counter() - t0
    return result
