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
    status: str  # "optimal" | "feasible" | "infeasible" | "not_solved"
    objective: float
    bound: float
    units: np.ndarray  # (n_options,) customers of row i taking action j (option order)
    duals: np.ndarray | None  # (K,) multipliers >= 0 of the coupling constraints (LP only)
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


def options_model(
    value: np.ndarray, coef: np.ndarray, option_rows: np.ndarray, row_count: np.ndarray, b: np.ndarray, integer: bool
):
    """An OR-Tools model_builder model over options (one variable each, 0..row_count of its row):
    maximise value . x subject to sum of each row's options <= row_count[row] and coef @ x <= b."""
    import scipy.sparse as sp
    from ortools.linear_solver.python import model_builder as mb

    m, n_rows = len(value), len(row_count)
    counts = row_count.astype(np.float64)
    A = sp.vstack(
        [
            sp.csr_matrix((np.ones(m), (option_rows, np.arange(m))), shape=(n_rows, m)),
            sp.csr_matrix(np.where(np.abs(coef) < 1e-15, 0.0, coef)),
        ],
        format="csr",
    )
    lo = np.concatenate([np.zeros(n_rows), np.full(len(b), -np.inf)])
    hi = np.concatenate([counts, b])
    model = mb.Model()
    model.helper.fill_model_from_sparse_data(np.zeros(m), counts[option_rows], value.astype(np.float64), lo, hi, A)
    model.helper.set_maximize(True)
    if integer:
        for v in range(m):
            model.helper.set_var_integrality(v, True)
    return model


def build_model(problem: AllocationProblem, integer: bool):
    """(model, option rows, option actions): the allocation problem as an OR-Tools model_builder model."""
    t = problem.table
    rows, acts = np.nonzero(t.eligible)
    seg = t.segment[rows]
    coef = problem.P[:, seg, acts] + problem.Q[:, seg] * t.cost[rows, acts][None, :]  # (K, n_opt)
    return options_model(t.value[rows, acts], coef, rows, t.count, problem.b, integer), rows, acts


def _run(model, solver: str, time_limit: float | None, params: str | None = None):
    """Solve with one OR-Tools backend, native output kept off stdout; returns the solver helper."""
    from ortools.linear_solver.python import model_builder_helper as mbh

    h = mbh.ModelSolverHelper(solver)
    if time_limit:
        h.set_time_limit_in_seconds(float(time_limit))
    if params:
        h.set_solver_specific_parameters(params)
    with _stdout_to_stderr():  # HiGHS prints a banner on stdout; keep stdout for --json
        h.solve(model.helper)
    return h


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


def solve_exact(
    problem: AllocationProblem,
    solver: str = "CP_SAT",
    time_limit: float | None = None,
    threads: int | None = None,
    hint: np.ndarray | None = None,
) -> ExactResult:
    """Solve with one OR-Tools backend: an LP solver gives the relaxation (fractional units and
    duals), a MIP solver the integer plan and its proven bound. `hint` (units per option) gives
    the MIP a starting plan."""
    solver = solver.upper()
    if solver not in LP_SOLVERS + MIP_SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; choose from {', '.join(LP_SOLVERS + MIP_SOLVERS)}")
    integer = solver in MIP_SOLVERS
    t0 = time.perf_counter()
    model, rows, acts = build_model(problem, integer)
    if hint is not None and integer:
        # a starting plan (units per option, in option order): the MIP starts from its value
        for v, x in enumerate(hint.tolist()):  # a complete solution: solvers may drop partial ones
            model.helper.add_hint(v, x)
    params = None
    if solver == "CP_SAT":
        params = f"num_workers:{threads or 2}"
    elif solver == "PDLP":
        # PDLP is a first-order method: ask for a tight relative gap so its bound is usable
        params = "termination_criteria { eps_optimal_relative: 1e-8 eps_optimal_absolute: 1e-8 }"
    h = _run(model, solver, time_limit, params)
    status = h.status()
    name = {0: "optimal", 1: "feasible", 2: "infeasible"}.get(int(status), "not_solved")
    secs = time.perf_counter() - t0
    if not h.has_solution():
        return ExactResult(
            name if name == "infeasible" else "not_solved",
            float("nan"),
            float("nan"),
            np.zeros(len(rows)),
            None,
            secs,
            solver,
            rows,
            acts,
        )
    x = np.asarray(h.variable_values())
    obj = float(h.objective_value())
    bound = float(h.best_objective_bound()) if integer else obj
    duals = None
    if not integer:
        d = np.asarray(h.dual_values())[problem.table.n :]
        duals = np.maximum(d, 0.0)  # maximisation with <= rows: dual >= 0 (clip solver noise)
    return ExactResult(name, obj, bound, x, duals, secs, solver, rows, acts)


def solve_subproblem(
    value: np.ndarray,
    coef: np.ndarray,
    option_rows: np.ndarray,
    row_count: np.ndarray,
    b: np.ndarray,
    solver: str = "SCIP",
    time_limit: float | None = 30.0,
) -> np.ndarray | None:
    """A small integer problem given as options directly: maximise value . x subject to
    sum over each row's options <= row_count[row], coef @ x <= b, 0 <= x <= row_count[row]
    (integer). Used by the Lagrangian engine to re-solve the customers at the margin exactly.
    Returns x per option, or None when infeasible or unsolved."""
    h = _run(options_model(value, coef, option_rows, row_count, b, integer=True), solver, time_limit)
    if not h.has_solution():
        return None
    return np.rint(np.asarray(h.variable_values()))
