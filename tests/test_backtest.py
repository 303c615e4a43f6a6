"""`clv backtest`: calibrate before a split date, evaluate candidates after it by OPE and by
simulation, compare with the logged policy's actual value, and rank (small synthetic history)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv, ok_json

from experiments.backtest import BacktestSettings, decision_cadence, kendall_tau, run_backtest
from experiments.ope import OPESettings
from experiments.ope.data import decision_outcomes, on_policy_value
from sim.history import load_history
from sim.synthetic import BankConfig, write_bank_history

SPLIT = "2023-04-03"  # the history runs 2022-01-03 .. 2023-07-16 (80 weeks)
POLICIES = ["none", "bau", "greedy_uplift"]
FAST = ["--bootstrap", "50", "--seeds", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("backtest") / "bank"
    write_bank_history(out, BankConfig(customers=400, weeks=80, seed=3))
    return out


@pytest.fixture(scope="module")
def doc(bank, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bt_out") / "backtest.json"
    d = ok_json(
        clv("backtest", bank, "--split-date", SPLIT, "--policies", ",".join(POLICIES), *FAST, "--out", out, "--json")
    )
    d["_out"] = out
    return d


def test_backtest_document(doc, bank):
    for key in ("split_date", "calibration", "logged", "policies", "ranking", "warnings", "seconds"):
        assert key in doc
    assert doc["split_date"] == SPLIT
    assert doc["calibration"]["calibration_end"] == "2023-04-02"
    assert doc["calibration"]["customers"] > 0 and len(doc["calibration"]["world_hash"]) == 16
    # the logged policy's value is its on-policy value on the decisions from the split on
    outcomes = decision_outcomes(load_history(bank), start=SPLIT)
    assert doc["logged"]["per_decision"] == pytest.approx(on_policy_value(outcomes, "per_decision"), rel=1e-12)
    assert doc["logged"]["decisions"] == len(outcomes)
    assert doc["logged"]["customers"] == outcomes["customer_id"].nunique()
    assert pd.Timestamp(outcomes["date"].min()) >= pd.Timestamp(SPLIT)
    assert set(doc["policies"]) == set(POLICIES)
    # the --out file is the same document
    saved = json.loads(Path(doc["_out"]).read_text())
    assert saved["policies"]["bau"]["ope"] == doc["policies"]["bau"]["ope"]


def test_backtest_per_policy(doc):
    logged = doc["logged"]["per_decision"]
    periods = doc["simulation_settings"]["periods"]
    cadence = doc["simulation_settings"]["cadence"]
    assert periods >= 4 and cadence == 4  # the synthetic bank decides every 4 weeks
    for name, p in doc["policies"].items():
        assert set(p["ope"]) == {"dm", "ips", "snips", "dr"}
        for e in p["ope"].values():
            assert e["ci_low"] <= e["value"] <= e["ci_high"] and e["ess"] > 0
        d = p["ope_vs_logged"]
        assert d["estimator"] == "dr"
        assert d["value"] == pytest.approx(p["ope"]["dr"]["value"] - logged)
        assert d["ci_low"] == pytest.approx(p["ope"]["dr"]["ci_low"] - logged)
        assert d["ci_high"] == pytest.approx(p["ope"]["dr"]["ci_high"] - logged)
        s = p["simulation"]
        for m in ("clv", "per_decision_reward"):
            assert s[m]["ci_low"] <= s[m]["mean"] <= s[m]["ci_high"]
            assert np.isfinite(s[m]["mean"])
        # acting only at decision points: at most one contact per decision window
        assert s["contacts"]["mean"] <= -(-periods // cadence)
    assert doc["policies"]["none"]["simulation"]["contacts"]["mean"] == 0


def test_backtest_ranking(doc):
    r = doc["ranking"]
    assert sorted(r["ope"]) == sorted(POLICIES) and sorted(r["simulation"]) == sorted(POLICIES)
    assert -1.0 <= r["kendall_tau"] <= 1.0
    assert r["same_best"] == (r["ope"][0] == r["simulation"][0])
    ope_values = [doc["policies"][n]["ope"]["dr"]["value"] for n in r["ope"]]
    sim_values = [doc["policies"][n]["simulation"]["per_decision_reward"]["mean"] for n in r["simulation"]]
    assert ope_values == sorted(ope_values, reverse=True)
    assert sim_values == sorted(sim_values, reverse=True)
    assert r["kendall_tau"] == pytest.approx(kendall_tau(r["ope"], r["simulation"]))


def test_kendall_tau_and_cadence(bank):
    assert kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert kendall_tau(["a", "b", "c"], ["c", "b", "a"]) == -1.0
    assert kendall_tau(["a", "b", "c"], ["b", "a", "c"]) == pytest.approx(1 / 3)
    assert kendall_tau(["a"], ["a"]) is None
    assert decision_cadence(decision_outcomes(load_history(bank), start=SPLIT), 7.0) == 4


def test_backtest_given_world_matches_api(bank, tmp_path):
    """--world skips calibration; the CLI and run_backtest give the same numbers on that world."""
    from sim.atomic import atomic_path
    from sim.calibrate import calibrate

    history = load_history(bank)
    world, book, _ = calibrate(history, "2023-04-02")
    world.book_file = "world.book.parquet"
    with atomic_path(tmp_path / world.book_file) as tmp:
        book.to_parquet(tmp, index=False)
    world.save(tmp_path / "world.json")
    d = ok_json(
        clv(
            "backtest",
            bank,
            "--split-date",
            SPLIT,
            "--policies",
            "none,bau",
            "--world",
            tmp_path / "world.json",
            "--estimators",
            "ips,dm",
            *FAST,
            "--json",
        )
    )
    assert d["calibration"]["source"] == str(tmp_path / "world.json")
    assert d["estimand"]["main_estimator"] == "ips"
    assert not d["warnings"] or all("calibrated up to" not in w for w in d["warnings"])
    from sim.world import WorldModel

    w2 = WorldModel.load(tmp_path / "world.json")
    assert d["calibration"]["world_hash"] == w2.hash()
    api = run_backtest(
        history,
        SPLIT,
        ["none", "bau"],
        BacktestSettings(OPESettings(estimators=("ips", "dm"), n_boot=50), seeds=2, workers=0),
        world=w2,
        book=pd.read_parquet(tmp_path / world.book_file),
    )
    for n in ("none", "bau"):
        assert d["policies"][n]["ope"]["ips"]["value"] == pytest.approx(api["policies"][n]["ope"]["ips"]["value"])
        assert d["policies"][n]["simulation"]["clv"]["mean"] == pytest.approx(
            api["policies"][n]["simulation"]["clv"]["mean"]
        )


def test_backtest_human_output(bank):
    r = clv("backtest", bank, "--split-date", SPLIT, "--policies", "none,bau", "--estimators", "ips", *FAST)
    assert r.exit_code == 0, r.stderr
    assert "Kendall tau" in r.stdout and "logged policy's actual value per decision" in r.stdout


@pytest.fixture(scope="module")
def no_late_decisions(bank, tmp_path_factory) -> Path:
    """The same history with every decision from the split on removed."""
    out = tmp_path_factory.mktemp("early") / "bank"
    shutil.copytree(bank, out)
    dec = pd.read_csv(out / "decisions.csv")
    dec[dec["date"] < SPLIT].to_csv(out / "decisions.csv", index=False)
    return out


@pytest.fixture(scope="module")
def no_decisions(bank, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nodec") / "bank"
    shutil.copytree(bank, out)
    (out / "decisions.csv").unlink()
    return out


@pytest.mark.parametrize(
    "source, args, message",
    [
        ("bank", ["--split-date", "2019-01-01", "--policies", "none,bau"], "outside the history"),
        ("bank", ["--split-date", "2030-01-01", "--policies", "none,bau"], "outside the history"),
        ("bank", ["--split-date", "soon", "--policies", "none,bau"], "is not a date"),
        ("bank", ["--split-date", SPLIT, "--policies", "none,nosuch"], "'nosuch' is not a baseline"),
        ("bank", ["--split-date", SPLIT, "--policies", "bau,none,bau"], "bau given twice"),
        ("bank", ["--split-date", SPLIT, "--policies", "bau"], "at least two policies"),
        ("bank", ["--split-date", SPLIT, "--policies", "none,bau", "--estimators", "dm,pdis"], "pdis"),
        ("bank", ["--split-date", SPLIT, "--policies", "none,bau", "--world", "missing.json"], "world file not found"),
        ("no_late_decisions", ["--split-date", SPLIT, "--policies", "none,bau"], "no decisions between"),
        ("no_decisions", ["--split-date", SPLIT, "--policies", "none,bau"], "no decisions table"),
    ],
)
def test_backtest_bad_input(request, source, args, message, tmp_path):
    folder = request.getfixturevalue(source)
    args = [str(tmp_path / a) if a == "missing.json" else a for a in args]
    r = clv("backtest", folder, *args, *FAST, "--json")
    assert r.exit_code == 2, (r.exit_code, r.stderr, r.exception)
    assert r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_backtest_help_has_example():
    r = clv("backtest", "--help")
    assert r.exit_code == 0
    assert "Example: clv backtest" in r.stdout
