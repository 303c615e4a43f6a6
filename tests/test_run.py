"""`clv run CONFIG`: the end-to-end job on both example configs at a small scale, the config's
checks as a table of (bad config, message), bad input files, an infeasible plan and determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_runner import clv, ok_json

from experiments.config import parse_sets
from experiments.run_config import load_run_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_PPO = {
    "n_envs": 32,
    "horizon": 8,
    "n_steps": 8,
    "batch_size": 128,
    "n_epochs": 2,
    "rollout_customers": 200,
    "rollout_horizon": 4,
    "warm_start_samples": 512,
    "warm_start_epochs": 2,
    "critic_warmup_steps": 256,
}
# the bundled-data demo at a small scale: 400 generated customers, a tiny training, few draws
SMALL_DEMO = [
    "history.generate.customers=400",
    "policy.steps=1024",
    f"policy.set={json.dumps(TINY_PPO)}",
    "validation.replications=2",
    "evaluation.seeds=2",
    "ope.bootstrap=50",
    "budgets=[20, 50, 100]",
    "budget=50",
    "plan.horizon=6",
]
SMALL_BYO = ["policy=greedy_uplift", "plan.horizon=8", "evaluation.seeds=2", "ope.bootstrap=50"]


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _run(config: Path, out: Path, items: list[str], workers: int = 0):
    return clv("run", config, "--out", out, *_sets(items), "--workers", str(workers), "--json")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    return ok_json(_run(EXAMPLES / "bank_demo.yaml", out, SMALL_DEMO)), out


def test_bank_demo_runs_every_step(demo_run):
    doc, out = demo_run
    for f in (
        "history/transactions.csv",
        "world.json",
        "world.book.parquet",
        "validation/validation.json",
        "policy/model.zip",
        "policy/card.json",
        "frontier.json",
        "frontier.png",
        "contacts.parquet",
        "schedule.parquet",
        "plan.json",
        "evaluation.json",
        "ope.json",
        "run.json",
        "report.html",
        "scores.parquet",
        "deployment.csv",
    ):
        assert (out / f).is_file(), f
    assert not (out / "values.parquet").exists() and not (out / "plan.parquet").exists()
    assert not (out / "RUN_IN_PROGRESS").exists() and "RUN_IN_PROGRESS" not in doc["files"]
    assert doc["report"] == str(out / "report.html")
    assert doc["policy"]["trained"] and doc["policy"]["algo"] == "maskable_ppo" and doc["policy"]["steps"] == 1024
    assert 0 < doc["validation"]["per_customer_corr"] <= 1 and 0.5 < doc["validation"]["active_auc"] <= 1
    # the budgeted plan over the horizon: the frontier's budgets, the plan judged on fresh seeds
    p = doc["plan"]
    assert p["budget"] == 50 and p["horizon"] == 6 and p["policy"] == "maskable_ppo"
    assert p["seeds"] == {"planning": [0, 1], "fresh": [10000, 10001]}
    assert [q["budget"] for q in doc["frontier"]["points"]] == [20, 50, 100]
    assert {r["policy"] for r in doc["frontier"]["references"]} == {"maskable_ppo alone", "bau", "greedy_uplift"}
    assert p["spend_share_max"] <= 1 + 1e-9
    ev = doc["evaluation"]
    assert set(ev["runs"]) == {"none", "maskable_ppo alone", "plan", "bau", "greedy_uplift"}
    assert ev["seeds_used"] == [10000, 10001] and ev["customers"] == len(pd.read_parquet(out / "world.book.parquet"))
    # offline: one decision per book customer in the holdout, paired intervals around the points
    o = doc["ope"]
    assert o["customers"] == o["decisions"] and o["window"]["start"] >= "2024-07-01"
    assert o["plan_contacts"] <= p["first_period_contacts"] and o["reference_name"] == "maskable_ppo alone"
    for e in o["estimates"].values():
        for k in ("plan", "none", "plan_minus_none", "plan_minus_logged", "reference", "plan_minus_reference"):
            assert e[k]["ci_low"] <= e[k]["value"] <= e[k]["ci_high"], k
        assert e["plan_minus_none"]["value"] == pytest.approx(e["plan"]["value"] - e["none"]["value"])
        assert e["plan_minus_reference"]["value"] == pytest.approx(e["plan"]["value"] - e["reference"]["value"])
    html = (out / "report.html").read_text()
    # the plan ships with a 20 % control group (the demo config's experiment:) and its power
    x = p["experiment"]
    assert x["control_share"] == 0.2 and x["control_customers"] > 0 and x["treatment_customers"] > 0
    dep = pd.read_csv(out / "deployment.csv")
    assert len(dep) == ev["customers"] and set(dep["group"]) <= {"treatment", "control", "explore"}
    assert ((dep["propensity"] > 0) & (dep["propensity"] <= 1)).all()
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == ev["customers"] and doc["scores"]["customers"] == len(scores)
    for heading in (
        "The planned experiment",
        "Customers",
        "The answer",
        "Budget frontier",
        "The plan",
        "Simulation",
        "Offline evaluation",
        "Holdout validation",
        "Assumptions, defaults and repairs",
    ):
        assert heading in html
    assert html.index("Budget frontier</h2>") < html.index("Holdout validation</h2>")
    assert "data:image/png;base64," in html and 'src="http' not in html and "<script" not in html


def test_rerun_reuses_the_trained_policy_and_gives_the_same_numbers(demo_run, tmp_path):
    doc, out = demo_run
    again = ok_json(_run(EXAMPLES / "bank_demo.yaml", out, SMALL_DEMO, workers=2))  # in-process first, Ray now
    assert again["policy"]["reused"] is True
    for key in ("plan", "frontier", "evaluation", "ope"):
        a, b = _without_seconds(doc[key]), _without_seconds(again[key])
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True), key


def _without_seconds(d):
    if isinstance(d, dict):
        return {k: _without_seconds(v) for k, v in d.items() if k not in ("seconds", "price_search")}
    if isinstance(d, list):
        return [_without_seconds(v) for v in d]
    return d


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("byo") / "out"
    res = clv("run", EXAMPLES / "my_bank.yaml", "--out", out, *_sets(SMALL_BYO), "--workers", "2", "--json")
    return ok_json(res), out, res


def test_bring_your_own_csv_example(byo_run):
    doc, out, res = byo_run
    src = EXAMPLES / "my_bank"
    assert (src / "transactions.csv").is_file() and not (src / "truth.json").exists()
    assert f"report: {out / 'report.html'}" in res.stderr
    assert doc["history"]["source"] == str(src.resolve())
    assert doc["history"]["customers"] == pd.read_csv(src / "transactions.csv")["customer_id"].nunique()
    assert set(doc["calibration"]["segments"]) == set(pd.read_csv(src / "customers.csv")["segment"])
    assert doc["ope"]["customers"] > 100 and not (out / "history").exists()


def test_the_plan_binds_and_is_compared_with_the_policy_alone(byo_run):
    doc, out, _ = byo_run
    p = doc["plan"]
    # the budget is cash over the horizon, the policy's own contacts included, and binds in every seed
    assert p["budget_binds"] and p["policy_alone_spend"]["mean"] > p["budget"]
    assert 0.9 <= p["spend_share_min"] <= p["spend_share_max"] <= 1 + 1e-9
    assert set(p["lift_vs_policy_alone"]) >= {"mean", "ci_low", "ci_high"}
    assert p["shadow_prices"][0]["constraint"] == "budget" and p["shadow_prices"][0]["shadow_price"] > 0
    assert [s["constraint"] for s in p["shadow_prices"][1:]] == ["capacity channel:rm_call"]
    # the first period's contact list: book customers, catalogue actions, within the budget
    contacts = pd.read_parquet(out / "contacts.parquet")
    book = pd.read_parquet(out / "world.book.parquet")
    assert len(contacts) == p["first_period_contacts"] > 0 and contacts["customer_id"].is_unique
    assert set(contacts["customer_id"]) <= set(book["customer_id"]) and contacts["cost"].sum() <= p["budget"]
    assert list(contacts.columns) == ["customer_id", "action", "channel", "segment", "value", "cost", "reason"]
    assert (contacts["channel"] == "rm_call").sum() <= 5  # the capacity holds in the first week
    sched = pd.read_parquet(out / "schedule.parquet")
    assert set(sched["period"]) <= set(range(8))
    assert sched.groupby("period")["contacts"].sum().max() > 0
    rm = sched[sched["channel"] == "rm_call"].groupby("period")["contacts"].sum()
    assert (rm <= 5 + 1e-9).all()
    # the frontier rises with the budget; the plan's budget is one of its points
    pts = doc["frontier"]["points"]
    assert [q["budget"] for q in pts] == [50, 100, 200, 400]
    assert pts[0]["spend"]["mean"] < pts[-1]["spend"]["mean"]
    assert doc["evaluation"]["runs"]["plan"]["lift_vs_none"] == p["lift_vs_none"]


def test_an_old_config_with_a_values_section_still_runs_with_a_note(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump({**BASE, "holdout_end": "2024-12-29", "values": {"source": "policy", "horizon": 26}})
    )
    cfg = load_run_config(path)
    assert any("values: ignored" in n for n in cfg.notes)


def test_no_holdout_plans_for_the_future_without_offline_checks(tmp_path):
    doc = ok_json(
        _run(
            EXAMPLES / "my_bank.yaml",
            tmp_path / "out",
            SMALL_BYO + ["holdout_end=null", "ope=null", "calibration_end=2024-12-29", "budgets=[100]", "budget=100"],
        )
    )
    assert doc["validation"] is None and doc["ope"] is None
    assert any("no holdout_end" in n for n in doc["notes"])


def _byo_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "hist"
    shutil.copytree(EXAMPLES / "my_bank", folder)
    cfg = yaml.safe_load((EXAMPLES / "my_bank.yaml").read_text())
    cfg["history"] = {"path": "hist"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def test_bad_input_file_names_file_row_column_and_writes_nothing(tmp_path):
    folder = _byo_copy(tmp_path)
    lines = (folder / "transactions.csv").read_text().splitlines()
    c, d, _, ch = lines[5].split(",")
    lines[5] = ",".join([c, d, "-12.5", ch])
    (folder / "transactions.csv").write_text("\n".join(lines) + "\n")
    res = clv("run", tmp_path / "run.yaml", "--out", tmp_path / "out", *_sets(SMALL_BYO))
    assert res.exit_code == 2
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1 and "transactions.csv" in msg and "row 6" in msg and "amount" in msg
    assert not (tmp_path / "out").exists()


def test_constraints_that_cannot_hold_exit_3_naming_them(tmp_path):
    # every proposed contact of a mass customer made each week, with almost no budget
    res = clv(
        "run",
        EXAMPLES / "my_bank.yaml",
        "--out",
        tmp_path / "out",
        "--workers",
        "0",
        *_sets(SMALL_BYO + ["budgets=[1]", "budget=1", 'constraints.min_coverage=["segment:mass=1.0"]']),
    )
    assert res.exit_code == 3, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "segment:mass" in last and "period 0" in last
    assert not (tmp_path / "out" / "run.json").exists() and not (tmp_path / "out" / "contacts.parquet").exists()


def test_a_run_that_stops_early_leaves_no_earlier_run_beside_it(tmp_path):
    """A re-run into a run's folder removes the earlier run's outputs first and marks the folder
    while it works: stopped by an infeasible plan (exit 3), the folder holds no run.json, report or
    plan of the earlier run, and RUN_IN_PROGRESS says it is unfinished."""
    from experiments.pipeline import IN_PROGRESS

    out = tmp_path / "out"
    out.mkdir()
    for f in ("run.json", "report.html", "evaluation.json", "values.parquet", "plan.parquet"):
        (out / f).write_text("the earlier run's")
    (out / "policy").mkdir()
    (out / "policy" / "card.json").write_text("{}")
    res = clv(
        "run",
        EXAMPLES / "my_bank.yaml",
        "--out",
        out,
        "--workers",
        "0",
        *_sets(SMALL_BYO + ["budgets=[1]", "budget=1", 'constraints.min_coverage=["segment:mass=1.0"]']),
    )
    assert res.exit_code == 3, res.stderr
    left = {p.name for p in out.iterdir()}
    assert not left & {"run.json", "report.html", "evaluation.json", "values.parquet", "plan.parquet"}
    assert IN_PROGRESS in left and (out / "policy" / "card.json").is_file()  # the agent's folder is kept
    assert "removed the previous run's outputs" in res.stderr


def test_a_generated_history_never_overwrites_the_users_files(tmp_path):
    out = tmp_path / "out"
    (out / "history").mkdir(parents=True)
    (out / "history" / "transactions.csv").write_text("customer_id,date,amount\nmine,2024-01-01,1\n")
    res = clv("run", EXAMPLES / "bank_demo.yaml", "--out", out, *_sets(SMALL_DEMO))
    assert res.exit_code == 2 and "holds files that clv did not generate" in res.stderr
    assert (out / "history" / "transactions.csv").read_text().startswith("customer_id,date,amount\nmine")


BASE = {"history": {"dataset": "bank"}, "calibration_end": "2024-06-30", "budgets": [100], "budget": 100}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"histroy": {}}, "histroy: unknown key; did you mean history?"),
        ({"evaluation": {"sedes": 3}}, "evaluation.sedes: unknown key; did you mean seeds?"),
        ({"history": {"dataset": "bank", "path": "x"}}, "history: give exactly one of path, dataset or generate"),
        ({"history": {"path": "no_such_folder"}}, "history.path: no_such_folder: history folder not found"),
        ({"history": {"dataset": "bnak"}}, "history.dataset: unknown dataset 'bnak'"),
        ({"history": {"generate": {"customers": 5}}}, "history.generate.customers: expected a whole number >= 10"),
        (
            {"history": {"generate": {"customers": 10**12}}},
            "history.generate.customers: 1,000,000,000,000 is more than 20,000,000",
        ),
        ({"calibration_end": "30/06/2024"}, "calibration_end: '30/06/2024' is not a date; use YYYY-MM-DD"),
        ({"calibration_end": None}, "calibration_end: missing"),
        ({"holdout_end": "2024-01-01"}, "holdout_end: 2024-01-01 must be after calibration_end 2024-06-30"),
        ({"policy": "gredy"}, "policy: unknown policy 'gredy'"),
        ({"policy": {"algo": "a2c"}}, "policy.algo: unknown algorithm 'a2c'"),
        ({"policy": {"algo": "ppo", "set": {"learning_rat": 1}}}, "policy.set.learning_rat: unknown key"),
        ({"compare": ["bau", "bau"]}, "compare[1]: 'bau' is given twice"),
        ({"name": "/etc/cron.d"}, "name: '/etc/cron.d' is not a plain name"),
        ({"name": ".."}, "name: '..' is not a plain name"),
        ({"values": {"sorce": "policy"}}, "values.sorce: unknown key"),
        ({"budgets": [100, -1]}, "budgets[1]: expected a number > 0"),
        ({"budgets": [0, 100]}, "budgets[0]: expected a number > 0"),
        ({"budget": 0}, "budget: expected a number > 0"),
        ({"plan": {"horizon": 0}}, "plan.horizon: expected a whole number >= 1"),
        ({"plan": {"pacing": "fast"}}, "plan.pacing: expected horizon, even, front, got 'fast'"),
        (
            {"plan": {"horizon": 26}, "evaluation": {"horizon": 52}},
            "evaluation.horizon: 52 differs from plan.horizon 26",
        ),
        ({"budget": None}, "budget: missing"),
        ({"constraints": {"capacity": ["channel:rm_call"]}}, "constraints.capacity[0]:"),
        ({"evaluation": {"seeds": 1}}, "evaluation.seeds: expected a whole number >= 2"),
        ({"ope": {"estimators": ["wdr"]}}, "ope.estimators[0]: unknown one-step estimator 'wdr'"),
        ({"ope": {"alpha": 2}}, "ope.alpha: expected a number between 0 and 1"),
        ({"holdout_end": None}, "ope: offline evaluation judges the plan on the logged decisions of the holdout"),
        ({"ope": {"clip": 10}}, "ope.clip: caps the importance weights of dr, ips, sndr, snips; dm cannot apply it"),
        ({"experiment": {"control_share": 1.5}}, "experiment.control_share: 1.5: expected a share in [0, 1)"),
        ({"experiment": {"explore_share": 0.1}}, "experiment.control_share: missing"),
        ({"experiment": {"control_share": 0.2, "horizon": 99}}, "experiment.horizon: 99 is beyond plan.horizon 52"),
        ({"experiment": {"control_share": 0.2, "explor_share": 0.1}}, "experiment.explor_share: unknown key"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, change, message):
    from sim.errors import ConfigError

    doc = {**BASE, "holdout_end": "2024-12-29", **change}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_cli_config_error_is_one_line_exit_2(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "budget": "lots"}))
    res = clv("run", path, "--out", tmp_path / "out")
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {path}: budget: expected a number > 0, got 'lots'"
    assert not (tmp_path / "out").exists()


def test_sets_override_nested_keys_and_read_yaml_values(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "holdout_end": "2024-12-29"}))
    cfg = load_run_config(
        path,
        parse_sets(
            [
                "budget=250",
                "budgets=[100, 250]",
                "evaluation.seeds=3",
                "policy.algo=ppo",
                "policy.steps=5000",
                "ope=null",
            ]
        ),
    )
    assert cfg.budget == 250 and cfg.budgets == (100.0, 250.0) and cfg.evaluation_seeds == 3
    assert cfg.policy["train"]["algo"] == "ppo" and cfg.policy["train"]["steps"] == 5000 and cfg.ope is None
    with pytest.raises(Exception, match="expected KEY=VALUE"):
        parse_sets(["budget"])


def test_plan_actions_follow_the_book_order():
    from policies.plan import plan_actions

    class Table:
        actions = ["a", "b"]
        ids = np.array(["c2", "c0"], dtype=object)

    class Alloc:
        problem = type("P", (), {"table": Table})
        units = np.array([[0, 1], [1, 0]])

    world = type("W", (), {"catalogue": type("C", (), {"names": ["none", "a", "b"]})})
    book = pd.DataFrame({"customer_id": ["c0", "c1", "c2"]})
    codes, by_customer = plan_actions(Alloc, world, book["customer_id"].to_numpy())
    assert codes.tolist() == [1, 0, 2] and by_customer == {"c2": "b", "c0": "a"}
