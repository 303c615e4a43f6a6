"""The budgeted policy over a horizon (optimizer/budgeted.py) and `clv plan` (experiments/budget_plan.py):
the budget is cash for every contact of the horizon and holds in every seed, per-period constraints
hold in every period, an unbinding budget is the policy itself, and bad input is one line."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv, ok_json

from optimizer.budgeted import BudgetRule, ContactValues, choose_contacts, fit_contact_values, run_horizon, tune_price
from optimizer.problem import parse_constraint
from policies.base import as_simulator_policy
from policies.baselines import make_baseline
from sim.errors import ConfigError
from sim.world import WorldModel

T = 12


@pytest.fixture(scope="module")
def setup(calibrated_world):
    path, _ = calibrated_world
    world = WorldModel.load(path)
    book = world.read_book(path)
    pol = make_baseline("greedy_uplift", world)
    values = fit_contact_values(world, book, pol, T, 6, 200, seed=3)
    return path, world, book, pol, as_simulator_policy(pol), values


def test_contact_values_are_fitted_on_states_over_the_horizon(setup):
    _, _, _, _, _, values = setup
    assert values.fit["snapshots"] == [0, 3, 7, 11] and values.fit["states"] == 800
    assert np.isfinite(values.fit["heldout_r2"])


def test_an_unbinding_budget_leaves_the_policy_as_it_is(setup):
    """With a budget above what the policy spends and no price, every proposal goes ahead: the
    budgeted run is the policy's own run, customer by customer (common random numbers)."""
    _, world, book, _, fn, values = setup
    alone = run_horizon(world, book, fn, T, 4, "policy")
    rule = BudgetRule(alone.spend * 10, T)
    budgeted = run_horizon(world, book, fn, T, 4, "budgeted", rule, values)
    assert budgeted.spend == pytest.approx(alone.spend) and budgeted.contacts == alone.contacts
    np.testing.assert_allclose(budgeted.clv, alone.clv)


def test_none_spends_nothing_and_the_runs_share_their_customers(setup):
    _, world, book, _, fn, _ = setup
    none = run_horizon(world, book, None, T, 4, "none")
    alone = run_horizon(world, book, fn, T, 4, "policy")
    assert none.spend == 0 and none.contacts == 0 and alone.spend > 0
    np.testing.assert_array_equal(none.segment, alone.segment)


@pytest.mark.parametrize("pacing", ["horizon", "even", "front"])
def test_the_budget_holds_in_every_seed(setup, pacing):
    _, world, book, _, fn, values = setup
    alone = np.mean([run_horizon(world, book, fn, T, s, "policy").spend for s in (0, 1)])
    budget = alone / 4
    rule = BudgetRule(budget, T, pacing)
    if pacing == "horizon":
        price, trace = tune_price(world, book, fn, values, rule, [0, 1], alone)
        assert price is not None and trace
        rule = replace(rule, price=price)
    for s in (5, 6, 7):
        run = run_horizon(world, book, fn, T, s, "budgeted", rule, values)
        assert 0 < run.spend <= budget + 1e-9
        if pacing == "even":  # no period spends more than its share of what was left
            per = run.by_period.groupby("period")["spend"].sum()
            assert per.max() <= budget / T * 3


@pytest.mark.parametrize("share", [0.25, 0.9])
def test_the_horizon_price_spends_the_budget_up_to_the_policys_own_spend(setup, share):
    """The price may fall below 0 so that a budget close to the policy's own spend is spent too
    (the value model's lowest-rated proposals go last, not never)."""
    _, world, book, _, fn, values = setup
    seeds = [0, 1]
    alone = np.mean([run_horizon(world, book, fn, T, s, "policy").spend for s in seeds])
    rule = BudgetRule(alone * share, T)
    price, _ = tune_price(world, book, fn, values, rule, seeds, alone)
    spent = np.mean(
        [run_horizon(world, book, fn, T, s, "budgeted", replace(rule, price=price), values).spend for s in seeds]
    )
    assert 0.9 * rule.budget <= spent <= rule.budget + 1e-9


def test_per_period_capacity_holds_in_every_period(setup):
    _, world, book, _, fn, values = setup
    alone = run_horizon(world, book, fn, T, 0, "policy")
    busiest = alone.by_period.groupby("channel")["contacts"].sum().idxmax()
    channels = list(dict.fromkeys(a.channel or "no_channel" for a in world.catalogue.actions[1:]))
    cap = parse_constraint("capacity", f"channel:{channels[busiest]}=3")
    rule = BudgetRule(alone.spend, T, "front", constraints=[cap])
    run = run_horizon(world, book, fn, T, 0, "budgeted", rule, values)
    per = run.by_period[run.by_period["channel"] == busiest].groupby("period")["contacts"].sum()
    assert len(per) and per.max() <= 3
    assert run.spend <= alone.spend + 1e-9


