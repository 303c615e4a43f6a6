"""Outcome models for offline evaluation: a cross-fitted reward model (dm, dr, sndr) and fitted Q
evaluation (fqe, dr_seq, wdr), both fitted so that no prediction comes from a model that saw it.

Cross-fitting: customers (never single decisions, which share a customer's latent state) are
split into `folds` groups with a seeded permutation; the prediction for every decision of fold k
comes from a model fitted on the other folds (Chernozhukov et al. 2018, "Double/debiased machine
learning"). With folds = 1 the model is fitted and evaluated on the same data (not recommended;
allowed for comparison).

Features of a state (`state_features`): log1p of recency, frequency, monetary, tenure and
last_contact, a never-contacted flag, recent_contacts, stage and segment indicators, products
held, the week of the year (sine and cosine) and the length of the decision's reward window in
periods (known when the decision is made: decision points follow a calendar). FQE fits one model
per number of decisions left in the trajectory, so the horizon needs no feature.

Reward models (`RewardModel.kind`):
- "hgb": scikit-learn HistGradientBoostingRegressor on the features plus the action as a
  categorical feature (default; captures stage x action interactions).
- "ridge": ridge regression with one linear model per action (features x action indicators).

FQE (Le, Voloshin & Yue 2019) by backward induction over the decisions left in each trajectory,
one ridge regression per action and stage (`FittedQ`); the state after a trajectory's last
decision is terminal (value 0). An earlier version iterated a single linear Q-function to its
fixed point: with no discount it diverged (the projected Bellman operator is not a contraction),
which the stage-wise fit cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

REWARD_MODELS = ("hgb", "ridge")
DEFAULT_FOLDS = 5
LAST_CONTACT_CAP = 520  # periods: "never contacted" is a flag, not a huge number


def state_features(
    obs: dict[str, np.ndarray], dates, window_periods: np.ndarray, n_stages: int, n_segments: int
) -> np.ndarray:
    """(n, d) float features of n states (see the module docstring)."""
    lc = obs["last_contact"].astype(np.float64)
    never = lc >= LAST_CONTACT_CAP
    week = pd.DatetimeIndex(dates).isocalendar().week.to_numpy(dtype=np.float64)
    angle = 2 * np.pi * week / 52.18
    cols = [
        np.log1p(obs["recency"].astype(np.float64)),
        np.log1p(obs["frequency"].astype(np.float64)),
        np.log1p(np.maximum(obs["monetary"].astype(np.float64), 0.0)),
        np.log1p(obs["tenure"].astype(np.float64)),
        np.log1p(np.minimum(lc, LAST_CONTACT_CAP)),
        never.astype(np.float64),
        obs["recent_contacts"].astype(np.float64),
        np.sin(angle),
        np.cos(angle),
        np.asarray(window_periods, np.float64),
    ]
    stage = np.eye(n_stages)[obs["stage"]]
    seg = np.eye(max(n_segments, 1))[obs["segment"]]
    return np.concatenate([np.column_stack(cols), stage, seg, obs["products"].astype(np.float64)], axis=1)


def customer_folds(customer_ids: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per row; all rows of a customer share a fold (seeded, order-independent)."""
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    codes, uniq = pd.factorize(pd.Series(customer_ids), sort=True)
    perm = np.random.default_rng(seed).permutation(len(uniq))
    return (perm % folds)[codes]


def _with_intercept(X: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(X.shape[0]), X])


def _ridge_per_action(X: np.ndarray, a: np.ndarray, y: np.ndarray, n_actions: int, ridge: float) -> np.ndarray:
    """(A, d + 1) coefficients of one ridge regression per action (the intercept is not
    penalised). An action with no rows gets the regression pooled over all actions."""
    Z = _with_intercept(X)
    d1 = Z.shape[1]
    pen = ridge * np.eye(d1)
    pen[0, 0] = 0.0
    pooled = None
    W = np.zeros((n_actions, d1))
    for k in range(n_actions):
        rows = a == k
        if rows.sum() == 0:
            if pooled is None:
                pooled = np.linalg.lstsq(Z.T @ Z + pen + 1e-9 * np.eye(d1), Z.T @ y, rcond=None)[0] if len(y) else 0.0
            W[k] = pooled
            continue
        Zk = Z[rows]
        W[k] = np.linalg.lstsq(Zk.T @ Zk + pen + 1e-9 * np.eye(d1), Zk.T @ y[rows], rcond=None)[0]
    return W


def _standardise(X_fit: np.ndarray, *others: np.ndarray):
    mu = X_fit.mean(axis=0)
    sd = X_fit.std(axis=0)
    sd[sd < 1e-12] = 1.0
    return [(x - mu) / sd for x in (X_fit, *others)]


