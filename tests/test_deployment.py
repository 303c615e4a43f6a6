"""A plan's deployment with a randomised control group (experiments/deployment.py, `clv plan
--control-share`): exact propensities, reproducible draws, the decisions-table format, the power."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv, ok_json

from experiments.deployment import (
    GROUPS,
    Deployment,
    DeploymentSettings,
    action_probabilities,
    control_share_needed,
    deploy,
    draw,
    minimal_detectable_effect,
    power_from_outcomes,
    z_total,
)
from sim.errors import ConfigError
from sim.history import load_history
from sim.world import WorldModel

H = 6  # plan horizon of the CLI run (short: the tests stay fast)


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> dict:
    """A 400-customer make-data history, a world calibrated on all of it, and one `clv plan
    --control-share 0.3 --explore-share 0.2` run."""
    root = tmp_path_factory.mktemp("deploy")
    made = ok_json(clv("make-data", "--out", root / "hist", "--customers", 400, "--weeks", 60, "--seed", 3, "--json"))
    ok_json(clv("calibrate", root / "hist", "--calibration-end", made["end"], "--out", root / "w.json", "--json"))
    out = root / "plan"
    r = clv(
        "plan",
        root / "w.json",
        "--budget",
        30,
        "--horizon",
        H,
        "--seeds",
        2,
        "--workers",
        0,
        "--control-share",
        "0.3",
        "--explore-share",
        "0.2",
        "--out",
        out,
        "--json",
    )
    doc = ok_json(r)
    return {"root": root, "hist": root / "hist", "world": root / "w.json", "out": out, "doc": doc, "stderr": r.stderr}


def _world_book(bank):
    world = WorldModel.load(bank["world"])
    book = pd.read_parquet(bank["world"].parent / world.book_file)
    return world, book


# ---- propensities -----------------------------------------------------------------------------------
def test_propensities_follow_the_formula_and_sum_to_one():
    # 3 customers, 4 actions (0 = none): contacted with a=2 among {0, 1, 2}; contacted with a=3 among
    # {0, 3}; not contacted
    planned = np.array([2, 3, 0])
    eligible = np.array([[1, 1, 1, 0], [1, 0, 0, 1], [1, 1, 1, 1]], bool)
    c, e = np.array([0.3, 0.5, 0.2]), 0.2
    p = action_probabilities(planned, eligible, c, e)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    # customer 0: m = 3
    assert p[0, 2] == pytest.approx(0.7 * 0.8 + 0.7 * 0.2 / 3)
    assert p[0, 1] == pytest.approx(0.7 * 0.2 / 3)
    assert p[0, 0] == pytest.approx(0.3 + 0.7 * 0.2 / 3)
    assert p[0, 3] == 0.0
    # customer 1: m = 2
    assert p[1, 3] == pytest.approx(0.5 * 0.8 + 0.5 * 0.2 / 2)
    assert p[1, 0] == pytest.approx(0.5 + 0.5 * 0.2 / 2)
    assert p[1, 1] == p[1, 2] == 0.0
    # not contacted: none for sure, whatever the group
    np.testing.assert_array_equal(p[2], [1.0, 0.0, 0.0, 0.0])


def test_propensities_match_the_frequencies_of_the_draw_over_many_seeds():
    rng = np.random.default_rng(1)
    n, a, R = 40, 6, 4000
    eligible = rng.random((n, a)) < 0.5
    planned = np.where(rng.random(n) < 0.7, rng.integers(1, a, n), 0)
    c = rng.choice([0.1, 0.3, 0.5], n)
    e = 0.25
    p = action_probabilities(planned, eligible, c, e)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    counts = np.zeros((n, a))
    for s in range(R):
        act, _ = draw(planned, eligible, c, e, seed=s)
        counts[np.arange(n), act] += 1
    freq = counts / R
    assert np.all(freq[p == 0] == 0)  # never an action of probability 0
    sigma = np.sqrt(p * (1 - p) / R)
    # 240 cells: 4.5 standard errors leave a false alarm in about 1 of 600 runs of the whole table
    assert np.all(np.abs(freq - p) <= 4.5 * sigma + 1e-12), np.max(np.abs(freq - p) / np.maximum(sigma, 1e-12))


def test_groups_are_consistent_with_the_actions():
    rng = np.random.default_rng(2)
    n, a = 500, 5
    eligible = rng.random((n, a)) < 0.6
    planned = np.where(rng.random(n) < 0.5, rng.integers(1, a, n), 0)
    act, group = draw(planned, eligible, np.full(n, 0.3), 0.4, seed=9)
    names = np.asarray(GROUPS)[group]
    assert np.all(act[names == "control"] == 0)
    assert np.all(act[names == "treatment"] == planned[names == "treatment"])
    assert np.all(planned[names == "explore"] > 0)  # only the plan's contacts are explored
    assert {"control", "treatment", "explore"} == set(names)


# ---- the file ---------------------------------------------------------------------------------------
def test_the_plan_writes_deployment_csv_for_every_book_customer(bank):
    world, book = _world_book(bank)
    dep = pd.read_csv(bank["out"] / "deployment.csv", dtype={"customer_id": str})
    assert list(dep.columns) == [
        *("customer_id", "date", "action", "propensity", "cost"),  # the contract's decisions table
        *("group", "planned_action", "segment", "control_share"),  # kept as they are by the history loader
    ]
    assert len(dep) == len(book) and set(dep["customer_id"]) == set(book["customer_id"])
    assert (dep["date"] == str((pd.Timestamp(world.calibration_end) + pd.Timedelta(days=1)).date())).all()
    assert ((dep["propensity"] > 0) & (dep["propensity"] <= 1)).all()
    assert set(dep["group"]) <= set(GROUPS)
    assert (dep.loc[dep["group"] == "control", "action"] == "none").all()
    costs = dict(zip(world.catalogue.names, world.catalogue.costs))
    np.testing.assert_allclose(dep["cost"], dep["action"].map(costs))
    contacts = pd.read_parquet(bank["out"] / "contacts.parquet")
    planned = dep.set_index("customer_id")["planned_action"]
    assert (planned.loc[contacts["customer_id"]].to_numpy() == contacts["action"].to_numpy()).all()
    assert (planned != "none").sum() == len(contacts)


def test_same_seed_same_file_and_another_seed_another_draw(bank):
    world, book = _world_book(bank)
    contacts = pd.read_parquet(bank["out"] / "contacts.parquet")
    settings = DeploymentSettings(control_share=0.3, explore_share=0.2, seed=0)
    again = deploy(world, book, contacts, settings).frame
    written = pd.read_csv(bank["out"] / "deployment.csv", dtype={"customer_id": str})
    pd.testing.assert_frame_equal(written, again.astype({"customer_id": str}), check_dtype=False)
    other = deploy(world, book, contacts, DeploymentSettings(control_share=0.3, explore_share=0.2, seed=1)).frame
    assert not other["group"].equals(again["group"])


def test_the_file_appends_to_the_history_as_decisions(bank, tmp_path):
    hist = tmp_path / "hist"
    shutil.copytree(bank["hist"], hist)
    before = pd.read_csv(hist / "decisions.csv", dtype=str)
    dep = pd.read_csv(bank["out"] / "deployment.csv", dtype=str)
    pd.concat([before, dep], ignore_index=True).to_csv(hist / "decisions.csv", index=False)
    h = load_history(hist)  # the data contract's validator: propensity in (0, 1], known actions and customers
    assert len(h.decisions) == len(before) + len(dep)
    day = pd.Timestamp(dep["date"].iloc[0])
    new = h.decisions[h.decisions["date"] == day]
    assert len(new) == len(dep)
    assert set(new["group"]) <= set(GROUPS)


def test_integer_customer_ids_stay_integers(bank, tmp_path):
    hist = tmp_path / "hist"
    shutil.copytree(bank["hist"], hist)
    for f in hist.glob("*.csv"):
        df = pd.read_csv(f, dtype=str)
        df["customer_id"] = df["customer_id"].str.lstrip("C").astype(int) + 1  # C000000 -> 1
        df.to_csv(f, index=False)
    end = pd.read_csv(hist / "transactions.csv")["date"].max()
    ok_json(clv("calibrate", hist, "--calibration-end", end, "--out", tmp_path / "w.json", "--json"))
    world = WorldModel.load(tmp_path / "w.json")
    assert world.customer_id_type == "integer"
    book = pd.read_parquet(tmp_path / world.book_file)
    contacts = pd.DataFrame({"customer_id": [int(book["customer_id"].iloc[0])], "action": [world.catalogue.names[1]]})
    frame = deploy(world, book, contacts, DeploymentSettings(control_share=0.5, seed=4)).frame
    assert frame["customer_id"].dtype == np.int64
    assert set(frame["customer_id"]) == set(book["customer_id"].astype(int))
    assert (
        frame.loc[frame["customer_id"] == contacts["customer_id"][0], "planned_action"].item() == contacts["action"][0]
    )


# ---- power ------------------------------------------------------------------------------------------
def test_mde_and_control_share_needed_by_hand():
    z = 1.959963984540054 + 0.8416212335729143
    assert z_total() == pytest.approx(z, rel=1e-12)
    assert minimal_detectable_effect(10.0, 8.0, 700, 300) == pytest.approx(z * np.sqrt(100 / 700 + 64 / 300))
    assert minimal_detectable_effect(10.0, 8.0, 700, 0) == float("inf")
    n, sd_t, sd_c, lift = 10_000, 10.0, 8.0, 1.0
    c = control_share_needed(lift, sd_t, sd_c, n)
    assert 0 < c < sd_c / (sd_t + sd_c)  # the smaller root, below the share of the smallest MDE
    assert minimal_detectable_effect(sd_t, sd_c, (1 - c) * n, c * n) == pytest.approx(lift, rel=1e-9)
    assert minimal_detectable_effect(sd_t, sd_c, (1 - 0.9 * c) * n, 0.9 * c * n) > lift
    # no share can: the best one (sd_c / (sd_t + sd_c)) still misses
    best = sd_c / (sd_t + sd_c)
    tiny = 0.5 * minimal_detectable_effect(sd_t, sd_c, (1 - best) * n, best * n)
    assert control_share_needed(tiny, sd_t, sd_c, n) is None
    assert control_share_needed(-1.0, sd_t, sd_c, n) is None


def _dep(n: int, control: float, seed: int = 0) -> Deployment:
    planned = np.ones(n, np.int64)
    eligible = np.ones((n, 2), bool)
    shares = np.full(n, control)
    act, group = draw(planned, eligible, shares, 0.0, seed)
    return Deployment(
        pd.DataFrame(),
        action_probabilities(planned, eligible, shares, 0.0),
        planned,
        act,
        group,
        np.zeros(n, np.int64),
        shares,
    )


def test_power_from_outcomes_detects_a_large_lift_and_warns_on_a_small_one():
    rng = np.random.default_rng(3)
    n = 4000
    dep = _dep(n, 0.3)
    none = rng.normal(10.0, 5.0, (3, n))
    settings = DeploymentSettings(control_share=0.3)
    big = power_from_outcomes(none + 2.0, none, dep, settings)
    n_c = int((dep.group == 1).sum())
    assert big["control_customers"] == n_c and big["treatment_arm_customers"] == n - n_c
    assert big["predicted_lift_per_customer"] == pytest.approx(2.0)
    sd = big["sd_control"]
    assert big["mde"] == pytest.approx(z_total() * sd * np.sqrt(1 / (n - n_c) + 1 / n_c))
    assert big["detectable"] and big["warning"] is None and big["control_share_needed"] < 0.3
    small = power_from_outcomes(none + 0.2, none, dep, settings)
    assert not small["detectable"] and "a control share of 0.3 gives" in small["warning"]
    assert "margin units per customer" in small["warning"]  # no currency named: the unit says so
    assert "EUR per customer" in power_from_outcomes(none + 0.2, none, dep, settings, unit="EUR")["warning"]
    assert small["control_share_needed"] is None or small["control_share_needed"] > 0.3
    flat = power_from_outcomes(none - 0.1, none, dep, settings)
    assert not flat["detectable"] and "no positive lift" in flat["warning"]


def test_the_plan_reports_the_experiment_and_warns_when_underpowered(bank):
    doc, exp = bank["doc"], bank["doc"]["experiment"]
    for key in (
        "control_share",
        "explore_share",
        "treatment_customers",
        "control_customers",
        "horizon_periods",
        "predicted_lift_per_customer",
        "sd_per_customer",
        "mde",
        "control_share_needed",
        "detectable",
        "warning",
    ):
        assert key in exp, key
    assert exp["control_share"] == 0.3 and exp["explore_share"] == 0.2 and exp["horizon_periods"] == H
    dep = pd.read_csv(bank["out"] / "deployment.csv")
    assert exp["control_customers"] == int((dep["group"] == "control").sum()) > 0
    assert exp["treatment_customers"] + exp["explore_customers"] + exp["control_customers"] == len(dep)
    n_t, n_c = len(dep) - exp["control_customers"], exp["control_customers"]
    assert exp["mde"] == pytest.approx(minimal_detectable_effect(exp["sd_treatment"], exp["sd_control"], n_t, n_c))
    # 400 customers and a budget of 30: far too few to see the lift; said in the JSON and on stderr
    assert exp["detectable"] is False and exp["warning"]
    assert f"warning: {exp['warning']}" in bank["stderr"]
    assert doc["files"]["deployment"] == str(bank["out"] / "deployment.csv")
    assert json.loads((bank["out"] / "plan.json").read_text())["experiment"]["mde"] == pytest.approx(exp["mde"])


# ---- bad input --------------------------------------------------------------------------------------
BAD = [
    (["--control-share", "1"], "--control-share 1: must be in [0, 1)"),
    (["--control-share", "-0.1"], "--control-share -0.1: must be in [0, 1)"),
    (["--control-share", "abc"], "--control-share abc: expected F or segment:NAME=F"),
    (["--control-share", "segment:mass=1.5"], "--control-share segment:mass=1.5: must be in [0, 1)"),
    (["--control-share", "segment:nosuch=0.2"], "--control-share segment:nosuch=0.2: no segment 'nosuch'"),
    (["--control-share", "0.2", "--explore-share", "1"], "--explore-share 1.0: must be in [0, 1)"),
    (["--control-share", "0.0001"], "--control-share 0.0001: leaves no control customers"),
    (["--control-share", "0"], "--control-share 0.0: leaves no control customers"),
    (["--explore-share", "0.1"], "--explore-share: needs --control-share"),
    (["--control-share", "0.2", "--experiment-horizon", "99"], "--experiment-horizon 99: must be at most --horizon"),
    (["--control-share", "0.2", "--customers", "50"], "--control-share: names the book's customers"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_deployment_options_are_one_line_and_write_nothing(bank, tmp_path, extra, message):
    out = tmp_path / "plan"
    r = clv("plan", bank["world"], "--budget", 30, "--horizon", H, "--seeds", 2, "--workers", 0, *extra, "--out", out)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_settings_name_their_key():
    with pytest.raises(ConfigError) as e:
        DeploymentSettings(control_share=0.2, explore_share=-0.5)
    assert e.value.key == "explore_share"


def test_segment_shares_stratify_the_power_over_the_segments_with_a_control_group():
    rng = np.random.default_rng(5)
    n = 3000
    seg = np.repeat([0, 1], n // 2)
    shares = np.where(seg == 0, 0.0, 0.4)  # segment 0 has no control group
    planned, eligible = np.ones(n, np.int64), np.ones((n, 2), bool)
    act, group = draw(planned, eligible, shares, 0.0, seed=1)
    dep = Deployment(
        pd.DataFrame(), action_probabilities(planned, eligible, shares, 0.0), planned, act, group, seg, shares
    )
    assert not (group[seg == 0] == 1).any()
    none = rng.normal(0.0, 3.0, (2, n))
    treated = none + np.where(seg == 0, 5.0, 1.0)
    settings = DeploymentSettings(control_share=0.0, segment_shares={"b": 0.4})
    out = power_from_outcomes(treated, none, dep, settings, segment_names=["a", "b"])
    assert out["segments_in_scope"] == ["b"]
    assert out["predicted_lift_per_customer"] == pytest.approx(1.0)  # the lift where it can be measured
    m = seg == 1
    n_c = int((group[m] == 1).sum())
    assert out["mde"] == pytest.approx(
        minimal_detectable_effect(out["sd_treatment"], out["sd_control"], m.sum() - n_c, n_c)
    )
