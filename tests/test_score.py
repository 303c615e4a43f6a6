"""`clv score`: one row per book customer, each column checked against what it claims (bounds,
orderings, definitions), the same numbers in-process and on Ray, the user's id type, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv, ok_json

from experiments.ray_session import RayExecutor
from experiments.score import ScoreSettings, score_customers
from policies.registry import resolve_policy
from sim.synthetic import BankConfig, write_bank_history

SMALL = ScoreSettings(horizon=8, draws=4, value_customers=200, value_horizon=4, seed=1)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """A make-data history with integer customer ids, calibrated by the CLI: (folder, world path)."""
    root = tmp_path_factory.mktemp("score")
    folder = root / "bank"
    write_bank_history(folder, BankConfig(customers=500, weeks=60, seed=4))
    for name in ("transactions", "customers", "products", "decisions"):
        f = folder / f"{name}.csv"
        d = pd.read_csv(f, dtype={"customer_id": str})
        d["customer_id"] = d["customer_id"].str[1:].astype(int) + 1000  # 1000, 1001, ...
        d.to_csv(f, index=False)
    world = root / "world.json"
    ok_json(clv("calibrate", folder, "--calibration-end", "2023-01-31", "--out", world, "--json"))
    return folder, world


@pytest.fixture(scope="module")
def scored(bank):
    from sim.world import WorldModel

    _, path = bank
    world = WorldModel.load(path)
    book = world.read_book(path)
    scores, summary = score_customers(world, book, SMALL)
    return world, book, scores, summary


def test_one_row_per_customer_with_columns_that_hold(scored):
    world, book, s, summary = scored
    assert len(s) == len(book) and (s["customer_id"].to_numpy() == book["customer_id"].to_numpy()).all()
    # churn: left by h periods grows with h, from at least the share already gone
    c13, c26, c52 = (s[f"churn_prob_{h}"].to_numpy() for h in (13, 26, 52))
    assert ((0 <= c13) & (c13 <= c26 + 1e-12) & (c26 <= c52 + 1e-12) & (c52 <= 1)).all()
    assert np.corrcoef(c13, 1 - s["p_alive"])[0, 1] > 0.9
    assert (s["clv_p10"] <= s["expected_clv_h"] + 1e-9).all() and (s["expected_clv_h"] <= s["clv_p90"] + 1e-9).all()
    assert (s["expected_transactions_h"] >= 0).all()
    assert s["stage"].isin(["new", "growth", "maturity", "dormancy", "churned"]).all()
    assert ((s["stage_next_prob"] > 0) & (s["stage_next_prob"] <= 1)).all()
    # RFM quintiles: equal shares, 5 = the most recent / frequent / valuable
    for k in ("r_score", "f_score", "m_score"):
        assert sorted(s[k].value_counts()) == sorted(np.bincount(np.arange(len(s)) * 5 // len(s)))
    assert s.loc[s["recency"].idxmin(), "r_score"] == 5 and s.loc[s["monetary"].idxmax(), "m_score"] == 5
    top = s["expected_clv_h"] >= s["expected_clv_h"].quantile(0.96)
    assert (s.loc[top, "value_tier"] == "top").all()
    prods = [c for c in s.columns if c.startswith("prod_")]
    assert (s["cross_holding"] == s[prods].sum(axis=1)).all()
    assert (s["products"].str.count(",") + (s["products"] != "")).eq(s["cross_holding"]).all()
    held_next = [bool(r["next_product"]) and r[f"prod_{r['next_product']}"] for _, r in s.iterrows()]
    assert not any(held_next)  # the next product is one not held
    assert summary["customers"] == len(s) and {r["stage"] for r in summary["by_stage"]} <= set(s["stage"])


def test_the_next_best_action_of_none_is_a_positive_allowed_contact_or_none(scored):
    world, book, s, _ = scored
    contact = s["next_best_action"] != "none"
    assert (s.loc[contact, "nba_value"] > 0).all() and (s.loc[~contact, "nba_value"] == 0).all()
    costs = dict(zip(world.catalogue.names, world.catalogue.costs))
    assert (s["nba_cost"] == s["next_best_action"].map(costs)).all()
    channel = {a.name: a.channel for a in world.catalogue.actions}
    assert all(
        channel[a] in e.split(", ")
        for a, e in zip(s.loc[contact, "next_best_action"], s.loc[contact, "eligible_channels"])
    )
    assert (s["runner_up"] != s["next_best_action"]).all()
    assert s["reason"].str.len().gt(10).all()


def test_same_numbers_in_process_and_on_ray(bank, scored):
    world, book, s, _ = scored
    again, _ = score_customers(world, book, SMALL, executor=RayExecutor(2))
    pd.testing.assert_frame_equal(s, again)


def test_a_policy_gives_its_own_choice(scored):
    world, book, _, _ = scored
    s, _ = score_customers(world, book, SMALL, policy=resolve_policy("greedy_uplift", world))
    assert (s["next_best_action"] != "none").any() and s["runner_up"].ne(s["next_best_action"]).all()


def test_cli_writes_parquet_and_csv_with_integer_ids(bank, tmp_path):
    _, world = bank
    out = tmp_path / "scores.parquet"
    doc = ok_json(
        clv("score", world, "--out", out, "--csv", "--horizon", "6", "--draws", "3", "--workers", "0", "--json")
    )
    s = pd.read_parquet(out)
    assert pd.api.types.is_integer_dtype(s["customer_id"]) and s["customer_id"].min() >= 1000
    assert len(pd.read_csv(out.with_suffix(".csv"))) == len(s) == doc["customers"]
    assert doc["columns"] == list(s.columns) and "next_best_action" in doc["columns"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--as-of", "2024-01-01"], "--as-of 2024-01-01: the book of"),
        (["--as-of", "someday"], "--as-of: 'someday' is not a date"),
        (["--draws", "1"], "--draws 1: must be a whole number >= 2"),
        (["--horizon", "0"], "--horizon 0: must be a whole number >= 1"),
        (["--policy", "gredy"], "--policy"),
    ],
)
def test_cli_bad_input(bank, tmp_path, args, message):
    _, world = bank
    out = tmp_path / "s.parquet"
    r = clv("score", world, "--out", out, "--workers", "0", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert message in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()


def test_cli_refuses_a_non_parquet_out_and_a_missing_world(bank, tmp_path):
    _, world = bank
    r = clv("score", world, "--out", tmp_path / "s.csv", "--workers", "0")
    assert r.exit_code == 2 and "must be a .parquet file" in r.stderr
    r = clv("score", tmp_path / "nope.json", "--out", tmp_path / "s.parquet", "--workers", "0")
    assert r.exit_code == 2 and "nope.json" in r.stderr


def test_cli_checks_a_tags_file_before_any_work(bank, tmp_path):
    _, world = bank
    bad = tmp_path / "tags.yaml"
    bad.write_text("tags:\n  - name: x\n    when: churn_prob_25 > 0.5\n")
    out = tmp_path / "s.parquet"
    r = clv("score", world, "--out", out, "--tags", bad, "--workers", "0")
    assert r.exit_code == 2 and "tags[0].when (tag 'x'): unknown column 'churn_prob_25'" in r.stderr
    assert r.stderr.count("\n") == 1 and not out.exists()
    good = tmp_path / "mine.yaml"
    good.write_text('tags:\n  - name: at risk\n    when: churn_prob_26 > 0.3 and stage != "churned"\n')
    doc = ok_json(
        clv("score", world, "--out", out, "--tags", good, "--horizon", "4", "--draws", "2", "--workers", "0", "--json")
    )
    s = pd.read_parquet(out)
    want = (s["churn_prob_26"] > 0.3) & (s["stage"] != "churned")
    assert (s["tag_at_risk"] == want).all() and doc["tags"]["applied"] == ["at risk"]


def test_as_of_another_day_recalibrates_on_the_history(bank, tmp_path):
    folder, world = bank
    out = tmp_path / "later.parquet"
    args = ("--horizon", "4", "--draws", "2", "--workers", "0", "--json")
    doc = ok_json(clv("score", world, "--out", out, "--as-of", "2023-02-20", "--history", folder, *args))
    assert doc["as_of"] == "2023-02-20" and "recalibrated on" in doc["world"]
    before = ok_json(clv("score", world, "--out", tmp_path / "now.parquet", *args))
    assert before["as_of"] == "2023-01-31" and doc["customers"] >= before["customers"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--as-of", "2023-02-20"], "give --history HISTORY to recalibrate"),
        (["--as-of", "2031-01-01", "--history", "HIST"], "--as-of 2031-01-01: is outside the history"),
        (["--history", "HIST"], "--history is for recalibrating to --as-of"),
    ],
)
def test_as_of_bad_input(bank, tmp_path, extra, message):
    folder, world = bank
    out = tmp_path / "s.parquet"
    r = clv("score", world, "--out", out, "--workers", "0", *[str(folder) if a == "HIST" else a for a in extra])
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()
