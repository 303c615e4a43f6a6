"""The stratified read-out (experiments/readout_strata.py) and the run report's predicted-vs-measured
lift chart: a deployment whose segments differ in control share (A 10 %, B 50 %) and in outcome level
(A about 200, B about 20) with a known lift, where the pooled difference in means is biased and the
stratified one covers the truth; the choice of estimator; the export's strata columns; and
`clv readout --run`, whose readout.json puts the chart in the run report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_runner import clv, ok_json
from test_report import _Text, run_out  # noqa: F401  (the run folder fixture of the report tests)

from experiments import readout_strata as rs
from experiments.readout import read_out, verdict
from sim.history import load_history

D, START, END = "2024-03-04", "2024-03-04", "2024-04-01"
# segment -> (customers, control share, pre level, pre sd, lift tau_s); contacted customers cost COST
STRATA = {"A": (400, 0.1, 200.0, 30.0, 5.0), "B": (400, 0.5, 20.0, 5.0, 1.0)}
COST = 0.5


def true_lift() -> float:
    """The lift per customer in scope of the generating process: sum_s N_s / N (tau_s - cost)."""
    n = sum(v[0] for v in STRATA.values())
    return sum(v[0] / n * (v[4] - COST) for v in STRATA.values())


def draw_case(seed: int) -> dict:
    """One deployment and its outcomes: segment, control share, group, pre and post (baseline), the
    assigned arm; post = 0.8 pre + noise, plus tau_s for every customer not held out."""
    rng = np.random.default_rng(seed)
    seg, share, pre, base = [], [], [], []
    for name, (n, c, level, sd, _) in STRATA.items():
        x = np.clip(rng.normal(level, sd, n), 0, None).round(2)
        seg += [name] * n
        share += [c] * n
        pre.append(x)
        base.append(np.clip(0.8 * x + rng.normal(0.2 * level, sd / 2, n), 0, None).round(2))
    seg, share = np.array(seg, dtype=object), np.array(share)
    control = rng.random(len(seg)) < share
    tau = np.array([STRATA[s][4] for s in seg])
    return {
        "segment": seg,
        "control_share": share,
        "group": np.where(control, "control", "treatment"),
        "pre": np.concatenate(pre),
        "base": np.concatenate(base),
        "tau": tau,
        "assigned": ~control,
    }


def outcomes_frame(c: dict) -> pd.DataFrame:
    y = c["base"] + np.where(c["assigned"], c["tau"] - COST, 0.0)
    return pd.DataFrame({"outcome": y, "pre": c["pre"], "group": c["group"], "propensity": 1.0})


def write_history(folder: Path, c: dict, strata_columns: bool = True) -> Path:
    """The case as a history folder (transactions, customers with segment, actions, economics) and
    its deployment.csv, in the export's format (`strata_columns`: with segment and control_share)."""
    ids = [f"S{i:04d}" for i in range(len(c["segment"]))]
    tx = []
    for i, cid in enumerate(ids):
        tx += [(cid, "2024-02-12", c["pre"][i]), (cid, "2024-03-11", c["base"][i])]
        if c["assigned"][i]:
            tx.append((cid, "2024-03-18", c["tau"][i]))  # the treatment effect, exactly tau_s
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(tx, columns=["customer_id", "date", "amount"]).to_csv(folder / "transactions.csv", index=False)
    pd.DataFrame({"customer_id": ids, "signup_date": "2024-01-01", "segment": c["segment"]}).to_csv(
        folder / "customers.csv", index=False
    )
    stages = ["new", "growth", "maturity", "dormancy", "churned"]
    actions = [{"name": "none", "channel": None, "offer": None, "cost": 0.0, "eligible_stages": list(stages)}]
    actions.append(
        {"name": "sms_offer", "channel": "sms", "offer": "bonus", "cost": COST, "eligible_stages": list(stages)}
    )
    (folder / "actions.yaml").write_text(yaml.safe_dump({"actions": actions}, sort_keys=False))
    (folder / "economics.yaml").write_text(yaml.safe_dump({"period": "week", "margin_rate": 1.0}))
    ctrl = ~c["assigned"]
    dep = pd.DataFrame(
        {
            "customer_id": ids,
            "date": D,
            "action": np.where(ctrl, "none", "sms_offer"),
            "propensity": np.where(ctrl, c["control_share"], 1 - c["control_share"]),
            "cost": np.where(ctrl, 0.0, COST),
            "group": c["group"],
            "planned_action": "sms_offer",
        }
    )
    if strata_columns:
        dep["segment"], dep["control_share"] = c["segment"], c["control_share"]
    dep.to_csv(folder / "deployment.csv", index=False)
    return folder