def test_choose_contacts_ranks_by_value_per_unit_of_cost(calibrated_world):
    _, world = calibrated_world
    value = np.array([5.0, 1.0, -1.0, 4.0])
    cost = np.array([5.0, 0.5, 0.1, 2.0])
    one, seg = np.ones(4, np.int16), np.zeros(4, int)
    # value per unit of cost: 1, 2, -10, 2; the cheapest-first prefix 0.5 + 2 + 5 = 7.5 fits 7.55, the last does not
    got = choose_contacts(BudgetRule(7.55, 4, "front"), value, cost, one, seg, 0.0, 0, world)
    assert got.rows.tolist() == [0, 1, 3]
    # the budget left covers every proposal: all go ahead, the policy's own choice included
    assert choose_contacts(BudgetRule(100.0, 4, "front"), value, cost, one, seg, 0.0, 0, world).rows.tolist() == [
        0,
        1,
        2,
        3,
    ]
    # a price must be cleared: value - 0.5 x cost > 0 leaves out the third
    priced = BudgetRule(100.0, 4, "horizon", price=0.5)
    assert choose_contacts(priced, value, cost, one, seg, 0.0, 0, world).rows.tolist() == [0, 1, 3]
    # even pacing: a quarter of the budget left in the first of four periods
    even = choose_contacts(BudgetRule(10.0, 4, "even"), value, cost, one, seg, 0.0, 0, world)
    assert even.rows.tolist() == [1, 3] and cost[even.rows].sum() <= 2.5


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"budget": 0.0}, "budget"),
        ({"budget": float("nan")}, "budget"),
        ({"budget": 5.0, "periods": 0}, "horizon"),
        ({"budget": 5.0, "pacing": "weekly"}, "pacing"),
    ],
)
def test_bad_rules_name_their_setting(kw, key):
    args = {"budget": 5.0, "periods": 4, **kw}
    with pytest.raises(ConfigError) as info:
        BudgetRule(**args)
    assert info.value.key == key


def test_contact_values_of_no_rows_are_empty():
    cv = ContactValues(encoder=None, predict=lambda x: np.zeros((len(x), 3)))
    assert cv.of({}, np.zeros(0, int), np.zeros(0, int)).shape == (0,)


# ---- clv plan -------------------------------------------------------------------------------------
def test_clv_plan_writes_the_contact_list_the_schedule_and_the_checks(calibrated_world, tmp_path):
    path, _ = calibrated_world
    out = tmp_path / "plan"
    doc = ok_json(
        clv(
            "plan",
            path,
            "--policy",
            "greedy_uplift",
            "--budget",
            150,
            "--horizon",
            T,
            "--seeds",
            2,
            "--workers",
            0,
            "--out",
            out,
            "--json",
        )
    )
    for key in (
        "budget",
        "horizon",
        "spend",
        "clv",
        "lift_vs_none",
        "lift_vs_policy_alone",
        "predicted_lift",
        "fresh_lift",
        "shadow_prices",
        "by_segment",
        "by_channel",
        "by_period",
        "seconds",
    ):
        assert key in doc, key
    assert doc["budget"] == 150 and doc["horizon"] == T and doc["budget_binds"]
    assert doc["spend_share_min"] <= doc["spend_share_max"] <= 1.0 + 1e-9  # the budget holds in every fresh seed
    assert doc["fresh_lift"] == doc["lift_vs_none"]
    assert doc["seeds"]["fresh"][0] == 10_000 and doc["seeds"]["planning"] == [0, 1]
    assert json.loads((out / "plan.json").read_text())["budget"] == 150
    contacts = pd.read_parquet(out / "contacts.parquet")
    book = pd.read_parquet(path.parent / "world.book.parquet")
    assert len(contacts) == doc["first_period_contacts"] > 0
    assert set(contacts["customer_id"]) <= set(book["customer_id"])
    assert contacts["cost"].sum() <= 150 + 1e-9
    assert {"action", "channel", "value", "cost", "reason"} <= set(contacts.columns)
    assert contacts["reason"].str.contains("margin units").all()  # the world names no currency
    schedule = pd.read_parquet(out / "schedule.parquet")
    assert {"period", "segment", "channel", "contacts", "spend", "value"} <= set(schedule.columns)
    assert schedule.groupby("period")["spend"].sum().sum() == pytest.approx(doc["spend"]["mean"])


def _bad_budget(p, out):
    return ["plan", p, "--budget", "0", "--out", out], "--budget 0.0: must be a finite number > 0"


def _bad_policy(p, out):
    return ["plan", p, "--budget", "10", "--policy", "nosuch", "--out", out], "--policy nosuch: not a baseline"


