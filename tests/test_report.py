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
    "Assumptions taken from priors",
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