# ---- the estimator ------------------------------------------------------------------------------------
def test_stratified_covers_the_true_lift_where_the_pooled_difference_is_biased():
    truth, seeds = true_lift(), 400
    strat, pooled, covered, pooled_covered = [], [], 0, 0
    for seed in range(seeds):
        c = draw_case(seed)
        frame = outcomes_frame(c)
        est = rs.contrast(frame, c["assigned"], c["segment"])["difference_in_means"]
        strat.append(est["mean"])
        covered += est["ci_low"] <= truth <= est["ci_high"]
        y, t = frame["outcome"].to_numpy(), c["assigned"]
        pooled.append(y[t].mean() - y[~t].mean())
        se = np.sqrt(y[t].var(ddof=1) / t.sum() + y[~t].var(ddof=1) / (~t).sum())
        pooled_covered += abs(pooled[-1] - truth) <= 1.96 * se
    strat, pooled = np.array(strat), np.array(pooled)
    # measured (docs/readout.md): coverage 0.95, mean error ~0.02 (truth 2.5); pooled bias ~ +85
    assert covered / seeds >= 0.92, covered / seeds
    assert abs(strat.mean() - truth) <= 3 * strat.std(ddof=1) / np.sqrt(seeds)
    assert pooled.mean() - truth > 50 and pooled_covered == 0


def test_the_combination_is_the_hand_formula():
    c = draw_case(7)
    frame = outcomes_frame(c)
    got = rs.contrast(frame, c["assigned"], c["segment"])
    y, t, seg = frame["outcome"].to_numpy(), c["assigned"], c["segment"]
    parts = []
    for s in ("A", "B"):
        m = seg == s
        yt, yc = y[m & t], y[m & ~t]
        parts.append((m.mean(), yt.mean() - yc.mean(), yt.var(ddof=1) / yt.size + yc.var(ddof=1) / yc.size))
    dm = got["difference_in_means"]
    assert dm["mean"] == pytest.approx(sum(w * d for w, d, _ in parts), rel=1e-12)
    assert dm["se"] == pytest.approx(np.sqrt(sum(w * w * v for w, _, v in parts)), rel=1e-12)
    assert got["weights"] == pytest.approx({"A": 0.5, "B": 0.5})
    cu = got["cuped"]  # post = 0.8 pre + noise within a stratum: CUPED is far narrower, theta near 0.8
    assert cu["se"] < 0.6 * dm["se"] and cu["theta_by_stratum"]["A"] == pytest.approx(0.8, abs=0.1)


def _frame(groups, props, shares=None) -> pd.DataFrame:
    f = pd.DataFrame({"group": groups, "propensity": props})
    if shares is not None:
        f["control_share"] = shares
    return f


