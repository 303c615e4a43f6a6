"""`clv scenarios`: scenario-file validation, a tiny sweep on Ray end to end, resume, 1 vs 2 workers,
and fault tolerance with a real Ray worker process killed mid-cell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import clv, ok_json
from pandas.testing import assert_frame_equal

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
world: {world}
customers: 400
horizon: 12
seeds: 2
policies: [none, greedy_uplift]
budgets: [null, 300]
constraints:
  capacity: ["channel:rm_call=20"]
values: {{horizon: 8, replications: 1}}
"""

# cells of a few seconds each, so that a worker can be killed while it runs one
HEAVY = """\
name: heavy
world: {world}
customers: 8000
horizon: 52
seeds: [3]
policies: [greedy_uplift]
budgets: [null, 400]
values: {{horizon: 26, replications: 1}}
"""


@pytest.fixture(scope="module")
def world_path(calibrated_world) -> Path:
    return calibrated_world[0]


def _write(folder: Path, text: str, name: str = "scen.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


# ---- validation ---------------------------------------------------------------------------------
GOOD = {"world": "{world}", "customers": 100, "horizon": 4, "seeds": 2, "policies": ["bau"], "budgets": [None]}

BAD = [
    ({"polices": ["bau"]}, "polices: unknown key; did you mean policies? known: name, world"),
    ({"world": None}, "world: missing; give the world JSON"),
    ({"world": "nope.json"}, "world: nope.json: not found; create it with `clv calibrate`"),
    (
        {"policies": ["bau", "none", "gredy"]},
        "policies[2]: unknown policy 'gredy'; known: none, random, bau, churn_threshold, greedy_uplift or a folder "
        "written by clv train",
    ),
    ({"policies": []}, "policies: is empty; give at least one"),
    ({"policies": ["bau", "bau"]}, "policies[1]: policy 'bau' is given twice"),
    ({"budgets": [None, -5]}, "budgets[1]: a budget must be >= 0, got -5"),
    ({"budgets": [100, "lots"]}, "budgets[1]: expected a number >= 0 or null"),
    ({"seeds": [0, 1, 1]}, "seeds: seed 1 is given twice"),
    ({"seeds": 0}, "seeds: expected a whole number >= 1, got 0"),
    ({"horizon": 2.5}, "horizon: expected a whole number >= 1, got 2.5"),
    ({"customers": "many"}, "customers: expected a whole number >= 1, got 'many'"),
    ({"population": "old"}, "population: expected book or new, got 'old'"),
    ({"constraints": {"capacity": ["channel:fax=5"]}}, "constraints.capacity[0]: no channel 'fax' in the world"),
    (
        {"constraints": {"capacity": ["rm_call=5"]}},
        "constraints.capacity[0]: --capacity 'rm_call=5': expected SCOPE:NAME=LIMIT",
    ),
    ({"constraints": {"caps": []}}, "constraints.caps: unknown key; known: capacity, min_coverage, max_share"),
    ({"values": {"replications": 0}}, "values.replications: expected a whole number >= 1, got 0"),
    ({"values": {"reps": 2}}, "values.reps: unknown key; known: horizon, replications"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_scenario_files_are_one_line_errors(tmp_path, world_path, change, message):
    import yaml

    doc = {**GOOD, **change}
    doc = {k: v for k, v in doc.items() if v is not None or k != "world"}
    if doc.get("world") == "{world}":
        doc["world"] = str(world_path)
    scen = _write(tmp_path, yaml.safe_dump(doc))
    out = tmp_path / "out"
    r = clv("scenarios", scen, "--out", out, "--json")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == r.stderr.strip().splitlines()[0]  # one line
    assert r.stderr.startswith(f"error: {scen}: {message}"), r.stderr
    assert r.stdout == "" and not out.exists()  # nothing written


def test_not_yaml_and_missing_file(tmp_path):
    scen = _write(tmp_path, "policies: [bau\n")
    r = clv("scenarios", scen, "--out", tmp_path / "o")
    assert r.exit_code == 2 and f"error: {scen}: not valid YAML" in r.stderr
    r = clv("scenarios", tmp_path / "absent.yaml", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "absent.yaml: scenario file not found" in r.stderr


def test_budget_needs_a_book(tmp_path, world_path):
    scen = _write(
        tmp_path, f"world: {world_path}\npopulation: new\ncustomers: 50\npolicies: [bau]\nbudgets: [null, 100]\n"
    )
    r = clv("scenarios", scen, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "budgets[1]: a budget needs population: book" in r.stderr


def test_example_scenario_is_valid_against_a_bank_world(tmp_path, world_path):
    """examples/scenario_bank.yaml parses and validates (pointed at the test world)."""
    from experiments.scenarios import load_scenario

    text = (ROOT / "examples" / "scenario_bank.yaml").read_text().replace("../demo_out/world.json", str(world_path))
    sc = load_scenario(_write(tmp_path, text))
    assert sc.policies == ("bau", "greedy_uplift") and sc.budgets == (None, 1000.0, 2000.0)
    assert len(sc.cells()) == 2 * 3 * 3 and sc.constraints["capacity"] == ("channel:rm_call=50",)


# ---- a tiny sweep end to end, resume, 1 vs 2 workers ---------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, world_path):
    """(scenario file, out folder, JSON) of the tiny sweep run once with one worker."""
    root = tmp_path_factory.mktemp("tiny")
    scen = _write(root, TINY.format(world=world_path))
    out = root / "run1"
    doc = ok_json(clv("scenarios", scen, "--out", out, "--workers", 1, "--json"))
    return scen, out, doc


def test_tiny_sweep_end_to_end(tiny):
    scen, out, doc = tiny
    assert (doc["cells"], doc["run"], doc["skipped"], doc["workers"]) == (8, 8, 0, 1)
    res = pd.read_parquet(out / "results.parquet")
    assert list(res["cell_index"]) == list(range(8)) and res["cell_id"].is_unique
    assert list(res["policy"]) == ["none"] * 4 + ["greedy_uplift"] * 4
    assert list(res["seed"]) == [0, 1] * 4 and (res["status"] == "ok").all()
    assert not {"pid", "seconds", "host"} & set(res.columns)
    assert (res["customers"] == 400).all()
    free = res[res["budget"].isna()]
    budgeted = res[res["budget"] == 300]
    # "none" without a budget is its own reference; every cell's reference is the same per seed
    assert (free[free["policy"] == "none"]["incremental_clv"] == 0).all()
    assert res.groupby("seed")["clv_none"].nunique().eq(1).all()
    assert (budgeted["plan_spend"] <= 300 + 1e-6).all() and (budgeted["plan_assigned"] > 0).all()
    assert (budgeted["plan_cash_spend"] > 0).all() and free["plan_cash_spend"].isna().all()  # catalogue cost
    assert (budgeted["plan_gap"] >= 0).all() and (budgeted["plan_bound"] >= budgeted["plan_objective"] - 1e-6).all()
    assert free["plan_objective"].isna().all()
    per = pd.read_parquet(out / "periods.parquet")
    assert len(per) == 8 * 12 and list(per.groupby("cell_index").size()) == [12] * 8
    stages = [c for c in per.columns if c.startswith("stage_")]
    assert len(stages) == 5 and (per[stages].sum(axis=1) == 400).all()
    # the plan is applied in period 0: with the none policy the first period spends exactly the plan
    first = per[(per["period"] == 0) & (per["policy"] == "none")].set_index("cell_id")["cost"]
    for _, r in budgeted[budgeted["policy"] == "none"].iterrows():
        assert first[r["cell_id"]] == pytest.approx(r["plan_spend"], rel=1e-9)
    for _, r in free[free["policy"] == "none"].iterrows():
        assert first[r["cell_id"]] == 0
    summ = json.loads((out / "summary.json").read_text())["by_policy_budget"]
    assert [(s["policy"], s["budget"]) for s in summ] == [
        ("none", None),
        ("none", 300.0),
        ("greedy_uplift", None),
        ("greedy_uplift", 300.0),
    ]
    for s in summ:
        assert s["seeds"] == 2 and s["clv"]["ci_low"] <= s["clv"]["mean"] <= s["clv"]["ci_high"]
    assert doc["summary"] == summ
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(
        [f"{c}.parquet" for c in res["cell_id"]] + [f"{c}.periods.parquet" for c in res["cell_id"]]
    )
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["cells"]) == set(res["cell_id"])
    resolved = json.loads((out / "scenario.json").read_text())
    assert resolved["seeds"] == [0, 1] and resolved["values"] == {"horizon": 8, "replications": 1}
    assert not (out / "running").exists()


def test_resume_skips_done_cells_and_reruns_only_missing(tiny, tmp_path):
    scen, out, _ = tiny
    before = pd.read_parquet(out / "results.parquet")
    before_periods = pd.read_parquet(out / "periods.parquet")
    doc = ok_json(clv("scenarios", scen, "--out", out, "--json"))
    assert (doc["run"], doc["skipped"]) == (0, 8)
    assert_frame_equal(pd.read_parquet(out / "results.parquet"), before, check_exact=True)
    victim = before["cell_id"].iloc[5]
    (out / "cells" / f"{victim}.parquet").unlink()
    doc = ok_json(clv("scenarios", scen, "--out", out, "--workers", 2, "--json"))
    assert (doc["run"], doc["skipped"]) == (1, 7)
    assert list(json.loads((out / "timings.json").read_text())["cells"]) == [victim]
    assert_frame_equal(pd.read_parquet(out / "results.parquet"), before, check_exact=True)
    assert_frame_equal(pd.read_parquet(out / "periods.parquet"), before_periods, check_exact=True)
    # a scenario with fewer budgets reuses the cells it shares (no Ray started), in its own cell order
    import shutil

    shutil.copytree(out, tmp_path / "copy")
    fewer = _write(tmp_path, scen.read_text().replace("budgets: [null, 300]", "budgets: [null]"), "fewer.yaml")
    doc = ok_json(clv("scenarios", fewer, "--out", tmp_path / "copy", "--json"))
    assert (doc["cells"], doc["run"], doc["skipped"]) == (4, 0, 4)
    sub = pd.read_parquet(tmp_path / "copy" / "results.parquet")
    assert list(sub["cell_index"]) == [0, 1, 2, 3]
    expect = before[before["budget"].isna()].reset_index(drop=True)
    assert_frame_equal(sub.drop(columns="cell_index"), expect.drop(columns="cell_index"), check_exact=True)


def test_changed_scenario_never_reuses_stale_cells(tiny, tmp_path):
    """Cell ids follow what decides the numbers: a new budget set keeps the shared cells' ids, a
    changed horizon changes every id."""
    from experiments.scenarios import cell_id, fingerprints, load_scenario

    scen, _, _ = tiny
    a = load_scenario(scen)
    b = load_scenario(_write(tmp_path, scen.read_text().replace("horizon: 12", "horizon: 13")))
    c = load_scenario(_write(tmp_path, scen.read_text().replace("budgets: [null, 300]", "budgets: [null]"), "c.yaml"))

    def ids(sc):
        return {(x["policy"], x["budget"], x["seed"]): cell_id(sc, x, fingerprints(sc)) for x in sc.cells()}

    ia, ib, ic = ids(a), ids(b), ids(c)
    assert not set(ia.values()) & set(ib.values())
    assert all(ia[k] == v for k, v in ic.items())


def test_one_and_two_workers_give_identical_results(tiny, tmp_path):
    scen, out1, _ = tiny
    doc = ok_json(clv("scenarios", scen, "--out", tmp_path / "run2", "--workers", 2, "--json"))
    assert (doc["run"], doc["workers"]) == (8, 2)
    assert_frame_equal(
        pd.read_parquet(tmp_path / "run2" / "results.parquet"),
        pd.read_parquet(out1 / "results.parquet"),
        check_exact=True,
    )
    assert_frame_equal(
        pd.read_parquet(tmp_path / "run2" / "periods.parquet"),
        pd.read_parquet(out1 / "periods.parquet"),
        check_exact=True,
    )


# ---- fault tolerance: a real Ray worker killed while it runs a cell ---------------------------------
def _reference_rows(scen: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scenario's cells run one after the other in this process, without Ray."""
    from experiments.scenarios import cell_id, fingerprints, load_scenario, run_cell

    sc = load_scenario(scen)
    spec = {"world": Path(sc.world).read_text(), "book": pd.read_parquet(sc.book), "scenario": sc.to_dict()}
    rows, periods = [], []
    for c in sc.cells():
        c["cell_id"] = cell_id(sc, c, fingerprints(sc))
        row, per = run_cell(spec, c)
        rows.append(row)
        periods.append(per)
    return pd.DataFrame(rows), pd.concat(periods, ignore_index=True)


def test_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(tmp_path, world_path):
    scen = _write(tmp_path, HEAVY.format(world=world_path))
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.cli",
            "scenarios",
            str(scen),
            "--out",
            str(out),
            "--workers",
            "2",
            "--json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for f in sorted((out / "running").glob("*.pid")) if (out / "running").exists() else []:
                text = f.read_text().strip()
                if text:
                    killed = (f.stem, int(text))
                    os.kill(killed[1], signal.SIGKILL)  # a real Ray worker process, mid-cell
                    break
            time.sleep(0.02)
        ref_rows, ref_periods = _reference_rows(scen)  # meanwhile: the same cells without Ray
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "no running cell was seen"
    assert proc.returncode == 0, stderr[-3000:]
    doc = json.loads(stdout)  # stdout holds the JSON document only
    assert (doc["cells"], doc["run"], doc["skipped"]) == (2, 2, 0)
    cid, pid = killed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # that worker is gone ...
    timings = json.loads((out / "timings.json").read_text())["cells"]
    res = pd.read_parquet(out / "results.parquet")
    assert set(timings) == set(res["cell_id"]) and cid in timings
    assert timings[cid]["pid"] != pid  # ... and its cell was finished by another one
    assert res["cell_id"].is_unique and len(res) == 2
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(
        [f"{c}.parquet" for c in res["cell_id"]] + [f"{c}.periods.parquet" for c in res["cell_id"]]
    )
    # the numbers are those of an uninterrupted run (here: the cells run in this process)
    assert_frame_equal(
        res.drop(columns="scenario"), ref_rows[list(res.columns[1:])], check_exact=True, check_dtype=False
    )
    assert_frame_equal(pd.read_parquet(out / "periods.parquet"), ref_periods, check_exact=True, check_dtype=False)
