"""Offline evaluation end to end: rebuilt decision states against the simulator's own, cross-fitting,
FQE, the pipeline's exact cases, the Ray bootstrap, and `clv ope` (JSON and bad input)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv, ok_json

from experiments.ope import OPESettings, bootstrap_intervals, evaluate_offline, logged_decisions
from experiments.ope.data import decision_outcomes, on_policy_value
from experiments.ope.estimators import IPS, LoggedBandit, bootstrap_replicates, make_estimator
from experiments.ope.models import FittedQ, RewardModel
from experiments.ope.observations import decision_states
from experiments.ray_session import RayExecutor
from policies.baselines import make_baseline
from sim.catalogue import STAGES
from sim.history import load_history
from sim.synthetic import BankConfig, generate_bank_history, write_bank_history

CFG = BankConfig(customers=500, weeks=80, seed=5)


@pytest.fixture(scope="module")
def generated():
    return generate_bank_history(CFG, record_observations=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ope") / "bank"
    write_bank_history(out, CFG)
    d = pd.read_csv(out / "decisions.csv")
    d["p_same"] = d["propensity"]  # the logging policy as its own candidate
    d["p_bad"] = d["propensity"]
    d.loc[7, "p_bad"] = 1.5  # data row 7 = spreadsheet row 9
    d.to_csv(out / "decisions.csv", index=False)
    return out


def test_rebuilt_states_equal_the_simulators(generated):
    hist, truth = generated
    world, seen = truth["world"], truth["decision_observations"]
    out = decision_outcomes(hist)
    assert (seen["customer_id"].to_numpy() == out["customer_id"].to_numpy()).all()
    st = decision_states(hist, world, out)
    for k in ("recency", "tenure", "last_contact"):
        np.testing.assert_array_equal(st.obs[k], seen[k].to_numpy(), err_msg=k)
    np.testing.assert_allclose(st.obs["recent_contacts"], seen["recent_contacts"].to_numpy(), atol=1e-12)
    assert (np.array(STAGES)[st.obs["stage"]] == seen["stage"].to_numpy()).all()
    assert (np.array([s.name for s in world.segments])[st.obs["segment"]] == seen["segment"].to_numpy()).all()
    for j, p in enumerate(world.products):
        np.testing.assert_array_equal(st.obs["products"][:, j], seen[f"product_{p}"].to_numpy(), err_msg=p)
    # the history keeps at most 7 transactions a week (the generator's cap), so never more than the simulator
    assert (st.obs["frequency"] <= seen["frequency"].to_numpy()).all()
    assert np.mean(st.obs["frequency"] == seen["frequency"].to_numpy()) > 0.9
    # masks differ only where a customer opted out of a channel (not recorded in a history)
    masks = np.column_stack([seen[f"mask_{a}"].to_numpy() for a in world.catalogue.names])
    opted = seen[[c for c in seen.columns if c.startswith("opted_out_")]].any(axis=1).to_numpy()
    np.testing.assert_array_equal(st.masks[~opted], masks[~opted])
    # every logged action is allowed in the rebuilt state
    assert st.masks[np.arange(len(st)), st.action].all()


def test_cross_fitting_never_uses_a_customers_own_rewards():
    rng = np.random.default_rng(0)
    n, ids = 600, np.repeat(np.arange(150), 4).astype(str)
    X, a = rng.normal(size=(n, 3)), rng.integers(0, 3, n)
    y = X[:, 0] + a + rng.normal(size=n)
    model = RewardModel("ridge", folds=3, seed=1)
    r1, info = model.cross_fit(X, a, y, ids, 3)
    y2 = y.copy()
    own = ids == "7"
    y2[own] += 1000.0  # a wild change to one customer's rewards
    r2, _ = model.cross_fit(X, a, y2, ids, 3)
    np.testing.assert_allclose(r1[own], r2[own])  # their predictions do not move
    assert not np.allclose(r1[~own], r2[~own])  # the other folds' models did see them
    assert info["out_of_fold_r2"] > 0.3


def test_fqe_recovers_a_known_value():
    """Reward 2 at every step, trajectories of 1..6 decisions, discount 0.9: q = 2 (1 - 0.9^h) / 0.1
    whatever the policy, and fqe's estimate is its mean over customers."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 7, 300)
    cust = np.repeat(np.arange(300), lengths)
    step = np.concatenate([np.arange(k) for k in lengths])
    remaining = lengths[cust] - step
    n, A = cust.size, 3
    X = rng.normal(size=(n, 2))
    a = rng.integers(0, A, n)
    target = rng.dirichlet(np.ones(A), n)
    next_row = np.where(remaining > 1, np.arange(n) + 1, -1)
    q, info = FittedQ(discount=0.9, folds=3, ridge=1e-6).q_values(
        X, a, np.full(n, 2.0), target, next_row, cust.astype(str), remaining
    )
    exact = 2 * (1 - 0.9**remaining) / 0.1
    np.testing.assert_allclose(q, np.repeat(exact[:, None], A, axis=1), atol=1e-6)
    assert info["stages"] == 6