G = ["control", "treatment"] * 4
SEG = np.array(["a"] * 4 + ["b"] * 4, dtype=object)
# case -> (frame, segments, estimator, strata labels or None, a warning expected)
DESIGNS = {
    "one share in the column": (_frame(G, [0.2, 0.8] * 4, [0.2] * 8), SEG, "difference_in_means", None, False),
    "shares differ by segment": (
        _frame(G, [0.1, 0.9] * 2 + [0.5] * 4, [0.1] * 4 + [0.5] * 4),
        SEG,
        "stratified",
        ["a", "b"],
        False,
    ),  # fmt: skip
    "shares differ, no segments": (
        _frame(G, [0.5] * 8, [0.1] * 4 + [0.5] * 4),
        None,
        "stratified",
        ["control share 0.1", "control share 0.5"],
        False,
    ),  # fmt: skip
    "one segment, two shares": (
        _frame(G, [0.5] * 8, [0.1, 0.1, 0.5, 0.5] + [0.3] * 4),
        SEG,
        "stratified",
        ["a @ 0.1", "a @ 0.5", "b"],
        False,
    ),  # fmt: skip
    "no column, one control propensity": (_frame(G, [0.25, 0.75] * 4), SEG, "difference_in_means", None, False),
    "no column, propensities by segment": (
        _frame(G, [0.1, 0.9] * 2 + [0.5] * 4),
        SEG,
        "stratified",
        ["a", "b"],
        False,
    ),  # fmt: skip
    "no column, propensities differ, no segments": (
        _frame(G, [0.1, 0.9] * 2 + [0.5] * 4),
        None,
        "difference_in_means",
        None,
        True,
    ),  # fmt: skip
    "no column, uncontacted controls at 1": (
        _frame(G, [0.2, 0.8, 1.0, 1.0] * 2),
        SEG,
        "difference_in_means",
        None,
        False,
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", sorted(DESIGNS))
def test_the_estimator_is_stratified_when_the_control_share_differs(case):
    frame, segments, estimator, labels, warns = DESIGNS[case]
    d = rs.design(frame, segments)
    assert d.estimator == estimator
    assert (d.labels is None) == (labels is None)
    if labels is not None:
        assert sorted(set(d.labels)) == labels
    assert bool(d.warning) == warns


# ---- the read-out of a file ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, dict]:
    c = draw_case(11)
    return write_history(tmp_path_factory.mktemp("strata") / "h", c), c


@pytest.mark.parametrize("strata_columns", [True, False], ids=["export columns", "propensities only"])
def test_read_out_stratifies_by_segment(history, tmp_path, strata_columns):
    folder, c = history
    if not strata_columns:  # the same deployment without segment / control_share: customers.csv's segments
        folder = write_history(tmp_path / "h", c, strata_columns=False)
    doc, table = read_out(load_history(folder), folder / "deployment.csv", START, END)
    truth = true_lift()
    assert doc["estimator"] == "stratified"
    cu, dm = doc["lift"]["cuped"], doc["lift"]["difference_in_means"]
    assert dm["ci_low"] <= truth <= dm["ci_high"] and cu["ci_low"] <= truth <= cu["ci_high"]
    pooled = doc["lift_pooled"]["difference_in_means"]
    assert pooled["ci_low"] > truth + 50  # the segments' levels, not the lift
    want = rs.contrast(table, (table["group"] != "control").to_numpy(), c["segment"])
    assert dm["mean"] == pytest.approx(want["difference_in_means"]["mean"], rel=1e-12)
    rows = {r["stratum"]: r for r in doc["strata"]["rows"]}
    assert set(rows) == {"A", "B"} and rows["A"]["control_share"] == pytest.approx(0.1)
    assert rows["B"]["weight"] == pytest.approx(0.5) and rows["B"]["control"] == int((~c["assigned"][400:]).sum())
    assert doc["segment_source"] == ("the deployment file's segment column" if strata_columns else "customers.csv")
    # the action's contrast is stratified too: one action, so it is the overall lift
    (act,) = doc["by_action"]
    assert act["cuped"]["mean"] == pytest.approx(cu["mean"], rel=1e-9)
    assert act["roi"]["incremental_cost"] == pytest.approx(COST)
    assert doc["roi"]["incremental_cost"] == pytest.approx(COST)
    # the verdict reads the stratified CUPED interval (here it covers 0: "not detected"), never the
    # pooled one, which lies far above 0 and would say "confirmed"
    assert doc["verdict"] == {**verdict(cu["ci_low"], cu["ci_high"], None), "interval": "cuped"}
    assert verdict(pooled["ci_low"], pooled["ci_high"], None)["verdict"] == "confirmed"


def test_one_share_keeps_the_difference_in_means(history, tmp_path):
    folder, c = history
    dep = pd.read_csv(folder / "deployment.csv")
    dep["control_share"] = 0.3
    dep.to_csv(tmp_path / "dep.csv", index=False)
    doc, _ = read_out(load_history(folder), tmp_path / "dep.csv", START, END)
    assert doc["estimator"] == "difference_in_means" and doc["strata"] is None and doc["lift_pooled"] is None


def test_cli_json_and_text_name_the_estimator(history, tmp_path):
    folder, _ = history
    args = ("readout", folder, "--deployment", folder / "deployment.csv", "--start", START, "--end", END)
    doc = ok_json(clv(*args, "--out", tmp_path / "r.json", "--json"))
    assert doc["estimator"] == "stratified" and json.loads((tmp_path / "r.json").read_text())["strata"]
    text = clv(*args)
    assert text.exit_code == 0 and "estimator: stratified by the deployment file's segment column" in text.stdout


BAD = {
    "control share above one": ("control_share", 1.5, ["deployment.csv", "row 5", "column 'control_share'"]),
    "control share not a number": ("control_share", "abc", ["deployment.csv", "row 5", "column 'control_share'"]),
    "empty segment": ("segment", "", ["deployment.csv", "row 5", "column 'segment'"]),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_strata_cells_are_one_line_nothing_written(history, tmp_path, kind):
    folder, _ = history
    column, value, parts = BAD[kind]
    dep = pd.read_csv(folder / "deployment.csv").astype({column: object})
    dep.loc[3, column] = value
    dep.to_csv(tmp_path / "deployment.csv", index=False)
    out = tmp_path / "r.json"
    r = clv("readout", folder, "--deployment", tmp_path / "deployment.csv", "--start", START, "--end", END,
            "--out", out, "--json")  # fmt: skip
    assert r.exit_code == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for p in parts:
        assert p in r.stderr, (p, r.stderr)
    assert not out.exists()


# ---- the export -------------------------------------------------------------------------------------------
def test_the_export_writes_each_customers_segment_and_control_share(calibrated_world):
    from experiments.deployment import DeploymentSettings, deploy

    path, world = calibrated_world
    book = world.read_book(path)
    names = [s.name for s in world.segments]
    settings = DeploymentSettings(control_share=0.5, segment_shares={names[0]: 0.1}, seed=3)
    contacts = pd.DataFrame({"customer_id": pd.Series([], dtype=str), "action": pd.Series([], dtype=str)})
    dep = deploy(world, book, contacts, settings, eligible=np.ones((len(book), world.n_actions), bool))
    f = dep.frame
    assert list(f.columns)[:5] == ["customer_id", "date", "action", "propensity", "cost"]  # the contract's
    assert {"group", "planned_action", "segment", "control_share"} <= set(f.columns)
    want = np.asarray(names, dtype=object)[book["segment"].to_numpy(np.int64)]
    assert (f["segment"].to_numpy() == want).all()
    np.testing.assert_allclose(f["control_share"], np.where(want == names[0], 0.1, 0.5))
    d = rs.design(f, f["segment"].to_numpy())
    assert d.estimator == "stratified" and d.shares[names[0]] == pytest.approx(0.1)


# ---- the run report -------------------------------------------------------------------------------------
def _readout_html(raw: str) -> str:
    i = raw.find("The read-out: predicted vs measured lift")
    return "" if i < 0 else raw[raw.rfind("<h3", 0, i) : raw.index('<h2 id="roi">')]  # from its heading's tag


def test_clv_readout_run_puts_the_chart_in_the_run_report(run_out, tmp_path):  # noqa: F811
    assert _readout_html((run_out / "report.html").read_text()) == ""  # no read-out yet: no chart
    run = tmp_path / "run"
    shutil.copytree(run_out, run)
    dep = pd.read_csv(run / "deployment.csv")
    assert {"segment", "control_share"} <= set(dep.columns)
    start = str(pd.Timestamp(dep["date"].iloc[0]).date())
    end = str((pd.Timestamp(start) + pd.Timedelta(weeks=6)).date())  # the run's plan.horizon and experiment horizon
    doc = ok_json(clv("readout", run / "history", "--run", run, "--start", start, "--end", end, "--json"))
    assert doc["report"] == str(run / "report.html")
    written = json.loads((run / "readout.json").read_text())
    assert written["lift"] == doc["lift"] and doc["estimator"] == "difference_in_means"  # one share: 20 %
    assert doc["predicted"]["source"].endswith("plan.json (experiment)") and doc["predicted"]["comparable"]
    assert all(r["predicted"] is not None for r in doc["by_segment"])  # the experiment's lift per segment
    section = _readout_html((run / "report.html").read_text())
    page = _Text()
    page.feed(section)
    text = re.sub(r"\s+", " ", " ".join(page.text))
    assert "The read-out: predicted vs measured lift" in page.headings
    assert any(t == "img" for t in page.tags) and 'alt="predicted vs measured lift per customer' in section
    assert f"Verdict: {doc['verdict']['verdict']}" in text
    for r in doc["by_segment"]:
        assert r["segment"] in text
    assert "predicted lift (margin units)" in text and 'href="readout.json"' in section


def test_a_stratified_read_out_in_the_report_says_so(run_out, history, tmp_path):  # noqa: F811
    from experiments.reports.run import rewrite_run_report

    folder, _ = history
    run = tmp_path / "run"
    shutil.copytree(run_out, run)
    doc, _ = read_out(load_history(folder), folder / "deployment.csv", START, END, predicted=true_lift())
    (run / "readout.json").write_text(json.dumps(doc))
    section = _readout_html(rewrite_run_report(run).read_text())
    assert "the whole scope is the stratified estimate" in section and "all customers in scope (stratified)" in section
    pooled = doc["lift_pooled"]["difference_in_means"]["mean"]
    assert f"{pooled:+,.3f}" in section and f"Verdict: {doc['verdict']['verdict']}" in section
    (run / "readout.json").write_text("{not json")  # a broken file is a note, not a broken report
    assert "readout.json could not be read" in _readout_html(rewrite_run_report(run).read_text())


def test_readout_run_needs_a_run_folder(history, tmp_path):
    folder, _ = history
    r = clv("readout", folder, "--run", tmp_path, "--start", START, "--end", END)
    assert r.exit_code == 2 and "no run.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "readout.json").exists()
