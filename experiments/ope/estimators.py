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

from .base import (
    _BOOT_CELLS,
    _Clipped,
    _discounts,
    _dm_term,
    _lagged,
    _MeanEstimator,
    _need_models,
    _residual,
    _safe_div,
    _Sequential,
    kish_ess,
)
from .logged import LoggedBandit, LoggedTrajectories
from .marginal import DRL, MIS, _Marginal

THIN_SUPPORT_ESS_SHARE = 0.01


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
