"""True policy values of the synthetic bank (experiments.ope.truth) against generated histories.

Every comparison below is between two Monte Carlo estimates of the same quantity; the tolerance
is Z standard errors of their difference, the SE computed from the data (clustered by customer:
customers are the independent units of the generating process). Seeds are fixed, so each
assertion is deterministic; Z = 4 makes a false failure for a new seed a ~1e-4 event.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.ope.data import decision_outcomes, on_policy_value
from experiments.ope.truth import true_values, true_values_many
from policies.baselines import make_baseline
from sim.synthetic import BankConfig, generate_bank_history, truth_world

CFG = BankConfig(customers=1500, weeks=80, seed=3)
Z = 4.0


def cluster_mean_se(v: np.ndarray, cust: np.ndarray) -> tuple[float, float]:
    """Mean of v and its SE clustered by customer."""
    df = pd.DataFrame({"v": v, "c": cust}).groupby("c")["v"].agg(["sum", "count"])
    m = df["sum"].sum() / df["count"].sum()
    c = len(df)
    se = np.sqrt(((df["sum"] - m * df["count"]) ** 2).sum() * c / (c - 1)) / df["count"].sum()
    return float(m), float(se)


@pytest.fixture(scope="module")
def world():
    return truth_world(CFG)


@pytest.fixture(scope="module")
def truths(world):
    pols = {n: make_baseline(n, world) for n in ("none", "greedy_uplift")}
    return true_values_many(CFG, pols, discount=0.0, details=True)


@pytest.fixture(scope="module")
def history():
    return generate_bank_history(CFG, record_observations=True)


@pytest.fixture(scope="module")
def paired(truths, history):
    """The history's observed decision rewards joined to the truth's logged decisions."""
    oc = decision_outcomes(history[0])
    one = truths["none"]["one_step"]
    m = oc.merge(one, on=["customer_id", "date"], how="outer", validate="1:1", indicator=True)
    return oc, m


def test_logging_run_is_the_history(paired):
    oc, m = paired
    assert (m["_merge"] == "both").all()  # same decision points
    assert (m["action_x"] == m["action_y"]).all()  # the same logged actions
    # the truth's realised rewards use expected amounts given the counts: close to the observed ones
    assert np.corrcoef(m["reward"], m["reward_logged"])[0, 1] > 0.95


def test_logging_one_step_truth_matches_observed_reward(truths, paired):
    oc, m = paired
    log = truths["none"]["logging"]
    observed = on_policy_value(oc, "per_decision")
    # paired: same logged states; the difference is branch noise + the history's own noise
    diff, se = cluster_mean_se(m["reward"].to_numpy() - m["value_logging"].to_numpy(), m["customer_id"].to_numpy())
    assert abs(observed - log["per_decision"] - diff) < 1e-9
    assert se > 0 and abs(diff) < Z * se, (observed, log["per_decision"], se)
    # and the tolerance is tight: well under the population SE of the value itself
    assert se < 0.3 * log["se"]["per_decision"]
    # the logging run's own (expected-amount) rewards give the same per-customer value as the history
    obs_pc = on_policy_value(oc, "per_customer")
    d_pc = (
        oc.groupby("customer_id")["reward"].sum()
        - pd.Series(m["reward_logged"].to_numpy()).groupby(m["customer_id"].to_numpy()).sum()
    )
    assert abs(obs_pc - log["per_customer"]) < Z * d_pc.std(ddof=1) / np.sqrt(len(d_pc))


def test_none_branch_matches_logged_none_decisions(truths, paired):
    """Where the logging policy chose none, the observed reward is a draw of the none branch's
    reward at the same state: E[observed - value_none | logged none] = 0."""
    _, m = paired
    sel = (m["action_x"] == "none").to_numpy()
    assert sel.sum() > 1000
    diff, se = cluster_mean_se(
        m["reward"].to_numpy()[sel] - m["value"].to_numpy()[sel], m["customer_id"].to_numpy()[sel]
    )
    assert abs(diff) < Z * se


def test_none_one_step_and_trajectory_agree_at_first_decisions(truths):
    """One-step "none" and the "none" trajectories see the same state distribution only at each
    customer's first decision (no earlier logged action has touched them): there the mean values
    agree. Later, logged contacts (activity, retention, products, fatigue, opt-outs) make the
    logged states differ from the never-contacted ones, so no equality is asserted past step 0."""
    r = truths["none"]
    one = r["one_step"]
    first = one[one["step"] == 0]
    assert len(first) == r["customers"]
    m1, se1 = float(first["value"].mean()), float(first["value"].std(ddof=1) / np.sqrt(len(first)))
    # discount 0 keeps only step 0: the trajectory run's mean first-decision reward
    traj = r["trajectory"]
    m2 = r["per_customer_discounted"]
    assert abs(m2 - traj.loc[traj["step"] == 0, "reward"].mean()) < 1e-9
    se2 = r["se"]["per_customer_discounted"]
    assert abs(m1 - m2) < Z * np.hypot(se1, se2)
    # the none trajectory never contacts: no costs, every action none
    assert (traj["action"] == "none").all()
    assert r["per_customer"] == pytest.approx(traj.groupby("customer_id")["reward"].sum().mean())


def test_deterministic_candidate_differs_from_logging(truths):
    g = truths["greedy_uplift"]
    diff = g["per_decision"] - g["logging"]["per_decision"]
    assert abs(diff) > 5 * g["se"]["per_decision_minus_logging"]
    # deterministic: its one-step value is one branch per decision, its trajectory follows its argmax
    assert g["per_decision"] != truths["none"]["per_decision"]
    assert g["decisions"] == truths["none"]["decisions"] and g["customers"] == truths["none"]["customers"]


def test_same_seed_same_numbers(world):
    cfg = BankConfig(customers=400, weeks=40, seed=11)
    pol = make_baseline("random", world)
    keys = ("per_decision", "per_customer", "per_customer_discounted", "decisions", "customers")
    a = true_values(cfg, pol, discount=0.99)
    b = true_values(cfg, pol, discount=0.99)
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert a["logging"] == b["logging"] and a["se"] == b["se"]
    c = true_values(cfg, pol, discount=0.99, seed=12)
    assert c["per_decision"] != a["per_decision"] and c["per_customer"] != a["per_customer"]
    d = true_values(BankConfig(customers=999, weeks=40, seed=5), pol, customers=400, seed=11, discount=0.99)
    assert {k: d[k] for k in keys} == {k: a[k] for k in keys}


def test_branch_replicates_give_branch_se(world):
    r = true_values(BankConfig(customers=400, weeks=40, seed=2), make_baseline("bau", world), replicates=2)
    assert r["se"]["per_decision_branch"] is not None
    assert 0 < r["se"]["per_decision_branch"] < r["se"]["per_decision"]
    assert r["logging"]["se"]["per_decision_branch"] > 0


def test_decision_observations(history):
    hist, truth = history
    obs = truth["decision_observations"]
    dec = hist.decisions
    assert len(obs) == len(dec)
    assert (obs["customer_id"].to_numpy() == dec["customer_id"].to_numpy()).all()
    assert (obs["date"].to_numpy() == dec["date"].to_numpy()).all()
    # the logged action was allowed by the recorded mask
    allowed = np.array([obs.at[i, f"mask_{a}"] for i, a in enumerate(dec["action"])])
    assert allowed.all() and obs["mask_none"].all()
    for col in (
        "recency",
        "frequency",
        "monetary",
        "tenure",
        "stage",
        "segment",
        "last_contact",
        "recent_contacts",
        "product_credit_card",
        "opted_out_sms",
    ):
        assert col in obs
    # off by default, and recording changes nothing in the history
    h2, t2 = generate_bank_history(CFG)
    assert "decision_observations" not in t2
    pd.testing.assert_frame_equal(h2.decisions, dec)
    pd.testing.assert_frame_equal(h2.transactions, hist.transactions)


def test_control_variate_mean_and_estimates(truths):
    """The control variate's closed-form mean matches its sample mean, and the control-variate
    estimates agree with the raw sample means within their SE while having a smaller one."""
    for r in truths.values():
        cvx = r["control_variate"]
        assert abs(cvx["sample_mean"] - cvx["mean"]) < Z * cvx["sample_se"]
        for k in ("per_decision", "per_customer"):
            assert r["cv_se"][k] < 0.7 * r["se"][k]
            assert abs(r["cv"][k] - r[k]) < Z * r["se"][k]


def test_control_mean_closed_form(world):
    """control_mean against a direct Monte Carlo of the customers' latent draws (no simulation)."""
    from experiments.ope.truth import control_mean

    cfg = BankConfig(customers=1, weeks=60, seed=0, decision_every=3)
    rng = np.random.default_rng(0)
    n = 400_000
    shares = np.array([s.share for s in world.segments])
    g = rng.choice(len(shares), n, p=shares / shares.sum())
    par = lambda key, f: np.array([getattr(s, key)[f] for s in world.segments])[g]  # noqa: E731
    lam = rng.gamma(par("activity", "r")) / par("activity", "alpha")
    mu = rng.gamma(par("activity", "s")) / par("activity", "beta")
    inv_nu = par("spend", "gamma") / rng.gamma(par("spend", "q"))
    birth = rng.integers(0, int(cfg.birth_share * cfg.weeks), n)
    off = rng.integers(0, cfg.decision_every, n)
    first = np.minimum(birth + np.mod(-(birth + off), cfg.decision_every), cfg.weeks)
    alive = lambda T: -np.expm1(-mu * T) / mu  # noqa: E731
    X = (
        world.economics.margin_rate
        * lam
        * par("spend", "p")
        * inv_nu
        * (alive(cfg.weeks - birth) - alive(first - birth))
    )
    assert abs(X.mean() - control_mean(cfg, world)) < Z * X.std() / np.sqrt(n)
