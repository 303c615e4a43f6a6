"""Baseline policies (policies.baselines) and the playbook they share with the synthetic bank (sim.playbook)."""

import copy
import dataclasses

import numpy as np
import pytest

from policies.base import Policy, as_simulator_policy
from policies.baselines import BASELINES, ChurnThreshold, GreedyUplift, make_baseline
from sim.btyd import ParetoNBD
from sim.catalogue import NONE_ACTION, STAGES, Action, ActionCatalogue
from sim.playbook import Playbook, high_value_threshold, playbook_action
from sim.population import PopulationSimulator, simulate
from sim.synthetic import BankConfig, logging_probs, truth_world

LATENT = {"lam", "mu", "nu", "alive"}


@pytest.fixture(scope="module")
def world():
    return truth_world(BankConfig())


@pytest.fixture(scope="module")
def grown(world):
    """3,000 customers after 60 periods under random contacts: every stage, products, contacts."""
    sim = PopulationSimulator.new_customers(world, 3000, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(60):
        m = sim.action_masks()
        sim.step(np.argmax(rng.random(m.shape) * m * (rng.random((m.shape[0], 1)) < 0.3), axis=1))
    return sim


def snapshot(sim):
    """Copies of the observation and masks (the simulator's arrays change in place)."""
    return {k: v.copy() for k, v in sim.observe().items()}, sim.action_masks().copy()


# ---- the protocol, for every baseline -----------------------------------------------------------
@pytest.mark.parametrize("name", list(BASELINES))
def test_probabilities_respect_masks_and_sum_to_one(world, grown, name):
    obs, masks = snapshot(grown)
    assert set(obs).isdisjoint(LATENT)
    # arbitrary extra restrictions ("none" stays allowed) must be respected too
    masks[:, 1:] &= np.random.default_rng(1).random((masks.shape[0], masks.shape[1] - 1)) < 0.7
    pol = make_baseline(name, world)
    assert isinstance(pol, Policy) and pol.name == name
    p = pol.action_probs(obs, masks)
    assert p.shape == masks.shape and p.dtype == np.float64
    assert np.all(p[~masks] == 0) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    a = pol.act(obs, masks, np.random.default_rng(2))
    assert a.shape == (masks.shape[0],) and masks[np.arange(a.size), a].all()
    if name != "random":  # deterministic: one-hot rows, act without an rng picks the same
        assert np.all((p == 0) | (p == 1))
        np.testing.assert_array_equal(pol.act(obs, masks), np.argmax(p, axis=1))


@pytest.mark.parametrize("name", list(BASELINES))
def test_latent_state_does_not_change_decisions(world, grown, name):
    sim = copy.deepcopy(grown)
    obs, masks = snapshot(sim)
    pol = make_baseline(name, world)
    before = pol.action_probs(obs, masks)
    st, rng = sim.state, np.random.default_rng(3)
    st.lam[:] = rng.permutation(st.lam)
    st.mu[:] = rng.permutation(st.mu) * 10
    st.nu[:] = rng.permutation(st.nu)
    st.alive[:] = ~st.alive
    after = pol.action_probs(*snapshot(sim))
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("name", list(BASELINES))
def test_runs_in_the_simulator_and_same_seed_same_numbers(world, name):
    pol = as_simulator_policy(make_baseline(name, world))
    a = simulate(world, pol, periods=26, seed=5, customers=2000)
    b = simulate(world, pol, periods=26, seed=5, customers=2000)
    assert a.customers.equals(b.customers) and a.periods.equals(b.periods)
    contacts = a.customers["contacts"].sum()
    assert (contacts == 0) if name == "none" else (contacts > 0)


def test_random_is_uniform_over_allowed_actions(world, grown):
    obs, masks = snapshot(grown)
    p = make_baseline("random", world).action_probs(obs, masks)
    np.testing.assert_allclose(p, masks / masks.sum(axis=1, keepdims=True))


# ---- business as usual ---------------------------------------------------------------------------
def hand_obs(world, rows):
    """Observation from (stage, segment name, holds credit card, last_contact, monetary, tenure) rows."""
    seg = [s.name for s in world.segments]
    n, P, C = len(rows), len(world.products), len(world.catalogue.channels)
    products = np.zeros((n, P), bool)
    products[:, world.products.index("credit_card")] = [r[2] for r in rows]
    return {
        "stage": np.array([STAGES.index(r[0]) for r in rows], np.int8),
        "segment": np.array([seg.index(r[1]) for r in rows], np.int16),
        "products": products,
        "last_contact": np.array([r[3] for r in rows], np.int32),
        "monetary": np.array([r[4] for r in rows], float),
        "tenure": np.array([r[5] for r in rows], np.int32),
        "recency": np.zeros(n, np.int32),
        "frequency": np.zeros(n, np.int32),
        "recent_contacts": np.zeros(n),
        "opted_out": np.zeros((n, C), bool),
    }


def eligibility_masks(world, obs):
    tab = np.array([[s in a.eligible_stages for a in world.catalogue.actions] for s in STAGES])
    return tab[obs["stage"]]


@pytest.mark.parametrize(
    "stage, segment, card, expected",
    [
        ("new", "mass", False, "email_card_offer"),  # onboarding: get the card
        ("new", "mass", True, "sms_activation_bonus"),  # activation once they have it
        ("growth", "young_digital", True, "push_cashback"),
        ("maturity", "mass", True, "email_fee_waiver"),
        ("maturity", "affluent", True, "rm_call_wealth"),  # cross-sell to high value
        ("dormancy", "mass", False, "push_login_reminder"),  # reactivation
        ("dormancy", "affluent", False, "rm_call_retention"),  # retention call, high value at risk
        ("churned", "affluent", True, "none"),
    ],
)
def test_bau_follows_the_playbook_by_stage(world, stage, segment, card, expected):
    obs = hand_obs(world, [(stage, segment, card, 10_000, 0.0, 60)])
    p = make_baseline("bau", world).action_probs(obs, eligibility_masks(world, obs))
    assert world.catalogue.names[int(np.argmax(p[0]))] == expected


def test_bau_cadence_masks_and_contact_rate(world):
    # contacted 3, 4 periods ago (last_contact 2, 3) and never; the third is masked out
    obs = hand_obs(world, [("growth", "mass", True, lc, 0.0, 20) for lc in (2, 3, 10_000)])
    masks = eligibility_masks(world, obs)
    masks[2, world.catalogue.index("push_cashback")] = False
    cash = world.catalogue.index("push_cashback")
    p = make_baseline("bau", world).action_probs(obs, masks)
    assert np.argmax(p, axis=1).tolist() == [0, cash, 0]
    assert np.argmax(make_baseline("bau", world, every=1).action_probs(obs, masks), axis=1).tolist() == [cash, cash, 0]
    half = make_baseline("bau", world, contact_rate=0.5).action_probs(obs, masks)
    np.testing.assert_allclose(half[1, [0, cash]], [0.5, 0.5])


# ---- the playbook and the synthetic bank's logging policy --------------------------------------
def legacy_bau_action(sim, segment_names):
    """The playbook as sim.synthetic defined it before it moved to sim.playbook (the reference)."""
    idx = sim.world.catalogue.index
    st = sim.state
    affluent = segment_names.index("affluent") if "affluent" in segment_names else -1
    a = np.zeros(st.n, np.int16)
    has_card = st.products[:, sim.world.products.index("credit_card")]
    a[st.stage == 0] = np.where(has_card[st.stage == 0], idx("sms_activation_bonus"), idx("email_card_offer"))
    a[st.stage == 1] = idx("push_cashback")
    mat = st.stage == 2
    a[mat] = np.where(st.segment[mat] == affluent, idx("rm_call_wealth"), idx("email_fee_waiver"))
    dor = st.stage == 3
    a[dor] = np.where(st.segment[dor] == affluent, idx("rm_call_retention"), idx("push_login_reminder"))
    return a


def test_logging_policy_is_the_playbook_unchanged(world):
    cfg = BankConfig()
    seg = [s.name for s in world.segments]
    sim = PopulationSimulator.new_customers(world, 3000, seed=8)
    rng = np.random.default_rng(9)
    seen = set()
    for t in range(60):
        if t % 6 == 0:
            a = Playbook(world).action(sim.observe())
            assert a.dtype == np.int16
            np.testing.assert_array_equal(a, legacy_bau_action(sim, seg))
            np.testing.assert_array_equal(playbook_action(sim.observe(), world), a)
            masks = sim.action_masks()
            ref = legacy_bau_action(sim, seg)
            ok = masks[np.arange(sim.state.n), ref] & (ref > 0)
            probs = np.zeros(masks.shape)
            probs[np.arange(sim.state.n), np.where(ok, ref, 0)] += np.where(ok, cfg.bau_contact_rate, 1.0)
            probs[:, 0] += np.where(ok, 1.0 - cfg.bau_contact_rate, 0.0)
            uni = masks / masks.sum(axis=1, keepdims=True)
            ref_probs = (1.0 - cfg.explore) * probs + cfg.explore * uni
            np.testing.assert_array_equal(logging_probs(sim, seg, cfg), ref_probs)
            seen |= set(np.unique(sim.state.stage).tolist())
        m = sim.action_masks()
        sim.step(np.argmax(rng.random(m.shape) * m * (rng.random((m.shape[0], 1)) < 0.3), axis=1))
    assert seen == set(range(len(STAGES)))


def custom_world(world, actions, segment_names=("retail", "premium")):
    """The truth world with another catalogue (response tables resized) and segments renamed."""
    w = copy.deepcopy(world)
    w.catalogue = ActionCatalogue((NONE_ACTION, *actions))
    A, S = len(w.catalogue), len(STAGES)
    tab = np.full((A, S), 0.1)
    tab[0] = 0.0
    w.response = dataclasses.replace(
        w.response,
        activity_lift=tab.tolist(),
        dropout_reduction=tab.tolist(),
        adoption_uplift=tab.tolist(),
        reactivation=np.zeros((A, S)).tolist(),
        duration=[0] + [4] * (A - 1),
    )
    w.segments = [dataclasses.replace(s, name=n) for s, n in zip(w.segments[:2], segment_names)]
    for s in w.segments:
        s.share = 0.5
    return w


def test_playbook_maps_a_custom_catalogue_by_offer(world):
    acts = (
        Action("reco_cheap", "email", "product_recommendation", 0.5, ("new", "maturity"), None, "savings"),
        Action("reco_pricey", "rm", "product_recommendation", 9.0, ("maturity",), None, "wealth"),
        Action("bonus", "sms", "activation_bonus", 1.0, ("new", "growth")),
        Action("cashback", "app", "cashback", 2.0, ("growth",)),
        Action("nudge", "app", "login_reminder", 0.1, ("dormancy",)),
        Action("keep", "rm", "retention_offer", 10.0, ("dormancy",)),
    )
    w = custom_world(world, acts)
    pb = Playbook(w)
    name = {k: w.catalogue.names[i] for k, i in pb.step_action.items()}
    assert name == {
        "onboarding": "reco_cheap",
        "activation": "bonus",
        "growth": "cashback",
        "cross_sell": "reco_cheap",
        "cross_sell_high_value": "reco_cheap",
        "reactivation": "nudge",
        "retention_high_value": "keep",
    }
    assert pb.high_value_segment == -1 and pb.onboarding_product == w.products.index("savings")
    # no affluent segment: high value is observable spend per period above the world's top-quintile cut
    thr = pb.threshold
    obs = hand_obs(
        w,
        [
            ("dormancy", "retail", False, 10_000, 0.5 * thr * 40, 40),
            ("dormancy", "retail", False, 10_000, 2.0 * thr * 40, 40),
        ],
    )
    assert [w.catalogue.names[a] for a in pb.action(obs)] == ["nudge", "keep"]
    # a catalogue that serves no step gives none everywhere
    bare = custom_world(world, (Action("survey", "email", "survey", 0.1),))
    assert set(Playbook(bare).step_action.values()) == {0}


def test_high_value_threshold_is_the_top_quintile_of_expected_spend(world):
    w = custom_world(world, (Action("x", "email", "cashback", 1.0),))
    rng = np.random.default_rng(0)
    n = 400_000
    seg = rng.integers(0, 2, n)
    r, alpha = (np.array([s.activity[k] for s in w.segments])[seg] for k in ("r", "alpha"))
    p, q, gam = (np.array([s.spend[k] for s in w.segments])[seg] for k in ("p", "q", "gamma"))
    spend_rate = rng.gamma(r) / alpha * p / (rng.gamma(q) / gam)  # lambda * E[value | nu]
    share = (spend_rate > high_value_threshold(w, 0.8)).mean()
    assert abs(share - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n)


# ---- churn threshold -----------------------------------------------------------------------------
def test_churn_threshold_contacts_only_high_risk_with_the_best_retention_action(world, grown):
    obs, masks = snapshot(grown)
    pol = make_baseline("churn_threshold", world, every=1)
    a = np.argmax(pol.action_probs(obs, masks), axis=1)
    pa = pol.p_alive(obs)
    # P(alive) is the segment's Pareto/NBD posterior with x = frequency, t_x = tenure - recency, T = tenure
    for g, seg in enumerate(world.segments):
        m = obs["segment"] == g
        x, T = obs["frequency"][m], obs["tenure"][m]
        t_x = np.where(x > 0, T - obs["recency"][m], 0)
        ref = ParetoNBD(**{k: seg.activity[k] for k in ("r", "alpha", "s", "beta")}).p_alive(x, t_x, T)
        np.testing.assert_allclose(pa[m], ref, rtol=1e-12)
    risky = (1 - pa > 0.5) & (pa > 0.05)
    can = pol.retention_action(obs, masks) > 0
    assert (a > 0).any() and np.array_equal(a > 0, risky & can)
    # the contact is the allowed action with the largest dropout reduction for the stage
    dr = np.asarray(world.response.dropout_reduction)[:, obs["stage"]].T
    got = dr[np.arange(a.size), a]
    best = np.where(masks, dr, -1)[:, 1:].max(axis=1)
    assert np.all(got[a > 0] == best[a > 0])


def test_churn_threshold_breaks_ties_towards_the_cheaper_action(world):
    w = copy.deepcopy(world)
    dr = np.asarray(w.response.dropout_reduction)
    dr[w.catalogue.index("email_fee_waiver")] = dr[w.catalogue.index("rm_call_retention")]
    w.response.dropout_reduction = dr.tolist()
    obs = hand_obs(w, [("dormancy", "mass", False, 10_000, 0.0, 60)])
    act = ChurnThreshold(w).retention_action(obs, eligibility_masks(w, obs))
    assert w.catalogue.names[act[0]] == "email_fee_waiver"


# ---- greedy uplift -------------------------------------------------------------------------------
def with_response(world, **tables):
    w = copy.deepcopy(world)
    for k, v in tables.items():
        setattr(w.response, k, v)
    return w


def test_greedy_never_contacts_without_effects(world):
    A, S = world.n_actions, len(STAGES)
    zero = np.zeros((A, S)).tolist()
    w = with_response(world, activity_lift=zero, dropout_reduction=zero, adoption_uplift=zero, reactivation=zero)
    res = simulate(
        w, as_simulator_policy(make_baseline("greedy_uplift", w, every=1)), periods=10, seed=1, customers=2000
    )
    assert res.customers["contacts"].sum() == 0


def test_greedy_contacts_when_a_cheap_action_has_a_big_lift(world):
    A, S = world.n_actions, len(STAGES)
    zero = np.zeros((A, S))
    lift = zero.copy()
    nudge = world.catalogue.index("push_login_reminder")
    lift[nudge] = 5.0
    w = with_response(
        world,
        activity_lift=lift.tolist(),
        dropout_reduction=zero.tolist(),
        adoption_uplift=zero.tolist(),
        reactivation=zero.tolist(),
    )
    sim = PopulationSimulator.new_customers(w, 2000, seed=2)
    obs, masks = snapshot(sim)
    a = make_baseline("greedy_uplift", w).act(obs, masks)
    assert np.all(a == nudge)  # new customers, all eligible for it, never contacted


def test_greedy_value_of_a_lift_for_a_newborn_customer(world):
    """Closed form for a customer at birth (P(alive) = 1, prior means) with only a lift, no discount."""
    A, S = world.n_actions, len(STAGES)
    zero = np.zeros((A, S))
    lift = zero.copy()
    a = world.catalogue.index("push_cashback")
    lift[a] = 0.4
    w = with_response(
        world,
        activity_lift=lift.tolist(),
        dropout_reduction=zero.tolist(),
        adoption_uplift=zero.tolist(),
        reactivation=zero.tolist(),
    )
    w.economics.annual_discount_rate = 0.0
    obs = hand_obs(w, [("new", "affluent", True, 10_000, 0.0, 0)])
    obs["recent_contacts"][:] = 1.0
    v = GreedyUplift(w).values(obs)[0]
    seg = w.segments[1]
    lam, mu = seg.activity["r"] / seg.activity["alpha"], seg.activity["s"] / seg.activity["beta"]
    spend = seg.spend["p"] * seg.spend["gamma"] / (seg.spend["q"] - 1)
    D = w.response.duration[a]
    alive_periods = sum(np.exp(-mu * t) for t in range(D))
    f = w.response.fatigue**1.0
    expected = w.economics.margin_rate * spend * lam * 0.4 * f * alive_periods - w.catalogue.costs[a]
    assert v[a] == pytest.approx(expected, rel=1e-10)
    others = [i for i in range(1, A) if i != a]
    np.testing.assert_allclose(v[others], -np.asarray(w.catalogue.costs)[others], atol=1e-12)


# ---- construction errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, error, message",
    [
        ("nope", {}, KeyError, "unknown baseline 'nope'; known: none, random, bau, churn_threshold, greedy_uplift"),
        ("none", {"every": 4}, ValueError, r"baseline 'none' has no parameter 'every'; its parameters: \(none\)"),
        ("bau", {"evry": 4}, ValueError, "baseline 'bau' has no parameter 'evry'; its parameters: every, contact_rate"),
        ("bau", {"every": 0}, ValueError, "every must be an integer >= 1, got 0"),
        ("bau", {"every": 2.5}, ValueError, "every must be an integer >= 1, got 2.5"),
        ("bau", {"contact_rate": 0.0}, ValueError, r"contact_rate must be in \(0.0, 1.0\], got 0.0"),
        ("churn_threshold", {"threshold": 1.0}, ValueError, r"threshold must be in \[0.0, 1.0\), got 1.0"),
        ("churn_threshold", {"floor": "low"}, ValueError, "floor must be a finite number, got 'low'"),
        ("greedy_uplift", {"horizon": True}, ValueError, "horizon must be an integer >= 1, got True"),
        ("greedy_uplift", {"min_gain": float("nan")}, ValueError, "min_gain must be a finite number, got nan"),
        ("greedy_uplift", {"repeat_only": "yes"}, ValueError, "repeat_only must be True or False, got 'yes'"),
    ],
)
def test_make_baseline_rejects_bad_input(world, name, params, error, message):
    with pytest.raises(error, match=message):
        make_baseline(name, world, **params)
