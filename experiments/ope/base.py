"""The estimators' shared machinery: the interface every estimator implements (additive per-sample
statistics and their combination, for exact bootstrap resamples), clipping, discounting and the
model terms' checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .logged import LoggedBandit, LoggedTrajectories

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


_BOOT_CELLS = 4_000_000  # resample-count cells (chunk rows x n) held in memory at once by bootstrap_ci


def kish_ess(w: np.ndarray) -> float:
    """Kish's effective sample size of weights w: (sum w)^2 / sum w^2 (0 when every weight is 0)."""
    sq = float((w**2).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0
