"""The logged data the OPE estimators read, validated on construction: `LoggedBandit` (one-step,
contextual-bandit feedback) and `LoggedTrajectories` (customers x steps, padded with a prefix mask).
Plain numpy arrays, as Open Bandit Pipeline's bandit feedback; the estimators are in
experiments.ope.estimators."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROW_SUM_TOL = 1e-6


# ----------------------------------------------------------------------------------------------
# validation helpers


def _fmt_index(pos) -> str:
    return ", ".join(str(int(p)) for p in pos)


def _as_float(
    owner: str, name: str, value, shape: tuple | None = None, ndim: int | None = None, where: np.ndarray | None = None
) -> np.ndarray:
    """A float64 copy of `value`, checked for shape and finiteness (only where `where` is True)."""
    arr = np.array(value, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{owner}.{name}: expected {ndim} dimension(s), got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{owner}.{name}: shape {arr.shape} does not match expected {shape}")
    if where is not None and arr.shape[: where.ndim] != where.shape:
        raise ValueError(
            f"{owner}.{name}: shape {arr.shape} does not match expected ({', '.join(map(str, where.shape))}, ...)"
        )
    bad = ~np.isfinite(arr)
    if where is not None:
        bad &= where.reshape(where.shape + (1,) * (arr.ndim - where.ndim))
    if bad.any():
        pos = np.argwhere(bad)[0]
        raise ValueError(f"{owner}.{name}[{_fmt_index(pos)}]: not finite ({arr[tuple(pos)]})")
    return arr


def _as_int(
    owner: str, name: str, value, shape: tuple, n_actions: int | None, where: np.ndarray | None = None
) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{owner}.{name}: shape {arr.shape} does not match expected {shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        f = np.array(arr, dtype=np.float64)
        ok = np.isfinite(f) & (f == np.round(f))
        if where is not None:
            ok |= ~where
        if not ok.all():
            pos = np.argwhere(~ok)[0]
            raise ValueError(f"{owner}.{name}[{_fmt_index(pos)}]: not an integer ({arr[tuple(pos)]})")
        arr = np.where(ok, f, 0)
    arr = arr.astype(np.int64)
    bad = arr < 0
    if n_actions is not None:
        bad |= arr >= n_actions
    if where is not None:
        bad &= where
    if bad.any():
        pos = np.argwhere(bad)[0]
        hi = f"{n_actions - 1}" if n_actions is not None else "inf"
        raise ValueError(f"{owner}.{name}[{_fmt_index(pos)}]: action {arr[tuple(pos)]} out of range [0, {hi}]")
    if where is not None:
        arr = np.where(where, arr, 0)
    return arr


def _check_pscore(owner: str, pscore: np.ndarray, where: np.ndarray | None = None) -> None:
    bad = ~((pscore > 0) & (pscore <= 1))
    if where is not None:
        bad &= where
    if bad.any():
        pos = np.argwhere(bad)[0]
        raise ValueError(f"{owner}.pscore[{_fmt_index(pos)}]: {pscore[tuple(pos)]} outside (0, 1]")


# ----------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class LoggedBandit:
    """One logged decision per sample (n samples, A actions).

    reward (n,): observed reward; action (n,) int in [0, A); pscore (n,): logging propensity of the
    logged action, in (0, 1]; target (n, A): the candidate policy's probabilities of every action
    (rows sum to 1); reward_hat (n, A), optional: a reward model's prediction for every action
    (needed by dm, dr, sndr). Arrays are copied to float64 / int64 on construction.
    """

    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    target: np.ndarray
    reward_hat: np.ndarray | None = None

    def __post_init__(self):
        o = "LoggedBandit"
        reward = _as_float(o, "reward", self.reward, ndim=1)
        n = reward.shape[0]
        if n == 0:
            raise ValueError(f"{o}.reward: no samples")
        target = _as_float(o, "target", self.target, ndim=2)
        if target.shape[0] != n:
            raise ValueError(f"{o}.target: length {target.shape[0]} != len(reward) {n}")
        n_actions = target.shape[1]
        if n_actions == 0:
            raise ValueError(f"{o}.target: no actions (shape {target.shape})")
        if (target < 0).any():
            pos = np.argwhere(target < 0)[0]
            raise ValueError(f"{o}.target[{_fmt_index(pos)}]: negative probability {target[tuple(pos)]}")
        row_err = np.abs(target.sum(axis=1) - 1.0)
        if (row_err > ROW_SUM_TOL).any():
            i = int(np.argmax(row_err > ROW_SUM_TOL))
            raise ValueError(f"{o}.target[{i}]: row sums to {target[i].sum():.9g}, not 1 (tol {ROW_SUM_TOL})")
        pscore = np.array(self.pscore, dtype=np.float64)
        if pscore.shape != (n,):
            raise ValueError(f"{o}.pscore: shape {pscore.shape} does not match len(reward) {n}")
        pscore = _as_float(o, "pscore", pscore)
        _check_pscore(o, pscore)
        action = _as_int(o, "action", self.action, (n,), n_actions)
        reward_hat = None
        if self.reward_hat is not None:
            reward_hat = _as_float(o, "reward_hat", self.reward_hat, shape=target.shape)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "pscore", pscore)
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "reward_hat", reward_hat)

    @property
    def n(self) -> int:
        return self.reward.shape[0]

    @property
    def n_actions(self) -> int:
        return self.target.shape[1]

    @property
    def target_pscore(self) -> np.ndarray:
        """The candidate policy's probability of the logged action, (n,)."""
        return self.target[np.arange(self.n), self.action]

    def weights(self, clip: float | None = None) -> np.ndarray:
        """Importance weights pi(a|x) / pi0(a|x), optionally clipped at `clip`."""
        w = self.target_pscore / self.pscore
        return w if clip is None else np.minimum(w, clip)


