"""Synthetic bank history with known ground truth (`clv make-data`).

The history is produced by running the population simulator on a *true* WorldModel written
down here (three customer segments, the five lifecycle stages, four products, seasonality and
intervention effects that differ from the priors), with customers signing up through the
first two thirds of the window and a logged campaign history whose logging policy is the
"business as usual" playbook mixed with uniform exploration, each decision recorded with its
propensity. The true world is saved beside the data (truth.json, truth_customers.parquet), so
calibration and offline evaluation can be checked against the truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from .atomic import atomic_path, atomic_write_json, atomic_write_text
from .catalogue import STAGES, Economics, default_bank_catalogue
from .history import History
from .playbook import Playbook
from .population import NEVER_CONTACTED, PopulationSimulator, WorldTables
from .world import ResponseModel, SegmentModel, StageRules, WorldModel

PRODUCTS = ["credit_card", "savings", "wealth", "loan"]
TRUE_STAGE_RULES = StageRules(new_periods=13, mature_periods=52, dormant_after=6, churned_after=16)


@dataclass
class BankConfig:
    customers: int = 6000
    weeks: int = 156
    start: str = "2022-01-03"
    decision_every: int = 4  # weeks between a customer's decision points
    explore: float = 0.3  # share of uniform exploration in the logging policy
    bau_contact_rate: float = 0.5  # the playbook contacts half of the eligible decision points
    birth_share: float = 0.67  # customers sign up during this first share of the window
    seed: int = 7
    # customer ids are "C" + (id_offset + i) on id_digits digits: a block of a larger book
    # (sim.bank_parts) numbers its customers after the blocks before it
    id_offset: int = 0
    id_digits: int = 6


# (activity_lift, dropout_reduction, adoption_uplift, reactivation) per action, before stage multipliers.
# Reactivation is 0: from logged outcomes it cannot be told apart from an activity lift among
# customers who have silently left (see docs/world_model.md), so calibration folds it into the lift.
TRUE_EFFECTS = {
    "push_login_reminder": (0.08, 0.05, 0.0, 0.0),
    "sms_activation_bonus": (0.45, 0.15, 0.2, 0.0),
    "email_card_offer": (0.05, 0.03, 1.5, 0.0),
    "push_cashback": (0.35, 0.10, 0.0, 0.0),
    "email_fee_waiver": (0.10, 0.25, 0.0, 0.0),
    "sms_rate_bonus_savings": (0.12, 0.10, 1.2, 0.0),
    "rm_call_wealth": (0.10, 0.15, 2.5, 0.0),
    "rm_call_retention": (0.25, 0.50, 0.0, 0.0),
}
TRUE_STAGE_MULT = {"new": 1.3, "growth": 1.0, "maturity": 0.7, "dormancy": 1.5, "churned": 0.6}
TRUE_DURATION = {
    "push_login_reminder": 2,
    "sms_activation_bonus": 4,
    "email_card_offer": 4,
    "push_cashback": 4,
    "email_fee_waiver": 8,
    "sms_rate_bonus_savings": 8,
    "rm_call_wealth": 4,
    "rm_call_retention": 8,
}


def truth_world(cfg: BankConfig) -> WorldModel:
    """The generating world, in weekly periods."""
    cat = default_bank_catalogue()
    A, S = len(cat), len(STAGES)
    tabs = np.zeros((4, A, S))
    for i, a in enumerate(cat.actions[1:], start=1):
        for j, s in enumerate(STAGES):
            tabs[:, i, j] = np.array(TRUE_EFFECTS[a.name]) * TRUE_STAGE_MULT[s]
    tabs[1] = np.clip(tabs[1], 0, 0.95)
    response = ResponseModel(
        activity_lift=tabs[0].tolist(),
        dropout_reduction=tabs[1].tolist(),
        adoption_uplift=tabs[2].tolist(),
        reactivation=tabs[3].tolist(),
        duration=[0] + [TRUE_DURATION[a.name] for a in cat.actions[1:]],
        opt_out={"app_push": 0.004, "sms": 0.006, "email": 0.003, "rm_call": 0.002},
        fatigue=0.7,
        fatigue_half_life=4.0,
        min_gap=2,
        source={"all": "truth"},
    )
    # weekly hazards [stage][product]
    adopt = {
        "mass": [
            [0.020, 0.010, 0.0005, 0.002],
            [0.010, 0.006, 0.0008, 0.003],
            [0.004, 0.004, 0.0010, 0.002],
            [0.001, 0.001, 0.0001, 0.0005],
            [0.0, 0.0, 0.0, 0.0],
        ],
        "affluent": [
            [0.020, 0.012, 0.004, 0.002],
            [0.010, 0.008, 0.006, 0.003],
            [0.005, 0.006, 0.008, 0.002],
            [0.001, 0.001, 0.001, 0.0005],
            [0.0, 0.0, 0.0, 0.0],
        ],
        "young_digital": [
            [0.030, 0.008, 0.0003, 0.001],
            [0.015, 0.006, 0.0005, 0.002],
            [0.006, 0.004, 0.0008, 0.002],
            [0.002, 0.001, 0.0001, 0.0005],
            [0.0, 0.0, 0.0, 0.0],
        ],
    }
    close = [
        [0.001, 0.001, 0.001, 0.0],
        [0.002, 0.002, 0.002, 0.001],
        [0.002, 0.002, 0.002, 0.001],
        [0.010, 0.010, 0.010, 0.002],
        [0.030, 0.030, 0.030, 0.005],
    ]
    segs = [
        SegmentModel(
            "mass",
            0,
            0.60,
            {"r": 1.2, "alpha": 1.5, "s": 0.6, "beta": 30.0},
            {"p": 3.0, "q": 5.0, "gamma": 120.0},
            adopt["mass"],
            close,
            [0.30, 0.50, 0.02, 0.05],
        ),
        SegmentModel(
            "affluent",
            0,
            0.25,
            {"r": 2.0, "alpha": 1.5, "s": 0.8, "beta": 80.0},
            {"p": 3.0, "q": 6.0, "gamma": 400.0},
            adopt["affluent"],
            close,
            [0.40, 0.60, 0.10, 0.08],
        ),
        SegmentModel(
            "young_digital",
            0,
            0.15,
            {"r": 1.5, "alpha": 1.0, "s": 0.7, "beta": 25.0},
            {"p": 2.5, "q": 4.0, "gamma": 90.0},
            adopt["young_digital"],
            close,
            [0.35, 0.30, 0.01, 0.02],
        ),
    ]
    season = np.ones(53)
    season[47:52] = 1.25  # ISO weeks 48-52: December spending
    season[27:33] = 0.90  # weeks 28-33: summer holidays
    season = season / np.exp(np.log(season[:52]).mean())
    econ = Economics(
        period="week",
        margin_rate=0.02,
        product_margin_per_period={"credit_card": 2.0, "savings": 1.5, "wealth": 6.0, "loan": 4.0},
        annual_discount_rate=0.08,
    )
    return WorldModel(
        catalogue=cat,
        economics=econ,
        products=list(PRODUCTS),
        segments=segs,
        segmentation={"method": "attribute", "column": "segment"},
        stage_rules=TRUE_STAGE_RULES,
        response=response,
        activity_model="pareto_nbd",
        calibration_end=None,
        seasonality=season.tolist(),
        assumptions=[],
        fit={},
        source={"generator": asdict(cfg)},
    )


def logging_probs(sim: PopulationSimulator, segment_names: list[str], cfg: BankConfig) -> np.ndarray:
    """(N, A) logging-policy probabilities: the playbook (sim.playbook; contact its action with
    bau_contact_rate, otherwise none) mixed with uniform exploration over the allowed actions.
    `segment_names` name the simulator's segment indices for the playbook's high-value rule."""
    masks = sim.action_masks()
    bau = Playbook(sim.world, segment_names=segment_names).action(sim.observe())
    n, A = masks.shape
    probs = np.zeros((n, A))
    ok = masks[np.arange(n), bau] & (bau > 0)
    probs[np.arange(n), np.where(ok, bau, 0)] += np.where(ok, cfg.bau_contact_rate, 1.0)
    probs[:, 0] += np.where(ok, 1.0 - cfg.bau_contact_rate, 0.0)
    uni = masks / masks.sum(axis=1, keepdims=True)
    return (1.0 - cfg.explore) * probs + cfg.explore * uni


@dataclass
class BankRun:
    """One run of the generating world over the window: the world, its random streams, the
    simulator, the signup weeks and decision calendar, and the logs the week loop appends to
    (lists of arrays, one entry per week). Built by `start_bank_run`, advanced by `run_bank_weeks`."""

    cfg: BankConfig
    world: WorldModel
    tables: WorldTables
    sim: PopulationSimulator
    rng_gen: np.random.Generator  # the generator's own stream (births, calendar, logging draws, post-processing)
    seg_names: list[str]
    birth: np.ndarray  # (N,) signup week
    offset: np.ndarray  # (N,) decision calendar offset: decisions at weeks w with (w + offset) % every == 0
    init_products: np.ndarray  # (N, P) products held at signup
    cid: np.ndarray  # (N,) customer ids
    born: np.ndarray = None  # (N,) bool, signed up by the current week
    tx_c: list = field(default_factory=list)
    tx_w: list = field(default_factory=list)
    tx_n: list = field(default_factory=list)
    dec_c: list = field(default_factory=list)
    dec_w: list = field(default_factory=list)
    dec_a: list = field(default_factory=list)
    dec_p: list = field(default_factory=list)
    pe_c: list = field(default_factory=list)
    pe_w: list = field(default_factory=list)
    pe_p: list = field(default_factory=list)
    pe_e: list = field(default_factory=list)
    pe_i: list = field(default_factory=list)

    def decides(self, w: int) -> np.ndarray:
        """Indices of the customers with a decision point in week w (signed up, on their calendar)."""
        return np.flatnonzero(self.born & ((w + self.offset) % self.cfg.decision_every == 0))


def start_bank_run(cfg: BankConfig, world: WorldModel | None = None) -> BankRun:
    """The generating world at week 0: nobody signed up yet. Same config, same run (the random
    streams are those of `generate_bank_history`)."""
    world = world if world is not None else truth_world(cfg)
    ss = np.random.SeedSequence(cfg.seed)
    rng_gen, rng_sim = (np.random.default_rng(s) for s in ss.spawn(2))
    N, Wk = cfg.customers, cfg.weeks
    start = pd.Timestamp(cfg.start)
    seg_names = [s.name for s in world.segments]
    tables = WorldTables.from_world(world)
    sim = PopulationSimulator.new_customers(world, N, rng_sim, tables=tables, start_date=start)
    st = sim.state
    birth = np.sort(rng_gen.integers(0, max(1, int(cfg.birth_share * Wk)), N))
    cid = np.array([f"C{cfg.id_offset + i:0{cfg.id_digits}d}" for i in range(N)])
    init_products = st.products.copy()
    st.alive[:] = False
    st.products[:] = False
    offset = rng_gen.integers(0, cfg.decision_every, N)
    return BankRun(
        cfg=cfg,
        world=world,
        tables=tables,
        sim=sim,
        rng_gen=rng_gen,
        seg_names=seg_names,
        birth=birth,
        offset=offset,
        init_products=init_products,
        cid=cid,
        born=np.zeros(N, bool),
    )


# choose(sim, deciding) -> (actions (d,) int, probabilities (d, A)) of the acting policy at the
# decision points `deciding` (indices into the simulator's customers)
Chooser = Callable[[PopulationSimulator, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


def logging_chooser(run: BankRun) -> Chooser:
    """The logging policy (`logging_probs`), drawing from the generator's stream as the history does."""

    def choose(sim: PopulationSimulator, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs = logging_probs(sim, run.seg_names, run.cfg)[d]
        cum = np.cumsum(probs, axis=1)
        u = run.rng_gen.random(d.size)[:, None]
        a = np.minimum((u > cum).sum(axis=1), probs.shape[1] - 1).astype(np.int16)
        return a, probs

    return choose


def run_bank_weeks(
    run: BankRun,
    choose: Chooser,
    before_step: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    after_step: Callable[[int, Any], None] | None = None,
    weeks: int | None = None,
) -> BankRun:
    """The week loop of the generating world: signups, decision points (the policy behind `choose`
    acts), one simulator step per week, the logs of transactions counts, decisions and product
    events. `before_step(w, deciding, actions, probs)` sees the simulator just before week w's step
    (in weeks with decision points); `after_step(w, outcome)` sees the StepOutcome of week w.
    `weeks`: stop after this many weeks of the window (the state is then the world's as of that
    week's end: what a plan made at a calibration date starts from)."""
    cfg, sim = run.cfg, run.sim
    st = sim.state
    N, Wk = cfg.customers, cfg.weeks if weeks is None else min(int(weeks), cfg.weeks)
    birth, init_products, born = run.birth, run.init_products, run.born
    for w in range(Wk):
        newborn = birth == w
        if newborn.any():
            i = np.flatnonzero(newborn)
            st.alive[i] = True
            for k in ("tenure", "recency", "frequency"):
                getattr(st, k)[i] = 0
            st.monetary[i] = 0.0
            st.products[i] = init_products[i]
            st.last_contact[i] = NEVER_CONTACTED
            st.recent_contacts[i] = 0.0
            born |= newborn
            sim.refresh()
            ii, pp = np.nonzero(init_products[i])
            run.pe_c.append(i[ii])
            run.pe_w.append(np.full(ii.size, w))
            run.pe_p.append(pp)
            run.pe_e.append(np.ones(ii.size, bool))
            run.pe_i.append(np.ones(ii.size, bool))
        d = run.decides(w)
        actions = np.zeros(N, np.int16)
        if d.size:
            a, probs = choose(sim, d)
            a = np.asarray(a).astype(np.int16)
            actions[d] = a
            run.dec_c.append(d)
            run.dec_w.append(np.full(d.size, w))
            run.dec_a.append(a)
            run.dec_p.append(probs[np.arange(d.size), a])
            if before_step is not None:
                before_step(w, d, a, probs)
        before = st.products.copy()
        out = sim.step(actions)
        if out.n_ineligible:
            raise RuntimeError("the deciding policy produced an ineligible action")  # masks forbid it
        # unborn customers must not age
        st.tenure[~born] = 0
        st.recency[~born] = 0
        pos = np.flatnonzero(out.transactions)
        run.tx_c.append(pos)
        run.tx_w.append(np.full(pos.size, w))
        run.tx_n.append(out.transactions[pos])
        opened = st.products & ~before
        closed = before & ~st.products
        for ev, m in ((True, opened), (False, closed)):
            ii, pp = np.nonzero(m)
            run.pe_c.append(ii)
            run.pe_w.append(np.full(ii.size, w))
            run.pe_p.append(pp)
            run.pe_e.append(np.full(ii.size, ev))
            run.pe_i.append(np.zeros(ii.size, bool))
        if after_step is not None:
            after_step(w, out)
    return run


def observation_frame(run: BankRun, w: int, d: np.ndarray) -> pd.DataFrame:
    """What the simulator shows about the customers `d` just before week w's step (sim.observe()
    and their action masks), one row each: customer_id, date, recency, frequency, monetary, tenure,
    stage, segment (names), last_contact, recent_contacts, product_<name>, opted_out_<channel>,
    mask_<action>."""
    sim, world = run.sim, run.world
    obs = sim.observe()
    masks = sim.action_masks()[d]
    cols: dict[str, Any] = {
        "customer_id": run.cid[d],
        "date": np.full(d.size, pd.Timestamp(run.cfg.start) + pd.Timedelta(days=7 * w)),
        "recency": obs["recency"][d].copy(),
        "frequency": obs["frequency"][d].copy(),
        "monetary": obs["monetary"][d].copy(),
        "tenure": obs["tenure"][d].copy(),
        "stage": np.array(STAGES)[obs["stage"][d]],
        "segment": np.array(run.seg_names)[obs["segment"][d]],
        "last_contact": obs["last_contact"][d].copy(),
        "recent_contacts": obs["recent_contacts"][d].copy(),
    }
    for j, p in enumerate(world.products):
        cols[f"product_{p}"] = obs["products"][d, j].copy()
    for j, c in enumerate(world.catalogue.channels):
        cols[f"opted_out_{c}"] = obs["opted_out"][d, j].copy()
    for j, a in enumerate(world.catalogue.names):
        cols[f"mask_{a}"] = masks[:, j].copy()
    return pd.DataFrame(cols)


def _decision_rewards(
    cfg: BankConfig,
    world: WorldModel,
    c: np.ndarray,
    w: np.ndarray,
    a: np.ndarray,
    held_at: np.ndarray,
    held_end: np.ndarray,
    rows_tx: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> pd.DataFrame:
    """Every logged decision's contract reward as the generator knows it (DESIGN.md): margin_rate x
    the amounts of the history's transaction rows from the decision's week to the customer's next
    decision's week (exclusive; the end of the window for the last one), plus the product margins
    the simulator earned at each of those weeks' ends, minus the action's cost. Rows in the order
    of (c, w, a); `held_at` is the customer's running sum of week-end product margins at each
    decision, `held_end` the sums at the end of the window."""
    n = c.size
    order = np.lexsort((w, c))
    cs, ws = c[order], w[order]
    last = np.ones(n, bool)
    last[:-1] = cs[1:] != cs[:-1]
    next_w = np.where(last, cfg.weeks, np.roll(ws, -1))
    held_next = np.where(last, held_end[cs], np.roll(held_at[order], -1))
    # amounts per (customer, week) window by cumulative sums over rows sorted by customer, week
    tc, tw, ta = rows_tx
    key_tx = tc.astype(np.int64) * (cfg.weeks + 1) + tw
    o = np.argsort(key_tx, kind="stable")
    key_tx, cum = key_tx[o], np.concatenate([[0.0], np.cumsum(ta[o])])
    lo = np.searchsorted(key_tx, cs.astype(np.int64) * (cfg.weeks + 1) + ws, side="left")
    hi = np.searchsorted(key_tx, cs.astype(np.int64) * (cfg.weeks + 1) + next_w, side="left")
    amount = np.empty(n)
    amount[order] = cum[hi] - cum[lo]
    product = np.empty(n)
    product[order] = held_next - held_at[order]
    cost = np.asarray(world.catalogue.costs, np.float64)[a]
    margin = world.economics.margin_rate * amount
    return pd.DataFrame(
        {
            "date": pd.Timestamp(cfg.start) + pd.to_timedelta(w * 7, unit="D"),
            "action": np.array(world.catalogue.names)[a],
            "amount": amount,
            "margin": margin,
            "product_margin": product,
            "cost": cost,
            "reward": margin + product - cost,
        }
    )


def generate_bank_history(cfg: BankConfig, record_observations: bool = False) -> tuple[History, dict[str, Any]]:
    """Run the true world and return (History, truth). Same config, same history.

    With `record_observations`, truth["decision_observations"] holds the simulator's observation
    of every logged decision (`observation_frame`), sorted by customer_id and date; it draws no
    random numbers, so the history is the same either way."""
    run = start_bank_run(cfg)
    obs_frames: list[pd.DataFrame] = []
    # product margins earned at each week's end, summed per customer; read at every decision
    held_sum = np.zeros(cfg.customers)
    held_at_decision: list[np.ndarray] = []

    def before(w: int, d: np.ndarray, a: np.ndarray, probs: np.ndarray) -> None:
        held_at_decision.append(held_sum[d].copy())
        if record_observations:
            obs_frames.append(observation_frame(run, w, d))

    def after(w: int, out) -> None:
        held_sum[:] += run.sim.state.product_margin

    run_bank_weeks(run, logging_chooser(run), before_step=before, after_step=after)
    world, tables, rng_gen, seg_names = run.world, run.tables, run.rng_gen, run.seg_names
    st, birth, cid = run.sim.state, run.birth, run.cid
    N, start = cfg.customers, pd.Timestamp(cfg.start)
    tx_c, tx_w, tx_n, dec_c, dec_w, dec_a, dec_p = (
        run.tx_c,
        run.tx_w,
        run.tx_n,
        run.dec_c,
        run.dec_w,
        run.dec_a,
        run.dec_p,
    )
    pe_c, pe_w, pe_p, pe_e, pe_i = run.pe_c, run.pe_w, run.pe_p, run.pe_e, run.pe_i

    # transactions: counts per week become rows on distinct days of that week
    c, w, n = (np.concatenate(x) for x in (tx_c, tx_w, tx_n))
    n = np.minimum(n, 7)
    keys = rng_gen.random((c.size, 7))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    chosen = ranks < n[:, None]
    rows, day = np.nonzero(chosen)
    cust = c[rows]
    seg = st.segment[cust]
    p_seg = tables.spend_p[seg]
    amount = rng_gen.gamma(p_seg) / st.nu[cust]
    dates = start + pd.to_timedelta(w[rows] * 7 + day, unit="D")
    rows_tx = (cust, w[rows], np.round(amount, 2))  # (customer, week, amount) of every transaction row
    transactions = pd.DataFrame({"customer_id": cid[cust], "date": dates.normalize(), "amount": rows_tx[2]})
    transactions = transactions.sort_values(["customer_id", "date"], kind="stable").reset_index(drop=True)
    transactions["channel"] = np.where(rng_gen.random(len(transactions)) < 0.6, "card", "transfer")

    segment = np.array(seg_names)[st.segment]
    age = np.where(
        segment == "young_digital",
        rng_gen.choice(["18-29", "30-44"], N, p=[0.8, 0.2]),
        rng_gen.choice(["30-44", "45-59", "60+"], N, p=[0.4, 0.4, 0.2]),
    )
    customers = pd.DataFrame(
        {
            "customer_id": cid,
            "signup_date": start + pd.to_timedelta(birth * 7, unit="D"),
            "segment": segment,
            "age_band": age,
            "region": rng_gen.choice(["north", "south", "east", "west"], N),
        }
    )
    c, w, p, e, initial_row = (np.concatenate(x) for x in (pe_c, pe_w, pe_p, pe_e, pe_i))
    # starting products are opened on the signup day; later events in the signup week after it
    first_week = w == birth[c]
    pday = np.where(first_week, rng_gen.integers(1, 7, c.size), rng_gen.integers(0, 7, c.size))
    pday[first_week & e & initial_row] = 0
    products = pd.DataFrame(
        {
            "customer_id": cid[c],
            "date": start + pd.to_timedelta(w * 7 + pday, unit="D"),
            "product": np.array(PRODUCTS)[p],
            "event": np.where(e, "open", "close"),
        }
    )
    products = products.sort_values(["customer_id", "date", "event"], kind="stable").reset_index(drop=True)
    c, w, a, pr = (np.concatenate(x) for x in (dec_c, dec_w, dec_a, dec_p))
    names = np.array(world.catalogue.names)
    decisions = pd.DataFrame(
        {
            "customer_id": cid[c],
            "date": start + pd.to_timedelta(w * 7, unit="D"),
            "action": names[a],
            "propensity": np.round(pr, 6),
            "cost": np.asarray(world.catalogue.costs)[a],
        }
    )
    # the rounded propensities are what the data says; keep them in (0, 1]
    decisions["propensity"] = decisions["propensity"].clip(1e-6, 1.0)
    decision_rewards = _decision_rewards(
        cfg, world, c, w, a, np.concatenate(held_at_decision) if held_at_decision else np.zeros(0), held_sum, rows_tx
    )
    decision_rewards.insert(0, "customer_id", cid[c])
    order = decisions.sort_values(["customer_id", "date"], kind="stable").index.to_numpy()
    decisions = decisions.iloc[order].reset_index(drop=True)
    decision_rewards = decision_rewards.iloc[order].reset_index(drop=True)

    hist = History(
        folder=f"<dataset:bank seed={cfg.seed}>",
        transactions=transactions,
        customers=customers,
        products=products,
        decisions=decisions,
        actions=world.catalogue,
        economics=world.economics,
        report={
            "transactions_rows": len(transactions),
            "customers_rows": N,
            "products_rows": len(products),
            "decisions_rows": len(decisions),
        },
        stage_rules=asdict(TRUE_STAGE_RULES),
    )
    latent = pd.DataFrame(
        {
            "customer_id": cid,
            "segment": segment,
            "birth_week": birth,
            "lam": st.lam,
            "mu": st.mu,
            "nu": st.nu,
            "alive_at_end": st.alive,
        }
    )
    truth = {"world": world, "customers": latent, "config": cfg, "decision_rewards": decision_rewards}
    if record_observations:
        obs = pd.concat(obs_frames, ignore_index=True) if obs_frames else pd.DataFrame()
        if len(obs):
            obs = obs.sort_values(["customer_id", "date"], kind="stable").reset_index(drop=True)
        truth["decision_observations"] = obs
    return hist, truth


def write_bank_history(out: str | Path, cfg: BankConfig) -> dict[str, Any]:
    """Write the history folder (CSV tables + actions.yaml + economics.yaml + stages.yaml) and
    the truth (truth.json, truth_customers.parquet). Every file is written atomically."""
    out = Path(out)
    hist, truth = generate_bank_history(cfg)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (
        ("transactions", hist.transactions),
        ("customers", hist.customers),
        ("products", hist.products),
        ("decisions", hist.decisions),
    ):
        df = df.copy()
        for col in ("date", "signup_date"):
            if col in df:
                df[col] = df[col].dt.strftime("%Y-%m-%d")
        with atomic_path(out / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False)
    atomic_write_text(out / "actions.yaml", yaml.safe_dump({"actions": hist.actions.to_list()}, sort_keys=False))
    atomic_write_text(out / "economics.yaml", yaml.safe_dump(hist.economics.to_dict(), sort_keys=False))
    atomic_write_text(out / "stages.yaml", yaml.safe_dump(asdict(TRUE_STAGE_RULES), sort_keys=False))
    truth["world"].save(out / "truth.json")
    with atomic_path(out / "truth_customers.parquet") as tmp:
        truth["customers"].to_parquet(tmp, index=False)
    with atomic_path(out / "truth_decisions.parquet") as tmp:
        truth["decision_rewards"].to_parquet(tmp, index=False)
    atomic_write_json(
        out / "README.json",
        {
            "generator": "clv-engine sim.synthetic",
            "config": asdict(cfg),
            "files": [
                "transactions.csv",
                "customers.csv",
                "products.csv",
                "decisions.csv",
                "actions.yaml",
                "economics.yaml",
                "stages.yaml",
                "truth.json",
                "truth_customers.parquet",
                "truth_decisions.parquet",
            ],
            "note": "truth.json is the world that generated this history; truth_customers.parquet holds each "
            "customer's latent rate (lam, per week), hazard (mu), spend rate (nu) and alive flag at the end; "
            "truth_decisions.parquet each logged decision's contract reward as the generator earned it "
            "(transaction margin to the next decision + product margins at each week's end - cost).",
        },
    )
    return {
        "out": str(out),
        "customers": cfg.customers,
        "weeks": cfg.weeks,
        "transactions": int(len(hist.transactions)),
        "products_events": int(len(hist.products)),
        "decisions": int(len(hist.decisions)),
        "start": cfg.start,
        "end": str((pd.Timestamp(cfg.start) + pd.Timedelta(days=7 * cfg.weeks - 1)).date()),
        "seed": cfg.seed,
    }
