"""The scenario report (experiments/reports/scenario.py) and the `ope:` section of a scenario: a tiny world
calibrated with `clv calibrate`, a tiny scenario with offline evaluation run in-process, then the
report's content, self-containment, ope.json, the resume of both, and bad `ope:` sections."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_runner import clv, ok_json

SCENARIO = {
    "name": "report_tiny",
    "world": "world.json",
    "customers": 150,
    "horizon": 8,
    "seeds": 2,
    "policies": ["bau", "greedy_uplift"],
    "budgets": [None, 120],
    "values": {"horizon": 5, "replications": 1},
    "ope": {"history": "bank", "estimators": ["dm", "ips", "snips", "dr"], "bootstrap": 50, "start": "2023-01-01"},
}
SECTIONS = (
    "Budget frontier",
    "Policy comparison",
    "Lifecycle-stage flows",
    "Calibration fit",
    "OPE vs simulation",
    "Assumptions, defaults and repairs",
)


class _Text(HTMLParser):
    """The page's visible text, its headings, its src/href attributes and its tags."""

    def __init__(self):
        super().__init__()
        self.text, self.headings, self.refs, self.tags, self._h = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href")]
        if tag in ("h1", "h2", "h3"):
            self._h = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._h is not None:
            self.headings.append("".join(self._h).strip())
            self._h = None

    def handle_data(self, data):
        self.text.append(data)
        if self._h is not None:
            self._h.append(data)


