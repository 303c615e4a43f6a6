"""What a bank can infer about each customer from its observables and the world's published
segment models: P(alive), posterior mean transaction rate and dropout hazard, expected value of a
transaction (used by the baseline policies and by the observation encoder of the envs).

Observation conventions (mirroring sim.calibrate / sim.features): x = frequency (every
transaction after birth counts when birth is the signup date, as for the simulator's new
customers and for histories with signup dates; `repeat_only=True` for worlds calibrated on
histories without them, whose book customers' frequency includes the birth purchase), t_x =
tenure - recency (0 when x = 0), T = tenure, all in periods.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .btyd import BGNBD, ParetoNBD
from .spend import GammaGamma
from .world import WorldModel

Observation = Mapping[str, np.ndarray]


def btyd_data(
    obs: Observation, rows: np.ndarray | None = None, repeat_only: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) as int64 arrays from the observation (see the module doc for the conventions)."""
    sel = (lambda a: np.asarray(a)) if rows is None else (lambda a: np.asarray(a)[rows])
    freq = sel(obs["frequency"]).astype(np.int64)
    x = np.maximum(freq - 1, 0) if repeat_only else freq
    T = np.maximum(sel(obs["tenure"]).astype(np.int64), 0)
    t_x = np.where(x > 0, np.clip(T - sel(obs["recency"]), 0, T), 0)
    return x, t_x, T


class ObservablePosterior:
    """Each segment's activity (Pareto/NBD or BG/NBD) and spend (Gamma-Gamma) model of a world,
    evaluated on observations: P(alive), the posterior mean rate and hazard given alive, and the
    expected value of a transaction.

    A calibrated world's rates are campaign-free: its alpha is the fitted one times the segment's
    campaign multiplier (world.fit["campaign_multiplier"], 1 when absent), because the history was
    observed under the logging policy's campaigns. As sim.calibrate.build_book does for the
    twins, P(alive) uses the fitted model (alpha / multiplier) and the posterior rate is the
    fitted one divided by the multiplier (the segment's mean exposure standing in for the
    customer's own, which the observation does not carry).
    """

    def __init__(self, world: WorldModel, repeat_only: bool = False):
        cls = ParetoNBD if world.activity_model == "pareto_nbd" else BGNBD
        self.pareto = cls is ParetoNBD
        mult = (world.fit or {}).get("campaign_multiplier") or {}
        self.multiplier = np.array([float(mult.get(s.name, 1.0)) for s in world.segments])
        self.activity = [
            cls(**{k: float(s.activity[k]) / (m if k == "alpha" else 1.0) for k in cls._param_names})
            for s, m in zip(world.segments, self.multiplier)
        ]
        self.spend = [GammaGamma(**{k: float(s.spend[k]) for k in GammaGamma._param_names}) for s in world.segments]
        self.repeat_only = repeat_only

    def _by_segment(self, obs: Observation, rows: np.ndarray | None):
        seg = np.asarray(obs["segment"]) if rows is None else np.asarray(obs["segment"])[rows]
        for g in np.unique(seg):
            yield int(g), np.flatnonzero(seg == g)

    def p_alive(self, obs: Observation, rows: np.ndarray | None = None) -> np.ndarray:
        """P(alive | x, t_x, T) from the customer's segment model (for `rows` of obs, or all)."""
        x, t_x, T = btyd_data(obs, rows, self.repeat_only)
        out = np.empty(x.shape[0])
        for g, m in self._by_segment(obs, rows):
            # observations are integer periods, so customers share few distinct (x, t_x, T): evaluate
            # the likelihood terms once per distinct row
            key, inv = _distinct_rows(x[m], t_x[m], T[m])
            out[m] = self.activity[g].p_alive(*key)[inv]
        return out

    def rates(self, obs: Observation, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means given alive of the transaction rate, (r+x)/(alpha+T) (divided by the
        campaign multiplier), and the dropout hazard per period: s/(beta+T) (Pareto/NBD), or the
        rate times the per-transaction dropout probability a/(a+b+x) (BG/NBD)."""
        x, _, T = btyd_data(obs, rows, self.repeat_only)
        lam, mu = np.empty(x.shape[0]), np.empty(x.shape[0])
        for g, m in self._by_segment(obs, rows):
            act = self.activity[g]
            lam[m] = (act.r + x[m]) / ((act.alpha + T[m]) * self.multiplier[g])
            if self.pareto:
                mu[m] = act.s / (act.beta + T[m])
            else:
                mu[m] = lam[m] * act.a / (act.a + act.b + x[m])
        return lam, mu

    def spend_per_transaction(self, obs: Observation, rows: np.ndarray | None = None) -> np.ndarray:
        """Gamma-Gamma E[value of a transaction | x, mean value] (the observed mean where the
        posterior mean does not exist, q + px <= 1). With `repeat_only` the birth purchase stays in
        the observed mean (the observation does not separate it) but not in the count."""
        sel = (lambda a: np.asarray(a)) if rows is None else (lambda a: np.asarray(a)[rows])
        freq = sel(obs["frequency"]).astype(float)
        mean = np.divide(sel(obs["monetary"]).astype(float), freq, out=np.zeros_like(freq), where=freq > 0)
        x = np.maximum(freq - 1, 0) if self.repeat_only else freq
        out = np.empty(freq.shape[0])
        for g, m in self._by_segment(obs, rows):
            out[m] = self.spend[g].conditional_expected_spend(x[m], mean[m])
        return np.where(np.isfinite(out), out, mean)


def _distinct_rows(x: np.ndarray, t_x: np.ndarray, T: np.ndarray):
    """Distinct (x, t_x, T) rows and the inverse index (one int64 key; t_x <= T)."""
    base = int(T.max(initial=0)) + 1
    if (int(x.max(initial=0)) + 1) * base * base >= 2**62:  # key would overflow: no compression
        return (x, t_x, T), np.arange(x.shape[0])
    key = (x * base + t_x) * base + T
    uniq, inv = np.unique(key, return_inverse=True)
    ux, rem = np.divmod(uniq, base * base)
    utx, uT = np.divmod(rem, base)
    return (ux, utx, uT), inv


# ---- the baselines ---------------------------------------------------------------------------
