"""The read-out of a deployed plan (experiments.readout, `clv readout`) on a small history whose
outcomes are known by construction: treated customers earn exactly +X more in the window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from experiments.readout import cuped, read_out, verdict, welch
from sim.history import load_history
from tests.cli_runner import clv, ok_json

N = 40
X = 10.0
D, START, END = "2024-03-04", "2024-03-04", "2024-04-01"
COST = {"sms_offer": 1.5, "email_offer": 0.25}


def _actions() -> dict:
    stages = ["new", "growth", "maturity", "dormancy", "churned"]
    rows = [{"name": "none", "channel": None, "offer": None, "cost": 0.0, "eligible_stages": list(stages)}]
    for name, ch in (("sms_offer", "sms"), ("email_offer", "email")):
        rows.append(
            {"name": name, "channel": ch, "offer": "bonus", "cost": COST[name], "eligible_stages": list(stages)}
        )
    return {"actions": rows}


def make_case(folder: Path, ids=None, seed: int = 3, noise_sd: float = 1.0) -> dict:
    """Write the history and the deployment; return the hand values."""
    rng = np.random.default_rng(seed)
    ids = [f"K{i:03d}" for i in range(N)] if ids is None else [str(i) for i in ids]
    pre = rng.gamma(2.0, 10.0, N).round(2)
    post = (2.0 * pre + rng.normal(0.0, noise_sd, N) + 50.0).round(2)
    group = np.array(["treatment"] * 28 + ["control"] * 10 + ["explore"] * 2)[rng.permutation(N)]
    action = np.where(np.arange(N) % 2 == 0, "sms_offer", "email_offer")
    action = np.where(group == "control", "none", action)
    card = np.arange(N) % 3 == 0
    treated = group == "treatment"
    tx = []
    for i, c in enumerate(ids):
        tx += [(c, "2024-01-08", 5.0), (c, "2024-02-12", pre[i]), (c, "2024-03-04", 1.0), (c, "2024-03-11", post[i])]
        tx += [(c, "2024-04-01", 777.0), (c, "2024-04-08", 999.0)]  # on and after the window's end: not counted
        if group[i] != "control":
            tx.append((c, "2024-03-18", X))  # the treatment effect, exactly +X (explore too)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(tx, columns=["customer_id", "date", "amount"]).to_csv(folder / "transactions.csv", index=False)
    seg = np.where(np.arange(N) < N // 2, "young", "family")
    pd.DataFrame({"customer_id": ids, "signup_date": "2024-01-01", "segment": seg}).to_csv(
        folder / "customers.csv", index=False
    )
    pr = [(c, "2024-01-15", "credit_card", "open") for i, c in enumerate(ids) if card[i]]
    pr.append((ids[0], "2024-03-20", "credit_card", "close"))  # held at 03-11 and 03-18 only
    pd.DataFrame(pr, columns=["customer_id", "date", "product", "event"]).to_csv(folder / "products.csv", index=False)
    (folder / "actions.yaml").write_text(yaml.safe_dump(_actions(), sort_keys=False))
    (folder / "economics.yaml").write_text(
        yaml.safe_dump({"period": "week", "margin_rate": 1.0, "product_margin_per_period": {"credit_card": 2.0}})
    )
    prop = np.where(group == "treatment", 0.75, np.where(group == "control", 0.25, 0.5))
    dep = pd.DataFrame({"customer_id": ids, "date": D, "action": action, "propensity": prop, "group": group})
    dep.to_csv(folder / "deployment.csv", index=False)
    card_post = np.where(card, 8.0, 0.0)
    card_post[0] = 4.0 if card[0] else 0.0
    cost = np.where(group == "control", 0.0, np.array([COST.get(a, 0.0) for a in action]))
    y = 1.0 + post + np.where(group != "control", X, 0.0) + card_post - cost
    x = pre + np.where(card, 8.0, 0.0)
    return {"y": y, "x": x, "group": group, "action": action, "treated": treated, "cost": cost, "seg": seg}


@pytest.fixture
def case(tmp_path):
    h = make_case(tmp_path / "h")
    return tmp_path / "h", h


def test_difference_in_means_is_the_hand_value(case):
    folder, h = case
    doc, table = read_out(load_history(folder), folder / "deployment.csv", START, END)
    np.testing.assert_allclose(table["outcome"].to_numpy(), h["y"], atol=1e-9)
    np.testing.assert_allclose(table["pre"].to_numpy(), h["x"], atol=1e-9)
    # intent-to-treat: everyone not held out (treatment and explore) against the control group
    yt, yc = h["y"][h["group"] != "control"], h["y"][h["group"] == "control"]
    dm = doc["lift"]["difference_in_means"]
    assert dm["mean"] == pytest.approx(yt.mean() - yc.mean(), abs=1e-9)
    r = stats.ttest_ind(yt, yc, equal_var=False)
    assert dm["mean"] / dm["se"] == pytest.approx(r.statistic, rel=1e-9)
    ci = r.confidence_interval(0.95)
    assert (dm["ci_low"], dm["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert doc["customers"] == {"in_file": N, "treatment": 28, "control": 10, "explore": 2}
    assert dm["n_treatment"] + dm["n_control"] == N


def test_cuped_is_the_hand_regression_and_narrower(case):
    folder, h = case
    doc, _ = read_out(load_history(folder), folder / "deployment.csv", START, END)
    y, x, t = h["y"], h["x"], h["group"] != "control"  # intent-to-treat: every customer in scope
    theta = np.cov(y, x, ddof=1)[0, 1] / np.var(x, ddof=1)
    adj = y - theta * (x - x.mean())
    cu = doc["lift"]["cuped"]
    assert cu["theta"] == pytest.approx(theta, rel=1e-9)
    assert cu["mean"] == pytest.approx(adj[t].mean() - adj[~t].mean(), rel=1e-9)
    # post = 2 pre + N(0, 1): the adjusted contrast is close to the true +X - cost and far narrower
    dm = doc["lift"]["difference_in_means"]
    assert cu["ci_high"] - cu["ci_low"] < 0.2 * (dm["ci_high"] - dm["ci_low"])
    true = X - h["cost"][h["group"] != "control"].mean()
    assert cu["ci_low"] <= true <= cu["ci_high"]
    assert doc["verdict"]["verdict"] == "confirmed"


def test_cuped_equals_plain_when_pre_is_constant():
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    t = np.arange(50) < 25
    a, b = cuped(y, np.ones(50), t), welch(y[t], y[~t])
    assert a["theta"] == 0.0 and a["mean"] == pytest.approx(b["mean"]) and a["se"] == pytest.approx(b["se"])


def test_by_segment_by_action_and_roi(case):
    folder, h = case
    doc, _ = read_out(load_history(folder), folder / "deployment.csv", START, END)
    assert doc["segment_source"] == "customers.csv"
    assert {r["segment"] for r in doc["by_segment"]} == {"young", "family"}
    ctrl = h["group"] == "control"
    for r in doc["by_segment"]:
        m = h["seg"] == r["segment"]
        want = h["y"][m & h["treated"]].mean() - h["y"][m & ctrl].mean()
        assert r["difference_in_means"]["mean"] == pytest.approx(want, abs=1e-9)
    acts = {r["action"]: r for r in doc["by_action"]}
    assert set(acts) == {"sms_offer", "email_offer"}
    for a, r in acts.items():
        m = h["treated"] & (h["action"] == a)
        assert r["control_kind"] == "all control customers"
        assert r["difference_in_means"]["mean"] == pytest.approx(h["y"][m].mean() - h["y"][ctrl].mean(), abs=1e-9)
        assert r["roi"]["incremental_cost"] == pytest.approx(COST[a])
    roi = doc["roi"]
    assert roi["incremental_cost"] == pytest.approx(h["cost"][h["group"] != "control"].mean())
    assert roi["roi"] == pytest.approx(roi["incremental_margin"] / roi["incremental_cost"])


@pytest.mark.parametrize(
    "low,high,pred,want",
    [
        (1.0, 3.0, 2.0, "confirmed"),
        (1.0, 3.0, 5.0, "contradicted"),  # a gain, but below the prediction
        (1.0, 3.0, 0.5, "contradicted"),  # above it
        (-1.0, 3.0, 2.0, "not detected"),
        (-1.0, 3.0, None, "not detected"),
        (-3.0, -1.0, 2.0, "contradicted"),  # a loss where a gain was predicted
        (-3.0, -1.0, -2.0, "confirmed"),  # a predicted loss, measured
        (1.0, 3.0, None, "confirmed"),
        (-3.0, -1.0, None, "contradicted"),
        (None, None, 2.0, "not detected"),
    ],
)
def test_verdict_rules(low, high, pred, want):
    assert verdict(low, high, pred)["verdict"] == want


def test_plan_prediction_and_cli_json(case, tmp_path):
    folder, h = case
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"predicted_lift": {"mean": 7.0, "ci_low": 6.0, "ci_high": 8.0}, "customers": 76}))
    out = tmp_path / "readout.json"
    outcomes = tmp_path / "outcomes.parquet"
    doc = ok_json(
        clv(
            "readout",
            folder,
            "--deployment",
            folder / "deployment.csv",
            "--start",
            START,
            "--end",
            END,
            "--plan",
            plan,
            "--out",
            out,
            "--outcomes",
            outcomes,
            "--json",
        )  # fmt: skip
    )
    for key in ("lift", "roi", "by_segment", "by_action", "verdict", "predicted", "window", "pre_window", "explore"):
        assert key in doc
    assert doc["predicted"]["per_customer_in_scope"] == pytest.approx(7.0 * 76 / 40)
    assert doc["pre_window"] == {
        "start": "2024-02-05",
        "end": "2024-03-04",
        "rule": doc["pre_window"]["rule"],
    }
    assert json.loads(out.read_text())["lift"] == doc["lift"]
    assert len(pd.read_parquet(outcomes)) == N
    human = clv("readout", folder, "--deployment", folder / "deployment.csv", "--start", START, "--end", END)
    assert human.exit_code == 0 and "verdict:" in human.stdout


def test_integer_ids(tmp_path):
    h = make_case(tmp_path / "h", ids=list(range(100, 100 + N)))
    folder = tmp_path / "h"
    dep = pd.read_csv(folder / "deployment.csv")
    assert dep["customer_id"].dtype.kind == "i"
    dep.to_parquet(tmp_path / "deployment.parquet", index=False)  # an integer column
    outcomes = tmp_path / "o.parquet"
    doc = ok_json(
        clv(
            "readout",
            folder,
            "--deployment",
            tmp_path / "deployment.parquet",
            "--start",
            START,
            "--end",
            END,
            "--outcomes",
            outcomes,
            "--json",
        )  # fmt: skip
    )
    yt, yc = h["y"][h["group"] != "control"], h["y"][h["group"] == "control"]
    assert doc["lift"]["difference_in_means"]["mean"] == pytest.approx(yt.mean() - yc.mean(), abs=1e-9)
    o = pd.read_parquet(outcomes)
    assert o["customer_id"].dtype.kind == "i" and set(o["customer_id"]) == set(range(100, 100 + N))


def _edit(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    df = df.copy()
    if kind == "unknown_customer":
        df.loc[3, "customer_id"] = "NOPE"
    elif kind == "unknown_action":
        df.loc[3, "action"] = "carrier_pigeon"
    elif kind == "propensity_zero":
        df.loc[3, "propensity"] = 0.0
    elif kind == "propensity_above_one":
        df.loc[3, "propensity"] = 1.5
    elif kind == "no_control":
        df.loc[df["group"] == "control", "group"] = "treatment"
    elif kind == "no_treatment":
        df.loc[df["group"] == "treatment", "group"] = "control"
    elif kind == "missing_group":
        df = df.drop(columns=["group"])
    elif kind == "bad_group":
        df.loc[3, "group"] = "placebo"
    elif kind == "duplicate_customer":
        df.loc[3, "customer_id"] = df.loc[2, "customer_id"]
    elif kind == "two_dates":
        df.loc[3, "date"] = "2024-03-05"
    return df


# kind -> (start, end, what the one line must name)
BAD = {
    "unknown_customer": (START, END, ["deployment.csv", "row 5", "column 'customer_id'"]),
    "unknown_action": (START, END, ["deployment.csv", "row 5", "column 'action'"]),
    "propensity_zero": (START, END, ["deployment.csv", "row 5", "column 'propensity'"]),
    "propensity_above_one": (START, END, ["deployment.csv", "row 5", "column 'propensity'"]),
    "no_control": (START, END, ["deployment.csv", "column 'group'", "no control"]),
    "no_treatment": (START, END, ["deployment.csv", "column 'group'", "no treatment"]),
    "missing_group": (START, END, ["deployment.csv", "column 'group'", "missing"]),
    "bad_group": (START, END, ["deployment.csv", "row 5", "column 'group'"]),
    "duplicate_customer": (START, END, ["deployment.csv", "row 5"]),
    "two_dates": (START, END, ["deployment.csv", "row 5", "column 'date'"]),
    "start_before_deployment": ("2024-03-01", END, ["--start", "before the deployment date"]),
    "empty_window": (START, START, ["--end", "empty"]),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_one_line_nothing_written(case, tmp_path, kind):
    folder, _ = case
    dep = _edit(pd.read_csv(folder / "deployment.csv"), kind)
    path = tmp_path / "deployment.csv"
    dep.to_csv(path, index=False)
    start, end, parts = BAD[kind]
    out, outcomes = tmp_path / "r.json", tmp_path / "o.parquet"
    r = clv(
        "readout", folder, "--deployment", path, "--start", start, "--end", end, "--out", out,
        "--outcomes", outcomes, "--json",
    )  # fmt: skip
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and r.stdout == ""
    for p in parts:
        assert p in lines[0], (p, lines[0])
    assert not out.exists() and not outcomes.exists()


def test_planned_action_pairs_control_with_its_withheld_action(case, tmp_path):
    folder, h = case
    dep = pd.read_csv(folder / "deployment.csv")
    dep["planned_action"] = h["action"]
    ctrl = h["group"] == "control"
    planned = np.where(np.arange(N) % 2 == 0, "sms_offer", "email_offer")
    dep.loc[ctrl, "planned_action"] = planned[ctrl]
    dep.to_csv(tmp_path / "dep.csv", index=False)
    doc, _ = read_out(load_history(folder), tmp_path / "dep.csv", START, END)
    for r in doc["by_action"]:
        m_t, m_c = h["treated"] & (h["action"] == r["action"]), ctrl & (planned == r["action"])
        assert r["control_kind"] == "the control customers planned for this action"
        assert r["control"] == m_c.sum()
        assert r["difference_in_means"]["mean"] == pytest.approx(h["y"][m_t].mean() - h["y"][m_c].mean(), abs=1e-9)
