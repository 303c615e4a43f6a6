"""The stratified read-out (experiments.readout): when a deployment's control share differs between
strata (segments), the treatment-minus-control difference is taken within each stratum and the
strata's differences are combined with weights proportional to their sizes.

Why: a pooled difference in means compares a treatment arm that over-represents the strata with a
small control share with a control arm that over-represents those with a large one. When the strata
also differ in their outcome levels, the pooled contrast measures the level difference, not the lift
(Simpson's paradox). Within a stratum the randomisation is a plain coin with one share, so the
within-stratum difference is unbiased for the stratum's lift; the post-stratified estimator

    lift = sum_s w_s (mean_ts - mean_cs),   w_s = N_s / sum_s' N_s'
    var  = sum_s w_s^2 (var_ts / n_ts + var_cs / n_cs)

is unbiased for the lift per customer over the strata it covers (Imbens & Rubin 2015, ch. 9). Its
interval uses Student's t with the Welch-Satterthwaite degrees of freedom of the weighted sum. CUPED
is done within each stratum (theta_s = cov(Y, X) / var(X) over the stratum's two arms), then
combined the same way. A stratum with fewer than two customers in either arm cannot be measured: it
is left out, named in `left_out`, and the lift is over the other strata.

When is it used (`design`)? When the customers' control shares are not all equal: the deployment
file's `control_share` column (written by `clv plan --control-share`, experiments.deployment), else,
for files without it, the propensities of the held-out rows (a control row's propensity is its
probability of "none", the control share when the deployment had no exploration; rows at 1 are
customers the plan did not contact and say nothing). The strata are the segments (the file's
`segment` column, customers.csv's or the world's book), split further by control share when one
segment holds several shares; with no segments at all, the control shares themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from experiments.readout_estimators import cuped, roi_document, welch

STRATIFIED, POOLED = "stratified", "difference_in_means"


# --------------------------------------------------------------------------------------------
# the file's strata columns


def file_columns(raw: pd.DataFrame, file: str) -> dict[str, np.ndarray]:
    """The deployment file's optional strata columns, in the file's row order: `control_share`
    (float, in [0, 1)) and `segment` (text). Bad cells raise HistoryError naming file, row, column."""
    from sim.history import _Checks, _number_problem, _numbers, _text

    out: dict[str, np.ndarray] = {}
    ck = _Checks(raw, file)
    if "control_share" in raw.columns:
        v, text = _numbers(raw["control_share"])
        with np.errstate(invalid="ignore"):
            bad = ~((v >= 0) & (v < 1))

        def describe(pos: int) -> str:
            p = _number_problem("control_share", text(pos), v[pos]) or f"control_share is {text(pos)}"
            return f"{p}; a control share is the probability of the control draw, in [0, 1)"

        ck.add("control_share", bad, describe)
        out["control_share"] = v
    if "segment" in raw.columns:
        out["segment"] = _text(ck, raw["segment"], "segment", "give the segment the control share was set for")
        out["segment"] = out["segment"].to_numpy(dtype=object)
    ck.raise_first()
    return out


# --------------------------------------------------------------------------------------------
# which estimator


@dataclass
class Design:
    """The estimator the read-out uses and, when stratified, each customer's stratum."""

    estimator: str
    labels: np.ndarray | None  # (N,) stratum of every deployment row, None for the pooled estimator
    shares: dict[str, float | None] = field(default_factory=dict)  # stratum -> its control share (None: unknown)
    source: str | None = None  # where the control shares were read
    warning: str | None = None

    @property
    def stratified(self) -> bool:
        return self.estimator == STRATIFIED


