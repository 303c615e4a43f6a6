"""Spend model: Gamma-Gamma (Fader, Hardie & Lee 2005) for the value of each transaction.

Each transaction value z ~ Gamma(p, ν) (shape p, rate ν), independent across a customer's
transactions; across customers ν ~ Gamma(q, γ). For a customer with x transactions whose values
average m̄ (the "mean spend"), the likelihood of (x, m̄) is

  L = Γ(px+q) / (Γ(px) Γ(q)) · γ^q · m̄^(px-1) x^(px) / (γ + m̄x)^(px+q)

(FHL 2005, "RFM and CLV: Using Iso-Value Curves for Customer Base Analysis", and Fader & Hardie's note
"The Gamma-Gamma Model of Monetary Value"), and ν | data ~ Gamma(px+q, γ+m̄x), so the expected value of
the next transaction is p(γ + m̄x)/(px + q - 1).

The fit (`fit_gamma_gamma`) uses customers with x > 0 and m̄ > 0 only, maximises the log-likelihood in
log-parameters with L-BFGS-B and the analytic gradient, and reports standard errors from the numerical
Hessian (see `sim.btyd.FitInfo`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.special import digamma, gammaln

from sim.btyd import FitInfo, _fit_loglinear, _Model

__all__ = ["GammaGamma", "fit_gamma_gamma"]


def _spend_arrays(x: Any, mean_spend: Any) -> tuple[np.ndarray, np.ndarray]:
    x, m = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(mean_spend, dtype=np.float64))
    x = np.atleast_1d(x).astype(np.float64)
    m = np.atleast_1d(m).astype(np.float64)
    if np.any(~np.isfinite(x)) or np.any(x < 0):
        raise ValueError("x (number of transactions averaged) must be finite and >= 0")
    return x, m


@dataclass(frozen=True)
class GammaGamma(_Model):
    """Gamma-Gamma spend model: value of a transaction ~ Gamma(p, ν), ν ~ Gamma(q, γ) (shape, rate)."""

    p: float
    q: float
    gamma: float
    name: ClassVar[str] = "gamma_gamma"
    _param_names: ClassVar[tuple[str, ...]] = ("p", "q", "gamma")

    def mean_spend(self) -> float:
        """Population mean transaction value pγ/(q-1) (inf when q <= 1)."""
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1.0 else float("inf")

    def posterior_nu(self, x, mean_spend) -> tuple[np.ndarray, np.ndarray]:
        """ν | data ~ Gamma(px + q, γ + m̄x) as (shape, rate). Rows with x = 0 get the prior (m̄ ignored)."""
        x, m = _spend_arrays(x, mean_spend)
        mx = np.where(x > 0, m * x, 0.0)
        return self.p * x + self.q, self.gamma + mx

    def conditional_expected_spend(self, x, mean_spend) -> np.ndarray:
        """E[value of a transaction | x, m̄] = p(γ + m̄x)/(px + q - 1): a weighted average of the
        population mean pγ/(q-1) and m̄, with weight px/(px+q-1) on m̄. inf when px + q <= 1."""
        shape, rate = self.posterior_nu(x, mean_spend)
        with np.errstate(divide="ignore"):
            return np.where(shape > 1.0, self.p * rate / np.maximum(shape - 1.0, 1e-300), np.inf)

    def loglik(self, x, mean_spend) -> np.ndarray:
        """Per-customer log-likelihood of (x, m̄) (rows need x > 0 and m̄ > 0)."""
        x, m = _spend_arrays(x, mean_spend)
        if np.any(x <= 0) or np.any(~(m > 0)):
            raise ValueError("loglik needs x > 0 and mean_spend > 0")
        return _gg_terms(self.params, _GGData(x, m), False)[0]


class _GGData:
    """Rows plus the distinct x values (the special functions depend on x only)."""

    __slots__ = ("x", "m", "log_m", "log_x", "xv", "xi")

    def __init__(self, x: np.ndarray, m: np.ndarray):
        self.x, self.m = x, m
        self.log_m, self.log_x = np.log(m), np.log(x)
        self.xv, self.xi = np.unique(x, return_inverse=True)


def _gg_terms(params, data: _GGData, want_grad: bool):
    """Per-row log-likelihood and gradient wrt (p, q, γ)."""
    p, q, g = params
    x, m = data.x, data.m
    px = p * x
    pxv = p * data.xv
    xi = data.xi
    lgm = np.log(g + m * x)
    ll = (
        (gammaln(pxv + q) - gammaln(pxv))[xi]
        - gammaln(q)
        + q * np.log(g)
        + (px - 1.0) * data.log_m
        + px * data.log_x
        - (px + q) * lgm
    )
    if not want_grad:
        return ll, None, None
    psi_v = digamma(pxv + q)
    psi = psi_v[xi]
    grad = np.empty((x.size, 3))
    grad[:, 0] = x * ((psi_v - digamma(pxv))[xi] + data.log_m + data.log_x - lgm)
    grad[:, 1] = psi - digamma(q) + np.log(g) - lgm
    grad[:, 2] = q / g - (px + q) / (g + m * x)
    return ll, None, grad


def fit_gamma_gamma(x, mean_spend, weights=None) -> tuple[GammaGamma, FitInfo]:
    """Maximum-likelihood Gamma-Gamma fit on the rows with x > 0 and mean_spend > 0.

    x: number of transactions whose values are averaged (e.g. repeat transactions in calibration);
    mean_spend: their average value; weights: optional row counts.
    """
    t0 = time.perf_counter()
    x, m = _spend_arrays(x, mean_spend)
    if weights is None:
        w = np.ones_like(x)
    else:
        w = np.broadcast_to(np.asarray(weights, dtype=np.float64), x.shape).astype(np.float64)
        if np.any(~np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite and >= 0")
    keep = (x > 0) & np.isfinite(m) & (m > 0) & (w > 0)
    x, m, w = x[keep], m[keep], w[keep]
    if x.size == 0:
        raise ValueError("fit_gamma_gamma: no rows with x > 0 and mean_spend > 0")
    # moment-based start: per-customer means have E = pγ/(q-1); take p = 2, q = 3
    mbar = float(w @ m / w.sum())
    th0 = np.array([2.0, 3.0, mbar])
    th, f, conv, nit, se = _fit_loglinear(_gg_terms, GammaGamma._param_names, th0, _GGData(x, m), w)
    info = FitInfo(f, int(round(w.sum())), int(x.size), time.perf_counter() - t0, conv, nit, se)
    return GammaGamma(*th), info