def _bad_pacing(p, out):
    return ["plan", p, "--budget", "10", "--pacing", "weekly", "--out", out], "--pacing 'weekly': choose horizon"


def _bad_segment(p, out):
    return (
        ["plan", p, "--budget", "10", "--min-coverage", "segment:nosuch=0.5", "--out", out],
        "--min-coverage segment:nosuch=0.5: no segment 'nosuch' in the world",
    )


def _no_book(p, out):
    (out.parent / "lonely").mkdir()
    w = WorldModel.load(p)
    w.save(out.parent / "lonely" / "world.json")
    return ["plan", out.parent / "lonely" / "world.json", "--budget", "10", "--out", out], "book"


@pytest.mark.parametrize("case", [_bad_budget, _bad_policy, _bad_pacing, _bad_segment, _no_book])
def test_clv_plan_bad_input_is_one_line_and_writes_nothing(calibrated_world, tmp_path, case):
    path, _ = calibrated_world
    out = tmp_path / "plan"
    args, message = case(path, out)
    r = clv(*args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_clv_plan_constraints_that_cannot_hold_exit_3_naming_the_period(calibrated_world, tmp_path, workers):
    """Also from a Ray worker: the period's diagnosis comes back as the error it was, one line."""
    path, world = calibrated_world
    seg = world.segments[0].name
    r = clv(
        "plan",
        path,
        "--budget",
        "0.5",
        "--horizon",
        4,
        "--seeds",
        2,
        "--workers",
        workers,
        "--pacing",
        "even",
        "--min-coverage",
        f"segment:{seg}=1.0",
        "--out",
        tmp_path / "p",
    )
    assert r.exit_code == 3, (r.stdout, r.stderr)
    # progress lines on a stderr that is not a terminal ("[  4.4 s] planning ..."), then one error line
    said = [x for x in r.stderr.strip().splitlines() if not re.match(r"^\[\s*[\d.]+ s\] ", x)]
    assert len(said) == 1 and "period 0: infeasible" in said[0] and said[0] == r.stderr.strip().splitlines()[-1]


def test_clv_plan_horizon_below_one_is_a_usage_error_of_one_line(calibrated_world, tmp_path):
    import subprocess
    import sys

    path, _ = calibrated_world
    out = tmp_path / "p"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.cli",
            "plan",
            str(path),
            "--budget",
            "10",
            "--horizon",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stdout == "" and not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1 and "Invalid value for '--horizon'" in r.stderr


def test_clv_plan_budgets_draw_the_frontier_beside_the_baselines(calibrated_world, tmp_path):
    path, _ = calibrated_world
    out = tmp_path / "frontier"
    doc = ok_json(
        clv("plan", path, "--budgets", "40,120", "--horizon", 6, "--seeds", 2, "--workers", 0, "--out", out, "--json")
    )
    assert [p["budget"] for p in doc["points"]] == [40.0, 120.0]
    for p in doc["points"]:
        assert p["spend_share_max"] <= 1.0 + 1e-9  # the budget holds in every fresh seed
        assert {"lift_vs_none", "predicted_lift", "check", "marginal_value", "shadow_prices"} <= set(p)
    names = [r["policy"] for r in doc["references"]]
    assert names[0] == "greedy_uplift alone" and "bau" in names
    assert (out / "frontier.png").stat().st_size > 0
    assert json.loads((out / "frontier.json").read_text())["points"][1]["budget"] == 120.0
    assert doc["currency"] == "margin units"  # the unit of the PNG's axes
    assert not (out / "plan.json").exists()  # no --budget: no plan is written


def test_clv_plan_gives_the_same_numbers_on_ray_workers_as_in_process(calibrated_world, tmp_path):
    path, _ = calibrated_world
    docs = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        args = ["plan", path, "--budget", 80, "--horizon", 6, "--seeds", 2, "--workers", workers, "--out", out]
        docs.append((ok_json(clv(*args, "--json")), pd.read_parquet(out / "contacts.parquet")))
    (a, ca), (b, cb) = docs
    for key in ("spend", "lift_vs_none", "lift_vs_policy_alone", "predicted_lift", "price", "by_channel"):
        assert a[key] == b[key], key
    pd.testing.assert_frame_equal(ca, cb)


# ---- the plan in the generating world ---------------------------------------------------------
def test_the_generating_world_resumes_the_history_the_world_was_calibrated_on(setup):
    """Run to the calibration week, the generating world has written exactly the history's
    transactions of those weeks: the plan's true customers start from the past it was made on."""
    from experiments.budget_truth import calibration_weeks
    from sim.synthetic import BankConfig, generate_bank_history, logging_chooser, run_bank_weeks, start_bank_run

    _, world, _, _, _, _ = setup
    cfg = BankConfig(customers=800, weeks=80, seed=5)  # conftest's calibrated_world
    hist, _ = generate_bank_history(cfg)
    weeks = calibration_weeks(cfg, world.calibration_end)
    assert weeks == 77  # 2023-06-30 is a Friday: the week it falls in is left out
    run = start_bank_run(cfg)
    run_bank_weeks(run, logging_chooser(run), weeks=weeks)
    rows = sum(int(np.minimum(n, 7).sum()) for n in run.tx_n)  # the history writes <= 7 rows a week
    end = pd.Timestamp(cfg.start) + pd.Timedelta(days=7 * weeks)
    assert rows == int((hist.transactions["date"] < end).sum()) > 0 and len(run.tx_n) == weeks


def test_the_plan_runs_on_the_true_customers_within_its_budget(setup):
    from experiments.budget_plan import PlanSettings, plan_at, prepare_plan
    from experiments.budget_truth import check_in_truth, truth_runs
    from sim.synthetic import BankConfig

    _, world, book, pol, _, _ = setup
    cfg = BankConfig(customers=800, weeks=80, seed=5)
    settings = PlanSettings(budget=1.0, horizon=T, seeds=2, value_customers=200, value_horizon=6)
    ctx = prepare_plan(world, book, pol, settings, "greedy_uplift")
    budget = 0.3 * np.mean([a.spend for a in ctx.alone_plan])
    doc = plan_at(ctx, budget).to_dict()
    rule = BudgetRule(budget, T, price=doc["price"])
    runs = truth_runs(ctx, cfg, rule, [0, 1])
    assert all(r.spend == 0 for r in runs["none"]) and all(0 < r.spend <= budget + 1e-9 for r in runs["budgeted"])
    assert all(r.spend > budget for r in runs["policy"])  # the budget binds in the true world too
    assert all(len(r.clv) == len(book) for m in runs.values() for r in m)
    again = truth_runs(ctx, cfg, rule, [1])
    np.testing.assert_array_equal(again["budgeted"][0].clv, runs["budgeted"][1].clv)  # a seed is a seed
    check = check_in_truth(ctx, cfg, doc, None, [0, 1])
    assert check["customers"] == len(book) and check["spend"]["mean"] <= budget + 1e-9
    assert {"predicted_inside_truth_ci", "fresh_inside_truth_ci"} <= set(check)
    assert np.isfinite(check["lift_vs_none"]["mean"])


def test_coverage_keeps_money_for_the_periods_after(setup, monkeypatch):
    """Horizon pacing with a minimum coverage: each period keeps what its coverage costs for every
    later one, so the budget does not run dry before the horizon ends (without the reserve the
    price spends it early and a late period cannot pay for its coverage)."""
    import optimizer.budgeted as budgeted
    from optimizer.diagnose import InfeasibleError

    _, world, book, _, fn, values = setup
    seg = world.segments[0].name
    cons = [parse_constraint("min-coverage", f"segment:{seg}=0.5")]
    alone = run_horizon(world, book, fn, T, 0, "policy")
    budget = alone.spend / 1.5
    rule = BudgetRule(budget, T, "horizon", price=-1.0, constraints=cons)  # a price that spends freely
    run = run_horizon(world, book, fn, T, 0, "budgeted", rule, values)
    assert 0 < run.spend <= budget + 1e-9 and run.by_period["period"].max() == T - 1
    monkeypatch.setattr(budgeted, "coverage_need", lambda *a: 0.0)
    with pytest.raises(InfeasibleError, match="period"):
        run_horizon(world, book, fn, T, 0, "budgeted", rule, values)


def test_contact_list_gives_integer_customer_ids_back_as_integers(tmp_path):
    """A history whose customer ids are integers gets integers back in contacts.parquet (text
    ids stay text: the other tests)."""
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "examples" / "my_bank"
    hist = tmp_path / "hist"
    shutil.copytree(src, hist)
    for f in hist.glob("*.csv"):
        df = pd.read_csv(f, dtype=str)
        df["customer_id"] = df["customer_id"].str.lstrip("C").astype(int)  # C000123 -> 123
        df.to_csv(f, index=False)
    ok_json(clv("calibrate", hist, "--calibration-end", "2024-06-30", "--out", tmp_path / "w.json", "--json"))
    assert WorldModel.load(tmp_path / "w.json").customer_id_type == "integer"
    ok_json(
        clv(
            "plan",
            tmp_path / "w.json",
            "--budget",
            "20",
            "--horizon",
            4,
            "--seeds",
            2,
            "--workers",
            0,
            "--out",
            tmp_path / "p",
            "--json",
        )
    )
    c = pd.read_parquet(tmp_path / "p" / "contacts.parquet")
    ids = set(pd.read_csv(hist / "transactions.csv")["customer_id"])
    assert len(c) and c["customer_id"].dtype == np.int64 and set(c["customer_id"]) <= ids
