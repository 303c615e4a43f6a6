"""Per-decision rewards from a history: the windows, costs and estimands OPE is scored on."""

from __future__ import annotations

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
