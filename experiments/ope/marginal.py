"""Marginalized importance sampling: the state cells and the `mis` and `drl` estimators.

Finite-horizon MIS (Xie, Ma & Wang 2019) replaces the product of a trajectory's step ratios by
the ratio of the candidate's to the logging policy's distribution of the state at that step,
estimated on a discrete state space. The cells come from the observations the OPE already rebuilt
at every logged decision (`experiments.ope.observations.DecisionStates.obs`), by this rule:

    cell = stage (5) x segment x products held (0, 1, 2, 3+) x contacted at the previous decision
    (last_contact < `contact_periods`, default 4 = the synthetic bank's decision interval)

On the synthetic bank that is 5 x 3 x 4 x 2 = 120 cells. Why these coordinates: the candidates act
through exactly these channels. Contacts change activity (recency, hence the stage, which the
world's stage rules compute from tenure and recency) and dropout (the dormancy and churned
stages), product offers change the products held, and the contact rules and fatigue depend on
the last contact; the segment sets the response to all of them. Tenure is not a coordinate: the
ratios are indexed by the decision index t (`MIS.index`, the customer's t-th decision, which on a
calendar of a decision every few periods from signup is the tenure), so every customer in a cell
at index t has lived under t of the candidate's decisions.

Cells with too little logged mass are merged, coarsest coordinate last: a cell holding fewer than
`min_decisions` (1,000: about 40 per step over a median 26 steps) logged decisions (pooled over
steps) drops its last coordinate (contact, then
products, then segment), and so on up to the stage alone, which is kept whatever its mass. The
merging is decided once on the whole sample (it is part of the estimator's design, not
re-decided on a bootstrap resample); the ratios themselves are re-estimated on every resample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import _BOOT_CELLS, _need_models, _safe_div, _Sequential, kish_ess
from .logged import LoggedTrajectories

PRODUCT_BUCKETS = 4  # 0, 1, 2, 3+ products held


@dataclass(frozen=True)
class CellRule:
    """The discretisation of rebuilt observations into MIS cells (see the module docstring).

    min_decisions: a cell with fewer logged decisions (all steps pooled) is merged into its parent;
    contact_periods: "contacted at the previous decision" means last_contact < contact_periods."""

    min_decisions: int = 1000
    contact_periods: int = 4

    def __post_init__(self):
        for key in ("min_decisions", "contact_periods"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"CellRule.{key}: must be an integer >= 1, got {v!r}")

    def coordinates(self, obs: dict) -> np.ndarray:
        """(n, 4) int: stage, segment, product bucket, contacted, per decision."""
        missing = [k for k in ("stage", "segment", "products", "last_contact") if k not in obs]
        if missing:
            raise ValueError(f"CellRule: observations lack {', '.join(missing)}")
        stage = np.asarray(obs["stage"], dtype=np.int64)
        n = stage.shape[0]
        products = np.asarray(obs["products"]).reshape(n, -1)
        held = np.minimum(products.sum(axis=1), PRODUCT_BUCKETS - 1)
        contacted = np.asarray(obs["last_contact"]) < self.contact_periods
        segment = np.asarray(obs["segment"], dtype=np.int64)
        for name, v in (("stage", stage), ("segment", segment)):
            if v.shape != (n,) or (v < 0).any():
                raise ValueError(f"CellRule: {name} must be non-negative integers, one per decision")
        return np.column_stack([stage, segment, held, contacted.astype(np.int64)])

    def cells(self, obs: dict) -> tuple[np.ndarray, list[tuple]]:
        """Cell code (n,) of every decision, 0..C-1, and each code's label: a tuple of
        (stage, segment, product bucket, contacted) with the merged coordinates left out."""
        coords = self.coordinates(obs)
        n, k = coords.shape
        level = np.zeros(n, np.int64)  # coordinates dropped so far
        for drop in range(k - 1):  # the stage alone (k - 1 dropped) is always kept
            at = level == drop
            if not at.any():
                break
            keys = coords[at][:, : k - drop]
            _, inv, cnt = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
            small = cnt[inv.ravel()] < self.min_decisions
            rows = np.flatnonzero(at)
            level[rows[small]] += 1
        key = np.column_stack([level, np.where(np.arange(k)[None, :] < (k - level)[:, None], coords, -1)])
        uniq, code = np.unique(key, axis=0, return_inverse=True)
        labels = [tuple(int(x) for x in row[1:] if x >= 0) for row in uniq]
        return code.ravel().astype(np.int64), labels

    def fit(self, obs: dict) -> tuple[np.ndarray, dict]:
        """`cells(obs)`'s codes and a description for the result's `models`: the rule, its knobs,
        the number of cells and how many decisions sit in merged cells."""
        code, labels = self.cells(obs)
        merged = np.array([len(lab) < 4 for lab in labels])
        return code, {
            "rule": "stage x segment x products held (0, 1, 2, 3+) x contacted at the previous decision, "
            "cells with fewer than min_decisions logged decisions merged into their parent",
            "min_decisions": self.min_decisions,
            "contact_periods": self.contact_periods,
            "cells": len(labels),
            "merged_cells": int(merged.sum()),
            "decisions_in_merged_cells": int(merged[code].sum()),
        }


def state_cells(obs: dict, rule: CellRule | None = None) -> tuple[np.ndarray, list[tuple]]:
    """`rule.cells(obs)` with the default rule when none is given."""
    return (rule or CellRule()).cells(obs)


__all__ = ["CellRule", "state_cells", "PRODUCT_BUCKETS"]


# ----------------------------------------------------------------------------------------------
# marginalized (state-distribution ratio) estimators


MIS_INDEXES = ("step", "left")


@dataclass(frozen=True)
class _Layout:
    """The valid steps of LoggedTrajectories in flat order, grouped by ratio index (slot)."""

    cust: np.ndarray  # (R,) customer of each valid step
    t: np.ndarray  # (R,) step (decision index) of each valid step
    rho: np.ndarray  # (R,) step ratio pi(a|s) / pi0(a|s) of the logged action
    slots: list  # per slot: (rows (r,), previous rows (r,) or -1, local cell (r,), number of cells)
    anc: np.ndarray  # (R,) the row `window` steps earlier (-1 when the trajectory is shorter)
    exact: np.ndarray  # (R,) product of the step ratios of the `window` steps before each row


def _layout(data: LoggedTrajectories, index: str, window: int = 0) -> _Layout:
    i, t = np.nonzero(data.mask)  # row-major: customer by customer, step by step
    R = i.size
    length = data.mask.sum(axis=1)
    slot = t if index == "step" else (data.horizon - length[i]) + t  # "left": H - decisions left
    flat = np.full(data.mask.shape, -1, np.int64)
    flat[i, t] = np.arange(R)
    prev = np.where(t > 0, flat[i, np.maximum(t - 1, 0)], -1)
    cell = data.cell[i, t]
    order = np.argsort(slot, kind="stable")
    bounds = np.flatnonzero(np.diff(slot[order])) + 1
    slots = []
    for rows in np.split(order, bounds):
        uc, loc = np.unique(cell[rows], return_inverse=True)
        slots.append((rows, prev[rows], loc.ravel(), uc.size))
    rho = data.target_prob[i, t] / data.pscore[i, t]
    anc, exact = np.arange(R), np.ones(R)
    for _ in range(window):
        has = anc >= 0
        exact[has] *= np.where(prev[anc[has]] >= 0, rho[np.maximum(prev[anc[has]], 0)], 1.0)
        anc = np.where(has, prev[np.maximum(anc, 0)], -1)
    return _Layout(cust=i, t=t, rho=rho, slots=slots, anc=anc, exact=exact)


@dataclass(frozen=True)
class _Marginal(_Sequential):
    """Finite-horizon marginalized importance sampling on discretised states (`LoggedTrajectories.cell`).

    The weight of a logged step is w_t(s_t) rho_t, rho_t = pi(a_t|s_t) / pi0(a_t|s_t), where
    w_t(c) = d^pi_t(c) / d^mu_t(c) is the ratio of the candidate's to the logging policy's share of
    customers in cell c at ratio index t, estimated forward (Xie, Ma & Wang 2019, "Towards optimal
    off-policy evaluation for reinforcement learning with marginalized importance sampling",
    NeurIPS, eq. (5)-(6), the state-marginal recursion):

        d^mu_t(c) = (1/n) sum_i 1[s_it = c]
        d^pi_t(c) = (1/n) sum_i 1[s_it = c] x (1 at the customer's first step, else w_{t-1}(s_i,t-1) rho_i,t-1)

    index: "step" (t = the customer's decision index, so a cell at t holds customers who have lived
    under t of the candidate's decisions; trajectories end on a calendar the actions do not change)
    or "left" (t = horizon - decisions left: customers enter at their first decision with ratio 1,
    aligned on the end of the window, as FQE's stages are).
    window: k >= 0 steps before each step whose ratios are kept exact: the state weight of step t is
    w_{t-k}(s_{t-k}) prod_{j=t-k}^{t-1} rho_j (k = 0: MIS; k >= T: per-decision IS, `PDIS`), for
    rewards that depend on the last k actions beyond what the cell records.
    normalise: rescale each index's d^pi so that its mass over the cells with logged mass equals the
    logged number of customers at that index (the number of customers at an index does not depend
    on the policy when the calendar does not; this also puts back the mass that flowed into cells
    with no logged customer at that index, proportionally). A weighted (self-normalised) variant,
    as WPDIS is of PDIS.

    Every statistic is a sum over customers, so a bootstrap resample (customer counts) re-estimates
    the ratios on the resample (`_from_counts`), which keeps the intervals honest.
    """

    index: str = "step"
    normalise: bool = True
    window: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.index not in MIS_INDEXES:
            raise ValueError(f"{self.name}: index must be one of {', '.join(MIS_INDEXES)}, got {self.index!r}")
        if not isinstance(self.normalise, (bool, np.bool_)):
            raise ValueError(f"{self.name}: normalise must be True or False, got {self.normalise!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) or self.window < 0:
            raise ValueError(f"{self.name}: window must be an integer >= 0, got {self.window!r}")

    def _check(self, data) -> None:
        super()._check(data)
        if data.cell is None:
            raise ValueError(f"{self.name}: needs LoggedTrajectories.cell (a discretised state per step)")

    def _row_terms(self, data) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) per valid step: the term is g^t w_t(s_t) (rho_t a + b)."""
        raise NotImplementedError

    def _ratios(self, data, lay: _Layout, counts: np.ndarray) -> np.ndarray:
        """w_t(s_it) at every valid step for every resample: counts (B, n) -> (B, R)."""
        B = counts.shape[0]
        W = np.zeros((B, lay.rho.size))
        for rows, prev, loc, K in lay.slots:
            cw = counts[:, lay.cust[rows]]
            flow = np.ones((B, rows.size))
            has = prev >= 0
            flow[:, has] = W[:, prev[has]] * lay.rho[prev[has]]
            off = (np.arange(B)[:, None] * K + loc[None, :]).ravel()
            d_pi = np.bincount(off, weights=(cw * flow).ravel(), minlength=B * K).reshape(B, K)
            d_mu = np.bincount(off, weights=cw.ravel(), minlength=B * K).reshape(B, K)
            w = _safe_div(d_pi, d_mu)
            if self.normalise:
                w *= _safe_div(d_mu.sum(axis=1), (d_pi * (d_mu > 0)).sum(axis=1))[:, None]
            W[:, rows] = w[:, loc]
        return W

    def _state_weights(self, data, lay: _Layout, counts: np.ndarray) -> np.ndarray:
        """The weight of the state at every valid step, (B, R): w_{t-k}(s_{t-k}) times the exact step
        ratios of the k = `window` steps before (w_{-1} = 1 before a trajectory's start)."""
        W = self._ratios(data, lay, counts)
        has = lay.anc >= 0
        H = np.ones_like(W)
        H[:, has] = W[:, lay.anc[has]]
        return H * lay.exact

    def _from_counts(self, data, counts: np.ndarray) -> np.ndarray:
        """The estimate on resamples given as customer counts (B, n) (ratios re-estimated), (B,)."""
        self._check(data)
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[1] != data.n:
            raise ValueError(f"{self.name}: counts must be (B, {data.n}), got shape {counts.shape}")
        lay = _layout(data, self.index, self.window)
        a, b = self._row_terms(data)
        g = self.discount ** lay.t.astype(np.float64)
        out = np.empty(counts.shape[0])
        step = max(1, _BOOT_CELLS // max(lay.rho.size, 1))
        for s in range(0, counts.shape[0], step):
            c = counts[s : s + step]
            W = self._state_weights(data, lay, c)
            terms = c[:, lay.cust] * W * (lay.rho * a + b) * g
            out[s : s + step] = _safe_div(terms.sum(axis=1), c.sum(axis=1))
        return out

    def estimate(self, data) -> float:
        return float(self._from_counts(data, np.ones((1, data.n)))[0])

    def estimate_per_sample(self, data) -> np.ndarray:
        self._check(data)
        lay = _layout(data, self.index, self.window)
        a, b = self._row_terms(data)
        W = self._state_weights(data, lay, np.ones((1, data.n)))[0]
        g = self.discount ** lay.t.astype(np.float64)
        return np.bincount(lay.cust, weights=W * (lay.rho * a + b) * g, minlength=data.n)

    def estimate_from_indices(self, data, idx) -> float | np.ndarray:
        self._check(data)
        idx = np.asarray(idx)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim not in (1, 2) or idx.shape[-1] == 0:
            raise ValueError(f"{self.name}: idx must be a non-empty int array (m,) or (B, m)")
        rows = np.atleast_2d(idx)
        counts = np.stack([np.bincount(r, minlength=data.n) for r in rows]).astype(np.float64)
        out = self._from_counts(data, counts)
        return float(out[0]) if idx.ndim == 1 else out

    def _stats(self, data):
        return self.estimate_per_sample(data)[:, None]  # full-sample ratios: not for resampling

    def _combine(self, sums, m):
        return sums[..., 0] / m

    def diagnostics(self, data) -> dict:
        """Weight health of the marginal weights w_t(s_t) rho_t: Kish ESS per ratio index (median
        and minimum over indices with at least 10 logged customers), the largest state ratio and
        the number of cells."""
        self._check(data)
        lay = _layout(data, self.index, self.window)
        W = self._state_weights(data, lay, np.ones((1, data.n)))[0]
        mu = W * lay.rho
        ess = [kish_ess(mu[rows]) for rows, *_ in lay.slots if rows.size >= 10]
        return {
            "ess": float(np.median(ess)) if ess else 0.0,
            "ess_min_step": float(np.min(ess)) if ess else 0.0,
            "max_state_ratio": float(W.max()) if W.size else 0.0,
            "cells": int(np.unique(data.cell[data.mask]).size),
            "ratio_index": self.index,
        }


@dataclass(frozen=True)
class MIS(_Marginal, _Sequential):
    """mis: finite-horizon marginalized IS (Xie, Ma & Wang 2019, eq. (4)): the mean over customers
    of sum_t g^t w_t(s_t) rho_t r_t, with the state ratios w_t of `_Marginal`."""

    name: ClassVar[str] = "mis"

    def _row_terms(self, data):
        i, t = np.nonzero(data.mask)
        return data.reward[i, t], np.zeros(i.size)


@dataclass(frozen=True)
class DRL(_Marginal, _Sequential):
    """drl: double reinforcement learning (Kallus & Uehara 2020, "Double reinforcement learning for
    efficient off-policy evaluation in Markov decision processes", JMLR 21(167), the finite-horizon
    efficient-influence-function estimator, their eq. (6) with the state-marginal ratio; SCOPE-RL's
    state-marginal DR): the mean over customers of

        sum_t g^t [ w_t(s_t) rho_t (r_t - q_hat_t(s_t, a_t)) + w_t(s_t) v_hat_t(s_t) ],

    w_t the state ratios of `_Marginal`, q_hat / v_hat the cross-fitted FQE (experiments.ope.models,
    `LoggedTrajectories.q_hat`, `v_hat`). Consistent if either the ratios or the Q-model are (w_0 = 1
    leaves sum v_hat_0 when the ratios are exact and the model's errors cancel in expectation);
    the ratios are re-estimated on every bootstrap resample, the Q-model is not (it is cross-fitted)."""

    name: ClassVar[str] = "drl"
    normalise: bool = False  # the correction terms have mean zero: no renormalising of the ratios

    def _row_terms(self, data):
        _need_models(self.name, data)
        i, t = np.nonzero(data.mask)
        q = data.q_logged()
        return data.reward[i, t] - q[i, t], data.v_hat[i, t]