@dataclass(frozen=True)
class RewardModel:
    """A reward model r_hat(x, a), cross-fitted by customer."""

    kind: str = "hgb"
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    max_iter: int = 150
    ridge: float = 1.0

    def __post_init__(self):
        if self.kind not in REWARD_MODELS:
            raise ValueError(f"reward model {self.kind!r}: choose {' or '.join(REWARD_MODELS)}")
        if not (isinstance(self.folds, (int, np.integer)) and self.folds >= 1):
            raise ValueError(f"folds must be an integer >= 1, got {self.folds!r}")

    def _fit_predict(self, X_fit, a_fit, y_fit, X_pred, n_actions: int) -> np.ndarray:
        """(len(X_pred), A) predictions for every action."""
        m = X_pred.shape[0]
        if self.kind == "hgb":
            from sklearn.ensemble import HistGradientBoostingRegressor

            model = HistGradientBoostingRegressor(
                max_iter=self.max_iter,
                learning_rate=0.1,
                max_leaf_nodes=31,
                min_samples_leaf=40,
                early_stopping=False,
                categorical_features=[X_fit.shape[1]],
                random_state=self.seed,
            )
            model.fit(np.column_stack([X_fit, a_fit]), y_fit)
            out = np.empty((m, n_actions))
            for a in range(n_actions):
                out[:, a] = model.predict(np.column_stack([X_pred, np.full(m, a)]))
            return out
        Xf, Xp = _standardise(X_fit, X_pred)
        W = _ridge_per_action(Xf, a_fit, y_fit, n_actions, self.ridge)
        return _with_intercept(Xp) @ W.T

    def cross_fit(
        self, X: np.ndarray, action: np.ndarray, reward: np.ndarray, customer_ids: np.ndarray, n_actions: int
    ) -> tuple[np.ndarray, dict]:
        """Out-of-fold r_hat (n, A) and diagnostics (out-of-fold R^2 at the logged actions)."""
        fold = customer_folds(customer_ids, self.folds, self.seed)
        r_hat = np.empty((X.shape[0], n_actions))
        for k in range(self.folds):
            test = fold == k
            train = ~test if self.folds > 1 else test
            if not test.any():
                continue
            r_hat[test] = self._fit_predict(X[train], action[train], reward[train], X[test], n_actions)
        pred = r_hat[np.arange(len(reward)), action]
        ss = float(((reward - reward.mean()) ** 2).sum())
        r2 = 1.0 - float(((reward - pred) ** 2).sum()) / ss if ss > 0 else float("nan")
        return r_hat, {"kind": self.kind, "folds": self.folds, "seed": self.seed, "out_of_fold_r2": r2}


@dataclass(frozen=True)
class FittedQ:
    """Fitted Q evaluation of a target policy by backward induction over the decisions left,
    cross-fitted by customer.

    A customer's logged trajectory has a known number of decisions left at every step h (the
    decision calendar does not depend on the actions), so Q is fitted stage by stage:
    Q_1(s, a) = E[r | s, a] and Q_h(s, a) = E[r + g sum_a' pi(a'|s') Q_{h-1}(s', a') | s, a] on the
    decisions with h left, each a ridge regression per action on the state features. No fixed
    point is iterated, so the linear model cannot diverge (Le, Voloshin & Yue 2019 FQE with a
    finite horizon)."""

    discount: float = 1.0
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    ridge: float = 1.0

    def _fit(
        self,
        X: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        target: np.ndarray,
        next_row: np.ndarray,
        remaining: np.ndarray,
        fit_rows: np.ndarray,
    ) -> np.ndarray:
        """Q at every row (n, A) from models fitted on `fit_rows` only."""
        n, A = target.shape
        Z = _with_intercept(X)
        q = np.zeros((n, A))
        for h in range(1, int(remaining.max()) + 1):
            at_h = remaining == h
            y = reward.copy()
            if h > 1:
                has = at_h & (next_row >= 0)
                nr = next_row[has]
                y[has] += self.discount * (target[nr] * q[nr]).sum(axis=1)
            rows = at_h & fit_rows
            W = _ridge_per_action(X[rows], action[rows], y[rows], A, self.ridge)
            q[at_h] = Z[at_h] @ W.T
        return q

    def q_values(
        self,
        X: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        target: np.ndarray,
        next_row: np.ndarray,
        customer_ids: np.ndarray,
        remaining: np.ndarray,
    ) -> tuple[np.ndarray, dict]:
        """Out-of-fold q_hat (n, A) at every decision row.

        X (n, d): state features; target (n, A): the candidate's probabilities at each row;
        next_row (n,): the row of the customer's next decision, -1 after the last one;
        remaining (n,): decisions left in the trajectory, this one included (1 at the last)."""
        Xs = _standardise(X)[0]
        fold = customer_folds(customer_ids, self.folds, self.seed)
        q = np.empty(target.shape)
        for k in range(self.folds):
            test = fold == k
            if not test.any():
                continue
            fit_rows = ~test if self.folds > 1 else test
            # the whole backward pass runs on the other folds' models; the held-out fold's values
            # come from those models applied to its own states
            q_k = self._fit(Xs, action, reward, target, next_row, remaining, fit_rows)
            q[test] = q_k[test]
        return q, {
            "kind": "backward_fqe",
            "folds": self.folds,
            "seed": self.seed,
            "discount": self.discount,
            "stages": int(remaining.max()),
        }
