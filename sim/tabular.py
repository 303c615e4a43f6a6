"""A small tabular world: one segment's customer lifecycle in a few hundred states, solvable exactly.

`small_world_from(world)` turns a calibrated `WorldModel` into a finite MDP (`TabularWorld`:
transition tensor P, expected reward R, action masks, initial distribution, discount) built from
the world's own mechanisms, so that `policies.dp.value_iteration` gives the exact optimum and a
learned policy's optimality gap is measured rather than guessed. `sim.envs.tabular.TabularCustomerEnv` is the
same MDP as a Gymnasium env (one customer per episode, `clv/TabularCustomer-v0`).

State of a living customer (plus one absorbing "gone" state), in periods of the world:

  tenure phase  tau in {new, growth, maturity}: new -> growth w.p. 1/new_periods per period,
                growth -> maturity w.p. 1/(mature_periods - new_periods) (geometric sojourns
                with the stage rules' mean lengths).
  activity level k in 0..K-1, a fixed trait as lam is in Pareto/NBD: the transaction rate
                lam_k = E[lam | k-th K-quantile bucket of Gamma(r, alpha)]
                      = (r/alpha) K [G_{r+1}(x_{k+1}) - G_{r+1}(x_k)],  x_k = G_r^{-1}(k/K),
                G_a the regularised lower incomplete gamma (bucket means keep the mean r/alpha).
  recency       rho in {active, dormant, lapsed}: recency below dormant_after (D), below
                churned_after (D + m), or beyond. With q = exp(-lam_eff), the chance of a period
                without a transaction:
                  active  -> dormant  w.p. (1-q) q^D / (1-q^D)
                  dormant -> active   w.p. 1-q;   dormant -> lapsed  w.p. (1-q) q^m / (1-q^m)
                  lapsed  -> active   w.p. 1-q.
                These keep exactly the mean time to D periods in a row without a transaction, and
                from dormancy both the chance q^m of lapsing before the next transaction and the
                mean stay; only the sojourns' shapes become geometric.
  product       h in {not held, held} for one product (default: the product some action targets
                that is worth most to the segment, margin x mean adoption hazard); product=None
                leaves products out. Other products are not modelled (neither their margins nor
                the adoption uplifts aimed at them).
  contact clock "free", or (a, c): the last contact's action a, c periods ago. Its effect is in
                force in the contact's period and while c < duration[a]; contacts are allowed
                again once c >= min_gap (a contact in period t allows the next in t + min_gap).
                clock="exact": c = 1 .. max(duration[a], min_gap) - 1, the periods remaining known.
                clock="geometric" (default): c = 1 .. min_gap - 1 exactly (the cooldown), then one
                state "effect running" left w.p. 1/(duration[a] - min_gap) per period, so the
                effect keeps its mean length; 16 clock states instead of 35 for the bank catalogue,
                and policy values within 0.1 % of the exact clock's (tests/test_dp.py).
                A new contact replaces the effect in force, as in the simulator.

Lifecycle stage (for eligibility and the [action][stage] effect tables): dormancy if rho is
dormant, churned if lapsed, otherwise the tenure phase's stage. Masks: "none" always; a > 0 when
the catalogue makes it eligible in the stage and the clock allows a contact.

One period in stage s with action a, e the action whose effect is in force (a after a contact,
else the clock's action while its effect runs, else none):
  lam_eff = lam_k (1 + lift[e][s]),   mu_eff = mu (1 - dropout_reduction[e][s]),
  mu = s_seg / beta_seg, the segment's mean Pareto/NBD hazard;
  survive the period w.p. exp(-mu_eff);  E[transactions] = lam_eff (1 - exp(-mu_eff)) / mu_eff
  (the simulator's lam * min(lifetime, 1));  a survivor without the product opens it w.p.
  min(1, adopt[s] (1 + uplift)), uplift = adoption_uplift[e][s] if e targets the product or every
  product; a holder closes it w.p. close[s], alive or not.
  R[state, a] = margin_rate * E[transactions] * p gamma / (q - 1)     (Gamma-Gamma mean spend)
              + product_margin * P(product held at the end of the period)
              - cost[a]
              + discount * P(leaves holding the product) * W,
  W = the discounted margin a departed customer's product keeps earning until it closes (the
  simulator keeps paying product margins after a customer leaves; their recency runs on at
  lam = 0). Leaving is the absorbing "gone" state (value 0), so W is paid on the way out.

Start (`init`): "new" (default) = brand-new customers: new phase, active, clock free, levels
equally likely, product held with the segment's signup share. "book" = the steady-state book of a
constant inflow of such customers nobody contacts (occupancy of the "none" chain, living states).
States no policy can reach from the start are dropped.

Left out, on purpose: seasonality (the MDP is stationary), fatigue (f = 1), opt-outs, reactivation
(gone is absorbing and observed), the spread of dropout hazards within the segment (the mean
hazard is used) and an effect's stage at contact (each period uses the current stage's
multipliers). With those switched off in the world, the values of "none" and of simple contact
policies are within 5 % of the population simulator's (tests/test_dp.py).

Discount: the world's `economics.discount_per_period` when its effective horizon 1/(1 - discount)
is at most MAX_EFFECTIVE_HORIZON periods, otherwise DEFAULT_DISCOUNT = 0.95 per period
(`factors["discount_source"]` says which). An 8 % annual rate is 0.9985 per week, an effective
horizon of ~680 weeks: right for a lifetime value, but far beyond what the mechanisms here
need (effects last 2-8 periods, stages change within a year) and too long for an RL agent's
credit assignment in minutes of training. At 0.95 (an effective horizon of 20 periods) retention
and cross-sell, which pay over many periods, still count.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .catalogue import STAGES
from .world import WorldModel

DEFAULT_DISCOUNT = 0.95
MAX_EFFECTIVE_HORIZON = 104.0  # periods: two years of weeks
DEFAULT_LEVELS = 3
TENURE = ("new", "growth", "maturity")  # stage indices 0, 1, 2 of STAGES
RECENCY = ("active", "dormant", "lapsed")  # lapsed = the "churned" stage (recency >= churned_after)
GONE_LABEL = "gone"
FORMAT = "clv-tabular-world"
_PROB_TOL = 1e-8


@dataclass
class TabularWorld:
    """A finite MDP: P (A, S, S) with rows summing to one, expected reward R (S, A), allowed actions
    masks (S, A) (column 0, "none", always allowed), initial distribution init (S,), discount < 1.

    For a masked (state, action) pair P and R hold whatever the builder put there; evaluation in
    `policies.dp` and `TabularCustomerEnv` both replace a masked action by "none".
    """

    n_states: int
    n_actions: int
    P: np.ndarray
    R: np.ndarray
    masks: np.ndarray
    init: np.ndarray
    discount: float
    state_labels: list[str]
    action_names: list[str]
    factors: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        S, A = self.n_states, self.n_actions
        if not isinstance(S, (int, np.integer)) or isinstance(S, bool) or S < 1:
            raise ValueError(f"n_states must be a positive integer, got {S!r}")
        if not isinstance(A, (int, np.integer)) or isinstance(A, bool) or A < 1:
            raise ValueError(f"n_actions must be a positive integer, got {A!r}")
        self.n_states, self.n_actions = int(S), int(A)
        self.P = _float_array(self.P, "P", (A, S, S))
        if (self.P < -_PROB_TOL).any():
            a, s, t = np.argwhere(self.P < -_PROB_TOL)[0]
            raise ValueError(f"P has a negative probability at action {a}, state {s} -> {t}: {self.P[a, s, t]}")
        rows = self.P.sum(axis=2)
        if np.abs(rows - 1.0).max() > 1e-6:
            a, s = np.unravel_index(np.abs(rows - 1.0).argmax(), rows.shape)
            raise ValueError(f"P rows must sum to 1: action {a}, state {s} sums to {rows[a, s]:.6g}")
        self.R = _float_array(self.R, "R", (S, A))
        m = np.asarray(self.masks)
        if m.shape != (S, A):
            raise ValueError(f"masks must have shape {(S, A)}, got {m.shape}")
        if m.dtype != bool:
            if not np.isin(m, (0, 1)).all():
                raise ValueError("masks must be boolean (or 0/1)")
            m = m.astype(bool)
        if not m[:, 0].all():
            raise ValueError(
                f"action 0 ('none') must be allowed in every state; it is masked in state "
                f"{int(np.flatnonzero(~m[:, 0])[0])}"
            )
        self.masks = m
        self.init = _float_array(self.init, "init", (S,))
        if (self.init < 0).any() or abs(self.init.sum() - 1.0) > 1e-6:
            raise ValueError(
                f"init must be a probability distribution (>= 0, sums to 1); sums to {self.init.sum():.6g}"
            )
        d = self.discount
        if isinstance(d, bool) or not isinstance(d, (int, float, np.floating)) or not (0.0 <= float(d) < 1.0):
            raise ValueError(f"discount must be a number in [0, 1), got {d!r}")
        self.discount = float(d)
        self.state_labels = [str(x) for x in self.state_labels]
        self.action_names = [str(x) for x in self.action_names]
        if len(self.state_labels) != S:
            raise ValueError(f"state_labels has {len(self.state_labels)} entries for {S} states")
        if len(self.action_names) != A:
            raise ValueError(f"action_names has {len(self.action_names)} entries for {A} actions")

    @property
    def terminal(self) -> np.ndarray:
        """(S,) bool: absorbing states that pay nothing (reaching one ends an episode)."""
        idx = np.arange(self.n_states)
        stay = (self.P[:, idx, idx] >= 1.0 - 1e-12).all(axis=0)
        return stay & (self.R == 0.0).all(axis=1)

    @property
    def horizon(self) -> int:
        """Smallest episode length T with discount**T < 1e-3: truncating there changes values by
        less than 0.1 % of the largest reward stream."""
        return horizon_for(self.discount)

    def with_discount(self, discount: float) -> "TabularWorld":
        """Same MDP under another discount factor (shares the arrays)."""
        return replace(self, discount=discount)

    # ---- JSON (no pickle) ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; P is stored sparse as (action, state, next state, probability) lists."""
        a, s, t = np.nonzero(self.P)
        return {
            "format": FORMAT,
            "version": 1,
            "n_states": self.n_states,
            "n_actions": self.n_actions,
            "discount": self.discount,
            "state_labels": list(self.state_labels),
            "action_names": list(self.action_names),
            "init": self.init.tolist(),
            "R": self.R.tolist(),
            "masks": self.masks.astype(int).tolist(),
            "P": {"action": a.tolist(), "state": s.tolist(), "next": t.tolist(), "p": self.P[a, s, t].tolist()},
            "factors": self.factors,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TabularWorld":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a tabular world dict (format {d.get('format')!r}, expected {FORMAT!r})")
        S, A = int(d["n_states"]), int(d["n_actions"])
        sp = d["P"]
        P = np.zeros((A, S, S))
        try:
            P[np.asarray(sp["action"], int), np.asarray(sp["state"], int), np.asarray(sp["next"], int)] = sp["p"]
        except IndexError:
            raise ValueError("P entries index outside n_actions x n_states") from None
        return cls(
            n_states=S,
            n_actions=A,
            P=P,
            R=np.asarray(d["R"], float),
            masks=np.asarray(d["masks"]).astype(bool),
            init=np.asarray(d["init"], float),
            discount=float(d["discount"]),
            state_labels=list(d["state_labels"]),
            action_names=list(d["action_names"]),
            factors=d.get("factors"),
        )

    def save(self, path: str | Path) -> None:
        from .atomic import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "TabularWorld":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _float_array(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric") from None
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite entries")
    return arr


def horizon_for(discount: float, tail: float = 1e-3) -> int:
    """Smallest T >= 1 with discount**T < tail."""
    if discount <= 0.0:
        return 1
    return max(1, int(math.floor(math.log(tail) / math.log(discount))) + 1)


# ---- building the small world from a WorldModel ----------------------------------------
def _level_rates(r: float, alpha: float, levels: int) -> np.ndarray:
    """Mean of Gamma(r, rate alpha) within each of `levels` equal-probability buckets."""
    from scipy import special

    q = np.arange(levels + 1) / levels
    x = special.gammaincinv(r, q)  # edges in units of alpha * lam
    x[-1] = np.inf
    upper = special.gammainc(r + 1.0, x)  # E[lam 1{alpha lam < x}] = (r/alpha) G_{r+1}(x)
    return r / alpha * levels * np.diff(upper)


def _recency_probs(lam: np.ndarray, D: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-period probabilities (transaction, active -> dormant, dormant -> lapsed) at rate lam;
    lam -> 0 gives the limits (0, 1/D, 1/m)."""
    lam = np.maximum(lam, 1e-12)
    p_tx = -np.expm1(-lam)  # 1 - q
    to_dormant = p_tx * np.exp(-D * lam) / -np.expm1(-D * lam)
    to_lapsed = p_tx * np.exp(-m * lam) / -np.expm1(-m * lam)
    return p_tx, to_dormant, to_lapsed


def _pick_product(world: WorldModel, seg: int, product: str | None) -> int | None:
    """Index of the product to track: a name, None (no product), or "auto"."""
    if product is None or not world.products:
        return None
    if product != "auto":
        if product not in world.products:
            raise ValueError(f"unknown product {product!r}; the world has {world.products}")
        return world.products.index(product)
    targeted = {a.target_product for a in world.catalogue.actions if a.target_product}
    adopt = np.asarray(world.segments[seg].product_adoption, float).reshape(len(STAGES), -1)
    margins = world.economics.product_margin_per_period
    worth = [
        float(margins.get(p, 0.0)) * adopt[:3, j].mean() if p in targeted else -1.0
        for j, p in enumerate(world.products)
    ]
    return int(np.argmax(worth)) if max(worth) > 0 else None


def small_world_from(
    world: WorldModel,
    segment: int | str = 0,
    levels: int = DEFAULT_LEVELS,
    discount: float | None = None,
    product: str | None = "auto",
    start: str = "new",
    clock: str = "geometric",
) -> TabularWorld:
    """The small tabular lifecycle of one segment of `world` (equations in the module docstring).

    segment: index or name. levels: activity levels K. discount: per period (default: the
    world's if its effective horizon is at most MAX_EFFECTIVE_HORIZON periods, else
    DEFAULT_DISCOUNT). product: the product to track ("auto", a name, or None).
    start: "new" customers or the steady-state "book". clock: "geometric" or "exact".
    """
    if world.activity_model != "pareto_nbd":
        raise ValueError(
            f"small_world_from needs a Pareto/NBD world (a dropout hazard); this one is {world.activity_model!r}"
        )
    names = [s.name for s in world.segments]
    if isinstance(segment, str):
        if segment not in names:
            raise ValueError(f"unknown segment {segment!r}; segments: {names}")
        seg = names.index(segment)
    else:
        seg = int(segment)
        if not 0 <= seg < len(names):
            raise ValueError(f"segment index {segment} out of range (the world has {len(names)})")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 1 <= levels <= 20:
        raise ValueError(f"levels must be an integer in 1..20, got {levels!r}")
    from .population import POPULATIONS

    if start not in POPULATIONS:
        raise ValueError(f"start must be 'book' or 'new', got {start!r}")
    sm = world.segments[seg]
    act, sp = sm.activity, sm.spend
    if not (sp["q"] > 1.0):
        raise ValueError(f"segment {sm.name!r}: Gamma-Gamma q = {sp['q']} <= 1 has no finite mean spend")
    mu = float(act["s"]) / float(act["beta"])
    if not mu > 0:
        raise ValueError(f"segment {sm.name!r}: the mean dropout hazard s/beta must be > 0")
    econ, cat, resp, rules = world.economics, world.catalogue, world.response, world.stage_rules
    D, C = int(rules.dormant_after), int(rules.churned_after)
    if not 1 <= D < C:
        raise ValueError(f"stage rules need 1 <= dormant_after < churned_after, got {D}, {C}")
    if discount is None:
        d_world = econ.discount_per_period
        use_world = d_world < 1.0 and 1.0 / (1.0 - d_world) <= MAX_EFFECTIVE_HORIZON
        discount = d_world if use_world else DEFAULT_DISCOUNT
        discount_source = "world" if use_world else "default"
    else:
        discount_source = "argument"
    gamma = float(discount)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"discount must be in [0, 1), got {discount}")

    A, nS = len(cat), len(STAGES)
    lam = _level_rates(float(act["r"]), float(act["alpha"]), int(levels))
    spend = float(sp["p"]) * float(sp["gamma"]) / (float(sp["q"]) - 1.0)
    pj = _pick_product(world, seg, product)
    H = 1 if pj is None else 2
    eligible = np.zeros((A, nS), bool)
    eligible[0] = True
    for i, a in enumerate(cat.actions[1:], start=1):
        eligible[i, [STAGES.index(s) for s in a.eligible_stages]] = True

    def table(t: list[list[float]]) -> np.ndarray:
        arr = np.asarray(t, float).reshape(A, nS).copy()
        arr[0] = 0.0
        return arr

    lift, drop_red, adopt_up = table(resp.activity_lift), table(resp.dropout_reduction), table(resp.adoption_uplift)
    if pj is not None:  # an uplift reaches the tracked product if the action targets it or every product
        reaches = np.array([a.target_product in (None, world.products[pj]) for a in cat.actions])
        adopt_up = adopt_up * reaches[:, None]
        adopt = np.asarray(sm.product_adoption, float).reshape(nS, -1)[:, pj]
        close = np.asarray(sm.product_close, float).reshape(nS, -1)[:, pj]
        pmargin = float(econ.product_margin_per_period.get(world.products[pj], 0.0))
        p_init = float(np.asarray(sm.initial_products, float)[pj])
    cost = np.asarray(cat.costs, float)
    dur = np.asarray(resp.duration, int)
    gap = int(resp.min_gap)

    # contact clock states: 0 = free, then (a, c) for c = 1 .. max(duration[a], min_gap) - 1
    # ("exact"), or c = 1 .. min_gap - 1 then one memoryless state c = min_gap ("geometric")
    if clock not in ("exact", "geometric"):
        raise ValueError(f"clock must be 'exact' or 'geometric', got {clock!r}")
    g1 = max(gap, 1)
    clock_a, clock_c = [0], [0]
    for a in range(1, A):
        last = max(int(dur[a]), g1) - 1 if clock == "exact" else (g1 if dur[a] > g1 else g1 - 1)
        for c in range(1, last + 1):
            clock_a.append(a)
            clock_c.append(c)
    clock_a, clock_c = np.array(clock_a), np.array(clock_c)
    E = clock_a.size
    start_of = {a: int(np.flatnonzero(clock_a == a)[0]) if (clock_a == a).any() else 0 for a in range(1, A)}
    last_c = np.array([clock_c[clock_a == a].max() if (clock_a == a).any() else 0 for a in range(A)])
    # next clock state without a contact: c + 1 while within the action's window, else free; the
    # geometric state c = min_gap stays with probability 1 - 1/(duration - min_gap) (mean kept)
    idle_next = np.where((clock_a > 0) & (clock_c < last_c[clock_a]), np.arange(E) + 1, 0)
    idle_stay = np.zeros(E)
    if clock == "geometric":
        run = (clock_a > 0) & (clock_c == g1) & (dur[clock_a] > g1)
        idle_stay[run] = 1.0 - 1.0 / (dur[clock_a[run]] - g1)
    clock_effect = np.where((clock_a > 0) & (clock_c < dur[clock_a]), clock_a, 0)
    clock_allows = (clock_a == 0) | (clock_c >= gap)

    # the full grid of living states (tau, k, rho, h, e); the index after them is "gone"
    dims = (3, int(levels), 3, H, E)
    N = int(np.prod(dims))
    GONE = N
    tau, lev, rho, hold, clk = np.unravel_index(np.arange(N), dims)
    stage = np.where(rho == 0, tau, np.where(rho == 1, 3, 4))

    p_ng = 1.0 / max(int(rules.new_periods), 1)
    p_gm = 1.0 / max(int(rules.mature_periods) - int(rules.new_periods), 1)
    T_tau = np.array([[1 - p_ng, p_ng, 0.0], [0.0, 1 - p_gm, p_gm], [0.0, 0.0, 1.0]])

    def rho_matrix(lam_eff: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(n, 3) next-recency probabilities of survivors in recency r at rate lam_eff."""
        p_tx, to_d, to_l = _recency_probs(lam_eff, D, C - D)
        out = np.zeros((lam_eff.size, 3))
        act_, dor, lap = r == 0, r == 1, r == 2
        out[act_, 0], out[act_, 1] = 1 - to_d[act_], to_d[act_]
        out[dor, 0], out[dor, 2] = p_tx[dor], to_l[dor]
        out[dor, 1] = 1 - p_tx[dor] - to_l[dor]
        out[lap, 0], out[lap, 2] = p_tx[lap], 1 - p_tx[lap]
        return np.clip(out, 0.0, 1.0)

    # a departed customer's product keeps earning until it closes: W[tau, rho] is its discounted
    # margin from a period that starts in (tau, rho) with the product held, recency running at lam = 0
    W_next = np.zeros((3, 3))
    if pj is not None:
        R_dead = rho_matrix(np.zeros(3), np.arange(3))
        M = np.kron(T_tau, R_dead)  # (tau, rho) -> (tau', rho')
        st9 = np.array([t if r == 0 else (3 if r == 1 else 4) for t in range(3) for r in range(3)])
        keep = 1.0 - close[st9]
        W = np.linalg.solve(np.eye(9) - gamma * keep[:, None] * M, keep * pmargin)
        W_next = (M @ W).reshape(3, 3)  # expected W of the next period's (tau, rho)

    allowed = eligible.T[stage] & clock_allows[clk][:, None]
    allowed[:, 0] = True
    rows, cols, vals = [], [], []
    R = np.zeros((N + 1, A))
    for a in range(A):
        contact = allowed[:, a] & (a > 0)
        eff = np.where(contact, a if dur[a] >= 1 else 0, clock_effect[clk])
        lam_eff = np.maximum(lam[lev] * (1.0 + lift[eff, stage]), 0.0)
        mu_eff = np.maximum(mu * (1.0 - drop_red[eff, stage]), 0.0)
        surv = np.exp(-mu_eff)
        exposure = np.where(mu_eff > 1e-12, -np.expm1(-mu_eff) / np.maximum(mu_eff, 1e-300), 1.0)
        R[:N, a] = econ.margin_rate * spend * lam_eff * exposure - np.where(contact, cost[a], 0.0)
        nxt_clock = np.where(contact, start_of.get(a, 0) if last_c[a] >= 1 else 0, idle_next[clk])
        stay = np.where(contact, 0.0, idle_stay[clk])  # geometric clock: chance of staying put
        rho_next = rho_matrix(lam_eff, rho)
        if pj is None:
            h_next = np.ones((N, 1))
        else:
            p_open = np.minimum(adopt[stage] * (1.0 + adopt_up[eff, stage]), 1.0)
            p_keep = 1.0 - close[stage]
            h_next = np.stack([np.where(hold == 1, 1 - p_keep, 1 - p_open), np.where(hold == 1, p_keep, p_open)], 1)
            held_dead = (1.0 - surv) * (hold == 1) * p_keep  # leaves this period, product still held
            R[:N, a] += pmargin * (surv * h_next[:, 1] + held_dead) + gamma * held_dead * W_next[tau, rho]
        # survivors: independent moves of tenure, recency, product and clock (the clock moves
        # deterministically except in the geometric "effect running" state)
        for t2 in range(3):
            for r2 in range(3):
                for h2 in range(H):
                    p = surv * T_tau[tau, t2] * rho_next[:, r2] * h_next[:, h2]
                    for nc, pc in ((nxt_clock, 1.0 - stay), (clk, stay)):
                        q = p * pc
                        nz = q > 0
                        tgt = np.ravel_multi_index((np.full(N, t2), lev, np.full(N, r2), np.full(N, h2), nc), dims)
                        rows.append(a * (N + 1) + np.flatnonzero(nz))
                        cols.append(tgt[nz])
                        vals.append(q[nz])
        rows.append(a * (N + 1) + np.arange(N))
        cols.append(np.full(N, GONE))
        vals.append(1.0 - surv)
        rows.append(np.array([a * (N + 1) + GONE]))
        cols.append(np.array([GONE]))
        vals.append(np.array([1.0]))
    from scipy import sparse

    Pfull = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(A * (N + 1), N + 1)
    )
    masks = np.zeros((N + 1, A), bool)
    masks[:N] = allowed
    masks[GONE, 0] = True

    # initial distribution: new customers, or the steady-state book they make under "none"
    init = np.zeros(N + 1)
    for k in range(int(levels)):
        for h in range(H):
            share = (p_init if h == 1 else 1.0 - p_init) if pj is not None else 1.0
            init[np.ravel_multi_index((0, k, 0, h, 0), dims)] = share / levels
    if start == "book":
        from scipy.sparse.linalg import spsolve

        P0 = Pfull[: N + 1][:N, :N]  # "none" among living states (transient)
        occ = spsolve((sparse.identity(N, format="csc") - P0.T.tocsc()), init[:N])
        init = np.zeros(N + 1)
        init[:N] = np.maximum(occ, 0.0)
        init /= init.sum()

    # keep the states some policy can reach from the initial distribution (allowed actions only)
    live_rows = np.flatnonzero(masks.T.ravel())  # rows a * (N + 1) + s with a allowed in s
    step = Pfull[live_rows]
    src = live_rows % (N + 1)
    adj = sparse.csr_matrix(
        (np.ones(step.nnz, bool), (np.repeat(src, np.diff(step.indptr)), step.indices)), shape=(N + 1, N + 1)
    )
    reach = init > 0
    reach[GONE] = True
    frontier = reach.copy()
    while frontier.any():
        new = (adj[frontier].sum(axis=0).A1 > 0) & ~reach
        reach |= new
        frontier = new
    keep = np.flatnonzero(reach)
    S = keep.size

    # dense P over the kept states (a masked action was built as "none": same rows and rewards)
    P = np.empty((A, S, S))
    for a in range(A):
        P[a] = Pfull[a * (N + 1) + keep][:, keep].toarray()
    P /= P.sum(axis=2, keepdims=True)  # rounding only: successors of kept states are kept
    masks, R, init = masks[keep], R[keep], init[keep]

    pname = world.products[pj] if pj is not None else None
    clock_names = ["free"] + [f"{cat.names[a]}+{c}" for a, c in zip(clock_a[1:], clock_c[1:])]
    labels = []
    for i in keep:
        if i == GONE:
            labels.append(GONE_LABEL)
            continue
        parts = [TENURE[tau[i]], f"L{lev[i]}", RECENCY[rho[i]]]
        if pj is not None:
            parts.append(pname if hold[i] else f"no_{pname}")
        parts.append(clock_names[clk[i]])
        labels.append("|".join(parts))
    is_gone = keep == GONE
    k_ = np.minimum(keep, N - 1)

    def fac(x: np.ndarray) -> list[int]:
        return np.where(is_gone, -1, x[k_]).astype(int).tolist()

    factors = {
        "segment": sm.name,
        "levels": int(levels),
        "level_rates": lam.tolist(),
        "dropout_hazard": mu,
        "mean_spend": spend,
        "margin_rate": float(econ.margin_rate),
        "product": pname,
        "product_margin": pmargin if pj is not None else 0.0,
        "discount": gamma,
        "discount_source": discount_source,
        "world_discount_per_period": float(econ.discount_per_period),
        "start": start,
        "tenure": list(TENURE),
        "recency": list(RECENCY),
        "stages": list(STAGES),
        "min_gap": gap,
        "duration": dur.tolist(),
        "grid": list(dims),
        "full_states": N + 1,
        "clock_states": clock_names,
        "state": {
            "tenure": fac(tau),
            "level": fac(lev),
            "recency": fac(rho),
            "product": fac(hold),
            "clock": fac(clk),
            "clock_action": fac(clock_a[clk]),
            "clock_periods": fac(clock_c[clk]),
            "stage": fac(stage),
        },
    }
    return TabularWorld(
        n_states=S,
        n_actions=A,
        P=P,
        R=R,
        masks=masks,
        init=init,
        discount=gamma,
        state_labels=labels,
        action_names=list(cat.names),
        factors=factors,
    )


@functools.lru_cache(maxsize=4)
def default_small_world(discount: float | None = None) -> TabularWorld:
    """small_world_from(truth_world(BankConfig())), built once per process (envs share it; never
    mutate the returned arrays)."""
    from .synthetic import BankConfig, truth_world

    return small_world_from(truth_world(BankConfig()), discount=discount)