def test_cluster_bootstrap_with_singleton_groups_is_the_plain_bootstrap():
    rng = np.random.default_rng(2)
    n = 300
    data = LoggedBandit(
        reward=rng.normal(size=n),
        action=rng.integers(0, 2, n),
        pscore=np.full(n, 0.5),
        target=np.tile([0.3, 0.7], (n, 1)),
    )
    plain = bootstrap_replicates(IPS(), data, 50, seed=3)
    grouped = bootstrap_replicates(IPS(), data, 50, seed=3, groups=np.arange(n))
    np.testing.assert_allclose(plain, grouped)
    # with a group per pair of samples, each replicate is a ratio over the decisions it drew
    reps = bootstrap_replicates(make_estimator("ips"), data, 20, seed=3, groups=np.arange(n) // 2)
    assert reps.shape == (20,) and np.isfinite(reps).all()


def test_logging_policy_as_candidate_gives_the_logged_value(folder):
    hist = load_history(folder)
    res = evaluate_offline(hist, OPESettings(estimators=("ips", "snips"), n_boot=50), target_column="p_same")
    logged = on_policy_value(decision_outcomes(hist))
    assert res["estimand"] == "per_decision"
    for k in ("ips", "snips"):
        assert res["estimates"][k]["value"] == pytest.approx(logged, rel=1e-9)
        assert res["estimates"][k]["ci_low"] < logged < res["estimates"][k]["ci_high"]
        assert res["estimates"][k]["ess"] == pytest.approx(res["decisions"])
    seq = evaluate_offline(
        hist,
        OPESettings(estimand="per_customer", estimators=("ips", "wpdis"), n_boot=50, discount=0.95),
        target_column="p_same",
    )
    want = on_policy_value(decision_outcomes(hist), "per_customer", 0.95)
    assert seq["estimates"]["ips"]["estimator"] == "pdis"
    assert seq["estimates"]["ips"]["value"] == pytest.approx(want, rel=1e-9)
    assert seq["estimates"]["wpdis"]["value"] == pytest.approx(want, rel=1e-9)


def test_policy_estimates_agree_and_the_ray_bootstrap_matches_in_process(generated):
    hist, truth = generated
    world = truth["world"]
    pol = make_baseline("greedy_uplift", world)
    settings = OPESettings(estimators=("dm", "ips", "snips", "dr", "sndr"), n_boot=200, seed=4)
    res = evaluate_offline(hist, settings, policy=pol, world=world)
    est = res["estimates"]
    assert set(est) == {"dm", "ips", "snips", "dr", "sndr"}
    for e in est.values():
        assert e["ci_low"] <= e["value"] <= e["ci_high"] and e["ess"] > 0
    # DR and IPS estimate the same quantity: their intervals overlap
    assert est["dr"]["ci_low"] < est["ips"]["ci_high"] and est["ips"]["ci_low"] < est["dr"]["ci_high"]
    assert res["models"]["reward_model"]["out_of_fold_r2"] > 0.1
    # the same bootstrap chunks on 2 Ray workers give the same intervals
    jobs = [("ips", {}), ("snips", {})]
    data = LoggedBandit(
        reward=np.arange(40.0), action=np.zeros(40, int), pscore=np.full(40, 0.5), target=np.tile([0.6, 0.4], (40, 1))
    )
    local = bootstrap_intervals(jobs, data, 300, 0.05, 9, np.arange(40) // 4)
    on_ray = bootstrap_intervals(jobs, data, 300, 0.05, 9, np.arange(40) // 4, executor=RayExecutor(2))
    assert local == on_ray


def test_candidates_sharing_the_logged_decisions_get_the_same_numbers(generated):
    hist, truth = generated
    world = truth["world"]
    settings = OPESettings(estimators=("dm", "dr"), n_boot=50, seed=2)
    shared = logged_decisions(hist, world=world)
    for name in ("bau", "greedy_uplift"):
        pol = make_baseline(name, world)
        alone = evaluate_offline(hist, settings, policy=pol, world=world)
        together = evaluate_offline(hist, settings, policy=pol, world=world, logged=shared)
        assert together["estimates"] == alone["estimates"]
    assert len(shared._reward_models) == 1  # one reward model served both candidates
    with pytest.raises(ValueError, match="another window or world"):
        evaluate_offline(
            hist,
            OPESettings(estimators=("dr",), n_boot=20, start="2022-06-01"),
            policy=make_baseline("bau", world),
            world=world,
            logged=shared,
        )


def test_fqe_and_sequential_estimators_run_on_a_policy(generated):
    hist, truth = generated
    world = truth["world"]
    res = evaluate_offline(
        hist,
        OPESettings(estimand="per_customer", estimators=("pdis", "wpdis", "dr_seq", "wdr", "fqe"), n_boot=50),
        policy=make_baseline("bau", world),
        world=world,
    )
    assert res["estimand"] == "per_customer"
    assert res["models"]["fqe"]["stages"] == int(decision_outcomes(hist)["step"].max()) + 1
    fqe = res["estimates"]["fqe"]
    assert fqe["ess"] == res["customers"] and fqe["ci_low"] < fqe["value"] < fqe["ci_high"]
    # trajectory weights of a deterministic candidate are thin: the result says so
    assert res["diagnostics"]["ess"] < 0.2 * res["customers"]


def test_cli_json(folder):
    doc = ok_json(
        clv(
            "ope",
            folder,
            "--target-prob-column",
            "p_same",
            "--estimators",
            "ips,snips",
            "--bootstrap",
            "50",
            "--workers",
            "0",
            "--end",
            "2023-06-01",
            "--json",
        )
    )
    assert doc["estimand"] == "per_decision"
    assert set(doc["estimates"]["ips"]) >= {"value", "ci_low", "ci_high", "ess"}
    assert doc["window"]["end"] <= "2023-06-01"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-prob-column", "p_nope", "--estimators", "ips"], "decisions.csv, column 'p_nope': no such column"),
        (
            ["--target-prob-column", "p_bad", "--estimators", "ips"],
            "decisions.csv, row 9, column 'p_bad': p_bad is 1.5",
        ),
        (
            ["--target-prob-column", "p_same", "--estimators", "ips,dr"],
            "--estimators dr: need the candidate's probability",
        ),
        (["--target-prob-column", "p_same", "--estimators", "pdis"], "'pdis' is not an estimator of the per_decision"),
        (
            ["--target-prob-column", "p_same", "--estimators", "ips", "--discount", "0.9"],
            "--discount applies to the per_customer estimand",
        ),
        (["--target-prob-column", "p_same", "--estimators", "ips,ips"], "names an estimator twice"),
        (["--target-prob-column", "p_same", "--estimand", "per_visit"], "--estimand 'per_visit'"),
        (
            ["--target-prob-column", "p_same", "--policy", "bau"],
            "give one candidate: --policy P, --target-prob-column COL or --target-probs FILE",
        ),
        ([], "give one candidate: --policy P, --target-prob-column COL or --target-probs FILE"),
        (["--policy", "gredy", "--world", "missing.json"], "missing.json: world file not found"),
        (["--target-prob-column", "p_same", "--start", "2031-01-01"], "no decisions between 2031-01-01"),
        (["--target-prob-column", "p_same", "--end", "yesterday"], "--end: 'yesterday' is not a date"),
        (
            ["--target-prob-column", "p_same", "--estimand", "per_customer", "--estimators", "pdis", "--clip", "5"],
            "--clip 5.0: caps the importance weights of dr, ips, sndr, snips; pdis cannot apply it",
        ),
        (
            ["--target-prob-column", "p_same", "--estimand", "per_customer", "--estimators", "pdis", "--window", "4"],
            "--window applies to the per_decision estimand",
        ),
        (["--target-prob-column", "p_same", "--estimators", "ips", "--window", "0"], "--window 0: must be a whole"),
    ],
)
def test_cli_bad_input(folder, args, message):
    r = clv("ope", folder, *args, "--workers", "0", "--bootstrap", "20")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert r.stderr.count("\n") == 1


def test_clip_is_applied_by_every_one_step_weighting_estimator_and_the_table_guides_it(generated):
    hist, truth = generated
    world = truth["world"]
    pol = make_baseline("greedy_uplift", world)
    shared = logged_decisions(hist, world=world)
    names = ("ips", "snips", "dr", "sndr")
    free = evaluate_offline(
        hist, OPESettings(estimators=("dm",) + names, n_boot=20), policy=pol, world=world, logged=shared
    )
    capped = evaluate_offline(
        hist, OPESettings(estimators=names, n_boot=20, clip=2.0), policy=pol, world=world, logged=shared
    )
    for k in names:  # applied where defined, and said so
        assert capped["estimates"][k]["clip"] == 2.0 and "clip" not in free["estimates"][k]
        assert capped["estimates"][k]["value"] != free["estimates"][k]["value"]
    # the model-only estimate's interval is marked as blind to the model's bias; the others are not
    assert free["estimates"]["dm"]["ci_excludes_model_bias"] is True
    assert "ci_excludes_model_bias" not in free["estimates"]["dr"]
    table = free["clipping"]
    assert table["estimator"] == "dr" and table["levels"][0]["clip"] is None and table["levels"][0]["shift"] == 0
    caps = [r["clip"] for r in table["levels"][1:]]
    assert caps == sorted(caps, reverse=True) and table["suggested"] in [None, *caps] and "SLOPE" in table["rule"]
    # the unclipped level is dr's own estimate
    assert table["levels"][0]["value"] == pytest.approx(free["estimates"]["dr"]["value"], rel=1e-12)
