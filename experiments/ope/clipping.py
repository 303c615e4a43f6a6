"""How clipping the importance weights trades bias for variance on one evaluation, and the clip
level a stated rule suggests (the JSON's `clipping`; it changes no estimate: `--clip` does).

Levels: no clip, then caps at the 99.9th, 99th and 95th percentiles of the weights and at 50, 20,
10 and 5, keeping those below the largest weight. At each level the estimator (dr when the reward
model is there, else ips) gives its value, its standard error clustered by customer, its ESS and
its shift from the unclipped value (the unclipped one is unbiased; the shift estimates the bias
a cap brings, up to noise).

Rule (Lepski's method as in SLOPE: Su, Srinath & Krishnamurthy 2020, "Adaptive estimator
selection for off-policy evaluation", ICML): with the levels ordered from the loosest (no clip)
to the tightest, suggest the tightest level whose estimate stays within the sum of its and each
looser level's 95 % half-widths (1.96 se) of every looser level's estimate, i.e. the most clipped
estimate that no less clipped one contradicts.
"""

from __future__ import annotations

import numpy as np

from .estimators import kish_ess
from .logged import LoggedBandit

Z95 = 1.959963984540054
FIXED_LEVELS = (50.0, 20.0, 10.0, 5.0)
PERCENTILES = (99.9, 99.0, 95.0)
RULE = (
    "the tightest cap whose estimate is within 1.96 (se + se') of every looser cap's estimate "
    "(Lepski's method as in SLOPE, Su, Srinath & Krishnamurthy 2020); it changes no estimate"
)


def _clustered_se(terms: np.ndarray, groups: np.ndarray) -> float:
    """SE of mean(terms) with the terms of one customer summed first (they share a customer)."""
    n = terms.size
    dev = np.bincount(groups, weights=terms - terms.mean())
    c = dev.size
    return float(np.sqrt((dev**2).sum() * c / max(c - 1, 1)) / n)


def clip_levels(data: LoggedBandit, groups: np.ndarray) -> dict:
    """The bias-variance table of a few clip levels and the suggested one (module docstring)."""
    w = data.weights()
    use_dr = data.reward_hat is not None
    if use_dr:
        dm = (data.target * data.reward_hat).sum(axis=1)
        resid = data.reward - data.reward_hat[np.arange(data.n), data.action]
    wmax = float(w.max()) if w.size else 0.0
    caps = sorted({float(np.percentile(w, q)) for q in PERCENTILES} | set(FIXED_LEVELS), reverse=True)
    levels: list[float | None] = [None] + [c for c in caps if 0 < c < wmax]
    rows = []
    for c in levels:
        wc = w if c is None else np.minimum(w, c)
        terms = dm + wc * resid if use_dr else wc * data.reward
        rows.append({"clip": c, "value": float(terms.mean()), "se": _clustered_se(terms, groups), "ess": kish_ess(wc)})
    base = rows[0]["value"]
    for r in rows:
        r["shift"] = r["value"] - base
    pick = 0
    for i in range(1, len(rows)):
        ok = all(abs(rows[i]["value"] - rows[j]["value"]) <= Z95 * (rows[i]["se"] + rows[j]["se"]) for j in range(i))
        if ok:
            pick = i
    return {"estimator": "dr" if use_dr else "ips", "levels": rows, "suggested": rows[pick]["clip"], "rule": RULE}