def _parse(path: Path) -> _Text:
    p = _Text()
    p.feed(path.read_text())
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(root, scenario file, out folder, run document): bank history -> `clv calibrate` -> the tiny
    scenario with an ope: section, its cells run in this process."""
    from experiments.scenarios import load_scenario, run_scenario
    from sim.synthetic import BankConfig, write_bank_history

    root = tmp_path_factory.mktemp("report")
    write_bank_history(root / "bank", BankConfig(customers=300, weeks=70, seed=3))
    ok_json(clv("calibrate", root / "bank", "--calibration-end", "2022-12-31", "--out", root / "world.json", "--json"))
    scen = root / "scen.yaml"
    scen.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    doc = run_scenario(load_scenario(scen), root / "out", workers=0)
    return root, scen, root / "out", doc


def test_report_has_every_section_and_is_self_contained(run):
    root, _, out, doc = run
    report = out / "report.html"
    assert doc["report"] == str(report) and report.is_file()
    page = _parse(report)
    for s in SECTIONS:
        assert s in page.headings, (s, page.headings)
    assert page.headings[0] == "Scenario report: report_tiny"
    raw = report.read_text()
    # nothing fetched from elsewhere: no scripts, no external stylesheets, fonts or images
    assert "script" not in page.tags and "link" not in page.tags
    assert "http://" not in raw and "https://" not in raw and "@import" not in raw and "url(" not in raw
    for tag, attr, value in page.refs:
        if tag == "img":
            assert value.startswith("data:image/png;base64,")
        else:
            assert not re.match(r"^[a-z]+:", value) and not value.startswith("//"), value
    # inline figures that are real PNGs: frontier, comparison, stage flows, OPE
    imgs = [v for t, a, v in page.refs if t == "img"]
    assert len(imgs) == 4
    for v in imgs:
        assert base64.b64decode(v.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # relative links to the outputs beside it
    hrefs = {v for t, a, v in page.refs if t == "a"}
    assert {"results.parquet", "periods.parquet", "summary.json", "scenario.json", "ope.json", "../world.json"} <= hrefs
    for h in hrefs - {"../world.json"}:
        assert h.startswith("#") or (out / h).is_file()


def test_report_content_comes_from_the_world_and_the_runs(run):
    from sim.world import WorldModel

    root, _, out, doc = run
    world = WorldModel.load(root / "world.json")
    text = " ".join(_parse(out / "report.html").text)
    text = re.sub(r"\s+", " ", text)
    assert world.assumptions, "the tiny world should carry prior assumptions"
    for a in world.assumptions:  # verbatim, once unescaped
        assert re.sub(r"\s+", " ", a) in text, a
    assert world.hash() in text
    for seg in world.segments:  # the segments' parameters, as in the world
        assert seg.name in text
        assert f"{seg.activity['r']:.4g}" in text and f"{seg.spend['p']:.4g}" in text
    # the comparison and frontier numbers are summary.json's
    summary = json.loads((out / "summary.json").read_text())["by_policy_budget"]
    for s in summary:
        assert f"{s['clv']['mean']:,.2f}" in text
        assert f"{s['incremental_clv']['mean']:,.2f}" in text
    assert "no budget" in text and "120" in text
    # the OPE table: every estimator, every policy's estimate, the logged value
    ope = json.loads((out / "ope.json").read_text())
    for p, e in ope["policies"].items():
        assert f"{e['logged_policy_value']:,.3f}" in text
        for k, v in e["estimates"].items():
            assert f"OPE {k}" in text and f"{v['value']:,.3f}" in text
    assert "Rankings (1 = best)" in text
    # stage flows: every stage named
    for st in world.stages:
        assert st in text


def test_ope_json_has_the_estimates_per_policy(run):
    root, scen, out, doc = run
    ope = json.loads((out / "ope.json").read_text())
    assert doc["ope"] == str(out / "ope.json") and doc["ope_run"] == 2
    assert list(ope["policies"]) == ["bau", "greedy_uplift"]
    assert ope["settings"]["n_boot"] == 50 and ope["settings"]["start"] == "2023-01-01"
    assert ope["history"] == str((root / "bank").resolve())
    for p, e in ope["policies"].items():
        assert e["policy"] == p and e["estimand"] == "per_decision"
        assert set(e["estimates"]) == {"dm", "ips", "snips", "dr"}
        for k, v in e["estimates"].items():
            assert v["ci_low"] <= v["ci_high"] and v["ess"] > 0
            assert all(isinstance(v[f], float) for f in ("value", "ci_low", "ci_high"))
        assert isinstance(e["logged_policy_value"], float)
        assert e["diagnostics"]["n"] == e["decisions"] > 0 and e["window"]["start"] >= "2023-01-01"
    # the candidates differ: greedy_uplift does not do what the logged policy did everywhere
    assert ope["policies"]["bau"]["estimates"]["ips"] != ope["policies"]["greedy_uplift"]["estimates"]["ips"]


def test_rerun_skips_cells_and_ope_and_rewrites_the_report(run):
    root, scen, out, _ = run
    ope_before = (out / "ope.json").read_bytes()
    report_before = (out / "report.html").read_bytes()
    (out / "report.html").unlink()
    doc = ok_json(clv("scenarios", scen, "--out", out, "--json"))  # nothing to run: Ray is not started
    assert doc["run"] == 0 and doc["skipped"] == 8 and doc["ope_run"] == 0
    assert doc["report"] == str(out / "report.html")
    assert (out / "ope.json").read_bytes() == ope_before
    assert (out / "report.html").read_bytes() == report_before  # date-free: the same page


def test_changed_ope_settings_recompute_only_ope(run, tmp_path):
    from experiments.scenarios import load_scenario, run_scenario

    root, _, out, _ = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    doc = {
        **SCENARIO,
        "world": str(root / "world.json"),
        "ope": {**SCENARIO["ope"], "history": str(root / "bank"), "estimators": ["ips", "snips"]},
    }
    scen = tmp_path / "scen.yaml"
    scen.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run_scenario(load_scenario(scen), copy, workers=0)
    assert res["run"] == 0 and res["ope_run"] == 2
    ope = json.loads((copy / "ope.json").read_text())
    assert all(set(e["estimates"]) == {"ips", "snips"} for e in ope["policies"].values())
    # same estimator, same data, same seed: the same numbers as the first run
    first = json.loads((out / "ope.json").read_text())
    assert ope["policies"]["bau"]["estimates"]["ips"] == first["policies"]["bau"]["estimates"]["ips"]


def test_report_without_ope_says_how_to_add_it(run, tmp_path):
    from experiments.reports import write_report

    _, _, out, _ = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "ope.json").unlink()
    path = write_report(copy)
    page = _parse(path)
    text = re.sub(r"\s+", " ", "".join(page.text))
    assert "OPE vs simulation" in page.headings and "add an ope: section" in text
    assert "ope.json" not in {v for t, a, v in page.refs}
    assert len([1 for t, a, v in page.refs if t == "img"]) == 3


def test_write_report_needs_a_scenario_output(tmp_path):
    from experiments.reports import write_report
    from sim.errors import ConfigError

    with pytest.raises(ConfigError, match="no scenario.json; run `clv scenarios"):
        write_report(tmp_path)


BAD_OPE = [
    ({"history": "nowhere"}, "ope.history: nowhere: history folder not found"),
    ({"estimators": ["dm"]}, "ope.history: missing; give a history folder"),
    (
        {"history": "bank", "estimators": ["dm", "fqe"]},
        "ope.estimators: 'fqe' is not an estimator of the per_decision estimand",
    ),
    ({"history": "bank", "bootstrap": 5}, "ope.bootstrap: expected a whole number >= 10, got 5"),
    ({"history": "bank", "start": "July"}, "ope.start: expected a date YYYY-MM-DD, got 'July'"),
    ({"history": "bank", "resamples": 100}, "ope.resamples: unknown key; known: history, estimators"),
    ({"history": "world.json"}, "ope.history: world.json: is a file, not a history folder"),
    ("bank", "ope: expected a mapping {history: FOLDER"),
]


@pytest.mark.parametrize(
    "section,message", BAD_OPE, ids=[m.split(":")[1].strip() + str(i) for i, (_, m) in enumerate(BAD_OPE)]
)
def test_bad_ope_sections_are_one_line_errors(run, tmp_path, section, message):
    root = run[0]
    doc = {**SCENARIO, "world": str(root / "world.json"), "ope": section}
    if isinstance(section, dict) and section.get("history") in ("bank", "world.json"):
        doc["ope"] = {**section, "history": str(root / section["history"])}
        message = message.replace("world.json: is", f"{root / 'world.json'}: is")
    scen = tmp_path / "scen.yaml"
    scen.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"
    r = clv("scenarios", scen, "--out", out, "--json")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: {scen}: {message}"), r.stderr
    assert r.stdout == "" and not out.exists()


def test_history_without_decisions_is_refused(run, tmp_path):
    root = run[0]
    hist = tmp_path / "nodec"
    shutil.copytree(root / "bank", hist)
    (hist / "decisions.csv").unlink()
    scen = tmp_path / "scen.yaml"
    scen.write_text(yaml.safe_dump({**SCENARIO, "world": str(root / "world.json"), "ope": {"history": "nodec"}}))
    r = clv("scenarios", scen, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "ope.history: nodec: has no decisions table" in r.stderr


# ---- the run report, for a strategy team (issue 18) ------------------------------------------------
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL_RUN = [
    "history.generate.customers=400",
    "policy=greedy_uplift",
    "validation.replications=2",
    "evaluation.seeds=2",
    "ope.bootstrap=50",
    "budgets=[20, 50, 100]",
    "budget=50",
    "plan.horizon=6",
]
SNAKE = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    """A small `clv run` of the bank demo (a baseline policy, 400 customers, 6 weeks): its folder."""
    out = tmp_path_factory.mktemp("run") / "out"
    sets = [a for item in SMALL_RUN for a in ("--set", item)]
    ok_json(clv("run", EXAMPLES / "bank_demo.yaml", "--out", out, *sets, "--workers", "0", "--json"))
    return out


def _run_doc(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _render(out: Path, doc: dict, world=None) -> _Text:
    from experiments.reports.run import build_run_report_html
    from sim.world import WorldModel

    p = _Text()
    p.feed(build_run_report_html(out, doc, world or WorldModel.load(out / "world.json")))
    return p


class _Cells(_Text):
    """As _Text, with the text of every table header cell and the first element after the <h1>."""

    def __init__(self):
        super().__init__()
        self.th, self._th, self.after_h1, self._seen_h1 = [], None, None, False

    def handle_starttag(self, tag, attrs):
        super().handle_starttag(tag, attrs)
        if tag == "th":
            self._th = []
        if self._seen_h1 and self.after_h1 is None:
            self.after_h1 = (tag, dict(attrs))
        if tag == "h1":
            self._seen_h1 = True

    def handle_endtag(self, tag):
        super().handle_endtag(tag)
        if tag == "th" and self._th is not None:
            self.th.append("".join(self._th).strip())
            self._th = None

    def handle_data(self, data):
        super().handle_data(data)
        if self._th is not None:
            self._th.append(data)


def _cells(html_text: str) -> _Cells:
    p = _Cells()
    p.feed(html_text)
    return p


def test_the_run_report_leads_with_the_decision_in_plain_words(run_out):
    raw = (run_out / "report.html").read_text()
    page = _cells(raw)
    assert page.after_h1 == ("div", {"class": page.after_h1[1]["class"], "id": "decision"})
    lead = raw[raw.index('id="decision">') + len('id="decision">') : raw.index("<nav>")]
    text = re.sub(r"<[^>]+>", "", lead)
    assert text.startswith("Decision: ") and "What it buys:" in text and "How sure:" in text
    doc = _run_doc(run_out)
    p = doc["plan"]
    assert f"{p['budget']:,.0f} margin units" in text and f"{p['lift_vs_none']['mean']:+,.2f} margin units" in text
    assert f"between {p['lift_vs_none']['ci_low']:+,.3f} and {p['lift_vs_none']['ci_high']:+,.3f}" in text
    assert raw.index('id="decision"') < raw.index('<h2 id="answer">')


@pytest.mark.parametrize(
    "lift,verdict",
    [
        ({"mean": 1.0, "ci_low": 0.2, "ci_high": 1.8}, "Decision: adopt the plan."),
        ({"mean": 1.0, "ci_low": -0.2, "ci_high": 2.2}, "Decision: try the plan as an experiment"),
        ({"mean": -0.5, "ci_low": -1.0, "ci_high": 0.1}, "Decision: do not adopt the plan."),
    ],
)
def test_the_decision_follows_the_paired_interval(run_out, lift, verdict):
    from experiments.reports.decision import decision_html

    doc = _run_doc(run_out)
    doc["plan"]["lift_vs_none"] = lift
    assert verdict in decision_html(doc, "margin units")


def test_every_money_header_has_its_unit_and_a_currency_replaces_margin_units(run_out, tmp_path):
    import shutil

    import pandas as pd

    from sim.world import WorldModel

    page = _cells((run_out / "report.html").read_text())
    money = [h for h in page.th if re.search(r"cash spend|value \(|value per|gain|cost|budget \(|CLV over", h)]
    assert money and all("margin unit" in h for h in money), [h for h in money if "margin unit" not in h]
    # the same run as if its world had named a currency: the texts the run wrote into its files (the
    # contact list's reasons, the experiment's warning) name the unit of the world they were made in
    eur_out = tmp_path / "eur"
    shutil.copytree(run_out, eur_out)
    contacts = pd.read_parquet(eur_out / "contacts.parquet")
    contacts["reason"] = contacts["reason"].str.replace("margin units", "EUR")
    contacts.to_parquet(eur_out / "contacts.parquet", index=False)
    doc = json.loads(json.dumps(_run_doc(run_out)).replace("margin units", "EUR"))
    world = WorldModel.load(eur_out / "world.json")
    world.economics.currency = "EUR"
    eur = _render(eur_out, doc, world)
    text = " ".join(eur.text)
    assert "margin units" not in text and "margin unit" not in text
    assert "cash spend (EUR)" in text and "value per EUR of cash" in text


def test_metric_names_are_words_in_headings_and_table_headers(run_out):
    from sim.world import WorldModel

    world = WorldModel.load(run_out / "world.json")
    doc = _run_doc(run_out)
    names = (
        [doc["name"], doc["plan"]["policy"], "greedy_uplift", "bau"]
        + [s.name for s in world.segments]
        + list(world.catalogue.names)
        + list(world.catalogue.contact_channels)
    )
    page = _cells((run_out / "report.html").read_text())
    for label in page.headings + page.th:
        for n in names:  # a policy's, segment's or action's own name is the user's label, not a metric key
            label = label.replace(n, "")
        assert not SNAKE.search(label), label
    for key in ("holdout_repeat_actual", "per_customer_corr", "top_decile_value_share", "customer_id"):
        assert key not in " ".join(page.th + page.headings)
    assert "repeat transactions in the holdout, actual" in " ".join(page.text)


def test_return_on_spend_by_segment_channel_action_and_stage(run_out):
    raw = (run_out / "report.html").read_text()
    roi = raw[raw.index('<h2 id="roi">') : raw.index('<h2 id="simulation">')]
    page = _cells(roi)
    assert page.headings[0] == "Return on spend"
    assert {"By segment", "By channel", "By action", "By stage"} <= set(page.headings)
    assert page.th.count("value per margin unit of cash") == 4
    for first in ("segment", "channel", "action", "stage"):
        assert first in page.th
    # the first period's contacts by action add up to contacts.parquet
    contacts = pd.read_parquet(run_out / "contacts.parquet")
    for action, n in contacts["action"].value_counts().items():
        assert re.search(rf"<td class=\"l\">{action}</td><td>{n:,}</td>", roi), action


def test_a_panel_of_zeros_is_one_sentence(run_out):
    doc = _run_doc(run_out)
    for x in doc["plan"]["shadow_prices"]:
        x["shadow_price"] = 0.0
    for r in doc["plan"]["by_period"]:
        r["spend"] = 0.0
    page = _render(run_out, doc)
    text = re.sub(r"\s+", " ", " ".join(page.text))
    assert "No constraint binds: one more unit of the budget or of any constraint is worth nothing" in text
    assert "shadow price (margin units)" not in text
    assert "The plan spends nothing in any week." in text


@pytest.mark.parametrize(
    "rows,shown,sentence",
    [
        ([("a", [0, 0.0], ["a", "0"]), ("b", [None, {"mean": 0.0, "ci_low": 0, "ci_high": 0}], ["b", "0"])], 0, "all"),
        ([("a", [0, 0], ["a", "0"]), ("b", [1, 0], ["b", "1"])], 1, "All zero, left out of the table: a."),
        ([("a", [2, 0], ["a", "2"]), ("b", [1, 0], ["b", "1"])], 2, ""),
    ],
)
def test_table_of_nonzero(rows, shown, sentence):
    from experiments.reports.kit import table_of_nonzero

    html_text = table_of_nonzero(["name", "n"], rows, "all")
    assert html_text.count("<tr>") == (shown + 1 if shown else 0)
    if sentence:
        assert f'<p class="note">{sentence}</p>' in html_text
    else:
        assert "<p" not in html_text


def test_the_report_is_rewritten_from_a_run_folder(run_out, tmp_path):
    from experiments.reports.run import rewrite_run_report
    from sim.errors import ConfigError

    before = (run_out / "report.html").read_bytes()
    assert rewrite_run_report(run_out) == run_out / "report.html"
    assert (run_out / "report.html").read_bytes() == before  # date-free: the same page
    with pytest.raises(ConfigError, match="no run.json; give the folder of a finished `clv run`"):
        rewrite_run_report(tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install -y chromium)")
def test_the_report_fits_1400_px_in_a_real_browser(run_out, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "check_report_browser.py"
    r = subprocess.run(
        [sys.executable, script, run_out, "--png-dir", tmp_path / "png", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["window_width"] == 1400 and doc["page_width"] <= 1400 and not doc["overflowing"]
    assert len(doc["pngs"]) >= 2 and all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in doc["pngs"])
    # the check fails on a page wider than the window
    wide = tmp_path / "wide.html"
    wide.write_text('<html><body><div style="width:3000px">too wide</div></body></html>')
    r = subprocess.run([sys.executable, script, wide, "--png-dir", tmp_path / "png2"], capture_output=True, text=True)
    assert r.returncode == 1 and "FAILED" in r.stdout and "too wide: <div>" in r.stdout


# ---- budget is not cash (issue 18): cash spend beside the incremental cost --------------------------
def _cash_table(tmp_path: Path, with_cash: bool) -> Path:
    from optimizer.instances import bank_like_table

    df = bank_like_table(400, seed=4).to_frame()
    if with_cash:
        df["cash_cost"] = df["cost"] * 3.0  # the catalogue price: here three times what the budget is charged
    path = tmp_path / "values.parquet"
    df.to_parquet(path, index=False)
    return path


def test_allocate_reports_cash_beside_the_incremental_cost(tmp_path):
    values = _cash_table(tmp_path, with_cash=True)
    out = tmp_path / "plan.parquet"
    doc = ok_json(clv("allocate", values, "--budget", 200, "--method", "exact", "--out", out, "--json"))
    plan = pd.read_parquet(out)
    made = plan[plan["action"] != "none"]
    assert doc["spend"] == doc["incremental_cost"] == pytest.approx(made["cost"].sum())  # the old key is kept
    assert doc["cash_spend"] == pytest.approx(made["cash_cost"].sum()) == pytest.approx(3 * doc["spend"])
    for part in ("segment", "channel", "action"):
        rows = doc["totals"][part]
        assert sum(r["cash_spend"] for r in rows) == pytest.approx(doc["cash_spend"])
        assert all(r["incremental_cost"] == r["spend"] for r in rows)
    r = clv("allocate", values, "--budget", 200, "--method", "exact")
    assert r.exit_code == 0
    assert f"incremental cost {doc['spend']:,.2f}" in r.stdout and f"cash {doc['cash_spend']:,.2f}" in r.stdout
    fr = ok_json(clv("frontier", values, "--budgets", "100,200", "--json"))
    assert all(p["cash_spend"] > p["incremental_cost"] for p in fr["points"])


def test_allocate_says_when_the_cash_is_not_known(tmp_path):
    values = _cash_table(tmp_path, with_cash=False)
    doc = ok_json(clv("allocate", values, "--budget", 200, "--json"))
    assert doc["cash_spend"] is None and doc["incremental_cost"] == doc["spend"]
    r = clv("allocate", values, "--budget", 200)
    assert "cash not known (the value table has no cash_cost column" in r.stdout


def test_value_tables_carry_the_catalogue_price(run_out):
    from optimizer.value_sources import values_from_simulation
    from sim.world import WorldModel

    world = WorldModel.load(run_out / "world.json")
    book = pd.read_parquet(run_out / world.book_file)
    df = values_from_simulation(world, book, 60, horizon=3, replications=1, seed=0, continuation="greedy_uplift")
    price = dict(zip(world.catalogue.names, world.catalogue.costs))
    assert (df["cash_cost"] == df["action"].astype(str).map(price)).all()


@pytest.mark.parametrize(
    "value,message",
    [
        (["EUR"], "bad.yaml, column 'currency': expected a short name such as EUR or USD, got ['EUR']"),
        ("x" * 40, "expected a short name"),
    ],
)
def test_economics_currency(tmp_path, value, message):
    from sim.catalogue import Economics, load_economics
    from sim.errors import HistoryError

    good = tmp_path / "economics.yaml"
    good.write_text("period: week\ncurrency: EUR\n")
    assert load_economics(good).currency == "EUR"
    assert "currency" not in Economics().to_dict()  # worlds without one keep their hash
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"period": "week", "currency": value}))
    with pytest.raises(HistoryError, match=re.escape(message)):
        load_economics(bad)
