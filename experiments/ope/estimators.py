"""Off-policy evaluation (OPE) estimators: the value of a candidate policy from logged decisions.

Estimator core on plain numpy arrays, in the style of Open Bandit Pipeline (each estimator a small
frozen dataclass with a `name` key). Data plumbing, the Ray bootstrap and the CLI live elsewhere.

One-step (contextual bandit) data, `LoggedBandit` (experiments.ope.logged):
- `DirectMethod` ("dm"): mean over samples of sum_a pi(a|x) r_hat(x, a).
- `IPS` ("ips"): mean of w r with w = pi(a|x) / pi0(a|x), optionally clipped at `clip`.
- `SNIPS` ("snips"): sum w r / sum w. Swaminathan & Joachims (2015), "The self-normalized
  estimator for counterfactual learning", NeurIPS.
- `DoublyRobust` ("dr"): DM + w (r - r_hat(x, a)). Dudik, Langford & Li (2011), "Doubly robust
  policy evaluation and learning", ICML.
- `SelfNormalizedDR` ("sndr"): DM + sum w (r - r_hat) / sum w (as in Open Bandit Pipeline).

Sequential data, `LoggedTrajectories` (customers x steps, padded, with a prefix `mask`):
- `PDIS` ("pdis"): per-decision importance sampling, sum_t g^t w_t r_t with w_t the cumulative
  product of step ratios. Precup, Sutton & Singh (2000), "Eligibility traces for off-policy
  policy evaluation", ICML.
- `WPDIS` ("wpdis"): weighted PDIS, sum_t g^t sum_i w_it r_it / sum_i w_it (Precup et al. 2000;
  Thomas 2015 PhD thesis; Thomas & Brunskill 2016).
- `SequentialDR` ("dr_seq"): Jiang & Li (2016), "Doubly robust off-policy value evaluation for
  reinforcement learning", ICML: V = v_hat(s_t) + rho_t (r_t + g V_{t+1} - q_hat(s_t, a_t)),
  unrolled to sum_t g^t [w_t (r_t - q_t) + w_{t-1} v_t], w_{-1} = 1.
- `WDR` ("wdr"): Thomas & Brunskill (2016), "Data-efficient off-policy policy evaluation for
  reinforcement learning", ICML: the same with w_t replaced by w_t / mean_i w_it.
- `MIS` ("mis"): finite-horizon marginalized importance sampling, sum_t g^t w_t(s_t) rho_t r_t with
  w_t(s) = d^pi_t(s) / d^mu_t(s) the state-distribution ratio on discretised states
  (`LoggedTrajectories.cell`, experiments.ope.marginal), estimated forward step by step. Xie, Ma &
  Wang (2019), "Towards optimal off-policy evaluation for reinforcement learning with marginalized
  importance sampling", NeurIPS.
- `DRL` ("drl"): its doubly robust form with the FQE model, sum_t g^t w_t(s_t) [rho_t (r_t - q_t) +
  v_t]. Kallus & Uehara (2020), "Double reinforcement learning for efficient off-policy evaluation
  in Markov decision processes", JMLR.
- `FQE` ("fqe"): the model's own answer, mean over customers of v_hat at their first step
  (fitted Q evaluation, Le, Voloshin & Yue 2019, "Batch policy learning under constraints";
  the fitting is in experiments.ope.models).

Every estimator has `estimate_per_sample(data) -> (n,)` (per sample or per customer) whose mean is
the estimate, `estimate(data) -> float` and `estimate_from_indices(data, idx)` (the estimate on a
resample). For the ratio estimators (snips, sndr, wpdis, wdr) the per-sample terms use the
FULL-SAMPLE normaliser (e.g. SNIPS term_i = w_i r_i / mean(w)), so their mean equals the estimate
but resampling those terms would freeze the normaliser; `estimate_from_indices` and `bootstrap_ci`
recompute the normaliser on every resample. Internally each estimator reduces the data to additive
per-sample statistics (`_stats`, shape (n, k)) and a combination of their sums (`_combine`); this
makes the bootstrap a matrix product of resample counts with the statistics.

Conventions: a ratio whose normaliser is zero (no logged sample has weight) contributes 0. In
trajectories, steps after the end of a customer's trajectory (mask False) are treated as an
absorbing state: reward 0, step ratio 1, q_hat = v_hat = 0, so the cumulative weight is carried
forward and the per-step normalisers of WPDIS/WDR average over ALL customers. This keeps
E[w_t] = 1 at every t even when the end of a trajectory depends on the actions taken, which
normalising over only the still-active customers would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .logged import LoggedBandit, LoggedTrajectories

THIN_SUPPORT_ESS_SHARE = 0.01
_BOOT_CELLS = 4_000_000  # resample-count cells (chunk rows x n) held in memory at once by bootstrap_ci


# ----------------------------------------------------------------------------------------------
# estimator base


def _safe_div(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=np.broadcast_to(den != 0, out.shape))
    return out


class _Estimator:
    """Shared interface. Subclasses define `name`, `_data_type`, `_stats` and `_combine`."""

    name: ClassVar[str] = ""
    _data_type: ClassVar[type] = object

    def _check(self, data) -> None:
        if not isinstance(data, self._data_type):
            raise TypeError(f"{self.name}: expects {self._data_type.__name__}, got {type(data).__name__}")

    def _stats(self, data) -> np.ndarray:
        """Additive per-sample statistics, (n, k)."""
        raise NotImplementedError

    def _combine(self, sums: np.ndarray, m: int) -> np.ndarray:
        """The estimate from column sums (..., k) of `_stats` over m (re)samples."""
        raise NotImplementedError

    def estimate_per_sample(self, data) -> np.ndarray:
        """Per-sample (per-customer) terms whose mean is the estimate (full-sample normalisers)."""
        raise NotImplementedError

    def estimate(self, data) -> float:
        self._check(data)
        stats = self._stats(data)
        return float(self._combine(stats.sum(axis=0), stats.shape[0]))

    def estimate_from_indices(self, data, idx) -> float | np.ndarray:
        """The estimate on the resample data[idx] (normalisers recomputed on the resample).

        idx: int array (m,) -> float; or (B, m), B resamples at once -> (B,).
        """
        self._check(data)
        idx = np.asarray(idx)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim not in (1, 2) or idx.shape[-1] == 0:
            raise ValueError(f"{self.name}: idx must be a non-empty int array (m,) or (B, m)")
        stats = self._stats(data)
        out = self._combine(stats[idx].sum(axis=-2), idx.shape[-1])
        return float(out) if idx.ndim == 1 else np.asarray(out, dtype=np.float64)


class _MeanEstimator(_Estimator):
    """Estimators that are the plain mean of their per-sample terms (no normaliser to resample)."""

    def _stats(self, data):
        return self.estimate_per_sample(data)[:, None]

    def _combine(self, sums, m):
        return sums[..., 0] / m


@dataclass(frozen=True)
class _Clipped(_Estimator):
    """Importance weights capped at `clip` (None: no cap)."""

    clip: float | None = None

    def __post_init__(self):
        _check_clip(self.name, self.clip)


@dataclass(frozen=True)
class _Sequential(_Estimator):
    """Estimators over trajectories, with per-step `discount` in [0, 1]."""

    discount: float = 1.0
    _data_type: ClassVar[type] = LoggedTrajectories

    def __post_init__(self):
        _check_discount(self.name, self.discount)


def _need_reward_hat(name: str, data: LoggedBandit) -> np.ndarray:
    if data.reward_hat is None:
        raise ValueError(f"{name}: needs LoggedBandit.reward_hat (a reward model's predictions)")
    return data.reward_hat


def _check_clip(name: str, clip) -> None:
    if clip is not None and not (np.isfinite(clip) and clip > 0):
        raise ValueError(f"{name}: clip must be a positive number or None, got {clip!r}")


def _dm_term(name: str, data: LoggedBandit) -> np.ndarray:
    return (data.target * _need_reward_hat(name, data)).sum(axis=1)


def _residual(name: str, data: LoggedBandit) -> np.ndarray:
    r_hat = _need_reward_hat(name, data)
    return data.reward - r_hat[np.arange(data.n), data.action]


# ----------------------------------------------------------------------------------------------
# one-step estimators


@dataclass(frozen=True)
class DirectMethod(_MeanEstimator):
    """dm: mean_i sum_a pi(a|x_i) r_hat(x_i, a). Unbiased only if the reward model is."""

    name: ClassVar[str] = "dm"
    _data_type: ClassVar[type] = LoggedBandit

    def estimate_per_sample(self, data):
        self._check(data)
        return _dm_term(self.name, data)


@dataclass(frozen=True)
class IPS(_Clipped, _MeanEstimator):
    """ips: mean_i w_i r_i, w = pi/pi0 clipped at `clip` (clipping trades bias for variance)."""

    name: ClassVar[str] = "ips"
    _data_type: ClassVar[type] = LoggedBandit

    def estimate_per_sample(self, data):
        self._check(data)
        return data.weights(self.clip) * data.reward


@dataclass(frozen=True)
class SNIPS(_Clipped):
    """snips: sum w r / sum w, w clipped at `clip`. Per-sample term w_i r_i / mean(w) (full-sample normaliser)."""

    name: ClassVar[str] = "snips"
    _data_type: ClassVar[type] = LoggedBandit

    def _stats(self, data):
        w = data.weights(self.clip)
        return np.column_stack([w * data.reward, w])

    def _combine(self, sums, m):
        return _safe_div(sums[..., 0], sums[..., 1])

    def estimate_per_sample(self, data):
        self._check(data)
        w = data.weights(self.clip)
        return _safe_div(w * data.reward, w.mean())


@dataclass(frozen=True)
class DoublyRobust(_Clipped, _MeanEstimator):
    """dr: mean_i [sum_a pi(a|x_i) r_hat(x_i, a) + w_i (r_i - r_hat(x_i, a_i))], w clipped at `clip`."""

    name: ClassVar[str] = "dr"
    _data_type: ClassVar[type] = LoggedBandit

    def estimate_per_sample(self, data):
        self._check(data)
        return _dm_term(self.name, data) + data.weights(self.clip) * _residual(self.name, data)


@dataclass(frozen=True)
class SelfNormalizedDR(_Clipped):
    """sndr: mean(dm_i) + sum w (r - r_hat(a)) / sum w, w clipped at `clip`. Per-sample: dm_i + w_i res_i / mean(w)."""

    name: ClassVar[str] = "sndr"
    _data_type: ClassVar[type] = LoggedBandit

    def _stats(self, data):
        w = data.weights(self.clip)
        return np.column_stack([_dm_term(self.name, data), w * _residual(self.name, data), w])

    def _combine(self, sums, m):
        return sums[..., 0] / m + _safe_div(sums[..., 1], sums[..., 2])

    def estimate_per_sample(self, data):
        self._check(data)
        w = data.weights(self.clip)
        return _dm_term(self.name, data) + _safe_div(w * _residual(self.name, data), w.mean())


# ----------------------------------------------------------------------------------------------
# sequential estimators


def _check_discount(name: str, discount) -> None:
    if not (np.isfinite(discount) and 0 <= discount <= 1):
        raise ValueError(f"{name}: discount must be in [0, 1], got {discount!r}")


def _need_models(name: str, data: LoggedTrajectories) -> None:
    if data.q_hat is None:
        raise ValueError(f"{name}: needs LoggedTrajectories.q_hat and v_hat")


def _discounts(discount: float, T: int) -> np.ndarray:
    return discount ** np.arange(T, dtype=np.float64)


def _lagged(w: np.ndarray) -> np.ndarray:
    """w_{t-1} with w_{-1} = 1, (n, T)."""
    return np.concatenate([np.ones((w.shape[0], 1)), w[:, :-1]], axis=1)


@dataclass(frozen=True)
class PDIS(_Sequential, _MeanEstimator):
    """pdis: per-customer value sum_t g^t w_t r_t, w_t the cumulative product of step ratios."""

    name: ClassVar[str] = "pdis"

    def estimate_per_sample(self, data):
        self._check(data)
        g = _discounts(self.discount, data.horizon)
        return (data.cumulative_weights() * data.reward) @ g


@dataclass(frozen=True)
class WPDIS(_Sequential):
    """wpdis: sum_t g^t sum_i w_it r_it / sum_i w_it (weighted per-decision IS).

    The normaliser at step t averages w_t over all customers (ended trajectories carry their
    weight forward with reward 0, see the module docstring). Per-customer term:
    sum_t g^t w_it r_it / mean_j w_jt.
    """

    name: ClassVar[str] = "wpdis"

    def _stats(self, data):
        g = _discounts(self.discount, data.horizon)
        w = data.cumulative_weights()
        return np.concatenate([w * data.reward * g, w], axis=1)

    def _combine(self, sums, m):
        T = sums.shape[-1] // 2
        return _safe_div(sums[..., :T], sums[..., T:]).sum(axis=-1)

    def estimate_per_sample(self, data):
        self._check(data)
        g = _discounts(self.discount, data.horizon)
        w = data.cumulative_weights()
        return (_safe_div(w * data.reward, w.mean(axis=0))) @ g


@dataclass(frozen=True)
class SequentialDR(_Sequential, _MeanEstimator):
    """dr_seq: Jiang & Li (2016) DR, per customer sum_t g^t [w_t (r_t - q_hat_t) + w_{t-1} v_hat_t]."""

    name: ClassVar[str] = "dr_seq"

    def estimate_per_sample(self, data):
        self._check(data)
        _need_models(self.name, data)
        g = _discounts(self.discount, data.horizon)
        w = data.cumulative_weights()
        return (w * (data.reward - data.q_logged()) + _lagged(w) * data.v_hat) @ g


@dataclass(frozen=True)
class WDR(_Sequential):
    """wdr: Thomas & Brunskill (2016) weighted DR: DR with w_t -> w_t / mean_i w_it (and
    w_{-1} = 1). Per-customer term uses the full-sample step normalisers."""

    name: ClassVar[str] = "wdr"

    def _stats(self, data):
        _need_models(self.name, data)
        g = _discounts(self.discount, data.horizon)
        w = data.cumulative_weights()
        return np.concatenate([w * (data.reward - data.q_logged()) * g, _lagged(w) * data.v_hat * g, w], axis=1)

    def _combine(self, sums, m):
        T = sums.shape[-1] // 3
        c, d, wsum = sums[..., :T], sums[..., T : 2 * T], sums[..., 2 * T :]
        w_lag = np.concatenate([np.full(wsum.shape[:-1] + (1,), float(m)), wsum[..., :-1]], axis=-1)
        return (_safe_div(c, wsum) + _safe_div(d, w_lag)).sum(axis=-1)

    def estimate_per_sample(self, data):
        self._check(data)
        _need_models(self.name, data)
        g = _discounts(self.discount, data.horizon)
        w = data.cumulative_weights()
        wl = _lagged(w)
        return (
            _safe_div(w * (data.reward - data.q_logged()), w.mean(axis=0)) + _safe_div(wl * data.v_hat, wl.mean(axis=0))
        ) @ g


@dataclass(frozen=True)
class FQE(_Sequential, _MeanEstimator):
    """fqe: mean_i v_hat(s_i0), the fitted Q-function's value of each customer's first state
    (discounting is inside the fitted model; `discount` is kept for a uniform interface)."""

    name: ClassVar[str] = "fqe"

    def estimate_per_sample(self, data):
        self._check(data)
        _need_models(self.name, data)
        return data.v_hat[:, 0].copy()


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


# ----------------------------------------------------------------------------------------------
# diagnostics


def weight_diagnostics(data: LoggedBandit | LoggedTrajectories) -> dict:
    """Importance-weight health (unclipped weights; for trajectories the whole-trajectory weight).

    n; ess: Kish effective sample size (sum w)^2 / sum w^2; ess_share = ess / n; max_weight;
    mean_weight (should be close to 1 when the logging propensities are right and the candidate
    policy stays within their support); zero_target_share: share of samples (customers) where the
    candidate policy gives zero probability to a logged action.
    """
    if isinstance(data, LoggedBandit):
        w = data.weights()
        zero = data.target_pscore == 0
    elif isinstance(data, LoggedTrajectories):
        w = data.cumulative_weights()[:, -1]
        zero = ((data.target_prob == 0) & data.mask).any(axis=1)
    else:
        raise TypeError(f"weight_diagnostics: expects LoggedBandit or LoggedTrajectories, got {type(data).__name__}")
    n = w.shape[0]
    ess = kish_ess(w)
    return {
        "n": n,
        "ess": ess,
        "ess_share": ess / n,
        "max_weight": float(w.max()),
        "mean_weight": float(w.mean()),
        "zero_target_share": float(zero.mean()),
    }


def kish_ess(w: np.ndarray) -> float:
    """Kish's effective sample size of weights w: (sum w)^2 / sum w^2 (0 when every weight is 0)."""
    sq = float((w**2).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


def support_warning(diag: dict) -> str | None:
    """A one-line warning when the effective sample share is below THIN_SUPPORT_ESS_SHARE."""
    if diag["ess_share"] < THIN_SUPPORT_ESS_SHARE:
        return (
            f"thin support: effective sample size {diag['ess']:.1f} of {diag['n']} "
            f"({diag['ess_share']:.2%} < {THIN_SUPPORT_ESS_SHARE:.0%}); max weight "
            f"{diag['max_weight']:.3g}, mean weight {diag['mean_weight']:.3g}; the candidate "
            f"policy goes where the logging policy rarely went, estimates are unreliable"
        )
    return None


# ----------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_ci(
    estimator, data, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval: the alpha/2 and 1 - alpha/2 quantiles of
    `bootstrap_replicates`."""
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: alpha must be in (0, 1), got {alpha}")
    out = bootstrap_replicates(estimator, data, n_boot, seed, groups)
    low, high = np.quantile(out, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_replicates(estimator, data, n_boot: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """`n_boot` bootstrap estimates, resampling samples or, with `groups` (n,), whole groups (a
    cluster bootstrap: the decisions of one customer share their latent state, so they are
    resampled together).

    Resamples are drawn as idx = rng.integers(0, m, size=(b, m)) with rng =
    np.random.default_rng(seed), m the number of samples (groups), in chunks of b rows (b = n_boot
    when n_boot * m <= 4e6); without groups each row's estimate equals
    `estimator.estimate_from_indices(data, idx_row)`. It is computed as resample counts @
    per-sample (per-group) statistics, ratio normalisers recomputed per resample.
    """
    if n_boot < 1:
        raise ValueError(f"bootstrap: n_boot must be >= 1, got {n_boot}")
    estimator._check(data)
    marginal = isinstance(estimator, _Marginal)  # ratios re-estimated from the resample's counts
    stats = np.zeros((data.n, 0)) if marginal else estimator._stats(data)
    sizes = codes = None
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (stats.shape[0],):
            raise ValueError(f"bootstrap: groups has shape {groups.shape}, expected ({stats.shape[0]},)")
        _, codes = np.unique(groups, return_inverse=True)
        codes = codes.ravel()
        sizes = np.bincount(codes).astype(np.float64)
        g = np.zeros((sizes.size, stats.shape[1]))
        np.add.at(g, codes, stats)
        stats = g
    n = stats.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _BOOT_CELLS // n))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        idx += (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        if marginal:
            out[start : start + b] = estimator._from_counts(data, counts if codes is None else counts[:, codes])
            continue
        m = n if sizes is None else counts @ sizes
        out[start : start + b] = estimator._combine(counts @ stats, m)
    return out


# ----------------------------------------------------------------------------------------------
# registry


ESTIMATORS: dict[str, type] = {
    cls.name: cls
    for cls in (DirectMethod, IPS, SNIPS, DoublyRobust, SelfNormalizedDR, PDIS, WPDIS, SequentialDR, WDR, FQE, MIS, DRL)
}


def make_estimator(name: str, **kw):
    """An estimator by its registry name, e.g. make_estimator("ips", clip=20)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; known: {', '.join(sorted(ESTIMATORS))}")
    return ESTIMATORS[name](**kw)
