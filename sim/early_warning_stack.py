"""The stacked early-warning score: a regularised logistic regression that learns, on the training
split only, how to weigh the engine's own posterior quantities against RFM, tenure and payment
regularity (sim.early_warning for the splits and the measurement).

Inputs per customer at a cut-off, from the world calibrated at that cut-off and the features of
`sim.early_warning.features_at` (window = the training label's length, the same at every cut-off
so the learned weights read the same quantities they were fitted on):

- the posterior P(no purchase over the window), P(alive) and expected transactions over the
  window, Rao-Blackwellised over the same stratified twins as `sim.churn.book_churn_scores`
  (same seed, so the inactivity probability is the engine score's own);
- log recency, frequency, mean amount and tenure, and log purchases in the last 13 periods (the
  recent pace beside the lifetime one: a customer drifting to a lower engagement state buys less
  lately than the lifetime rate says, which the BTYD posterior's constant rate does not see);
- payment strength, the turned-irregular flag and whether a payment period was found.

Why a logistic regression and not boosted trees on the same inputs: the training split is one
window earlier than the scored cut-offs (on CDNOW every customer at the training cut-off is at
most 13 weeks old, at the holdout's 39 to 52), and trees learn tenure and frequency splits of
that split that do not carry over, while a linear model on log-scale features and the
posterior's logits extrapolates monotonically. Measured on the three benchmark histories
(docs/benchmarks.md, `bench_early_warning.py --variants`), boosted trees on these inputs scored
below this logistic stack on the calibration window of all three (and on their holdouts), and
below the plain boosted anchor on the bank's holdout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# the stack's design columns, in order (stack_design)
STACK_FEATURES = (
    "logit_p_idle",
    "logit_p_alive",
    "log_expected_tx",
    "log_recency",
    "log_frequency",
    "log_mean_amount",
    "log_tenure",
    "log_recent_purchases",
    "payment_strength",
    "turned_irregular",
    "has_payment_period",
)
REQUIRED = ("recency", "frequency", "mean_amount", "tenure", "recent_purchases")
C = 1.0  # scikit-learn's default L2 strength on standardised inputs; not tuned on any window
_EPS = 1e-6  # logits of probabilities clipped to [eps, 1 - eps]: 16 twins all dead give exactly 1
_TX_FLOOR = 1e-3  # log expected transactions of a customer whose twins are all dead


def expected_transactions(
    activity_model: str, alive: np.ndarray, lam: np.ndarray, mu: np.ndarray, n: int, horizon: float
) -> np.ndarray:
    """E[transactions in the next `horizon` periods] per customer, averaged over the twins' drawn
    (alive, lam, mu) (customer-major, n customers). Alive under Pareto/NBD (purchases at rate lam
    until a dropout at hazard mu): lam (1 - e^{-mu h}) / mu; alive under BG/NBD (dropout with
    probability mu after each purchase, so at rate lam mu): (1 - e^{-lam mu h}) / mu; dead: 0.
    Both tend to lam h as mu -> 0."""
    lam = np.asarray(lam, float)
    mu = np.asarray(mu, float)
    hazard = mu if activity_model == "pareto_nbd" else lam * mu
    # (1 - e^{-hazard h}) / hazard: the expected time alive in the window (h at hazard 0)
    t_alive = np.divide(
        -np.expm1(-hazard * horizon), hazard, out=np.full_like(hazard, float(horizon)), where=hazard > 0
    )
    e = np.where(np.asarray(alive, bool), lam * t_alive, 0.0)
    return e.reshape(n, -1).mean(axis=1)


def posterior_quantities(
    world, book: pd.DataFrame, ids: np.ndarray, horizon: float, draws: int, seed: int
) -> pd.DataFrame:
    """One row per id of `ids` (sorted, all in the book): p_idle (P(no purchase in `horizon`
    periods)), p_alive and expected_tx (over `horizon`) from the world's posterior, drawn as
    `sim.churn.book_churn_scores` draws them (same twins for the same seed)."""
    from .churn import book_rows, inactivity_probabilities, posterior_twins

    sub = book_rows(book, ids)
    n = len(sub)
    if n == 0:
        return pd.DataFrame({"p_idle": [], "p_alive": [], "expected_tx": []}, dtype=float)
    # the twins of sim.churn.book_churn_scores, so p_idle is the engine score itself (a test checks)
    st = posterior_twins(world, sub, draws, seed)
    idle = next(iter(inactivity_probabilities(world.activity_model, st.alive, st.lam, st.mu, n, (horizon,)).values()))
    return pd.DataFrame(
        {
            "p_idle": idle,
            "p_alive": sub["p_alive"].to_numpy(float),
            "expected_tx": expected_transactions(world.activity_model, st.alive, st.lam, st.mu, n, horizon),
        }
    )


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def stack_design(features: pd.DataFrame, posterior: pd.DataFrame, where: str = "") -> pd.DataFrame:
    """The stack's inputs (STACK_FEATURES) from `features_at` rows and the `posterior_quantities`
    of the same customers in the same order; no missing values (a missing payment period is the
    has_payment_period flag)."""
    missing = [c for c in REQUIRED if c not in features.columns]
    if missing:
        raise ValueError(
            f"early-warning stack{where}: feature column {missing[0]!r} is missing; build the rows with sim.early_warning.features_at"
        )
    if len(features) != len(posterior):
        raise ValueError(
            f"early-warning stack{where}: {len(features)} feature rows but {len(posterior)} posterior rows; "
            "compute both for the same customers"
        )
    n = len(features)
    col = lambda c, v: features[c].to_numpy(float) if c in features.columns else np.full(n, v)  # noqa: E731
    return pd.DataFrame(
        {
            "logit_p_idle": _logit(posterior["p_idle"]),
            "logit_p_alive": _logit(posterior["p_alive"]),
            "log_expected_tx": np.log(np.asarray(posterior["expected_tx"], float) + _TX_FLOOR),
            "log_recency": np.log1p(features["recency"].to_numpy(float)),
            "log_frequency": np.log1p(features["frequency"].to_numpy(float)),
            "log_mean_amount": np.log1p(features["mean_amount"].to_numpy(float)),
            "log_tenure": np.log1p(features["tenure"].to_numpy(float)),
            "log_recent_purchases": np.log1p(features["recent_purchases"].to_numpy(float)),
            "payment_strength": np.nan_to_num(col("payment_strength", 0.0)),
            "turned_irregular": np.nan_to_num(col("turned_irregular", 0.0)),
            "has_payment_period": np.isfinite(col("payment_period", np.nan)).astype(float),
        },
        columns=list(STACK_FEATURES),
    )


def fit_stack(X: pd.DataFrame, y: np.ndarray):
    """The L2-regularised logistic regression on standardised STACK_FEATURES (C fixed, module
    docstring). `y`: 1 = no purchase in the training label window."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, int)
    if len(y) != len(X):
        raise ValueError(f"early-warning stack: {len(X)} training rows but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError("early-warning stack: the training labels hold one class only; nothing to learn from")
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(X.to_numpy(float), y)


def stack_scores(model, X: pd.DataFrame) -> np.ndarray:
    """The fitted stack's P(no purchase over the training window) for each row of X."""
    return model.predict_proba(X.to_numpy(float))[:, 1]


def describe(model) -> dict[str, Any]:
    """The learned weights per standardised input (for the JSON: what the stack leans on)."""
    lr = model[-1]
    return {
        "model": f"logistic regression, L2, C = {C:g}, on standardised inputs",
        "coefficients": {k: round(float(v), 4) for k, v in zip(STACK_FEATURES, lr.coef_[0])},
        "intercept": round(float(lr.intercept_[0]), 4),
    }
