"""The read-out's two-arm estimators (experiments.readout, experiments.readout_strata): the difference
in means with Welch's interval and its CUPED regression adjustment on pre-period behaviour."""

from __future__ import annotations

from typing import Any

import numpy as np

LEVEL = 0.95


def welch(y_t: np.ndarray, y_c: np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """Difference in means (treatment - control) with Welch's interval (Welch-Satterthwaite df)."""
    from scipy import stats

    y_t, y_c = np.asarray(y_t, np.float64), np.asarray(y_c, np.float64)
    nt, nc = y_t.size, y_c.size
    out: dict[str, Any] = {"n_treatment": int(nt), "n_control": int(nc)}
    if nt < 2 or nc < 2:
        m = float(y_t.mean() - y_c.mean()) if nt and nc else float("nan")
        return {**out, "mean": m, "se": None, "df": None, "ci_low": None, "ci_high": None}
    vt, vc = y_t.var(ddof=1) / nt, y_c.var(ddof=1) / nc
    se = float(np.sqrt(vt + vc))
    m = float(y_t.mean() - y_c.mean())
    if se == 0:
        return {**out, "mean": m, "se": 0.0, "df": float(nt + nc - 2), "ci_low": m, "ci_high": m}
    df = float((vt + vc) ** 2 / (vt**2 / (nt - 1) + vc**2 / (nc - 1))) if vt + vc > 0 else float(nt + nc - 2)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return {**out, "mean": m, "se": se, "df": df, "ci_low": m - half, "ci_high": m + half}


def cuped(y: np.ndarray, x: np.ndarray, treated: np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """CUPED (Deng et al. 2013): Welch's contrast of Y - theta (X - mean X), theta = cov(Y, X) / var(X)
    over both groups pooled; `theta`, `correlation` (of Y and X, pooled) and `variance_reduction`
    (1 - var(adjusted) / var(Y), pooled) beside it. theta is 0 when X does not vary."""
    y, x, t = np.asarray(y, np.float64), np.asarray(x, np.float64), np.asarray(treated, bool)
    vx = float(x.var(ddof=1)) if x.size > 1 else 0.0
    theta = float(np.cov(y, x, ddof=1)[0, 1] / vx) if vx > 0 else 0.0
    adj = y - theta * (x - x.mean())
    vy = float(y.var(ddof=1)) if y.size > 1 else 0.0
    rho = float(np.corrcoef(y, x)[0, 1]) if vx > 0 and vy > 0 else 0.0
    out = welch(adj[t], adj[~t], level)
    out.update(
        {
            "theta": theta,
            "correlation": rho,
            "variance_reduction": float(1.0 - adj.var(ddof=1) / vy) if vy > 0 else 0.0,
        }
    )
    return out


def roi_document(earnings: dict[str, Any], incremental_cost: float) -> dict[str, Any]:
    """The read-out's ROI entry: incremental earnings (an interval of `welch`/`cuped`) over the
    incremental cost. The cost is fixed by the assignment, so the ratio's interval is the earnings'
    interval over it; no ratio without a positive cost or an earnings estimate."""
    m = earnings["mean"]
    out: dict[str, Any] = {"incremental_margin": m, "incremental_cost": incremental_cost}
    if incremental_cost <= 0 or m is None:
        return {**out, "roi": None, "ci_low": None, "ci_high": None, "net_roi": None}
    lo, hi = earnings["ci_low"], earnings["ci_high"]
    return {
        **out,
        "roi": m / incremental_cost,
        "ci_low": None if lo is None else lo / incremental_cost,
        "ci_high": None if hi is None else hi / incremental_cost,
        "net_roi": (m - incremental_cost) / incremental_cost,
    }