def design(out: pd.DataFrame, segments: np.ndarray | None, segment_source: str | None = None) -> Design:
    """The estimator for the deployment rows `out` (group, propensity [, control_share]) and their
    `segments` (N,) or None (module docstring)."""
    control = (out["group"] == "control").to_numpy()
    if "control_share" in out.columns:
        share = out["control_share"].to_numpy(np.float64)
        source = "the deployment file's control_share column"
    else:
        share = None
        prop = out["propensity"].to_numpy(np.float64)
        source = "the held-out rows' propensities (the file has no control_share column)"
    if share is not None:
        if np.ptp(share) <= 1e-12:
            return Design(POOLED, None, source=source)
        if segments is None:
            labels = np.array([f"control share {s:.6g}" for s in share], dtype=object)
        else:  # a segment holding several shares is split by share: the coin is one within a stratum
            seg = pd.Series(np.asarray(segments, dtype=object).astype(str))
            several = pd.Series(share).groupby(seg.to_numpy()).transform(np.ptp).to_numpy() > 1e-12
            labels = np.where(several, seg + " @ " + pd.Series(share).map("{:.6g}".format), seg).astype(object)
        shares = {str(k): float(share[labels == k][0]) for k in pd.unique(labels)}
        return Design(STRATIFIED, labels, shares, source)
    held = control & (prop < 1.0)
    if not held.any() or np.ptp(prop[held]) <= 1e-12:
        return Design(POOLED, None, source=source)
    if segments is None:
        return Design(
            POOLED,
            None,
            source=source,
            warning="the held-out customers' propensities differ, so the control share may differ between customers, "
            "but the read-out has no segments to stratify by (give --world, or customers.csv's segment column, or "
            "write control_share and segment columns in the file): the difference in means may be biased",
        )
    seg = np.asarray(segments, dtype=object).astype(str)
    means = pd.Series(prop[held]).groupby(seg[held]).mean()
    if np.ptp(means.to_numpy()) <= 1e-12:  # one share in every segment: nothing to weight
        return Design(POOLED, None, source=source)
    shares = {str(k): (float(means[k]) if k in means.index else None) for k in pd.unique(seg)}
    return Design(STRATIFIED, seg.astype(object), shares, source)


# --------------------------------------------------------------------------------------------
# the estimator


def _combine(parts: list[tuple[float, float, float, float, int, int]], level: float) -> dict[str, Any]:
    """sum_s w_s d_s with var sum_s w_s^2 (v_ts + v_cs) and Welch-Satterthwaite df; `parts`: (weight,
    difference, v_t = var_t / n_t, v_c = var_c / n_c, n_t, n_c) of each stratum, weights summing to 1."""
    from scipy import stats

    nt = int(sum(p[4] for p in parts))
    nc = int(sum(p[5] for p in parts))
    out: dict[str, Any] = {"n_treatment": nt, "n_control": nc, "strata": len(parts)}
    if not parts:
        return {**out, "mean": None, "se": None, "df": None, "ci_low": None, "ci_high": None}
    mean = float(sum(w * d for w, d, *_ in parts))
    var = float(sum(w * w * (vt + vc) for w, _, vt, vc, _, _ in parts))
    den = sum((w * w * vt) ** 2 / (n_t - 1) + (w * w * vc) ** 2 / (n_c - 1) for w, _, vt, vc, n_t, n_c in parts)
    df = float(var**2 / den) if den > 0 else float(sum(p[4] + p[5] - 2 for p in parts))
    se = float(np.sqrt(var))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se if se > 0 else 0.0
    return {**out, "mean": mean, "se": se, "df": df, "ci_low": mean - half, "ci_high": mean + half}


def stratified_welch(
    y: np.ndarray, treated: np.ndarray, labels: np.ndarray, sizes: dict | None = None, level: float = 0.95
) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """(the combined interval, each measured stratum's weight, the strata left out) of the difference
    in means of `y` between `treated` and the others within each stratum of `labels`. `sizes`:
    stratum -> size for the weights (default: its count in `labels`)."""
    y, t, labels = np.asarray(y, np.float64), np.asarray(treated, bool), np.asarray(labels, dtype=object)
    raw, left_out = [], []
    for name in sorted(pd.unique(labels), key=str):
        m = labels == name
        yt, yc = y[m & t], y[m & ~t]
        if yt.size < 2 or yc.size < 2:
            left_out.append(str(name))
            continue
        size = float(sizes[name]) if sizes is not None else float(m.sum())
        vt, vc = yt.var(ddof=1) / yt.size, yc.var(ddof=1) / yc.size
        raw.append((str(name), size, float(yt.mean() - yc.mean()), float(vt), float(vc), int(yt.size), int(yc.size)))
    total = sum(r[1] for r in raw)
    weights = {r[0]: (r[1] / total if total > 0 else 0.0) for r in raw}
    parts = [(weights[r[0]],) + r[2:] for r in raw]
    return _combine(parts, level), weights, left_out


