"""Candidates made elsewhere (`clv ope --target-probs`): a file of the whole action distribution at
every logged decision is read, validated against the decisions, and evaluates exactly as the
policy that wrote it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv, ok_json

from experiments.ope import OPESettings, evaluate_offline, logged_decisions
from policies.baselines import make_baseline
from sim.errors import ConfigError
from sim.history import load_history
from sim.synthetic import BankConfig, write_bank_history
from sim.world import WorldModel

CFG = BankConfig(customers=400, weeks=60, seed=11)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """(folder, history, world, the long file greedy_uplift's probabilities make)."""
    root = tmp_path_factory.mktemp("targets")
    folder = root / "bank"
    write_bank_history(folder, CFG)
    hist = load_history(folder)
    world = WorldModel.load(folder / "truth.json")
    logged = logged_decisions(hist, world=world)
    probs = make_baseline("greedy_uplift", world).action_probs(logged.states.obs, logged.states.masks)
    o = logged.outcomes
    i, a = np.nonzero(probs > 0)
    long = pd.DataFrame(
        {
            "customer_id": o["customer_id"].to_numpy()[i],
            "date": o["date"].dt.strftime("%Y-%m-%d").to_numpy()[i],
            "action": np.array(world.catalogue.names)[a],
            "probability": probs[i, a],
        }
    )
    long.to_csv(root / "greedy.csv", index=False)
    long.to_parquet(root / "greedy.parquet", index=False)
    return folder, hist, world, root


@pytest.mark.parametrize(
    "estimand, estimators",
    [("per_decision", ("dm", "ips", "snips", "dr", "sndr")), ("per_customer", ("pdis", "wpdis", "dr_seq", "fqe"))],
)
def test_a_file_of_a_policys_probabilities_evaluates_as_the_policy(bank, estimand, estimators):
    folder, hist, world, root = bank
    settings = OPESettings(estimand=estimand, estimators=estimators, n_boot=60, seed=3)
    by_policy = evaluate_offline(hist, settings, policy=make_baseline("greedy_uplift", world), world=world)
    for name in ("greedy.csv", "greedy.parquet"):
        by_file = evaluate_offline(hist, settings, target_probs=root / name, world=world)
        assert by_file["policy"] == f"file {name}"
        for k in estimators:  # values and intervals, exactly
            for f in ("value", "ci_low", "ci_high", "ess"):
                assert by_file["estimates"][k][f] == by_policy["estimates"][k][f], (name, k, f)


def test_without_a_world_only_importance_sampling_runs(bank):
    folder, hist, world, root = bank
    res = evaluate_offline(hist, OPESettings(estimators=("ips", "snips"), n_boot=20), target_probs=root / "greedy.csv")
    ref = evaluate_offline(
        hist,
        OPESettings(estimators=("ips", "snips"), n_boot=20),
        policy=make_baseline("greedy_uplift", world),
        world=world,
    )
    assert res["estimates"]["ips"]["value"] == pytest.approx(ref["estimates"]["ips"]["value"], rel=1e-12)
    with pytest.raises(ConfigError, match="give the world"):
        evaluate_offline(hist, OPESettings(estimators=("dr",), n_boot=20), target_probs=root / "greedy.csv")


def test_cli_reproduces_the_policy(bank):
    folder, hist, world, root = bank
    common = ["--world", folder / "truth.json", "--estimators", "dm,ips,dr", "--bootstrap", "40", "--workers", "0"]
    a = ok_json(clv("ope", folder, "--policy", "greedy_uplift", *common, "--json"))
    b = ok_json(clv("ope", folder, "--target-probs", root / "greedy.csv", *common, "--json"))
    assert json.dumps(a["estimates"], sort_keys=True) == json.dumps(b["estimates"], sort_keys=True)


def _bad(root, name: str, edit) -> str:
    d = pd.read_csv(root / "greedy.csv", dtype=str)
    d = edit(d)
    (root / name).write_text(d.to_csv(index=False))
    return name


# (file edit, message): row numbers are spreadsheet rows (header = row 1)
BAD = [
    (lambda d: d.assign(probability=d["probability"].where(d.index != 4, "1.5")), "row 6, column 'probability'"),
    (lambda d: d.assign(action=d["action"].where(d.index != 2, "fax_offer")), "row 4, column 'action': unknown action"),
    (lambda d: pd.concat([d, d.iloc[[3]]]), "given twice (also row 5)"),
    (lambda d: d.assign(customer_id=d["customer_id"].where(d.index != 0, "Z999")), "row 2, column 'customer_id'"),
    (lambda d: d.assign(date=d["date"].where(d.index != 0, "1999-01-04")), "row 2, column 'date': customer"),
    (lambda d: d.assign(date=d["date"].where(d.index != 0, "2024-13-45")), "row 2, column 'date'"),
    (lambda d: d.iloc[1:], "no rows for customer"),
    (lambda d: d.drop(columns="probability"), "missing required column 'probability'"),
]


@pytest.mark.parametrize("k", range(len(BAD)))
def test_bad_files_are_one_line_naming_file_row_and_column(bank, k):
    folder, hist, world, root = bank
    edit, message = BAD[k]
    name = _bad(root, f"bad{k}.csv", edit)
    r = clv("ope", folder, "--target-probs", root / name, "--estimators", "ips", "--workers", "0", "--bootstrap", "20")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert name in r.stderr and message in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1


def test_probabilities_must_sum_to_one(bank):
    folder, hist, world, root = bank
    d = pd.read_csv(root / "greedy.csv")
    first = (d["customer_id"] == d["customer_id"].iloc[0]) & (d["date"] == d["date"].iloc[0])
    d.loc[first, "probability"] *= 0.5
    d.to_csv(root / "half.csv", index=False)
    r = clv("ope", folder, "--target-probs", root / "half.csv", "--estimators", "ips", "--workers", "0")
    assert r.exit_code == 2 and "half.csv, row 2, column 'probability'" in r.stderr and "sum to 0.5" in r.stderr


def test_a_missing_file_fails_before_any_work(bank):
    folder, *_ = bank
    r = clv("ope", folder, "--target-probs", "nope.csv", "--workers", "0")
    assert r.exit_code == 2 and "--target-probs" in r.stderr and "no such file" in r.stderr