@dataclass(frozen=True)
class LoggedTrajectories:
    """Logged decision sequences, padded to (n customers, T steps).

    mask (n, T) bool: valid steps, a prefix of each row (a trajectory cannot resume after it ends).
    reward, pscore (logging propensity of the logged action, in (0, 1]), target_prob (candidate
    policy's probability of the logged action, in [0, 1]) and action (int) are (n, T); q_hat
    (n, T, A) and v_hat (n, T), optional and given together: a model's action values and state
    values under the candidate policy (v_hat = sum_a pi(a|s) q_hat(s, a)), needed by dr_seq / wdr / drl.
    cell (n, T) int >= 0, optional: a discretised state per step (experiments.ope.marginal), needed
    by the marginalized estimators mis / drl.
    Values at padded steps are ignored (may be NaN) and replaced by the absorbing-state convention
    (reward 0, pscore = target_prob = 1, q_hat = v_hat = 0).
    """

    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    target_prob: np.ndarray
    mask: np.ndarray
    q_hat: np.ndarray | None = None
    v_hat: np.ndarray | None = None
    cell: np.ndarray | None = None

    def __post_init__(self):
        o = "LoggedTrajectories"
        mask = np.asarray(self.mask)
        if mask.ndim != 2:
            raise ValueError(f"{o}.mask: expected 2 dimensions (n, T), got shape {mask.shape}")
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                pos = np.argwhere(~np.isin(mask, (0, 1)))[0]
                raise ValueError(f"{o}.mask[{_fmt_index(pos)}]: not boolean ({mask[tuple(pos)]})")
            mask = mask.astype(bool)
        n, T = mask.shape
        if n == 0 or T == 0:
            raise ValueError(f"{o}.mask: empty shape {mask.shape}")
        resumed = mask[:, 1:] & ~mask[:, :-1]
        if resumed.any():
            i, t = np.argwhere(resumed)[0]
            raise ValueError(f"{o}.mask[{i}, {t + 1}]: valid step after an invalid one (mask must be a prefix)")
        shape = (n, T)
        reward = _as_float(o, "reward", self.reward, shape=shape, where=mask)
        pscore = _as_float(o, "pscore", self.pscore, shape=shape, where=mask)
        _check_pscore(o, pscore, where=mask)
        target_prob = _as_float(o, "target_prob", self.target_prob, shape=shape, where=mask)
        bad = ~((target_prob >= 0) & (target_prob <= 1)) & mask
        if bad.any():
            i, t = np.argwhere(bad)[0]
            raise ValueError(f"{o}.target_prob[{i}, {t}]: {target_prob[i, t]} outside [0, 1]")
        if (self.q_hat is None) != (self.v_hat is None):
            missing = "v_hat" if self.v_hat is None else "q_hat"
            raise ValueError(f"{o}.{missing}: q_hat and v_hat must be given together")
        q_hat = v_hat = None
        n_actions = None
        if self.q_hat is not None:
            q_hat = _as_float(o, "q_hat", self.q_hat, ndim=3, where=mask)
            if q_hat.shape[:2] != shape or q_hat.shape[2] == 0:
                raise ValueError(f"{o}.q_hat: shape {q_hat.shape} does not match expected ({n}, {T}, A)")
            n_actions = q_hat.shape[2]
            v_hat = _as_float(o, "v_hat", self.v_hat, shape=shape, where=mask)
            q_hat = np.where(mask[:, :, None], q_hat, 0.0)
            v_hat = np.where(mask, v_hat, 0.0)
        action = _as_int(o, "action", self.action, shape, n_actions, where=mask)
        cell = None if self.cell is None else _as_int(o, "cell", self.cell, shape, None, where=mask)
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "reward", np.where(mask, reward, 0.0))
        object.__setattr__(self, "pscore", np.where(mask, pscore, 1.0))
        object.__setattr__(self, "target_prob", np.where(mask, target_prob, 1.0))
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "q_hat", q_hat)
        object.__setattr__(self, "v_hat", v_hat)

    @property
    def n(self) -> int:
        return self.mask.shape[0]

    @property
    def horizon(self) -> int:
        return self.mask.shape[1]

    def cumulative_weights(self) -> np.ndarray:
        """w_t = prod_{k <= t} pi(a_k|s_k) / pi0(a_k|s_k), (n, T); carried forward after the end."""
        return np.cumprod(self.target_prob / self.pscore, axis=1)

    def q_logged(self) -> np.ndarray:
        """q_hat at the logged actions, (n, T) (requires q_hat)."""
        return np.take_along_axis(self.q_hat, self.action[:, :, None], axis=2)[:, :, 0]
