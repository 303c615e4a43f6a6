"""Myopic expected net value of each action for each customer: what a bank computes from the
observables and the world's published models (segment activity and spend models, response tables,
product hazards, economics, catalogue), never from the simulator's latent state.

The greedy baseline (`policies.baselines.GreedyUplift`) contacts with the action of largest value;
the envs' observation (`sim.envs.customer.ObservationEncoder`) carries the values as features, so
that every agent, the env and the VecEnv read one observation layout. The formula is documented
on GreedyUplift.
"""

from __future__ import annotations

import numpy as np

from .catalogue import STAGES
from .population import WorldTables
from .posterior import ObservablePosterior, Observation
from .world import WorldModel

_BLOCK = 65_536  # customers valued together: bounds the (n, A) temporaries at ~5 MB each


def _annuity(c: np.ndarray, k) -> np.ndarray:
    """sum_{t<k} exp(-c t) for c >= 0 (elementwise, broadcasting): (1 - e^{-ck}) / (1 - e^{-c})."""
    return _annuity_and_tail(c, k)[0]


def _annuity_and_tail(c: np.ndarray, k) -> tuple[np.ndarray, np.ndarray]:
    """(sum_{t<k} e^{-ct}, e^{-ck}) for c >= 0, sharing the exponential."""
    c = np.maximum(c, 0.0)
    tail = np.exp(-c * k)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (1.0 - tail) / -np.expm1(-c)
    return np.where(c > 1e-12, out, np.broadcast_to(k, out.shape)), tail


class MyopicValue:
    """(n, A) expected incremental value of each action net of its cost, over the effect's duration
    and `horizon` periods after it (see GreedyUplift for the terms); 0 for "none"."""

    def __init__(
        self,
        world: WorldModel,
        horizon: int = 52,
        repeat_only: bool = False,
        posterior: ObservablePosterior | None = None,
    ):
        self.world = world
        self.horizon = int(horizon)
        # `posterior`: one already built for the same world and repeat_only (the encoder's), shared
        self.posterior = posterior if posterior is not None else ObservablePosterior(world, repeat_only)
        tb = WorldTables.from_world(world)
        A, S, P = tb.n_actions, len(STAGES), tb.n_products
        by_stage = lambda flat: np.ascontiguousarray(flat.reshape(A, S).T)  # noqa: E731  (S, A) rows
        self._lift, self._dropout = by_stage(tb.lift), by_stage(tb.dropout_reduction)
        self._uplift, self._react = by_stage(tb.adoption_uplift), by_stage(tb.reactivation)
        self._duration = tb.duration.astype(float)
        # the no-effect terms depend on the duration only: computed once per distinct one
        self._durations, self._duration_of = np.unique(self._duration, return_inverse=True)
        self._cost = tb.action_cost
        self._fatigue = tb.fatigue
        self._margin_rate = tb.margin_rate
        self._log_d = float(np.log(world.economics.discount_per_period))
        # which products each action boosts: (P, A)
        tgt = tb.action_target
        self._boosts = ((tgt[None, :] == -1) | (tgt[None, :] == np.arange(P)[:, None])).astype(float)
        self._boosts[:, 0] = 0.0
        # per segment x stage cell and product: adoption hazard x margin x discounted periods held
        # that would not have been held anyway: an opening now replaces one that would have come
        # later at the baseline hazard, so period t only counts while that has not happened yet
        # (valuing every held period overstated the card offer's realised value by ~45 %)
        keep = np.clip(1.0 - tb.close_cells, 0.0, 1.0) * np.clip(1.0 - tb.adopt_cells, 0.0, 1.0) * np.exp(self._log_d)
        hold = _annuity(-np.log(np.maximum(keep, 1e-300)), self.horizon)
        self._adopt_value = tb.adopt_cells * tb.product_margin[None, :] * hold  # (G*S, P)

    def values(
        self, obs: Observation, rows: np.ndarray | None = None, scores: tuple[np.ndarray, ...] | None = None
    ) -> np.ndarray:
        """(len(rows), A) expected incremental value of each action net of its cost (0 for none),
        for `rows` of obs (all customers when None), whether or not the action is allowed.
        `scores`: (P(alive), rate, hazard, spend per transaction) of `self.posterior` for those rows,
        when the caller has them already (they are the expensive part)."""
        rows = np.arange(np.asarray(obs["stage"]).shape[0]) if rows is None else np.asarray(rows)
        out = np.empty((rows.size, self._cost.size))
        for b in range(0, rows.size, _BLOCK):
            part = None if scores is None else tuple(np.asarray(x)[b : b + _BLOCK] for x in scores)
            out[b : b + _BLOCK] = self._values_block(obs, rows[b : b + _BLOCK], part)
        return out

    def _values_block(self, obs: Observation, rows: np.ndarray, scores=None) -> np.ndarray:
        post = self.posterior
        if scores is None:
            pa = post.p_alive(obs, rows)
            lam, mu = post.rates(obs, rows)
            spend = post.spend_per_transaction(obs, rows)
        else:
            pa, lam, mu, spend = scores
        w = self._margin_rate * spend * lam
        stage = np.asarray(obs["stage"])[rows].astype(np.intp)
        f = (self._fatigue ** np.asarray(obs["recent_contacts"], float)[rows])[:, None]
        # decay per period of a discounted, still-alive customer: hazard - log(discount factor)
        c0 = mu - self._log_d
        c1 = c0[:, None] - mu[:, None] * self._dropout[stage] * f  # under the effect's hazard
        # discounted alive periods during the effect's D periods, and d^D P(alive after them)
        alive_win, surv_win = _annuity_and_tail(c1, self._duration)  # (n, A)
        base_win, surv_base = _annuity_and_tail(c0[:, None], self._durations)
        base_win, surv_base = base_win[:, self._duration_of], surv_base[:, self._duration_of]
        later = w * _annuity(c0, self.horizon)  # (n,) value of being alive after the window
        v = (
            w[:, None] * ((1.0 + self._lift[stage] * f) * alive_win - base_win)
            + (surv_win - surv_base) * later[:, None]
        )
        if self._adopt_value.shape[1]:
            cell = np.asarray(obs["segment"])[rows].astype(np.intp) * len(STAGES) + stage
            not_held = ~np.asarray(obs["products"])[rows]
            v += self._uplift[stage] * f * alive_win * ((self._adopt_value[cell] * not_held) @ self._boosts)
        v *= pa[:, None]
        v += ((1.0 - pa) * later)[:, None] * self._react[stage] * f
        v -= self._cost
        v[:, 0] = 0.0
        return v
