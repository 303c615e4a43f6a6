"""Vectorised population simulator: state arrays for N customers, one `step(actions)` for all.

Latent process per customer (hidden from policies): transaction rate `lam` per period, dropout
hazard `mu` per period (Pareto/NBD; or dropout probability after each transaction for BG/NBD),
spend scale `nu` (Gamma-Gamma), and an alive flag. Observables: tenure, recency, frequency,
monetary, lifecycle stage, products held, periods since last contact, a decayed count of recent
contacts, and per-channel opt-outs.

A contact with action a in stage s starts an effect lasting `duration[a]` periods: the rate is
multiplied by (1 + lift[a,s]*f), the dropout hazard by (1 - dropout_reduction[a,s]*f), the
target product's adoption hazard by (1 + adoption_uplift[a,s]*f), with fatigue
f = fatigue ** recent_contacts. Contacts may opt a customer out of the channel and may bring
back a customer who had silently left (reactivation).

All randomness comes from one `numpy.random.Generator` per chunk of customers; chunks get
their seeds from `numpy.random.SeedSequence(seed).spawn`, so results do not depend on how
chunks are spread over workers. No per-customer Python loop anywhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .catalogue import STAGES
from .world import WorldModel

N_STAGES = len(STAGES)
NEVER_CONTACTED = 10_000  # periods since last contact for customers never contacted
POPULATIONS = ("book", "new")  # digital twins of the calibrated book | brand-new customers from the priors
DEFAULT_CHUNK = 262_144  # customers stepped together: big enough to amortise numpy calls, small
# enough for the state arrays to stay in cache


@dataclass
class WorldTables:
    """Dense numpy views of a WorldModel, built once and shared by every chunk."""

    n_actions: int
    n_products: int
    n_channels: int
    action_cost: np.ndarray  # (A,)
    action_channel: np.ndarray  # (A,) channel index, -1 for none
    action_target: np.ndarray  # (A,) product index, -1 = all products, -2 = none (unknown product)
    eligible: np.ndarray  # (A, S) bool
    eligible_by_stage: np.ndarray  # (S, A) bool, contiguous rows for fast mask gathers
    duration: np.ndarray  # (A,) int
    lift: np.ndarray  # (A*S,) flat, index code = a*S + s
    dropout_reduction: np.ndarray  # (A*S,)
    adoption_uplift: np.ndarray  # (A*S,)
    reactivation: np.ndarray  # (A*S,)
    opt_out: np.ndarray  # (C,)
    fatigue: float
    contact_decay: float
    min_gap: int
    spend_p: np.ndarray  # (G,)
    margin_rate: float
    product_margin: np.ndarray  # (P,)
    adopt_cells: np.ndarray  # (G*S, P) adoption hazard by segment x stage cell
    close_cells: np.ndarray  # (G*S, P) closing hazard by cell
    product_bound_all: float  # max hazard over cells and products (thinning bound)
    any_adoption_uplift: bool  # whether any action boosts adoption
    seasonality: np.ndarray | None  # (53,) or None
    pareto: bool

    @classmethod
    def from_world(cls, world: WorldModel) -> "WorldTables":
        cat = world.catalogue
        channels = cat.channels
        products = list(world.products)
        A, S, P = len(cat), N_STAGES, len(products)
        resp = world.response
        eligible = np.zeros((A, S), bool)
        eligible[0, :] = True
        for i, a in enumerate(cat.actions[1:], start=1):
            for s in a.eligible_stages:
                eligible[i, STAGES.index(s)] = True
        # -1: the action boosts every product; -2: its target is not modelled, it boosts none
        target = np.array(
            [
                -1
                if not a.target_product
                else (products.index(a.target_product) if a.target_product in products else -2)
                for a in cat.actions
            ],
            np.int16,
        )

        def flat(tab: list[list[float]]) -> np.ndarray:
            arr = np.asarray(tab, dtype=np.float64).reshape(A, S)
            arr[0, :] = 0.0
            return np.ascontiguousarray(arr.ravel())

        G = len(world.segments)
        adopt = np.zeros((G, S, P))
        close = np.zeros((G, S, P))
        for g, seg in enumerate(world.segments):
            if P:
                adopt[g] = np.asarray(seg.product_adoption, float).reshape(S, P)
                close[g] = np.asarray(seg.product_close, float).reshape(S, P)
        pm = world.economics.product_margin_per_period
        return cls(
            n_actions=A,
            n_products=P,
            n_channels=len(channels),
            action_cost=np.asarray(cat.costs, float),
            action_channel=np.array([channels.index(a.channel) if a.channel else -1 for a in cat.actions], np.int16),
            action_target=target,
            eligible=eligible,
            eligible_by_stage=np.ascontiguousarray(eligible.T),
            duration=np.asarray(resp.duration, np.int16),
            lift=flat(resp.activity_lift),
            dropout_reduction=flat(resp.dropout_reduction),
            adoption_uplift=flat(resp.adoption_uplift),
            reactivation=flat(resp.reactivation),
            opt_out=np.array([float(resp.opt_out.get(c, 0.0)) for c in channels]),
            fatigue=float(resp.fatigue),
            contact_decay=resp.contact_decay,
            min_gap=int(resp.min_gap),
            spend_p=np.array([seg.spend["p"] for seg in world.segments], float),
            margin_rate=float(world.economics.margin_rate),
            product_margin=np.array([float(pm.get(p, 0.0)) for p in products]),
            adopt_cells=adopt.reshape(G * S, P),
            close_cells=close.reshape(G * S, P),
            product_bound_all=float(np.maximum(adopt, close).max()) if P and G else 0.0,
            any_adoption_uplift=bool(np.any(np.asarray(resp.adoption_uplift, float)[1:] != 0)),
            seasonality=None if world.seasonality is None else np.asarray(world.seasonality, float),
            pareto=world.activity_model == "pareto_nbd",
        )


@dataclass
class PopulationState:
    """State arrays of N customers. Latent fields must never be shown to a policy."""

    # latent
    lam: np.ndarray
    mu: np.ndarray  # dropout hazard per period (pareto) or dropout prob per transaction (bg)
    nu: np.ndarray  # Gamma-Gamma spend rate: each transaction ~ Gamma(p, scale=1/nu)
    alive: np.ndarray
    # observable
    segment: np.ndarray
    tenure: np.ndarray  # periods since birth
    recency: np.ndarray  # periods since last transaction (since birth if none)
    frequency: np.ndarray  # transactions since birth
    monetary: np.ndarray  # total amount since birth
    products: np.ndarray  # (N, P) bool
    last_contact: np.ndarray  # periods since last contact
    recent_contacts: np.ndarray
    opted_out: np.ndarray  # (N, C) bool
    stage: np.ndarray
    # effect in force
    eff_code: np.ndarray  # a*S + s of the action/stage whose effect is in force (0 = none)
    eff_end: np.ndarray  # simulator step at which that effect ends (-1 = none)
    eff_scale: np.ndarray  # fatigue factor it was applied with
    lam_eff: np.ndarray  # rate under the effect in force (kept in step with contacts and expiries)
    mu_eff: np.ndarray  # dropout hazard (or probability) under the effect in force
    adopt_up: np.ndarray  # adoption uplift in force (0 = none), on the product eff_code's action targets
    product_margin: np.ndarray  # margin per period of the products held (kept in step with products)
    opened: np.ndarray  # products opened since the simulation started (cross-sell)

    @property
    def n(self) -> int:
        return int(self.lam.shape[0])


@dataclass
class StepOutcome:
    """What one period produced, per customer."""

    reward: np.ndarray  # margin from amounts + product margins - contact cost
    transactions: np.ndarray  # sampled counts
    expected_transactions: np.ndarray | None  # E[count | latent state]; None unless track_expected
    amount: np.ndarray
    expected_amount: np.ndarray | None  # E[amount | latent state]; None unless track_expected
    cost: np.ndarray
    contacted: np.ndarray
    actions: np.ndarray  # actions applied (ineligible ones replaced by 0)
    n_ineligible: int = 0


class PopulationSimulator:
    """Steps N customers at once. Build with `from_book` (digital twins) or `new_customers`."""

    def __init__(
        self,
        world: WorldModel,
        state: PopulationState,
        rng: np.random.Generator,
        start_date: str | pd.Timestamp | None = None,
        tables: WorldTables | None = None,
    ):
        self.world = world
        self.tables = tables or WorldTables.from_world(world)
        self.state = state
        self.rng = rng
        # policies draw from a stream of their own, so a policy's randomness never shifts the
        # world's random numbers: same seed, same customers, whichever policy runs
        self.policy_rng = rng.spawn(1)[0]
        self.t = 0
        start = (
            start_date
            if start_date is not None
            else (pd.Timestamp(world.calibration_end) + pd.Timedelta(days=1) if world.calibration_end else None)
        )
        self.start_date = None if start is None else pd.Timestamp(start)
        self._season_by_t = np.zeros(0)
        # common random numbers: every period draws the same fixed block of uniforms per customer
        # (inverse-CDF sampling), whatever the actions, so two policies run from the same seed
        # give identical paths to every customer they treat alike (slower: evaluation turns it on)
        self.crn = False
        self.track_expected = False  # also return expected counts and amounts (validation turns this on)
        self.refresh()

    def refresh(self) -> None:
        """Recompute derived state (stage, product margin, rate/hazard/adoption multipliers of the
        effect in force) after editing state arrays by hand."""
        derive_state(self.state, self.world, self.tables)

    def replace(self, idx: np.ndarray, fresh: PopulationState) -> None:
        """Put new customers (a state of len(idx) customers, e.g. from `CustomerSource.draw`) in
        the slots `idx`, keeping everyone else as is. Effects running in `fresh` count their end
        from now (the simulator's clock keeps running)."""
        st = self.state
        derive_state(fresh, self.world, self.tables)
        for f in fields(PopulationState):
            getattr(st, f.name)[idx] = getattr(fresh, f.name)
        running = fresh.eff_end >= 0
        st.eff_end[idx[running]] = fresh.eff_end[running] + self.t

    def subset(self, idx: np.ndarray, rng) -> "PopulationSimulator":
        """A simulator holding copies of the customers `idx` (full state, same clock t, start date
        and tables, so effects in force end when they would have), drawing from `rng`; its policy
        stream starts where this one's is (and does not advance it). For branching: what would
        these customers do under another action."""
        twin = copy.copy(self)
        twin.state = PopulationState(**{f.name: getattr(self.state, f.name)[idx] for f in fields(PopulationState)})
        twin.rng = rng
        bg = type(self.policy_rng.bit_generator)()
        bg.state = self.policy_rng.bit_generator.state
        twin.policy_rng = np.random.Generator(bg)
        return twin

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def new_customers(
        cls,
        world: WorldModel,
        n: int,
        seed: int | np.random.SeedSequence,
        tables: WorldTables | None = None,
        start_date=None,
    ) -> "PopulationSimulator":
        """N brand-new customers (tenure 0), segments drawn by share, latents from segment priors."""
        rng = np.random.default_rng(seed)
        tables = tables or WorldTables.from_world(world)
        state = new_customer_state(world, n, rng, tables)
        return cls(world, state, rng, start_date=start_date, tables=tables)

    @classmethod
    def from_book(
        cls,
        world: WorldModel,
        book: pd.DataFrame,
        seed: int | np.random.SeedSequence,
        tables: WorldTables | None = None,
        start_date=None,
        uniforms: np.ndarray | None = None,
    ) -> "PopulationSimulator":
        """Digital twins: each row of the book becomes a customer whose alive state and latent
        rates are drawn from their posterior given their own history."""
        rng = np.random.default_rng(seed)
        tables = tables or WorldTables.from_world(world)
        state = state_from_book(world, book, rng, tables, uniforms)
        return cls(world, state, rng, start_date=start_date, tables=tables)

    # ---- policy interface ------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """(N, A) bool: allowed actions under the contact rules (stage eligibility, minimum gap
        between contacts, opted-out channels). "none" is always allowed."""
        st = self.state
        return action_masks(self.tables, st.stage, st.last_contact, st.opted_out)

    def observe(self) -> dict[str, np.ndarray]:
        """What a bank can see about each customer (never the latent rate or alive flag)."""
        st = self.state
        return {
            "recency": st.recency,
            "frequency": st.frequency,
            "monetary": st.monetary,
            "tenure": st.tenure,
            "stage": st.stage,
            "segment": st.segment,
            "products": st.products,
            "last_contact": st.last_contact,
            "recent_contacts": st.recent_contacts,
            "opted_out": st.opted_out,
        }

    def season_factor(self) -> float:
        tb = self.tables
        if tb.seasonality is None or self.start_date is None:
            return 1.0
        if self.t >= len(self._season_by_t):  # computed a year at a time: pandas dates are slow per step
            days = np.arange(len(self._season_by_t), self.t + 53) * self.world.economics.period_days
            weeks = (self.start_date + pd.to_timedelta(days, unit="D")).isocalendar().week.to_numpy()
            self._season_by_t = np.concatenate([self._season_by_t, tb.seasonality[np.minimum(weeks, 53) - 1]])
        return float(self._season_by_t[self.t])

    # ---- dynamics --------------------------------------------------------------------
    def step(self, actions: np.ndarray | int | None = None, exposure: float = 1.0) -> StepOutcome:
        """Advance every customer by one period (or a fraction `exposure` of one)."""
        tb, st, rng = self.tables, self.state, self.rng
        n = st.n
        if actions is None:
            actions = np.zeros(n, np.int16)
        raw = np.broadcast_to(np.asarray(actions), (n,))
        if raw.size and (raw.min() < 0 or raw.max() >= tb.n_actions):
            bad = raw[(raw < 0) | (raw >= tb.n_actions)][0]
            raise ValueError(f"unknown action index {int(bad)}; the catalogue has {tb.n_actions} actions")
        actions = raw.astype(np.int16, copy=True)
        U = rng.random((n, 5 + tb.n_products)) if self.crn else None  # contact(2), life, count, spend, products
        n_inel = 0
        contacted = actions > 0
        contact_idx = np.zeros(0, np.int64)
        if contacted.any():
            idx = _flatnonzero(contacted)
            a = np.take(actions, idx)
            # (np.take: a plain gather, faster than fancy indexing on these sizes)
            code = a * N_STAGES + np.take(st.stage, idx)
            ok = np.take(tb.eligible.reshape(-1), code) & (np.take(st.last_contact, idx) >= tb.min_gap - 1)
            if tb.n_channels:
                ch = np.take(tb.action_channel, a)
                held = np.take(st.opted_out, idx * tb.n_channels + np.maximum(ch, 0))  # flat (N, C) index
                ok &= ~(held & (ch >= 0))
            if not ok.all():
                n_inel = int((~ok).sum())
                actions[idx[~ok]] = 0
                idx, a, code = idx[ok], a[ok], code[ok]
                contacted[:] = False
                contacted[idx] = True
            if idx.size:
                self._apply_contacts(idx, a, None if U is None else U[idx, :2], code)
            contact_idx = idx
        n_contacted = contact_idx.size
        cost = np.zeros(n)
        if n_contacted:
            cost[contact_idx] = np.take(tb.action_cost, np.take(actions, contact_idx))

        # rate and hazard of the customers still alive, under the effect in force
        alive_idx = np.flatnonzero(st.alive)
        boosted = in_boosted = None
        if tb.n_products and tb.any_adoption_uplift:
            # adoption needs the customer alive (at the start of the period, before this period's
            # dropouts): only living customers can be boosted
            in_boosted = st.alive & (st.adopt_up != 0)
            boosted = _flatnonzero(in_boosted)
            if not boosted.size:
                boosted = in_boosted = None
        lam_a = np.take(st.lam_eff, alive_idx)
        season = self.season_factor()
        if season != 1.0:  # x * 1.0 == x exactly: skip the pass
            lam_a *= season
        mu_a = np.take(st.mu_eff, alive_idx)
        counts = np.zeros(n, np.int32)
        if tb.pareto:
            # exact continuous-time Pareto/NBD: exponential remaining lifetime (memoryless)
            life = rng.standard_exponential(alive_idx.size) if U is None else -np.log1p(-U[alive_idx, 2])
            life /= np.maximum(mu_a, 1e-300, out=mu_a)  # in place: the draws and mu_a are not needed after
            mean_a = np.minimum(life, exposure)
            mean_a *= lam_a
            counts_a = rng.poisson(mean_a) if U is None else poisson_ppf(U[alive_idx, 3], mean_a)
            st.alive[alive_idx[life < exposure]] = False
        else:
            # BG/NBD: after each transaction the customer leaves with probability mu
            mean_a = lam_a * exposure
            q = np.clip(mu_a, 1e-12, 1.0)
            if U is None:
                pois, k = rng.poisson(mean_a), rng.geometric(q)
            else:
                pois = poisson_ppf(U[alive_idx, 3], mean_a)
                k = np.maximum(1, np.ceil(np.log1p(-U[alive_idx, 2]) / np.log1p(-np.minimum(q, 1 - 1e-12))))
            counts_a = np.minimum(pois, k).astype(np.int64)
            st.alive[alive_idx[k <= pois]] = False
            mean_a = counts_a.astype(float)  # no closed form used here: the sampled count
        counts[alive_idx] = counts_a.astype(np.int32)  # cast first: a same-type scatter is faster
        mean = None
        if self.track_expected:
            mean = np.zeros(n)
            mean[alive_idx] = mean_a

        amount = np.zeros(n)
        # buyers, ascending (= alive_idx[counts_a > 0]); on a bool mask: flatnonzero on the counts
        # themselves is ten times slower
        b = np.flatnonzero(counts > 0)
        if b.size:
            shape = np.take(counts, b) * np.take(tb.spend_p, np.take(st.segment, b))
            if U is None:
                g = rng.standard_gamma(shape)
                g /= np.take(st.nu, b)
                amount[b] = g
            else:
                from scipy.special import gammaincinv

                amount[b] = gammaincinv(shape, np.clip(U[b, 4], 1e-300, 1 - 1e-16)) / st.nu[b]
        exp_amount = None
        if self.track_expected:
            exp_amount = np.zeros(n)
            exp_amount[alive_idx] = mean_a * tb.spend_p[st.segment[alive_idx]] / st.nu[alive_idx]

        if tb.n_products:
            if U is None:
                self._product_events(boosted, in_boosted)
            else:
                self._product_events_crn(U[:, 5:])

        # observables (only buyers' frequency and monetary change: counts and amounts are 0 for the
        # others, so whole-array adds give the same numbers as buyer-only scatters, faster)
        if b.size:
            np.add(st.frequency, counts, out=st.frequency)
            np.add(st.monetary, amount, out=st.monetary)
        st.recency += 1
        if b.size:
            st.recency[b] = 0
        st.tenure += 1
        st.last_contact += 1
        np.minimum(st.last_contact, NEVER_CONTACTED, out=st.last_contact)
        st.last_contact[contact_idx] = 0
        st.recent_contacts *= tb.contact_decay
        if n_contacted:
            st.recent_contacts[contact_idx] += 1.0
        if st.eff_end.dtype == np.int32:  # 0 <= eff_end <= t + 1 in one pass: as unsigned, -1 (none) is above any t
            ended = _flatnonzero(st.eff_end.view(np.uint32) <= self.t + 1)
        else:
            ended = _flatnonzero((st.eff_end >= 0) & (st.eff_end <= self.t + 1))
        if ended.size:
            st.eff_code[ended] = 0
            st.eff_scale[ended] = 0.0
            st.eff_end[ended] = -1
            st.lam_eff[ended] = np.take(st.lam, ended)
            st.mu_eff[ended] = np.take(st.mu, ended)
            st.adopt_up[ended] = 0.0
        st.stage = self.world.stage_rules.assign(st.tenure, st.recency)

        reward = amount * tb.margin_rate
        reward -= cost
        if tb.n_products:
            reward += st.product_margin
        self.t += 1
        return StepOutcome(
            reward=reward,
            transactions=counts,
            expected_transactions=mean,
            amount=amount,
            expected_amount=exp_amount,
            cost=cost,
            contacted=contacted,
            actions=actions,
            n_ineligible=n_inel,
        )

    def _product_events(self, boosted: np.ndarray | None, in_boosted: np.ndarray | None = None) -> None:
        """Open/close products. Each (customer, product) pair changes with its own hazard; events are
        rare, so candidate pairs are drawn by thinning a Bernoulli process over all pairs at a bound
        (geometric gaps between candidates) and accepted with probability hazard / bound. Living
        customers under an adoption-boosting effect are thinned separately, at the bound times the
        largest boost among them. Exact: each pair still changes with probability = its hazard."""
        tb, st, rng = self.tables, self.state, self.rng
        S, P, n = N_STAGES, tb.n_products, st.n
        bound = tb.product_bound_all
        if bound <= 0:
            return
        if boosted is None:
            boosted = np.zeros(0, np.int64)
        # (customer, product) pairs as flat indices customer*P + product into the (N, P) products and
        # the (cell, P) hazard tables: np.take on flat indices is several times faster than 2-D indexing
        pairs = _bernoulli_positions(rng, n * P, bound)
        ci = pairs // P
        if boosted.size:
            if in_boosted is None:  # (the caller's mask of `boosted`, when it has one)
                in_boosted = np.zeros(n, bool)
                in_boosted[boosted] = True
            keep = np.flatnonzero(~np.take(in_boosted, ci))  # one index, two gathers: faster than two masks
            pairs, ci = np.take(pairs, keep), np.take(ci, keep)
        pj = pairs - ci * P
        cell = (np.take(st.segment, ci).astype(np.int64) * S + np.take(st.stage, ci)) * P + pj
        h = np.where(
            np.take(st.products, pairs),
            np.take(tb.close_cells, cell),
            np.take(tb.adopt_cells, cell) * np.take(st.alive, ci),
        )
        acc = rng.random(ci.size) * bound < h
        fi, fj = ci[acc], pj[acc]
        if boosted.size:
            up_b = np.take(st.adopt_up, boosted)
            big = min(bound * max(1.0, 1.0 + float(up_b.max())), 1.0)
            pairs = _bernoulli_positions(rng, boosted.size * P, big)
            bi = pairs // P
            bj = pairs - bi * P
            dd = np.take(boosted, bi)
            cell = (np.take(st.segment, dd).astype(np.int64) * S + np.take(st.stage, dd)) * P + bj
            tg = np.take(tb.action_target, np.take(st.eff_code, dd) // S)  # only the candidates' targets
            mult = 1.0 + np.where((tg == -1) | (tg == bj), np.take(up_b, bi), 0.0)  # -2: target not modelled
            h = np.where(
                np.take(st.products, dd * P + bj),
                np.take(tb.close_cells, cell),
                np.take(tb.adopt_cells, cell) * mult * np.take(st.alive, dd),
            )
            acc = rng.random(bi.size) * big < h
            fi, fj = np.concatenate([fi, dd[acc]]), np.concatenate([fj, bj[acc]])
        if fi.size:
            was = st.products[fi, fj]
            st.products[fi, fj] = ~was
            # a customer may change two products in one period: accumulate, do not overwrite
            np.add.at(st.product_margin, fi, np.where(was, -tb.product_margin[fj], tb.product_margin[fj]))
            # the 1 in the opened counter's own type: np.add.at's fast path needs no cast (30x faster)
            np.add.at(st.opened, fi[~was], st.opened.dtype.type(1))

    def _product_events_crn(self, u: np.ndarray) -> None:
        """Open/close products with one uniform per (customer, product): the common-random-numbers
        twin of `_product_events` (same hazards, same law; every pair checked, so slower)."""
        tb, st = self.tables, self.state
        c = st.segment.astype(np.int64) * N_STAGES + st.stage
        up = np.zeros((st.n, tb.n_products))
        on = np.flatnonzero(st.adopt_up != 0)
        if on.size:
            tg = tb.action_target[st.eff_code[on] // N_STAGES]
            cols = np.arange(tb.n_products)
            up[on] = np.where((tg[:, None] == -1) | (tg[:, None] == cols), st.adopt_up[on, None], 0.0)
        h = np.where(st.products, tb.close_cells[c], tb.adopt_cells[c] * (1.0 + up) * st.alive[:, None])
        fi, fj = np.nonzero(u < h)
        if fi.size:
            was = st.products[fi, fj]
            st.products[fi, fj] = ~was
            np.add.at(st.product_margin, fi, np.where(was, -tb.product_margin[fj], tb.product_margin[fj]))
            np.add.at(st.opened, fi[~was], st.opened.dtype.type(1))

    def _apply_contacts(
        self, idx: np.ndarray, a: np.ndarray, u: np.ndarray | None = None, code: np.ndarray | None = None
    ) -> None:
        """Start the effects of actions `a` on customers `idx`; `code` (a*S + stage) when the caller
        has it already."""
        tb, st, rng = self.tables, self.state, self.rng
        if code is None:
            code = a.astype(np.int16) * N_STAGES + np.take(st.stage, idx)
        f = tb.fatigue ** np.take(st.recent_contacts, idx)
        if u is None:
            u = rng.random((idx.size, 2))
        # win-back of customers who had silently left
        revive = (~np.take(st.alive, idx)) & (u[:, 0] < np.take(tb.reactivation, code) * f)
        st.alive[idx[revive]] = True
        if tb.n_channels:
            ch = np.take(tb.action_channel, a)
            out = (ch >= 0) & (u[:, 1] < np.take(tb.opt_out, np.maximum(ch, 0)))
            st.opted_out[idx[out], ch[out]] = True
        st.eff_code[idx] = code
        st.eff_end[idx] = self.t + np.take(tb.duration, a)
        st.eff_scale[idx] = f
        st.lam_eff[idx] = np.take(st.lam, idx) * (1.0 + np.take(tb.lift, code) * f)
        st.mu_eff[idx] = np.take(st.mu, idx) * (1.0 - np.take(tb.dropout_reduction, code) * f)
        st.adopt_up[idx] = np.take(tb.adoption_uplift, code) * f


def action_masks(tb: WorldTables, stage: np.ndarray, last_contact: np.ndarray, opted_out: np.ndarray) -> np.ndarray:
    """(N, A) bool: the contact rules on observable state (stage eligibility, minimum gap between
    contacts, opted-out channels); "none" is always allowed. Shared by the simulator and by
    offline evaluation, which rebuilds the state from history."""
    masks = tb.eligible_by_stage[stage]
    # last_contact is 0 in the period right after a contact: contacts min_gap periods apart
    masks[:, 1:] &= (last_contact >= tb.min_gap - 1)[:, None]
    if tb.n_channels and opted_out.any():
        ch = tb.action_channel[1:]
        masks[:, 1:] &= ~(opted_out[:, np.maximum(ch, 0)] & (ch >= 0))
    return masks


def poisson_ppf(u: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Poisson(mean) draws by inverse CDF from uniforms u (one uniform per draw, for common random
    numbers): walk the CDF upwards; customers whose count is found drop out of the walk. Means
    above 200 use the normal approximation (error far below the Monte Carlo noise there)."""
    u = np.asarray(u, float)
    m = np.asarray(mean, float)
    k = np.zeros(m.shape, np.int64)
    big = m > 200.0
    if big.any():
        from scipy.special import ndtri

        k[big] = np.maximum(0, np.round(m[big] + np.sqrt(m[big]) * ndtri(np.clip(u[big], 1e-16, 1 - 1e-16))))
    idx = np.flatnonzero(~big)
    p = np.exp(-m[idx])
    cdf = p.copy()
    j = 0
    while idx.size:
        go = u[idx] > cdf
        idx, p, cdf = idx[go], p[go], cdf[go]
        if not idx.size:
            break
        j += 1
        k[idx] = j
        p = p * m[idx] / j
        cdf = cdf + p
        if j > 2000:  # only u within rounding of 1 get here
            break
    return k


