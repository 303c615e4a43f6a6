"""Per-decision rewards from a history: the windows, costs and estimands OPE is scored on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.ope.data import decision_outcomes, on_policy_value
from sim.errors import ConfigError
from sim.history import load_history

ACTIONS_YAML = """actions:
- name: none
  channel: null
  offer: null
  cost: 0.0
- name: email_offer
  channel: email
  offer: card
  cost: 0.5
"""


def _history(tmp_path, decisions: str, with_actions: bool = True, margin_rate: float = 0.1):
    (tmp_path / "transactions.csv").write_text(
        "customer_id,date,amount\n"
        "a,2024-01-01,100\n"  # before a's first decision: belongs to nobody
        "a,2024-01-08,10\n"  # on the day of a's first decision: counted in it
        "a,2024-01-10,20\n"
        "a,2024-01-15,40\n"  # on the day of a's second decision: counted in the second
        "a,2024-01-20,80\n"
        "b,2024-01-09,5\n"
    )
    (tmp_path / "decisions.csv").write_text(decisions)
    (tmp_path / "economics.yaml").write_text(f"period: week\nmargin_rate: {margin_rate}\n")
    if with_actions:
        (tmp_path / "actions.yaml").write_text(ACTIONS_YAML)
    return load_history(tmp_path)


DECISIONS = (
    "customer_id,date,action,propensity\na,2024-01-08,email_offer,0.5\na,2024-01-15,none,0.8\nb,2024-01-08,none,0.9\n"
)


def test_windows_run_from_a_decision_to_the_next_and_costs_come_from_the_catalogue(tmp_path):
    h = _history(tmp_path, DECISIONS)
    o = decision_outcomes(h)
    a0, a1, b0 = (o.iloc[i] for i in range(3))
    assert list(o["customer_id"]) == ["a", "a", "b"] and list(o["step"]) == [0, 1, 0]
    assert a0["margin"] == pytest.approx(0.1 * (10 + 20))  # [Jan 8, Jan 15)
    assert a0["cost"] == 0.5 and a0["reward"] == pytest.approx(3.0 - 0.5)
    assert a1["margin"] == pytest.approx(0.1 * (40 + 80))  # [Jan 15, end of history)
    assert a1["cost"] == 0.0
    assert b0["margin"] == pytest.approx(0.5)
    # the default end is the day after the last event: every window is closed
    assert (o["next_date"] > o["date"]).all()


def test_an_explicit_end_closes_the_last_windows(tmp_path):
    o = decision_outcomes(_history(tmp_path, DECISIONS), end="2024-01-18")
    assert o.iloc[1]["margin"] == pytest.approx(0.1 * 40)  # Jan 20 is after the end


def test_the_file_cost_column_wins_over_the_catalogue(tmp_path):
    dec = "customer_id,date,action,propensity,cost\na,2024-01-08,email_offer,0.5,2.0\nb,2024-01-08,none,0.9,0\n"
    o = decision_outcomes(_history(tmp_path, dec))
    assert o.iloc[0]["cost"] == 2.0 and o.iloc[0]["reward"] == pytest.approx(0.1 * 150 - 2.0)


def test_start_drops_earlier_decisions(tmp_path):
    o = decision_outcomes(_history(tmp_path, DECISIONS), start="2024-01-10")
    assert list(o["customer_id"]) == ["a"] and o.iloc[0]["step"] == 0


def test_estimands(tmp_path):
    o = decision_outcomes(_history(tmp_path, DECISIONS))
    rewards = [2.5, 12.0, 0.5]
    assert on_policy_value(o, "per_decision") == pytest.approx(sum(rewards) / 3)
    assert on_policy_value(o, "per_customer") == pytest.approx((2.5 + 12.0 + 0.5) / 2)
    assert on_policy_value(o, "per_customer", discount=0.5) == pytest.approx((2.5 + 0.5 * 12.0 + 0.5) / 2)
    with pytest.raises(ConfigError, match="estimand"):
        on_policy_value(o, "per_week")


def test_no_decisions_is_a_clear_error(tmp_path):
    (tmp_path / "transactions.csv").write_text("customer_id,date,amount\na,2024-01-01,1\n")
    with pytest.raises(ConfigError, match="no decisions table"):
        decision_outcomes(load_history(tmp_path))
    with pytest.raises(ConfigError, match="no decisions between"):
        decision_outcomes(_history(tmp_path, DECISIONS), start="2030-01-01")


# ---- the contract reward: product margins held at each period end ---------------------------------

# the grid starts at the first transaction, 2024-01-01 (a Monday): period ends are the Mondays after
PRODUCTS = (
    "customer_id,date,product,event\n"
    "a,2024-01-03,card,open\n"  # held at the ends Jan 8, 15, 22 (the end of the history)
    "a,2024-01-09,loan,open\n"  # held at Jan 15 only: closed on Jan 16
    "a,2024-01-16,loan,close\n"
    "b,2024-01-15,card,close\n"  # first event a close: held since before the history, at Jan 8 and 15
)


def _with_products(tmp_path, decisions=DECISIONS, products=PRODUCTS, margins="{card: 2.0, loan: 5.0}"):
    _history(tmp_path, decisions)
    (tmp_path / "products.csv").write_text(products)
    (tmp_path / "economics.yaml").write_text(f"period: week\nmargin_rate: 0.1\nproduct_margin_per_period: {margins}\n")
    return load_history(tmp_path)


def test_product_margins_count_at_every_period_end_of_the_window(tmp_path):
    o = decision_outcomes(_with_products(tmp_path))
    a0, a1, b0 = (o.iloc[i] for i in range(3))
    # a's first window [Jan 8, Jan 15): the end Jan 15 holds card and loan
    assert a0["product_margin"] == pytest.approx(2.0 + 5.0)
    # a's second window [Jan 15, end): the end of the history is the end of its last week, Jan 22
    assert a1["product_margin"] == pytest.approx(2.0)
    assert a1["next_date"] == pd.Timestamp("2024-01-22")
    # b's card was held since before the history and closed on Jan 15: held at the end Jan 15 (the
    # close is dated on that day, after the end), not at Jan 22
    assert b0["product_margin"] == pytest.approx(2.0)
    assert (o["reward"] == o["margin"] + o["product_margin"] - o["cost"]).all()


def test_products_without_a_margin_add_nothing(tmp_path):
    o = decision_outcomes(_with_products(tmp_path, margins="{}"))
    assert (o["product_margin"] == 0).all()


def test_window_sums_the_periods_after_each_decision(tmp_path):
    h = _with_products(tmp_path)
    o = decision_outcomes(h, window=1)
    # one week from each decision: a's first [Jan 8, Jan 15), its second [Jan 15, Jan 22)
    assert list(o["next_date"]) == [pd.Timestamp(d) for d in ("2024-01-15", "2024-01-22", "2024-01-15")]
    o2 = decision_outcomes(h, window=2)  # a's first window now overlaps its second decision
    assert o2.iloc[0]["margin"] == pytest.approx(0.1 * (10 + 20 + 40 + 80))
    assert o2.iloc[0]["product_margin"] == pytest.approx(7.0 + 2.0)
    assert o2.iloc[1]["next_date"] == pd.Timestamp("2024-01-22")  # capped at the end of the history


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_window_must_be_a_whole_number_of_periods(tmp_path, bad):
    with pytest.raises(ConfigError, match="window"):
        decision_outcomes(_history(tmp_path, DECISIONS), window=bad)


def test_rebuilt_rewards_equal_the_generators_own(tmp_path):
    """DESIGN.md's contract, checked end to end: the reward of every logged decision rebuilt from
    the files (transactions, products.csv events, economics.yaml, the catalogue's costs) equals the
    reward the generating world recorded (truth_decisions.parquet) to 1e-9."""
    from sim.synthetic import BankConfig, write_bank_history

    write_bank_history(tmp_path / "h", BankConfig(customers=600, weeks=60, seed=3))
    o = decision_outcomes(load_history(tmp_path / "h"))
    truth = pd.read_parquet(tmp_path / "h" / "truth_decisions.parquet")
    assert list(o["customer_id"]) == list(truth["customer_id"]) and (o["date"].values == truth["date"].values).all()
    assert (truth["product_margin"] > 0).mean() > 0.5  # product margins are a large part of it
    for col in ("margin", "product_margin", "cost", "reward"):
        assert np.abs(o[col].to_numpy() - truth[col].to_numpy()).max() < 1e-9, col
