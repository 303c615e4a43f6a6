"""End-to-end tests of `clv allocate` and `clv frontier` (experiments/cli.py) on small value tables.

Run in-process through typer's CliRunner (stdout and stderr apart); the checks of what reaches
file descriptor 1 and what `--help` imports use a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import clv, ok_json

from optimizer.instances import bank_like_table

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUMMARY_KEYS = ("objective", "bound", "gap", "spend", "usage", "shadow_prices", "assigned_customers", "seconds")
HEAVY = ("torch", "ray", "ortools", "pandas", "scipy", "sklearn")


def one_error_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    return lines[0]


def run_subprocess(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "experiments.cli", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "100"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def values_file(tmp_path_factory) -> Path:
    """1,000 bank-like customers x 10 actions as a Parquet value table."""
    path = tmp_path_factory.mktemp("values") / "values.parquet"
    bank_like_table(1000, seed=2).to_frame().to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("values_csv") / "values.csv"
    bank_like_table(300, seed=1).to_frame().to_csv(path, index=False)
    return path


# ---- allocate -------------------------------------------------------------------------------


def test_allocate_json_and_plan(values_file, tmp_path):
    out = tmp_path / "plan.parquet"
    doc = ok_json(
        clv(
            "allocate",
            values_file,
            "--budget",
            2000,
            "--capacity",
            "channel:rm=40",
            "--min-coverage",
            "segment:small=0.9",
            "--max-share",
            "segment:affluent=0.25",
            "--method",
            "exact",
            "--out",
            out,
            "--json",
        )
    )
    for key in SUMMARY_KEYS:
        assert key in doc, key
    assert doc["spend"] <= 2000 + 1e-6
    assert doc["objective"] <= doc["bound"] + 1e-6 and 0 <= doc["gap"] <= 1e-6
    assert doc["customers"] == 1000 and doc["out"] == str(out)
    names = ["budget", "capacity channel:rm", "min-coverage segment:small", "max-share segment:affluent"]
    assert [u["constraint"] for u in doc["usage"]] == names
    assert [s["constraint"] for s in doc["shadow_prices"]] == names
    usage = {u["constraint"]: u for u in doc["usage"]}
    assert [usage[n]["limit"] for n in names] == [2000, 40, 0.9, 0.25]
    assert usage["capacity channel:rm"]["used"] <= 40
    assert usage["min-coverage segment:small"]["covered"] >= usage["min-coverage segment:small"]["required"]
    assert usage["max-share segment:affluent"]["used"] <= 0.25 + 1e-9
    assert all(isinstance(s["shadow_price"], float) for s in doc["shadow_prices"])
    assert doc["shadow_prices"][0]["shadow_price"] > 0  # the budget binds at 2,000

    plan = pd.read_parquet(out)
    assert len(plan) == 1000 and plan["customer_id"].is_unique
    assigned = plan[plan["action"] != "none"]
    assert len(assigned) == doc["assigned_customers"]
    assert assigned["cost"].sum() == pytest.approx(doc["spend"])
    assert plan["value"].sum() == pytest.approx(doc["objective"])
    assert (assigned["channel"] == "rm").sum() <= 40
    assert {"priced_cost", "runner_up", "margin", "priced_best"} <= set(plan.columns)


def test_allocate_reads_csv_and_prints_a_human_summary(small_csv):
    r = clv("allocate", small_csv, "--budget", 300, "--capacity", "channel:branch=5")
    assert r.exit_code == 0, r.stderr
    assert "value" in r.stdout and "gap" in r.stdout and "capacity channel:branch" in r.stdout
    doc = ok_json(
        clv(
            "allocate", small_csv, "--budget", 300, "--capacity", "channel:branch=5", "--method", "lagrangian", "--json"
        )
    )
    assert doc["method"] == "lagrangian" and doc["spend"] <= 300 + 1e-6
    assert doc["gap"] <= 0.05 and doc["bound"] >= doc["objective"]


def test_allocate_infeasible_budget(values_file, tmp_path):
    out = tmp_path / "plan.parquet"
    args = ("allocate", values_file, "--budget", 1, "--min-coverage", "segment:small=0.9", "--out", out)
    line = one_error_line(clv(*args), 3)
    assert "infeasible" in line and "--budget 1" in line and "--min-coverage segment:small=0.9" in line
    assert "smallest budget" in line
    r = clv(*args, "--json")
    one_error_line(r, 3)
    doc = json.loads(r.stdout)
    assert doc["status"] == "infeasible" and doc["feasible"] is False
    assert doc["conflicts"] == ["budget", "min-coverage segment:small"]
    assert doc["smallest_budget"] > 1 and f"{doc['smallest_budget']:,.2f}" in doc["message"]
    assert not out.exists()
    # the reported smallest budget is enough
    ok = ok_json(
        clv(
            "allocate", values_file, "--budget", doc["smallest_budget"], "--min-coverage", "segment:small=0.9", "--json"
        )
    )
    assert ok["spend"] <= doc["smallest_budget"] + 1e-9


def test_allocate_infeasible_capacity(values_file):
    caps = [a for c in ("branch", "email", "push", "rm", "sms") for a in ("--capacity", f"channel:{c}=2")]
    r = clv("allocate", values_file, "--budget", 1e6, *caps, "--min-coverage", "segment:small=0.5", "--json")
    line = one_error_line(r, 3)
    assert "no budget would do" in line and "--capacity channel:rm=2" in line and "--min-coverage" in line
    doc = json.loads(r.stdout)
    assert doc["status"] == "infeasible" and doc["smallest_budget"] is None
    assert set(doc["conflicts"]) == {f"capacity channel:{c}" for c in ("branch", "email", "push", "rm", "sms")} | {
        "min-coverage segment:small"
    }


def test_allocate_infeasible_share_and_coverage(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("customer_id,segment,action,channel,value,cost\nu0,s0,a,c,1,1\n")
    r = clv(
        "allocate", path, "--budget", 10, "--min-coverage", "segment:s0=1", "--max-share", "segment:s0=0.5", "--json"
    )
    line = one_error_line(r, 3)
    assert "--max-share segment:s0=0.5" in line
    assert json.loads(r.stdout)["status"] == "infeasible"


def _missing_file(tmp, values):
    return ["allocate", tmp / "nope.parquet", "--budget", 10], "value table not found"


def _bad_capacity(tmp, values):
    return ["allocate", values, "--budget", 10, "--capacity", "rm=5"], "expected SCOPE:NAME=LIMIT"


def _unknown_channel(tmp, values):
    return ["allocate", values, "--budget", 10, "--capacity", "channel:fax=5"], "no channel 'fax'"


def _share_above_one(tmp, values):
    return ["allocate", values, "--budget", 10, "--max-share", "segment:mass=1.5"], "between 0 and 1"


def _negative_budget(tmp, values):
    return ["allocate", values, "--budget", -5], "must be a finite number >= 0"


def _csv_out(tmp, values):
    return ["allocate", values, "--budget", 10, "--out", tmp / "plan.csv"], "Parquet"


def _bad_value_row(tmp, values):
    path = tmp / "bad.csv"
    path.write_text("customer_id,segment,action,channel,value,cost\nu0,s,a,c,1,1\nu1,s,a,c,2,-3\n")
    return ["allocate", path, "--budget", 10], "row 3, column 'cost'"


def _unknown_method(tmp, values):
    return ["allocate", values, "--budget", 10, "--method", "magic"], "--method"


def _lp_solver(tmp, values):
    return ["allocate", values, "--budget", 10, "--method", "exact", "--solver", "GLOP"], "--solver"


def _frontier_bad_budgets(tmp, values):
    return ["frontier", values, "--budgets", "10,lots", "--plot", tmp / "f.png"], "--budgets"


def _frontier_jpg(tmp, values):
    return ["frontier", values, "--budgets", "10,20", "--plot", tmp / "f.jpg"], ".png"


def _frontier_negative_budget(tmp, values):
    return ["frontier", values, "--budgets", "10,-20", "--plot", tmp / "f.png"], ">= 0"


BAD_INPUT = [
    _missing_file,
    _bad_capacity,
    _unknown_channel,
    _share_above_one,
    _negative_budget,
    _csv_out,
    _bad_value_row,
    _unknown_method,
    _lp_solver,
    _frontier_bad_budgets,
    _frontier_jpg,
    _frontier_negative_budget,
]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("setup", BAD_INPUT, ids=[f.__name__.strip("_") for f in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(setup, as_json, values_file, tmp_path):
    args, needle = setup(tmp_path, values_file)
    r = clv(*args, *(["--json"] if as_json else []))
    line = one_error_line(r, 2)
    assert needle in line, line
    assert r.stdout == ""
    assert not any(p.name.startswith(("plan", "f.")) for p in tmp_path.iterdir()), "an output was written"


# ---- frontier -------------------------------------------------------------------------------


def test_frontier_json_and_png(values_file, tmp_path):
    png = tmp_path / "front.png"
    doc = ok_json(
        clv(
            "frontier",
            values_file,
            "--budgets",
            "3000,200,1000",
            "--capacity",
            "channel:rm=40",
            "--min-coverage",
            "segment:small=0.5",
            "--json",
            "--plot",
            png,
        )
    )
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 5000
    assert doc["plot"] == str(png) and doc["budgets"] == [200, 1000, 3000]
    pts = doc["points"]
    assert [p["budget"] for p in pts] == [200, 1000, 3000]
    for p in pts:
        for key in ("budget", "objective", "marginal_value", "shadow_prices"):
            assert key in p, key
        assert p["status"] in ("optimal", "feasible") and p["spend"] <= p["budget"] + 1e-6
        assert {s["constraint"] for s in p["shadow_prices"]} == {
            "budget",
            "capacity channel:rm",
            "min-coverage segment:small",
        }
    assert pts[0]["marginal_value"] is None
    values = [p["objective"] for p in pts]
    assert values == sorted(values)
    for prev, p in zip(pts, pts[1:]):
        assert p["marginal_value"] == pytest.approx(
            (p["objective"] - prev["objective"]) / (p["budget"] - prev["budget"])
        )
        assert p["marginal_value"] >= 0


def test_frontier_reports_budgets_below_what_coverage_needs(values_file, tmp_path):
    png = tmp_path / "front.png"
    doc = ok_json(
        clv(
            "frontier",
            values_file,
            "--budgets",
            "0.5,2000",
            "--min-coverage",
            "segment:small=0.9",
            "--json",
            "--plot",
            png,
        )
    )
    low, high = doc["points"]
    assert doc["smallest_budget"] > 0.5
    assert low["status"] == "infeasible" and low["objective"] is None and "smallest budget" in low["message"]
    assert high["objective"] > 0 and high["marginal_value"] is None
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    r = clv("frontier", values_file, "--budgets", "0.5,2000", "--min-coverage", "segment:small=0.9", "--plot", png)
    assert r.exit_code == 0 and "infeasible" in r.stdout


def test_frontier_infeasible_for_every_budget_exits_3(values_file, tmp_path):
    png = tmp_path / "front.png"
    r = clv(
        "frontier",
        values_file,
        "--budgets",
        "100,200",
        "--capacity",
        "action:rm_call_wealth=0",
        "--capacity",
        "channel:branch=0",
        "--capacity",
        "channel:email=0",
        "--capacity",
        "channel:push=0",
        "--capacity",
        "channel:sms=0",
        "--capacity",
        "action:rm_call_retention=0",
        "--min-coverage",
        "segment:small=0.1",
        "--json",
        "--plot",
        png,
    )
    line = one_error_line(r, 3)
    assert "no budget would do" in line
    assert json.loads(r.stdout)["smallest_budget"] is None
    assert not png.exists()


# ---- help and stdout hygiene -------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["allocate", "frontier"])
def test_help_shows_an_example(cmd):
    r = clv(cmd, "--help")
    assert r.exit_code == 0, r.stderr
    assert "Example:" in r.stdout and f"clv {cmd} values.parquet" in r.stdout
    for option in ("--capacity", "--min-coverage", "--max-share", "--json"):
        assert option in r.stdout


def test_help_in_fresh_process_is_light():
    code = (
        "import json, sys\n"
        "from experiments.cli import app\n"
        "for cmd in ('allocate', 'frontier'):\n"
        "    try:\n"
        "        app([cmd, '--help'], prog_name='clv')\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (cmd, e.code)\n"
        f"sys.stderr.write('HEAVY=' + json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]) + '\\n')\n"
    )
    p = run_subprocess(code=code)
    assert p.returncode == 0, p.stderr
    assert json.loads([ln for ln in p.stderr.splitlines() if ln.startswith("HEAVY=")][-1][6:]) == []
    assert p.stdout.count("Example:") == 2


@pytest.mark.parametrize(
    "solver",
    [
        "SCIP",
        "CP_SAT",
        "HIGHS",
    ],
)
def test_json_stdout_is_one_document_in_a_real_process(small_csv, solver):
    p = run_subprocess("allocate", str(small_csv), "--budget", "300", "--method", "exact", "--solver", solver, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["solver"] == solver and doc["status"] == "optimal"


def test_frontier_writes_a_png_only_where_asked(values_file, tmp_path):
    """Without --plot nothing is written (a run's frontier.png beside the table was overwritten)."""
    import shutil

    table = tmp_path / "values.parquet"
    shutil.copy(values_file, table)
    (tmp_path / "frontier.png").write_bytes(b"the run's own")
    doc = ok_json(clv("frontier", table, "--budgets", "200,1000", "--json"))
    assert doc["plot"] is None and (tmp_path / "frontier.png").read_bytes() == b"the run's own"


@pytest.mark.parametrize(
    "ids, fmt, want_int",
    [([101, 102], "parquet", True), (["101", "102"], "csv", True), (["00123", "124"], "csv", False)],
)
def test_plans_keep_the_users_id_type(tmp_path, ids, fmt, want_int):
    """Integer customer ids come back as integers (a join with the user's own table works); text
    that only looks numeric with a leading zero stays text."""
    df = pd.DataFrame(
        {
            "customer_id": [ids[0], ids[0], ids[1], ids[1]],
            "segment": ["a", "a", "b", "b"],
            "action": ["email", "sms", "email", "sms"],
            "channel": ["email", "sms", "email", "sms"],
            "value": [3.0, 1.0, 2.0, 5.0],
            "cost": [1.0, 1.0, 1.0, 1.0],
        }
    )
    src = tmp_path / f"values.{fmt}"
    df.to_parquet(src, index=False) if fmt == "parquet" else df.to_csv(src, index=False)
    out = tmp_path / "plan.parquet"
    ok_json(clv("allocate", src, "--budget", "1", "--out", out, "--json"))
    plan = pd.read_parquet(out)
    assert pd.api.types.is_integer_dtype(plan["customer_id"]) == want_int
    assert sorted(plan["customer_id"].astype(str)) == sorted(str(i) for i in ids)