def _flatnonzero(mask: np.ndarray) -> np.ndarray:
    """np.flatnonzero of a 1-D bool mask. At densities up to 10% numpy switches to a loop that
    skips runs of False with memchr, which is 3x slower than its branch-free loop between 4% and
    10% (a 10% campaign's contacts sit right there): the mask is padded with enough True to take
    it past 10%, and the padding's indices are cut off."""
    n = mask.size
    k = int(np.count_nonzero(mask))
    if not (25 * k > n and 10 * k <= n):
        return np.flatnonzero(mask)
    buf = np.empty(n + (n - 10 * k) // 9 + 2, bool)
    buf[:n] = mask
    buf[n:] = True
    return np.flatnonzero(buf)[:k]


def _bernoulli_positions(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Indices in [0, n) of a Bernoulli(p) process, drawn through geometric gaps (O(n p) work)."""
    if p >= 1.0:
        return np.arange(n)
    expect = n * p
    pos = rng.geometric(p, size=int(expect + 6 * np.sqrt(expect) + 16))
    np.cumsum(pos, out=pos)
    pos -= 1
    while pos[-1] < n - 1:  # rare: extend until past the end
        more = np.cumsum(rng.geometric(p, size=int(6 * np.sqrt(expect) + 16))) + pos[-1]
        pos = np.concatenate([pos, more])
    return pos[: np.searchsorted(pos, n)]  # positions increase: the ones below n are a prefix


def _draw_prior_latents(world: WorldModel, seg: np.ndarray, rng: np.random.Generator):
    acts = world.segments
    r = np.array([s.activity["r"] for s in acts])[seg]
    alpha = np.array([s.activity["alpha"] for s in acts])[seg]
    lam = rng.gamma(r) / alpha
    if world.activity_model == "pareto_nbd":
        mu = (
            rng.gamma(np.array([s.activity["s"] for s in acts])[seg])
            / np.array([s.activity["beta"] for s in acts])[seg]
        )
    else:
        mu = rng.beta(np.array([s.activity["a"] for s in acts])[seg], np.array([s.activity["b"] for s in acts])[seg])
    q = np.array([s.spend["q"] for s in acts])[seg]
    gam = np.array([s.spend["gamma"] for s in acts])[seg]
    nu = rng.gamma(q) / gam
    return lam, mu, np.maximum(nu, 1e-12)


def derive_state(st: PopulationState, world: WorldModel, tb: WorldTables) -> None:
    """Fill the fields derived from the others: stage, the rate/hazard/adoption multipliers of
    the effect in force, and the margin of the products held."""
    st.stage = world.stage_rules.assign(st.tenure, st.recency)
    st.lam_eff = st.lam * (1.0 + tb.lift[st.eff_code] * st.eff_scale)
    st.mu_eff = st.mu * (1.0 - tb.dropout_reduction[st.eff_code] * st.eff_scale)
    st.adopt_up = tb.adoption_uplift[st.eff_code] * st.eff_scale
    st.product_margin = st.products @ tb.product_margin if tb.n_products else np.zeros(st.n)


def new_customer_state(world: WorldModel, n: int, rng: np.random.Generator, tables: WorldTables) -> PopulationState:
    """N brand-new customers (tenure 0): segments drawn by share, latents from segment priors,
    starting products by each segment's signup probabilities."""
    shares = np.array([s.share for s in world.segments], float)
    seg = rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int16)
    lam, mu, nu = _draw_prior_latents(world, seg, rng)
    P, C = tables.n_products, tables.n_channels
    init = np.array([s.initial_products for s in world.segments], float).reshape(len(shares), P) if P else None
    products = (rng.random((n, P)) < init[seg]) if P else np.zeros((n, 0), bool)
    return _fresh_state(lam, mu, nu, np.ones(n, bool), seg, products, C)


def _fresh_state(lam, mu, nu, alive, seg, products, n_channels) -> PopulationState:
    n = lam.shape[0]
    return PopulationState(
        lam=lam.astype(float),
        mu=mu.astype(float),
        nu=nu.astype(float),
        alive=alive.astype(bool),
        segment=seg.astype(np.int16),
        tenure=np.zeros(n, np.int32),
        recency=np.zeros(n, np.int32),
        frequency=np.zeros(n, np.int32),
        monetary=np.zeros(n),
        products=products.astype(bool),
        last_contact=np.full(n, NEVER_CONTACTED, np.int32),
        recent_contacts=np.zeros(n),
        opted_out=np.zeros((n, n_channels), bool),
        stage=np.zeros(n, np.int8),
        eff_code=np.zeros(n, np.int16),
        eff_end=np.full(n, -1, np.int32),
        eff_scale=np.zeros(n),
        lam_eff=lam.astype(float),
        mu_eff=mu.astype(float),
        adopt_up=np.zeros(n),
        product_margin=np.zeros(n),
        opened=np.zeros(n, np.int32),
    )


BOOK_POSTERIOR_COLUMNS = ("p_alive", "lam_shape", "lam_rate", "mu_shape", "mu_rate", "nu_shape", "nu_rate")


def book_columns(book: pd.DataFrame) -> dict[str, np.ndarray]:
    """The book as a dict of numpy columns: drawing a few twins from it (one per episode in the
    Gymnasium env) then costs array indexing, not pandas row selection."""
    return {c: book[c].to_numpy() for c in book.columns}


def take_rows(cols: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in cols.items()}


def state_from_book(
    world: WorldModel,
    book: pd.DataFrame | dict[str, np.ndarray],
    rng: np.random.Generator,
    tables: WorldTables,
    uniforms: np.ndarray | None = None,
) -> PopulationState:
    """Draw each book customer's alive flag and latent rates from their posterior.

    The book carries the posterior's parameters (see sim.calibrate.build_book):
    alive ~ Bernoulli(p_alive); given alive, lam ~ Gamma(lam_shape, rate lam_rate) and
    mu ~ Gamma(mu_shape, rate mu_rate) (Pareto/NBD) or Beta(mu_shape, mu_rate) (BG/NBD);
    nu ~ Gamma(nu_shape, rate nu_rate).
    `uniforms` (N, 4), when given, are the uniforms behind (alive, lam, mu, nu), turned into
    draws by inverse CDFs: callers pass stratified uniforms to cut Monte Carlo variance; (N, 1)
    gives only the alive flag's (most of a twin's variance, at none of the inverse CDFs' cost).
    """
    from scipy import special

    if not isinstance(book, dict):
        book = book_columns(book)
    n = len(book["segment"])
    col = {k: np.asarray(book[k], float) for k in BOOK_POSTERIOR_COLUMNS}
    if uniforms is None or np.shape(uniforms)[1] == 1:  # (N, 1): only the alive flag from the uniforms
        alive = (rng.random(n) if uniforms is None else np.asarray(uniforms)[:, 0]) < col["p_alive"]
        lam = rng.gamma(col["lam_shape"]) / col["lam_rate"]
        if world.activity_model == "pareto_nbd":
            mu = rng.gamma(col["mu_shape"]) / col["mu_rate"]
        else:
            mu = rng.beta(col["mu_shape"], col["mu_rate"])
        nu = rng.gamma(col["nu_shape"]) / col["nu_rate"]
    else:
        u = np.clip(uniforms, 1e-12, 1 - 1e-12)
        alive = u[:, 0] < col["p_alive"]
        lam = special.gammaincinv(col["lam_shape"], u[:, 1]) / col["lam_rate"]
        if world.activity_model == "pareto_nbd":
            mu = special.gammaincinv(col["mu_shape"], u[:, 2]) / col["mu_rate"]
        else:
            mu = special.betaincinv(col["mu_shape"], col["mu_rate"], u[:, 2])
        nu = special.gammaincinv(col["nu_shape"], u[:, 3]) / col["nu_rate"]
    nu = np.maximum(nu, 1e-12)
    seg = np.asarray(book["segment"]).astype(np.int16)
    P = tables.n_products
    prods = np.zeros((n, P), bool)
    for j, p in enumerate(world.products):
        col = f"prod_{p}"
        if col in book:
            prods[:, j] = np.asarray(book[col]).astype(bool)
    st = _fresh_state(lam, mu, nu, alive, seg, prods, tables.n_channels)
    st.tenure = np.asarray(book["tenure"]).astype(np.int32)
    st.recency = np.asarray(book["recency"]).astype(np.int32)
    st.frequency = np.asarray(book["frequency"]).astype(np.int32)
    st.monetary = np.asarray(book["monetary"]).astype(float)
    if "last_contact" in book:
        st.last_contact = np.asarray(book["last_contact"]).astype(np.int32)
    if "eff_code" in book:  # an effect still running at the cut-off (refresh() derives the rest)
        left = np.asarray(book["eff_left"]).astype(np.int32)
        st.eff_code = np.where(left > 0, np.asarray(book["eff_code"]), 0).astype(np.int16)
        st.eff_end = np.where(left > 0, left, -1).astype(np.int32)
        st.eff_scale = np.where(left > 0, np.asarray(book["eff_scale"], float), 0.0)
    if "recent_contacts" in book:
        st.recent_contacts = np.asarray(book["recent_contacts"]).astype(float)
    for j, c in enumerate(world.catalogue.channels):
        col = f"optout_{c}"
        if col in book:
            st.opted_out[:, j] = np.asarray(book[col]).astype(bool)
    return st


# ---- running a policy over many periods ---------------------------------------------------
PolicyFn = Callable[["PopulationSimulator"], np.ndarray]


def builtin_policy(name: str) -> PolicyFn:
    """The simulator's own policies: "none" and "random" (uniform over allowed actions).
    The policies package provides the rest through the same callable interface."""
    if name == "none":
        return lambda sim: np.zeros(sim.state.n, np.int16)
    if name == "random":

        def _random(sim: PopulationSimulator) -> np.ndarray:
            m = sim.action_masks()
            g = sim.policy_rng.random(m.shape) * m
            return np.argmax(g, axis=1).astype(np.int16)

        return _random
    raise KeyError(f"unknown policy {name!r}; built in: none, random")


def chunk_seeds(seed: int, n: int, chunk_size: int) -> list[tuple[int, int, np.random.SeedSequence]]:
    """(start, stop, seed sequence) per chunk; fixed by (seed, n, chunk_size) only."""
    n_chunks = max(1, -(-n // chunk_size))
    seqs = np.random.SeedSequence(seed).spawn(n_chunks)
    return [(k * chunk_size, min(n, (k + 1) * chunk_size), seqs[k]) for k in range(n_chunks)]


@dataclass
class SimulationResult:
    customers: pd.DataFrame  # one row per simulated customer
    periods: pd.DataFrame  # one row per period: totals
    meta: dict = field(default_factory=dict)


def sample_book(book: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The book itself when n is its size, else n rows drawn (with replacement only when n exceeds
    it) from a key of their own: chunk k uses SeedSequence(seed).spawn(...)[k]."""
    if n == len(book):
        return book.reset_index(drop=True)
    pick_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB00C]))
    rows = np.sort(pick_rng.choice(len(book), size=n, replace=n > len(book)))
    return book.iloc[rows].reset_index(drop=True)


_PERIOD_TOTALS = ("transactions", "amount", "margin", "cost", "reward", "alive", "contacts")
_CUSTOMER_SUMS = ("transactions", "amount", "cost", "reward", "clv", "discounted_cost", "contacts")


def simulate_block(
    world: WorldModel,
    policy: PolicyFn,
    periods: int,
    crn: bool,
    seq: np.random.SeedSequence,
    src: pd.DataFrame | None,
    m: int,
    tables: WorldTables | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """One block of customers (the book rows `src`, or `m` new customers) run for `periods` from
    its own seed sequence: per-customer sums ("customers") and per-period totals ("periods").
    A block's numbers depend on its rows and seed alone, so blocks may run anywhere (Ray tasks)."""
    tables = tables or WorldTables.from_world(world)
    disc = world.economics.discount_per_period
    if src is not None:
        sim = PopulationSimulator.from_book(world, src, seq, tables=tables)
    else:
        sim = PopulationSimulator.new_customers(world, m, seq, tables=tables)
    sim.crn = crn
    m = sim.state.n
    start_stage = sim.state.stage.copy()
    acc = {k: np.zeros(m) for k in _CUSTOMER_SUMS}
    per = {k: np.zeros(periods) for k in _PERIOD_TOTALS}
    stage_counts = np.zeros((periods, N_STAGES), np.int64)
    stage_contacts = np.zeros((periods, N_STAGES), np.int64)  # contacts by the stage they were made in
    for t in range(periods):
        stage_before = sim.state.stage
        out = sim.step(policy(sim))
        if out.contacted.any():
            stage_contacts[t] += np.bincount(stage_before[out.contacted], minlength=N_STAGES)
        acc["transactions"] += out.transactions
        acc["amount"] += out.amount
        acc["cost"] += out.cost
        acc["reward"] += out.reward
        acc["clv"] += out.reward * disc**t
        acc["discounted_cost"] += out.cost * disc**t
        acc["contacts"] += out.contacted
        per["transactions"][t] = out.transactions.sum()
        per["amount"][t] = out.amount.sum()
        per["margin"][t] = out.reward.sum() + out.cost.sum()
        per["cost"][t] = out.cost.sum()
        per["reward"][t] = out.reward.sum()
        per["alive"][t] = sim.state.alive.sum()
        per["contacts"][t] = out.contacted.sum()
        stage_counts[t] = np.bincount(sim.state.stage, minlength=N_STAGES)
        if progress:
            progress(m)
    customers = {
        "segment": sim.state.segment,
        "start_stage": start_stage,
        "end_stage": sim.state.stage,
        **acc,
        "alive_end": sim.state.alive,
        "products_end": sim.state.products.sum(axis=1),
        "products_opened": sim.state.opened.copy(),
    }
    return {"customers": customers, "periods": per, "stages": {"counts": stage_counts, "contacts": stage_contacts}}


def _block_task(world, policy, periods, crn, seq, src, m):
    """`simulate_block` as a task of an executor (tables built where it runs)."""
    return simulate_block(world, policy, periods, crn, seq, src, m)


def simulate(
    world: WorldModel,
    policy: PolicyFn | str,
    periods: int,
    seed: int,
    book: pd.DataFrame | None = None,
    customers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Callable[[int], None] | None = None,
    crn: bool = False,
    executor=None,
) -> SimulationResult:
    """Run `policy` for `periods` on the book's digital twins (resampled to `customers` when given)
    or on `customers` brand-new customers when there is no book.

    The customers run in blocks of `chunk_size`, each from its own seed of one SeedSequence
    (`chunk_seeds`); with an `executor` (anything with `map(fn, shared, calls, progress)`, e.g.
    experiments.ray_session.RayExecutor) the blocks run as its tasks. The blocks' results are
    combined in block order, so the numbers are the same in-process and at any number of workers."""
    if isinstance(policy, str):
        policy = builtin_policy(policy)
    if book is not None:
        n = len(book) if customers is None else int(customers)
        src = sample_book(book, n, seed)
    else:
        if customers is None:
            raise ValueError("simulating new customers needs a number of customers")
        n, src = int(customers), None
    chunks = chunk_seeds(seed, n, chunk_size)
    if executor is None or len(chunks) == 1:
        tables = WorldTables.from_world(world)
        blocks = [
            simulate_block(
                world,
                policy,
                periods,
                crn,
                seq,
                None if src is None else src.iloc[start:stop],
                stop - start,
                tables=tables,
                progress=progress,
            )
            for start, stop, seq in chunks
        ]
    else:
        calls = [(seq, None if src is None else src.iloc[start:stop], stop - start) for start, stop, seq in chunks]
        sizes = iter([stop - start for start, stop, _ in chunks])

        def tick(k: int) -> None:  # blocks finish in any order; their sizes differ only in the last
            if progress:
                for _ in range(k):
                    progress(next(sizes, chunk_size) * periods)

        blocks = executor.map(_block_task, (world, policy, periods, crn), calls, tick)
    # totals added block by block in block order: the same floating-point sums wherever blocks ran
    per = {k: np.zeros(periods) for k in _PERIOD_TOTALS}
    stage_counts = np.zeros((periods, N_STAGES), np.int64)
    stage_contacts = np.zeros((periods, N_STAGES), np.int64)
    for b in blocks:
        for k in _PERIOD_TOTALS:
            per[k] += b["periods"][k]
        stage_counts += b["stages"]["counts"]
        stage_contacts += b["stages"]["contacts"]
    cust = {k: np.concatenate([b["customers"][k] for b in blocks]) for k in blocks[0]["customers"]}
    # text columns built in Arrow: per-row Python or numpy strings were a quarter of a 2M-customer
    # run's time, all of it in the driver whatever the number of workers
    seg_names = pa.array([s.name for s in world.segments], pa.string())
    stages = pa.array(list(STAGES), pa.string())

    def names(table: pa.Array, codes: np.ndarray) -> pd.Series:
        return pc.take(table, pa.array(np.asarray(codes, np.int64))).to_pandas()

    if src is not None:
        ids = src["customer_id"].astype(str).reset_index(drop=True)
    else:
        ids = pc.binary_join_element_wise("sim", pa.array(np.arange(n)).cast(pa.string()), "").to_pandas()
    df = pd.DataFrame(
        {
            "customer_id": ids,
            "segment": names(seg_names, cust["segment"]),
            "start_stage": names(stages, cust["start_stage"]),
            "end_stage": names(stages, cust["end_stage"]),
            **{k: cust[k] for k in _CUSTOMER_SUMS},
            "alive_end": cust["alive_end"],
            "products_end": cust["products_end"],
            "products_opened": cust["products_opened"],
        }
    )
    pdf = pd.DataFrame({"period": np.arange(periods), **per})
    for j, s in enumerate(STAGES):
        pdf[f"stage_{s}"] = stage_counts[:, j]
    for j, s in enumerate(STAGES):
        pdf[f"contacts_stage_{s}"] = stage_contacts[:, j]
    return SimulationResult(
        customers=df, periods=pdf, meta={"customers": n, "periods": periods, "seed": seed, "chunk_size": chunk_size}
    )
