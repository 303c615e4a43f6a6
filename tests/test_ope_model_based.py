"""The calibrated simulator's model-based answer beside the OPE estimates (experiments/ope/model_based.py,
`clv ope`'s `model_based`), and the top-level support warning following the recommended estimator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv, ok_json

from experiments.ope import OPESettings, evaluate_offline, logged_decisions
from experiments.ope.data import REWARD_DEFINITION, on_policy_value
from experiments.ope.model_based import DEFAULT_REPLICATIONS, model_based_value, replicate, twin_plan
from policies.baselines import make_baseline
from sim.history import load_history
from sim.population import simulate
from sim.synthetic import BankConfig, write_bank_history

CFG = BankConfig(customers=800, weeks=72, seed=21)
START = "2022-12-05"  # week 48 of the history, a Monday on its period grid: every customer has signed up by then
CUT = "2022-12-04"  # the world's calibration end, the day before START: its book is as of the window's start


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """(history folder, history, world path, world, book): the world calibrated up to the day before START."""
    from sim.atomic import atomic_path
    from sim.calibrate import calibrate

    folder = tmp_path_factory.mktemp("model_based") / "bank"
    write_bank_history(folder, CFG)
    hist = load_history(folder)
    world, book, _ = calibrate(hist, CUT, seed=0)
    path = folder.parent / "world.json"
    world.book_file = "world.book.parquet"
    with atomic_path(path.parent / world.book_file) as tmp:
        book.to_parquet(tmp, index=False)
    world.save(path)
    return folder, hist, path, world, book


def test_clv_ope_shows_the_model_based_value_beside_the_estimates(bank):
    folder, _, path, _, _ = bank
    args = ["ope", folder, "--policy", "bau", "--world", path, "--estimand", "per_customer", "--estimators", "drl,mis"]
    args += ["--start", START, "--bootstrap", "20", "--workers", "0", "--model-replications", "3", "--seed", "5"]
    doc = ok_json(clv(*args, "--json"))
    mb = doc["model_based"]
    assert "model_based" not in doc["estimates"] and doc["recommended"]["estimator"] in doc["estimates"]
    assert mb["reward"] == doc["reward"] == REWARD_DEFINITION  # the contract's: margin + product margins - cost
    assert mb["estimand"] == "per_customer" and mb["ci_excludes_model_bias"] is True
    assert mb["ci_low"] < mb["value"] < mb["ci_high"] and len(mb["per_replication"]) == mb["replications"] == 3
    assert "Monte-Carlo" in mb["interval"] and mb["customers"] == doc["customers"]
    assert mb["logged_replay"]["actual"] == pytest.approx(doc["logged_policy_value"])
    # a value of the same order as the estimates (same estimand, reward and customers)
    assert 0.5 < mb["value"] / doc["estimates"]["drl"]["value"] < 2
    text = clv(*args)
    assert text.exit_code == 0, text.stderr
    assert "model " in text.stdout and "excludes the model's error" in text.stdout
    # candidates without a policy to run in the simulator have none
    r = clv("ope", folder, "--policy", "bau", "--world", path, "--bootstrap", "20", "--workers", "0")
    assert r.exit_code == 0 and "model " in r.stdout
    none = ok_json(
        clv("ope", folder, "--policy", "bau", "--world", path, "--workers", "0", "--bootstrap", "20",
            "--model-replications", "0", "--json")
    )  # fmt: skip
    assert none["model_based"] is None
    bad = clv("ope", folder, "--policy", "bau", "--world", path, "--workers", "0", "--model-replications", "1")
    assert bad.exit_code == 2 and "--model-replications 1: give at least 2 seeds" in bad.stderr


def test_the_model_based_value_is_reproducible_for_a_seed(bank):
    _, hist, _, world, book = bank
    logged = logged_decisions(hist, START, None, world, book)
    pol = make_baseline("greedy_uplift", world)
    s = OPESettings(estimand="per_customer", estimators=("drl",), discount=0.97, seed=3, start=START)
    a = model_based_value(hist, logged, pol, s, book, replications=3)
    b = model_based_value(hist, logged, pol, s, book, replications=3)
    assert a["per_replication"] == b["per_replication"] and a["value"] == b["value"]
    c = model_based_value(hist, logged, pol, OPESettings(**{**s.__dict__, "seed": 4}), book, replications=3)
    assert c["per_replication"] != a["per_replication"]
    assert a["discount"] == 0.97 and a["twins"] == a["customers"] and a["decisions_sharing_a_period"] == 0
    assert a["logged_replay"]["actual"] is None  # not given


def test_per_decision_twins_take_the_logged_actions_inside_a_longer_window(bank):
    _, hist, _, world, book = bank
    logged = logged_decisions(hist, START, None, world, book, window=6)
    s = OPESettings(estimators=("dr",), window=6, start=START)
    plan = twin_plan(hist, logged, s, book)
    assert plan.n == plan.decisions == len(logged.outcomes) and plan.from_book == 0
    length = plan.end - plan.entry
    assert length.max() == 6 and (length >= 1).all()
    own = plan.ev_own
    assert (plan.ev_candidate == own).all() and own.sum() == plan.n  # the candidate makes the twin's decision only
    later = ~own  # the bank's later decisions (every 4 weeks) inside the 6-period windows
    assert later.any() and (plan.ev_period[later] < plan.end[plan.ev_twin[later]]).all()
    res = model_based_value(hist, logged, make_baseline("bau", world), s, book, replications=2)
    lv = on_policy_value(logged.outcomes)
    assert res["estimand"] == "per_decision" and res["window"]["periods"] == 6
    # replaying the logged actions from the states they were taken in: close to what the bank earned
    assert abs(res["logged_replay"]["value"] / lv - 1) < 0.15


def test_the_none_policy_gives_the_simulators_own_value_on_the_same_customers(bank):
    """Customers whose first decision is at START start from the book there, as sim.population.simulate
    starts the book's twins: their model-based value under "none" is simulate's reward over the same periods."""
    _, hist, _, world, book = bank
    none = make_baseline("none", world)
    logged = logged_decisions(hist, START, None, world, book)
    s = OPESettings(estimand="per_customer", estimators=("drl",), start=START)
    plan = twin_plan(hist, logged, s, book)
    assert plan.from_book == plan.n  # everyone signed up before START: all from the book
    first = np.full(plan.n, plan.periods)
    np.minimum.at(first, plan.ev_twin, plan.ev_period)
    at_start = np.flatnonzero(first == 0)  # their first decision is in START's period: counted from there
    periods = np.unique(plan.end[at_start])
    assert at_start.size > 100 and periods.size == 1
    ids = pd.unique(logged.outcomes["customer_id"])[at_start]
    rows = pd.Index(book["customer_id"].astype(str)).get_indexer(ids.astype(str))
    sub = book.iloc[rows].reset_index(drop=True)
    seqs = np.random.SeedSequence(8).spawn(8)
    ours = np.array([replicate(world, none, plan, q)["values"][at_start].mean() for q in seqs])
    theirs = np.array(
        [simulate(world, "none", int(periods[0]), seed=k, book=sub).customers["reward"].mean() for k in range(8)]
    )
    se = np.sqrt(ours.var(ddof=1) / ours.size + theirs.var(ddof=1) / theirs.size)
    assert abs(ours.mean() - theirs.mean()) < 4 * se + 0.01 * abs(theirs.mean()), (ours.mean(), theirs.mean(), se)
    # from the states rebuilt at START instead (no book): the world's posterior given the observables
    rebuilt = twin_plan(hist, logged, s, None)
    assert rebuilt.from_book == 0
    again = np.array([replicate(world, none, rebuilt, q)["values"][at_start].mean() for q in seqs])
    assert abs(again.mean() / theirs.mean() - 1) < 0.1, (again.mean(), theirs.mean())


def test_the_ray_replications_give_the_in_process_numbers(bank):
    from experiments.ray_session import RayExecutor

    _, hist, _, world, book = bank
    logged = logged_decisions(hist, START, None, world, book)
    s = OPESettings(estimand="per_customer", estimators=("drl",), start=START, seed=2)
    pol = make_baseline("bau", world)
    local = model_based_value(hist, logged, pol, s, book, replications=2)
    on_ray = model_based_value(hist, logged, pol, s, book, replications=2, executor=RayExecutor(2))
    assert on_ray["per_replication"] == local["per_replication"] and on_ray["ray"] and not local["ray"]


def test_the_warning_follows_the_recommended_estimator(bank):
    _, hist, _, world, book = bank
    pol = make_baseline("bau", world)
    logged = logged_decisions(hist, world=world, book=book)
    per_customer = OPESettings(estimand="per_customer", estimators=("drl", "pdis"), n_boot=20)
    res = evaluate_offline(hist, per_customer, policy=pol, world=world, book=book, logged=logged)
    d, drl = res["diagnostics"], res["estimates"]["drl"]
    assert res["recommended"]["estimator"] == "drl" and d["support"]["estimator"] == "drl"
    assert d["ess"] == drl["ess"] and d["ess_share"] == pytest.approx(drl["ess"] / res["customers"])
    assert "state-marginal" in d["support"]["weights"]
    # the whole-trajectory weights collapse (they used to set the warning); drl's own do not
    traj = d["trajectory_weights"]
    assert traj["ess_share"] < 0.01 and traj["ess"] == res["estimates"]["pdis"]["ess"]
    assert d["ess_share"] > 0.05 and d["warning"] is None
    # with only pdis, the recommended estimator is pdis and its weights are the thin trajectory weights
    only = evaluate_offline(
        hist, OPESettings(estimand="per_customer", estimators=("pdis",), n_boot=20), policy=pol, world=world,
        book=book, logged=logged,
    )  # fmt: skip
    assert only["diagnostics"]["warning"].startswith("thin support for pdis:")
    # per decision: dr's own weights, clipped as it ran
    one = evaluate_offline(
        hist, OPESettings(estimators=("ips", "dr"), n_boot=20, clip=2.0), policy=pol, world=world, book=book,
        logged=logged,
    )  # fmt: skip
    od = one["diagnostics"]
    assert od["support"]["estimator"] == "dr" and "clipped at 2" in od["support"]["weights"]
    assert od["ess"] == one["estimates"]["dr"]["ess"] and od["n"] == one["decisions"]
    assert {"max_weight", "mean_weight", "zero_target_share"} <= set(od)


def test_the_clis_default_is_the_modules():
    import typer

    from experiments.cli import app

    cmd = typer.main.get_command(app).commands["ope"]
    opt = next(p for p in cmd.params if "--model-replications" in getattr(p, "opts", ()))
    assert opt.default == DEFAULT_REPLICATIONS