def _adjust(y: np.ndarray, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Y - theta_s (X - mean_s X) within each stratum, theta_s = cov(Y, X) / var(X) over its two arms."""
    adj, thetas = y.copy(), {}
    for name in pd.unique(labels):
        m = labels == name
        vx = float(x[m].var(ddof=1)) if m.sum() > 1 else 0.0
        theta = float(np.cov(y[m], x[m], ddof=1)[0, 1] / vx) if vx > 0 else 0.0
        adj[m] = y[m] - theta * (x[m] - x[m].mean())
        thetas[str(name)] = theta
    return adj, thetas


def contrast(
    frame: pd.DataFrame, treated: np.ndarray, labels: np.ndarray, sizes: dict | None = None, level: float = 0.95
) -> dict[str, Any]:
    """{"difference_in_means", "cuped"} stratified by `labels` (module docstring), as the pooled
    contrast's keys; cuped's theta is per stratum (`theta_by_stratum`; `theta` is None)."""
    y, x = frame["outcome"].to_numpy(np.float64), frame["pre"].to_numpy(np.float64)
    labels = np.asarray(labels, dtype=object)
    dm, weights, left_out = stratified_welch(y, treated, labels, sizes, level)
    adj, thetas = _adjust(y, x, labels)
    cu, _, _ = stratified_welch(adj, treated, labels, sizes, level)
    vr = 1.0 - (cu["se"] / dm["se"]) ** 2 if dm["se"] and cu["se"] is not None else 0.0
    cu.update({"theta": None, "theta_by_stratum": thetas, "correlation": None, "variance_reduction": float(vr)})
    return {"difference_in_means": dm, "cuped": cu, "weights": weights, "left_out": left_out}


def roi(frame: pd.DataFrame, treated: np.ndarray, labels: np.ndarray, sizes: dict | None = None) -> dict[str, Any]:
    """experiments.readout's ROI, stratified: incremental earnings (CUPED within strata) over the
    incremental cost, both combined with the same weights."""
    gross = frame.assign(outcome=(frame["margin"] + frame["product_margin"]).to_numpy(np.float64))
    est = contrast(gross, treated, labels, sizes)
    cost = frame["cost"].to_numpy(np.float64)
    labels = np.asarray(labels, dtype=object)
    inc_cost = float(
        sum(
            w * (cost[(labels == s) & treated].mean() - cost[(labels == s) & ~treated].mean())
            for s, w in est["weights"].items()
        )
    )
    return roi_document(est["cuped"], inc_cost)


def action_sizes(labels: np.ndarray, treated: np.ndarray, d: Design, all_labels: np.ndarray, all_control) -> dict:
    """Weights for one action's contrast: the stratum's customers planned for the action, estimated
    as its treated count / (1 - the stratum's control share); the share is the design's, else the
    stratum's observed control fraction (`all_labels`, `all_control`: every deployment row)."""
    out = {}
    for name in pd.unique(labels):
        c = d.shares.get(str(name))
        if c is None:
            m = all_labels == name
            c = float(all_control[m].mean()) if m.any() else 0.0
        out[name] = float((treated & (labels == name)).sum()) / max(1.0 - c, 1e-12)
    return out


def strata_rows(frame: pd.DataFrame, assigned: np.ndarray, d: Design, est: dict) -> list[dict[str, Any]]:
    """One row per stratum of the overall contrast: its size, arms, control share, weight and its own
    difference in means and CUPED (experiments.readout_estimators.welch / cuped)."""
    y, x = frame["outcome"].to_numpy(np.float64), frame["pre"].to_numpy(np.float64)
    rows = []
    for name in sorted(pd.unique(d.labels), key=str):
        m = d.labels == name
        rows.append(
            {
                "stratum": str(name),
                "customers": int(m.sum()),
                "assigned": int((m & assigned).sum()),
                "control": int((m & ~assigned).sum()),
                "control_share": d.shares.get(str(name)),
                "observed_control_share": float((m & ~assigned).sum() / m.sum()),
                "weight": est["weights"].get(str(name)),
                "difference_in_means": welch(y[m & assigned], y[m & ~assigned]),
                "cuped": cuped(y[m], x[m], assigned[m]),
            }
        )
    return rows


STRATA_RULE = (
    "the control share differs between strata: the lift is the sum over strata of w_s x (treatment mean - control "
    "mean) within the stratum, w_s = N_s / N over the strata with at least 2 customers in each arm, variance sum "
    "w_s^2 var_s, Welch-Satterthwaite df; CUPED within each stratum. A pooled difference would be biased when the "
    "strata's outcome levels differ (Simpson's paradox): `lift_pooled` shows it for comparison"
)


__all__ = ["Design", "design", "contrast", "roi", "stratified_welch", "strata_rows", "file_columns", "STRATIFIED"]
