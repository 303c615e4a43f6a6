"""Exact solves with OR-Tools: the LP relaxation (GLOP or PDLP) for bounds and shadow prices, and
the integer problem (CP-SAT, SCIP or HiGHS) for customer- and segment-level plans.

The model is built in one call from a scipy CSR matrix (`ModelBuilderHelper.fill_model_from_sparse_data`)
so a few hundred thousand variables cost seconds, not Python loops. Variables are the eligible
(row, action) options; rows are "at most `count` per row" plus the K coupling constraints of
`optimizer.problem`.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from sim.errors import ConfigError

from .problem import AllocationProblem

LP_SOLVERS = ("GLOP", "PDLP")
MIP_SOLVERS = ("CP_SAT", "SCIP", "HIGHS")


@dataclass
class ExactResult:
    status: str                 # "optimal" | "feasible" | "infeasible" | "not_solved"
    objective: float
    bound: float
    units: np.ndarray           # (n_options,) customers of row i taking action j (option order)
    duals: np.ndarray | None    # (K,) multipliers >= 0 of the coupling constraints (LP only)
    seconds: float
    solver: str
    option_rows: np.ndarray
    option_actions: np.ndarray

    def choice(self, n: int) -> np.ndarray:
        """One action per row (-1 = none) for customer-level solutions (largest unit wins)."""
        out = np.full(n, -1, dtype=np.int64)
        best = np.zeros(n)
        for o in np.flatnonzero(self.units > 0.5):
            r = self.option_rows[o]
            if self.units[o] > best[r]:
                best[r], out[r] = self.units[o], self.option_actions[o]
        return out


def build_model(problem: AllocationProblem, integer: bool):
    """(model, option rows, option actions): the allocation problem as an OR-Tools model_builder model."""
    import scipy.sparse as sp
    from ortools.linear_solver.python import model_builder as mb
    t = problem.table
    rows, acts = np.nonzero(t.eligible)
    n_opt = len(rows)
    seg = t.segment[rows]
    K = problem.K
    # customer rows: sum_j x_ij <= count_i
    A_cust = sp.csr_matrix((np.ones(n_opt), (rows, np.arange(n_opt))), shape=(t.n, n_opt))
    coef = problem.P[:, seg, acts] + problem.Q[:, seg] * t.cost[rows, acts][None, :]   # (K, n_opt)
    coef[np.abs(coef) < 1e-15] = 0.0
    A_coup = sp.csr_matrix(coef)
    A = sp.vstack([A_cust, A_coup], format="csr")
    lo = np.concatenate([np.zeros(t.n), np.full(K, -np.inf)])
    hi = np.concatenate([t.count.astype(np.float64), problem.b])
    model = mb.Model()
    model.helper.fill_model_from_sparse_data(np.zeros(n_opt), t.count[rows].astype(np.float64),
                                             t.value[rows, acts].astype(np.float64), lo, hi, A)
    model.helper.set_maximize(True)
    if integer:
        for v in range(n_opt):
            model.helper.set_var_integrality(v, True)
    return model, rows, acts


@contextmanager
def _stdout_to_stderr():
    """Point file descriptor 1 at stderr while a native solver runs."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def solve_exact(problem: AllocationProblem, solver: str = "CP_SAT", time_limit: float | None = None,
                threads: int | None = None, hint: np.ndarray | None = None) -> ExactResult:
    """Solve with one OR-Tools backend: an LP solver gives the relaxation (fractional units and
    duals), a MIP solver the integer plan and its proven bound. `hint` (units per option) gives
    the MIP a starting plan."""
    from ortools.linear_solver.python import model_builder_helper as mbh
    solver = solver.upper()
    if solver not in LP_SOLVERS + MIP_SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; choose from {', '.join(LP_SOLVERS + MIP_SOLVERS)}")
    integer = solver in MIP_SOLVERS
    t0 = time.perf_counter()
    model, rows, acts = build_model(problem, integer)
    if hint is not None and integer:
        # a starting plan (units per option, in option order): the MIP starts from its value
        for v, x in enumerate(hint.tolist()):     # a complete solution: solvers may drop partial ones
            model.helper.add_hint(v, x)
    h = mbh.ModelSolverHelper(solver)
    if time_limit:
        h.set_time_limit_in_seconds(float(time_limit))
    if solver == "CP_SAT":
        h.set_solver_specific_parameters(f"num_workers:{threads or 2}")
    elif solver == "PDLP":
        # PDLP is a first-order method: ask for a tight relative gap so its bound is usable
        h.set_solver_specific_parameters("termination_criteria { eps_optimal_relative: 1e-8 eps_optimal_absolute: 1e-8 }")
    with _stdout_to_stderr():     # HiGHS prints a banner on stdout; keep stdout for --json
        h.solve(model.helper)
    status = h.status()
    name = {0: "optimal", 1: "feasible", 2: "infeasible"}.get(int(status), "not_solved")
    secs = time.perf_counter() - t0
    if not h.has_solution():
        return ExactResult(name if name == "infeasible" else "not_solved", float("nan"), float("nan"),
                           np.zeros(len(rows)), None, secs, solver, rows, acts)
    x = np.asarray(h.variable_values())
    obj = float(h.objective_value())
    bound = float(h.best_objective_bound()) if integer else obj
    duals = None
    if not integer:
        d = np.asarray(h.dual_values())[problem.table.n:]
        duals = np.maximum(d, 0.0)    # maximisation with <= rows: dual >= 0 (clip solver noise)
    return ExactResult(name, obj, bound, x, duals, secs, solver, rows, acts)


def solve_subproblem(value: np.ndarray, coef: np.ndarray, option_rows: np.ndarray, row_count: np.ndarray,
                     b: np.ndarray, solver: str = "SCIP", time_limit: float | None = 30.0) -> np.ndarray | None:
    """A small integer problem given as options directly: maximise value . x subject to
    sum over each row's options <= row_count[row], coef @ x <= b, 0 <= x <= row_count[row]
    (integer). Used by the Lagrangian engine to re-solve the customers at the margin exactly.
    Returns x per option, or None when infeasible or unsolved."""
    import scipy.sparse as sp
    from ortools.linear_solver.python import model_builder as mb
    from ortools.linear_solver.python import model_builder_helper as mbh
    m = len(value)
    n_rows = len(row_count)
    A = sp.vstack([sp.csr_matrix((np.ones(m), (option_rows, np.arange(m))), shape=(n_rows, m)),
                   sp.csr_matrix(np.where(np.abs(coef) < 1e-15, 0.0, coef))], format="csr")
    lo = np.full(n_rows + len(b), -np.inf)
    hi = np.concatenate([row_count.astype(np.float64), b])
    model = mb.Model()
    model.helper.fill_model_from_sparse_data(np.zeros(m), row_count[option_rows].astype(np.float64),
                                             value.astype(np.float64), lo, hi, A)
    model.helper.set_maximize(True)
    for v in range(m):
        model.helper.set_var_integrality(v, True)
    h = mbh.ModelSolverHelper(solver)
    if time_limit:
        h.set_time_limit_in_seconds(float(time_limit))
    with _stdout_to_stderr():
        h.solve(model.helper)
    if not h.has_solution():
        return None
    return np.rint(np.asarray(h.variable_values()))
