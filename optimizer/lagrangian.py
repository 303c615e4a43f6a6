"""Lagrangian (dual decomposition) engine for the whole book: prices the K coupling constraints,
lets every customer pick their best priced action in one vector operation, and certifies the
integral plan it returns against the Lagrangian dual bound.

Method (Everett 1963; Fisher 1981 for the bound; Marsten et al. 1975 "boxstep" for stabilisation):

1. Dual function. For multipliers lam >= 0 on the `<=` rows of `optimizer.problem`,
       L(lam) = lam . b + sum_i count_i * max(0, max_j [value_ij - lam . a_k(i, j)])
   is an upper bound on the best plan for *every* lam (weak duality), and its minimum equals the
   LP relaxation's optimum (each customer's subproblem is a simplex, so the relaxation has the
   integrality property). b - usage(x(lam)) is a subgradient.
2. Multipliers: Kelley's cutting planes inside a box around the best point so far (boxstep), the
   small master LP (K + 1 variables, one row per cut) solved with OR-Tools GLOP. Each cut costs one
   pricing pass: O(n * J) numpy work.
3. Primal: the priced choice x(lam*) breaks a few constraints by at most a handful of customers;
   a greedy repair moves the customers whose priced loss per unit of violation is smallest, then
   a greedy fill spends whatever slack is left on the best remaining moves.
4. Certificate: gap = (L(lam_best) - objective(plan)) / |L(lam_best)|, both exact numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .problem import AllocationProblem


@dataclass
class LagrangianResult:
    choice: np.ndarray  # (n,) action index per row, -1 = none
    objective: float  # value of the integral plan
    bound: float  # best dual bound L(lam)
    gap: float  # (bound - objective) / |bound|
    multipliers: np.ndarray  # (K,) the multipliers that gave the bound
    feasible: bool
    iterations: int
    evaluations: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    polished_rows: int = 0  # customers re-solved exactly because the greedy repair got stuck


class DualEngine:
    """Pricing, dual bound and primal repair for one AllocationProblem (customer-level rows:
    rows with count > 1 are priced as blocks, which keeps the bound valid; the repair then moves
    whole rows, so use the exact solver for segment-level tables)."""

    def __init__(self, problem: AllocationProblem):
        self.p = problem
        t = problem.table
        self.n, self.J = t.n, t.n_actions
        # rows sorted by segment once, so pricing subtracts one (J,) row per segment block
        self.order = np.argsort(t.segment, kind="stable")
        seg_sorted = t.segment[self.order]
        S = len(t.segments)
        edges = np.searchsorted(seg_sorted, np.arange(S + 1))
        self.blocks = [(s, int(edges[s]), int(edges[s + 1])) for s in range(S) if edges[s + 1] > edges[s]]
        self.V = np.where(t.eligible, t.value, -np.inf)[self.order]
        self.C = t.cost[self.order]
        self.w = t.count[self.order].astype(np.float64)
        self.seg = seg_sorted
        self.R = np.empty_like(self.V)
        self.evaluations = 0
        # pricing tasks: segment blocks cut into pieces, shared by the threads
        self.tasks = [(s, a, min(a + self.CHUNK, hi)) for s, lo, hi in self.blocks for a in range(lo, hi, self.CHUNK)]
        import os

        self.threads = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 4))
        self._executor = None
        self._h_cuts: list = []
        self._pricing_key = None
        self.coverage_rows = np.array([c.kind == "min-coverage" for c in problem.constraints], dtype=bool)
        # scale of each constraint's multiplier: value per unit of the constraint's coefficient
        elig = t.eligible
        vscale = float(np.abs(t.value[elig]).mean()) if elig.any() else 1.0
        vscale = vscale or 1.0
        self.scale = np.ones(problem.K)
        rows, acts = np.nonzero(elig)
        if len(rows):
            pick = rows if len(rows) <= 200_000 else None
            if pick is None:
                sel = np.random.default_rng(0).choice(len(rows), 200_000, replace=False)
                rows, acts = rows[sel], acts[sel]
            segs = t.segment[rows]
            for k in range(problem.K):
                a = np.abs(problem.P[k, segs, acts] + problem.Q[k, segs] * t.cost[rows, acts])
                a = a[a > 0]
                if len(a):
                    self.scale[k] = vscale / float(a.mean())

    # --- pricing ---------------------------------------------------------------------------
    def prices(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lam . P as (S, J), lam . Q as (S,)): what one unit of each option costs per segment."""
        return np.tensordot(lam, self.p.P, axes=1), lam @ self.p.Q

    def price_block(
        self, prices: tuple[np.ndarray, np.ndarray], task: tuple[int, int, int], out: np.ndarray | None = None
    ) -> np.ndarray:
        """Priced values value - lam . a(i, j) of one task's rows (all in segment s); -inf where
        not eligible. Every caller prices through here, so all see the same numbers."""
        Pl, Ql = prices
        s, lo, hi = task
        R = np.multiply(self.C[lo:hi], Ql[s], out=out)
        np.subtract(self.V[lo:hi], R, out=R)
        R -= Pl[s]
        return R

    def evaluate(self, lam: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(L(lam), subgradient b - usage, choice in sorted order). Row blocks are priced on
        `threads` threads (numpy releases the GIL); the sums are added in block order, so the
        result does not depend on the thread count."""
        self.evaluations += 1
        p = self.p
        prices = self.prices(lam)
        choice = np.empty(self.n, dtype=np.int64)
        S = len(p.table.segments)

        def block(task):
            s, lo, hi = task
            R = self.price_block(prices, task, out=self.R[lo:hi])
            j = np.argmax(R, axis=1)
            best = R[np.arange(hi - lo), j]
            on = best > 0
            choice[lo:hi] = np.where(on, j, -1)
            w = self.w[lo:hi][on]
            jo = j[on]
            counts = np.bincount(jo, weights=w, minlength=self.J)
            spend = float((w * self.C[lo:hi][on, jo]).sum())
            return float((w * best[on]).sum()), s, counts, spend

        parts = self._map(block, self.tasks)
        counts = np.zeros((S, self.J))
        spend = np.zeros(S)
        total = 0.0
        for val, s, c, sp in parts:
            total += val
            counts[s] += c
            spend[s] += sp
        L = float(lam @ p.b + total)
        return L, p.b - p.usage_from_counts(counts, spend), choice

    def _map(self, fn, items) -> list:
        """fn over items on the engine's threads (each writes its own slice of shared arrays)."""
        items = list(items)
        return list(self._pool().map(fn, items)) if self.threads > 1 and len(items) > 1 else [fn(x) for x in items]

    def _pool(self):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(self.threads)
        return self._executor

    def usage(self, choice: np.ndarray) -> np.ndarray:
        counts, spend = self.counts(choice)
        return self.p.usage_from_counts(counts, spend)

    def counts(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        S = len(self.p.table.segments)
        rows = np.flatnonzero(choice >= 0)
        j = choice[rows]
        w = self.w[rows]
        counts = np.bincount(self.seg[rows] * self.J + j, weights=w, minlength=S * self.J).reshape(S, self.J)
        spend = np.bincount(self.seg[rows], weights=w * self.C[rows, j], minlength=S)
        return counts, spend

    def objective(self, choice: np.ndarray) -> float:
        rows = np.flatnonzero(choice >= 0)
        return float((self.w[rows] * self.V[rows, choice[rows]]).sum())

    # --- multipliers -------------------------------------------------------------------------
    def solve_dual(
        self,
        lam0: np.ndarray | None = None,
        tol: float = 2e-7,
        max_iter: int = 200,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, float, np.ndarray, list[dict]]:
        """Boxstep Kelley: returns (best lam, L(best lam), its choice, history)."""
        K = self.p.K
        b = self.p.b
        lam = np.zeros(K) if lam0 is None else np.maximum(np.asarray(lam0, dtype=np.float64), 0.0)
        Lc, gc, xc = self.evaluate(lam)
        history = [{"iteration": 0, "bound": Lc}]
        if K == 0:
            return lam, Lc, xc, history
        # cuts of h(lam) = L(lam) - lam . b stay valid when only the limits b change (a budget
        # sweep), so earlier solves' cuts warm-start this one
        if self._pricing_key is None or not (
            np.array_equal(self._pricing_key[0], self.p.P) and np.array_equal(self._pricing_key[1], self.p.Q)
        ):
            self._h_cuts = []
            self._pricing_key = (self.p.P.copy(), self.p.Q.copy())
        self._h_cuts.append((lam.copy(), Lc - lam @ b, b - gc))
        cuts = [(lt, ht + lt @ b, b - ut) for lt, ht, ut in self._h_cuts[-self.MAX_CUTS :]]
        center = lam.copy()
        warm = lam0 is not None and len(cuts) > 1
        radius = np.where(lam > 0, np.maximum(lam * (0.1 if warm else 0.5), 0.02 * self.scale), self.scale)
        for it in range(1, max_iter + 1):
            lo = np.maximum(center - radius, 0.0)
            hi = center + radius
            lam_t, model_min = _master(cuts, lo, hi)
            predicted = Lc - model_min
            if predicted <= tol * max(1.0, abs(Lc)):
                break
            Lt, gt, xt = self.evaluate(lam_t)
            cuts.append((lam_t, Lt, gt))
            self._h_cuts.append((lam_t.copy(), Lt - lam_t @ b, b - gt))
            if len(cuts) > self.MAX_CUTS:  # keep the master small: drop the oldest cuts
                cuts = cuts[-self.MAX_CUTS :]
            on_box = np.any(np.isclose(lam_t, hi, rtol=1e-6) | (np.isclose(lam_t, lo, rtol=1e-6) & (lo > 0)))
            if Lc - Lt >= 0.1 * predicted:  # serious step
                center, Lc, xc = lam_t, Lt, xt
                if on_box:
                    radius = radius * 2.0
            else:  # null step: the cut improves the model
                radius = np.maximum(radius * 0.7, 1e-9 * self.scale)
            history.append({"iteration": it, "bound": Lc})
            if np.any(center > 1e9 * self.scale):  # the dual runs off to infinity: infeasible rows
                break
            if progress:
                progress(it)
        return center, Lc, xc, history

    # --- primal --------------------------------------------------------------------------------
    MAX_CUTS = 150
    CHUNK = 131_072  # rows per pricing task (tasks never cross segments): bounds temporary memory

    def coef_rows(self, k: int, task: tuple[int, int, int]) -> np.ndarray:
        """(rows, J) coefficients of constraint k for one task's rows (all in segment s)."""
        s, lo, hi = task
        return self.p.P[k, s] + self.p.Q[k, s] * self.C[lo:hi]

    def coef_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(K, m) coefficients of all constraints at options (rows, cols); col -1 (none) gives 0."""
        s = self.seg[rows]
        c = np.maximum(cols, 0)
        out = self.p.P[:, s, c] + self.p.Q[:, s] * self.C[rows, c][None, :]
        out[:, cols < 0] = 0.0
        return out

    def repair(self, choice: np.ndarray, lam: np.ndarray, max_rounds: int = 60) -> tuple[np.ndarray, bool]:
        """Make `choice` feasible by the cheapest moves (priced loss per unit of violation)."""
        p = self.p
        choice = choice.copy()
        prices = self.prices(lam)
        tol = 1e-9 * np.maximum(1.0, np.abs(p.b))
        for _ in range(max_rounds):
            use = self.usage(choice)
            viol = use - p.b
            if (viol <= tol).all():
                return choice, True
            k = int(np.argmax(viol * self.scale))
            tight = [
                k2
                for k2 in range(p.K)
                if k2 != k and p.b[k2] - use[k2] <= tol[k2] and (self.coverage_rows[k2] or not self.coverage_rows[k])
            ]
            best_ratio = np.full(self.n, np.inf)
            best_j = np.zeros(self.n, dtype=np.int64)
            best_red = np.zeros(self.n)

            def block(task: tuple[int, int, int]) -> None:
                _, lo, hi = task
                m = hi - lo
                ch = choice[lo:hi]
                has = ch >= 0
                cj = np.maximum(ch, 0)
                ii = np.arange(m)
                R = np.concatenate([self.price_block(prices, task), np.zeros((m, 1))], axis=1)
                a = np.concatenate([self.coef_rows(k, task), np.zeros((m, 1))], axis=1)
                cur_a = np.where(has, a[ii, cj], 0.0)
                cur_r = np.where(has, R[ii, cj], 0.0)
                red = cur_a[:, None] - a
                ok = (red > 1e-12) & np.isfinite(R)
                for k2 in tight:  # moves must not push a tight constraint over
                    a2 = np.concatenate([self.coef_rows(k2, task), np.zeros((m, 1))], axis=1)
                    ok &= a2 - np.where(has, a2[ii, cj], 0.0)[:, None] <= 1e-12
                ratio = np.where(ok, np.maximum(cur_r[:, None] - R, 0.0) / np.where(ok, red, 1.0), np.inf)
                jb = np.argmin(ratio, axis=1)
                best_ratio[lo:hi] = ratio[ii, jb]
                best_j[lo:hi] = jb
                best_red[lo:hi] = red[ii, jb]

            self._map(block, self.tasks)
            cand = np.flatnonzero(np.isfinite(best_ratio))
            if not len(cand):
                return choice, False
            # the cheapest moves come first; a violation takes a few hundred of them, so sort only
            # a generous head of the order (the whole order if the head is not enough)
            head = 65_536
            if len(cand) > 4 * head:
                part = cand[np.argpartition(best_ratio[cand], head)[:head]]
                head_sorted = part[np.argsort(best_ratio[part], kind="stable")]
                if (best_red[head_sorted] * self.w[head_sorted]).sum() >= 4 * viol[k]:
                    cand = head_sorted
                else:
                    cand = cand[np.argsort(best_ratio[cand], kind="stable")]
            else:
                cand = cand[np.argsort(best_ratio[cand], kind="stable")]
            new = np.where(best_j[cand] == self.J, -1, best_j[cand])
            # the moves must not break the other constraints: keep those that fit their slack
            # (violated ones may not get worse), in order, until constraint k is met
            delta = (self.coef_at(cand, new) - self.coef_at(cand, choice[cand])) * self.w[cand][None, :]
            room = np.maximum(p.b - use, 0.0)
            room[k] = np.inf
            if self.coverage_rows[k]:
                # meeting coverage comes first: it may overdraw budget, capacity or shares,
                # which the next rounds pay back with moves that keep coverage met
                room[~self.coverage_rows] = np.inf
            fits = _greedy_fit(np.where(np.arange(p.K)[:, None] == k, 0.0, delta), room)
            cand, new = cand[fits], new[fits]
            if not len(cand):
                return choice, False
            cum = np.cumsum(-delta[k][fits])
            m = int(np.searchsorted(cum, viol[k] - tol[k])) + 1
            choice[cand[:m]] = new[:m]
        use = self.usage(choice)
        return choice, bool((use <= p.b + tol).all())

    def fill(self, choice: np.ndarray, lam: np.ndarray, rounds: int = 3, candidates: int = 262_144) -> np.ndarray:
        """Spend remaining slack: apply value-increasing moves in order of priced gain while every
        constraint stays satisfied. Only the `candidates` rows with the best priced gain are
        considered per round (moves far down the order never fit once the better ones are taken)."""
        p = self.p
        choice = choice.copy()
        prices = self.prices(lam)
        for _ in range(rounds):
            use = self.usage(choice)
            slack = p.b - use
            gain = np.full(self.n, -np.inf)
            jbest = np.zeros(self.n, dtype=np.int64)

            def block(task: tuple[int, int, int]) -> None:
                _, lo, hi = task
                m = hi - lo
                ii = np.arange(m)
                ch = choice[lo:hi]
                has = ch >= 0
                cj = np.maximum(ch, 0)
                V = self.V[lo:hi]
                R = self.price_block(prices, task)
                cur_v = np.where(has, V[ii, cj], 0.0)
                cur_r = np.where(has, R[ii, cj], 0.0)
                pg = np.where(V - cur_v[:, None] > 1e-12, R - cur_r[:, None], -np.inf)
                jb = np.argmax(pg, axis=1)
                gain[lo:hi] = pg[ii, jb]
                jbest[lo:hi] = jb

            self._map(block, self.tasks)
            rows = np.flatnonzero(np.isfinite(gain))
            if not len(rows):
                break
            if len(rows) > candidates:
                rows = rows[np.argpartition(-gain[rows], candidates)[:candidates]]
            rows = rows[np.argsort(-gain[rows], kind="stable")]
            jr = jbest[rows]
            delta = (self.coef_at(rows, jr) - self.coef_at(rows, choice[rows])) * self.w[rows][None, :]
            taken = _greedy_fit(delta, slack)
            if not taken.any():
                break
            choice[rows[taken]] = jr[taken]
        return choice

    def polish(
        self, choice: np.ndarray, lam: np.ndarray, rows: int, solver: str = "SCIP", time_limit: float = 30.0
    ) -> np.ndarray | None:
        """Re-solve exactly (OR-Tools MIP) the `rows` customers closest to indifference at lam
        (smallest gap between their two best priced options, none included) with everyone
        else fixed: repairs what single-customer moves cannot (swaps under budget + coverage)."""
        from .exact import solve_subproblem

        prices = self.prices(lam)
        margin = np.empty(self.n)
        priced_choice = np.empty(self.n, dtype=np.int64)

        def block(task: tuple[int, int, int]) -> None:
            _, lo, hi = task
            R = np.concatenate([self.price_block(prices, task), np.zeros((hi - lo, 1))], axis=1)
            top2 = -np.partition(-R, 1, axis=1)[:, :2]
            margin[lo:hi] = top2[:, 0] - top2[:, 1]
            j = np.argmax(R[:, : self.J], axis=1)  # the priced choice, as evaluate() makes it
            priced_choice[lo:hi] = np.where(R[np.arange(hi - lo), j] > 0, j, -1)

        self._map(block, self.tasks)
        off_best = np.flatnonzero(choice != priced_choice)
        pick = np.argpartition(margin, min(rows, self.n - 1))[:rows] if rows < self.n else np.arange(self.n)
        pick = np.unique(np.concatenate([pick, off_best[:rows]]))
        rest = choice.copy()
        rest[pick] = -1
        b_res = self.p.b - self.usage(rest)
        r_idx, j_idx = np.nonzero(np.isfinite(self.V[pick]))
        opt_rows = pick[r_idx]
        coef = self.coef_at(opt_rows, j_idx)
        x = solve_subproblem(self.V[opt_rows, j_idx], coef, r_idx, self.w[pick], b_res, solver, time_limit)
        if x is None:
            return None
        out = rest
        on = x > 0.5
        out[opt_rows[on]] = j_idx[on]
        return out


MASTER_TIME_LIMIT = 10.0  # seconds GLOP gets for the cutting-plane master LP before HiGHS takes over


def _greedy_fit(delta: np.ndarray, slack: np.ndarray, max_rounds: int = 200) -> np.ndarray:
    """Scan moves in order; keep each whose (K,) usage change keeps every constraint within the
    remaining slack. Vectorised: keep the longest prefix that fits, skip the move that breaks it
    and every later move that no longer fits on its own, repeat."""
    K, m = delta.shape
    keep = np.zeros(m, dtype=bool)
    rem = slack.astype(np.float64).copy()
    tol = 1e-9 * np.maximum(1.0, np.abs(slack))
    alive = np.arange(m)
    for _ in range(max_rounds):
        alive = alive[(delta[:, alive] <= rem[:, None] + tol[:, None]).all(axis=0)]
        if not len(alive):
            break
        cum = np.cumsum(delta[:, alive], axis=1)
        fits = (cum <= rem[:, None] + tol[:, None]).all(axis=0)
        bad = np.flatnonzero(~fits)
        first = int(bad[0]) if len(bad) else len(alive)
        if first:
            keep[alive[:first]] = True
            rem -= cum[:, first - 1]
        alive = alive[first + 1 :]
    return keep


def _master(
    cuts: list[tuple[np.ndarray, float, np.ndarray]], lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, float]:
    """min theta s.t. theta >= L_t + g_t . (lam - lam_t), lo <= lam <= hi; solved with GLOP."""
    from ortools.linear_solver.python import model_builder as mb

    K = len(lo)
    m = mb.Model()
    lam = [m.new_num_var(float(lo[k]), float(hi[k]), f"lam{k}") for k in range(K)]
    theta = m.new_num_var(-np.inf, np.inf, "theta")
    for lt, Lt, gt in cuts:
        m.add(theta - mb.LinearExpr.weighted_sum(lam, [float(g) for g in gt]) >= float(Lt - gt @ lt))
    m.minimize(theta)
    s = mb.Solver("GLOP")
    # a master of a few variables solves in microseconds; GLOP has been seen to stall for minutes on
    # one (demo run, 2026-12-02): past the limit the same LP goes to HiGHS (scipy) instead
    s.set_time_limit_in_seconds(MASTER_TIME_LIMIT)
    status = s.solve(m)
    if status == mb.SolveStatus.OPTIMAL:
        return np.array([s.value(v) for v in lam]), float(s.objective_value)
    return _master_highs(cuts, lo, hi)


def _master_highs(
    cuts: list[tuple[np.ndarray, float, np.ndarray]], lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, float]:
    """`_master`'s LP with scipy's HiGHS; the box centre when that fails too (a box cannot make it
    unbounded; the next cut moves the centre on)."""
    from scipy.optimize import linprog

    K = len(lo)
    G = np.array([g for _, _, g in cuts], float).reshape(len(cuts), K)
    rhs = np.array([Lt - g @ lt for lt, Lt, g in cuts], float)
    # theta >= rhs_t + g_t . lam  <=>  g_t . lam - theta <= -rhs_t
    res = linprog(
        np.r_[np.zeros(K), 1.0],
        A_ub=np.c_[G, -np.ones(len(cuts))],
        b_ub=-rhs,
        bounds=[(float(a), float(b)) for a, b in zip(lo, hi)] + [(None, None)],
        method="highs",
    )
    if res.status != 0:
        return (lo + hi) / 2.0, -np.inf
    return np.asarray(res.x[:K]), float(res.fun)


def solve_lagrangian(
    problem: AllocationProblem,
    lam0: np.ndarray | None = None,
    tol: float = 2e-7,
    max_iter: int = 200,
    engine: DualEngine | None = None,
    progress: Callable[[int], None] | None = None,
) -> LagrangianResult:
    """Integral plan + certified gap for the whole book (see module docstring)."""
    t0 = time.perf_counter()
    eng = engine or DualEngine(problem)
    eng.evaluations = 0
    lam, bound, x, history = eng.solve_dual(lam0, tol=tol, max_iter=max_iter, progress=progress)
    x, feasible = eng.repair(x, lam)
    polished = 0
    if not feasible:  # single-customer moves got stuck: re-solve the margin exactly
        for rows in (2_000, 20_000):
            if polished >= eng.n:
                break
            polished = min(rows, eng.n)
            y = eng.polish(x, lam, rows)
            if y is not None and eng.p.feasible(eng.usage(y)):
                x, feasible = y, True
                break
    if feasible:
        x = eng.fill(x, lam)
    obj = eng.objective(x)
    choice = np.empty(eng.n, dtype=np.int64)
    choice[eng.order] = x
    gap = (bound - obj) / max(abs(bound), 1e-12) if feasible else float("inf")
    return LagrangianResult(
        choice=choice,
        objective=obj,
        bound=bound,
        gap=max(gap, 0.0),
        multipliers=lam,
        feasible=feasible,
        iterations=len(history) - 1,
        evaluations=eng.evaluations,
        seconds=time.perf_counter() - t0,
        history=history,
        polished_rows=polished,
    )
