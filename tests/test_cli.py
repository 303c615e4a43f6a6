"""End-to-end tests of the `clv` command line (experiments/cli.py).

Most commands run in-process through typer's CliRunner (stdout and stderr are captured
separately); the checks that need a fresh interpreter (what `--help` imports, what really
reaches file descriptor 1) use a subprocess. Sizes are tiny so the file runs in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from cli_runner import clv, ok_json

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("make-data", "calibrate", "validate", "simulate")
HEAVY = ("torch", "ray", "ortools", "pandas", "scipy", "sklearn")

START = date(2022, 1, 3)  # make-data's default --start
WEEKS = 80
CAL_END = str(START + timedelta(weeks=60))  # 2023-02-27
HIST_END = str(START + timedelta(days=7 * WEEKS - 1))  # 2023-07-16, the last day of the history
HISTORY_FILES = (
    "transactions.csv",
    "customers.csv",
    "products.csv",
    "decisions.csv",
    "actions.yaml",
    "economics.yaml",
    "stages.yaml",
    "truth.json",
)
VALIDATE_KEYS = (
    "customers",
    "holdout_repeat_actual",
    "holdout_repeat_predicted",
    "aggregate_error",
    "per_customer_corr",
    "per_customer_mae",
    "active_auc",
    "holdout_value_error",
    "top_decile_value_share",
    "conditional_expectation",
)


def run_subprocess(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "experiments.cli", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "100"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


# ---- fixtures: one small pipeline shared by the module ------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bank") / "hist"
    doc = ok_json(clv("make-data", "--out", out, "--customers", 400, "--weeks", WEEKS, "--seed", 3, "--json"))
    return out, doc


@pytest.fixture(scope="module")
def history(made) -> Path:
    return made[0]


@pytest.fixture(scope="module")
def calibrated(history, tmp_path_factory) -> tuple[Path, dict]:
    world = tmp_path_factory.mktemp("world") / "W" / "world.json"
    doc = ok_json(clv("calibrate", history, "--calibration-end", CAL_END, "--out", world, "--json"))
    return world, doc


@pytest.fixture(scope="module")
def world_path(calibrated) -> Path:
    return calibrated[0]


# ---- help -----------------------------------------------------------------------------------


def test_top_level_help():
    r = clv("--help")
    assert r.exit_code == 0, r.stderr
    for cmd in COMMANDS:
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_help_has_example(cmd):
    r = clv(cmd, "--help")
    assert r.exit_code == 0, r.stderr
    assert "Example:" in r.stdout
    assert f"clv {cmd}" in r.stdout  # the example is a runnable command line


def test_help_in_fresh_process_is_light():
    """`clv --help` (and every COMMAND --help) must not import the heavy libraries."""
    code = (
        "import json, sys\n"
        "from experiments.cli import app\n"
        f"for args in [['--help']] + [[c, '--help'] for c in {list(COMMANDS)!r}]:\n"
        "    try:\n"
        "        app(args, prog_name='clv')\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (args, e.code)\n"
        f"heavy = [m for m in {list(HEAVY)!r} if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + json.dumps(heavy) + '\\n')\n"
    )
    p = run_subprocess(code=code)
    assert p.returncode == 0, p.stderr
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("HEAVY=")]
    assert line, p.stderr
    assert json.loads(line[-1][len("HEAVY=") :]) == []
    assert "Example:" in p.stdout


def test_help_subprocess_exit_zero():
    p = run_subprocess("--help")
    assert p.returncode == 0, p.stderr
    assert "Usage" in p.stdout


# ---- the pipeline ---------------------------------------------------------------------------


def test_make_data(made):
    out, doc = made
    assert doc["customers"] == 400 and doc["weeks"] == WEEKS and doc["seed"] == 3
    assert doc["start"] == str(START) and doc["end"] == HIST_END
    for f in HISTORY_FILES:
        assert (out / f).is_file(), f
    tx = pd.read_csv(out / "transactions.csv")
    assert len(tx) == doc["transactions"]
    assert {"customer_id", "date", "amount"} <= set(tx.columns)
    assert len(pd.read_csv(out / "decisions.csv")) == doc["decisions"]
    assert pd.read_csv(out / "customers.csv")["customer_id"].nunique() == 400


def test_make_data_same_seed_same_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        ok_json(clv("make-data", "--out", d, "--customers", 30, "--weeks", 20, "--seed", 5, "--json"))
    for f in ("transactions.csv", "decisions.csv", "products.csv", "customers.csv"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_calibrate(calibrated):
    world, doc = calibrated
    for k in ("world", "world_hash", "customers", "assumptions"):
        assert k in doc, k
    assert doc["customers"] == 400
    assert isinstance(doc["assumptions"], list) and doc["assumptions"]
    assert world.is_file()
    assert (world.parent / "world.book.parquet").is_file()
    raw = json.loads(world.read_text())
    assert raw["schema_version"] == 1 and raw["book_file"] == "world.book.parquet"
    from sim.world import WorldModel

    assert WorldModel.load(world).hash() == doc["world_hash"]
    book = pd.read_parquet(world.parent / "world.book.parquet")
    assert len(book) == doc["customers"]


def test_validate(history, tmp_path):
    out = tmp_path / "V"
    doc = ok_json(
        clv(
            "validate",
            history,
            "--calibration-end",
            CAL_END,
            "--holdout-end",
            HIST_END,
            "--replications",
            2,
            "--out",
            out,
            "--json",
        )
    )
    for k in VALIDATE_KEYS:
        assert k in doc, k
    assert doc["customers"] == 400
    # the actual holdout count is what the CSV says (the synthetic history has no same-day duplicates)
    tx = pd.read_csv(history / "transactions.csv", parse_dates=["date"])
    hold = tx[(tx["date"] > CAL_END) & (tx["date"] <= HIST_END)]
    assert doc["holdout_repeat_actual"] == len(hold)
    assert doc["holdout_repeat_predicted"] > 0
    assert isinstance(doc["conditional_expectation"], list) and doc["conditional_expectation"]
    assert (out / "validation.json").is_file()
    assert json.loads((out / "validation.json").read_text())["customers"] == 400
    assert (out / "tracking.png").read_bytes()[:4] == b"\x89PNG"
    cond = pd.read_csv(out / "conditional_expectation.csv")
    assert {"calibration_frequency", "customers", "actual_mean", "predicted_mean"} <= set(cond.columns)
    assert cond["customers"].sum() == 400


def _simulate(world: Path, out: Path, *extra: object) -> dict:
    return ok_json(clv("simulate", world, "--periods", 5, "--out", out, "--json", *extra))


def test_simulate_book(world_path, tmp_path):
    out = tmp_path / "S" / "sim.parquet"
    doc = _simulate(world_path, out, "--policy", "none", "--customers", 500, "--seed", 1)
    df = pd.read_parquet(out)
    assert len(df) == 500 and doc["customers"] == 500
    assert (tmp_path / "S" / "sim.periods.parquet").is_file()
    assert doc["contacts_per_customer"] == 0.0  # policy none never contacts
    assert "clv" in df.columns


def test_simulate_new_population(world_path, tmp_path):
    out = tmp_path / "new.parquet"
    doc = _simulate(world_path, out, "--population", "new", "--customers", 300, "--seed", 1)
    assert len(pd.read_parquet(out)) == 300 and doc["population"] == "new"


def test_simulate_same_seed_same_parquet(world_path, tmp_path):
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    for p, seed in ((a, 1), (b, 1), (c, 2)):
        _simulate(world_path, p, "--customers", 500, "--seed", seed)
    pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
    assert not pd.read_parquet(a).equals(pd.read_parquet(c))


def test_simulate_random_policy(world_path, tmp_path):
    out = tmp_path / "r.parquet"
    doc = _simulate(world_path, out, "--policy", "random", "--customers", 500, "--seed", 1)
    assert doc["policy"] == "random" and len(pd.read_parquet(out)) == 500
    assert doc["contacts_per_customer"] > 0


def test_json_stdout_in_real_process(history, tmp_path):
    """What reaches fd 1 of a real process is one JSON document, even when the fit warns."""
    world = tmp_path / "w.json"
    p = run_subprocess("calibrate", str(history), "--calibration-end", CAL_END, "--out", str(world), "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["world"] == str(world)
    assert world.is_file()


def test_validate_forecasts_a_holdout_in_the_future(history, tmp_path):
    """Calibrated on every day of the history, a holdout in the future is a pure forecast: the same
    document and tables, the actuals missing and every metric null."""
    tx = pd.read_csv(history / "transactions.csv", parse_dates=["date"])
    last = tx["date"].max().date()
    future = str(last + timedelta(days=91))
    out = tmp_path / "F"
    args = ("validate", history, "--calibration-end", str(last), "--holdout-end", future, "--replications", 2)
    doc = ok_json(clv(*args, "--out", out, "--json"))
    assert doc["forecast_only"] is True and doc["holdout_repeat_predicted"] > 0
    assert doc["holdout_repeat_actual"] is None and doc["per_customer_corr"] is None and doc["active_auc"] is None
    assert "skipped" in doc["early_warning"]
    assert all(r["actual_mean"] is None for r in doc["conditional_expectation"])
    pred = pd.read_parquet(out / "predictions.parquet")
    assert pred["actual"].isna().all() and (pred["predicted"] >= 0).all() and len(pred) == doc["customers"]
    # a holdout that ends after the history but starts inside it is refused: its empty days would count
    r = clv("validate", history, "--calibration-end", CAL_END, "--holdout-end", future)
    assert r.exit_code == 2 and "forecast the future from --calibration-end" in r.stderr


def test_validate_cdnow():
    """The bundled CDNOW benchmark (Fader-Hardie split): ~3 s, so not marked slow."""
    doc = ok_json(
        clv(
            "validate",
            "--dataset",
            "cdnow",
            "--calibration-end",
            "1997-09-30",
            "--holdout-end",
            "1998-06-30",
            "--replications",
            4,
            "--json",
        )
    )
    assert doc["customers"] == 23570
    assert doc["holdout_repeat_actual"] == 19684


# ---- bad input: one line on stderr, exit 2, nothing written ---------------------------------

NEG_ROW = 12  # spreadsheet row (header is row 1) that gets the negative amount
PROP_ROW = 4  # spreadsheet row of decisions.csv that gets propensity 1.5


def _edit_csv(src: Path, dst_dir: Path, file: str, row: int, column: str, value: str) -> Path:
    """Copy a history folder, setting `column` of spreadsheet row `row` of `file` to `value`."""
    shutil.copytree(src, dst_dir)
    lines = (dst_dir / file).read_text().splitlines()
    col = lines[0].split(",").index(column)
    cells = lines[row - 1].split(",")
    cells[col] = value
    lines[row - 1] = ",".join(cells)
    (dst_dir / file).write_text("\n".join(lines) + "\n")
    return dst_dir


def negative_amount(tmp, hist, world):
    bad = _edit_csv(hist, tmp / "bad", "transactions.csv", NEG_ROW, "amount", "-12.50")
    out = tmp / "W" / "world.json"
    return ["calibrate", bad, "--calibration-end", CAL_END, "--out", out], [out, out.parent]


def propensity_above_one(tmp, hist, world):
    bad = _edit_csv(hist, tmp / "bad", "decisions.csv", PROP_ROW, "propensity", "1.5")
    out = tmp / "W" / "world.json"
    return ["calibrate", bad, "--calibration-end", CAL_END, "--out", out], [out, out.parent]


def missing_folder(tmp, hist, world):
    out = tmp / "W" / "world.json"
    return ["calibrate", tmp / "no_such_history", "--calibration-end", CAL_END, "--out", out], [out.parent]


def unknown_dataset(tmp, hist, world):
    out = tmp / "W" / "world.json"
    return ["calibrate", "--dataset", "nosuchdata", "--calibration-end", CAL_END, "--out", out], [out.parent]


def folder_and_dataset(tmp, hist, world):
    out = tmp / "W" / "world.json"
    return ["calibrate", hist, "--dataset", "cdnow", "--calibration-end", CAL_END, "--out", out], [out.parent]


def bad_calibration_end(tmp, hist, world):
    out = tmp / "W" / "world.json"
    return ["calibrate", hist, "--calibration-end", "2023-13-45", "--out", out], [out.parent]


def empty_calibration_end(tmp, hist, world):
    out = tmp / "W" / "world.json"
    return ["calibrate", hist, "--calibration-end", "", "--out", out], [out.parent]


def out_under_a_file(tmp, hist, world):
    blocker = tmp / "blocker.txt"
    blocker.write_text("not a folder\n")
    out = blocker / "world.json"
    return ["calibrate", hist, "--calibration-end", CAL_END, "--out", out], [out]


def holdout_before_calibration(tmp, hist, world):
    out = tmp / "V"
    return [
        "validate",
        hist,
        "--calibration-end",
        CAL_END,
        "--holdout-end",
        "2023-01-01",
        "--replications",
        2,
        "--out",
        out,
    ], [out]


def empty_holdout_end(tmp, hist, world):
    out = tmp / "V"
    return ["validate", hist, "--calibration-end", CAL_END, "--holdout-end", "", "--out", out], [out]


def holdout_past_history(tmp, hist, world):
    out = tmp / "V"
    return ["validate", hist, "--calibration-end", CAL_END, "--holdout-end", "2026-01-01", "--out", out], [out]


def _sim_args(tmp, world, *extra):
    out = tmp / "S" / "sim.parquet"
    return (
        ["simulate", world, "--customers", 20, "--periods", 2, "--out", out, *extra],
        [out, out.with_name("sim.periods.parquet"), out.parent],
    )


def missing_world(tmp, hist, world):
    return _sim_args(tmp, tmp / "nowhere" / "world.json")


def world_is_a_folder(tmp, hist, world):
    return _sim_args(tmp, world.parent)


def world_is_the_book(tmp, hist, world):
    return _sim_args(tmp, world.parent / "world.book.parquet")


def nonsense_policy(tmp, hist, world):
    return _sim_args(tmp, world, "--policy", "nonsense")


def bad_population(tmp, hist, world):
    return _sim_args(tmp, world, "--population", "martians")


def new_population_without_size(tmp, hist, world):
    out = tmp / "S" / "sim.parquet"
    return ["simulate", world, "--population", "new", "--periods", 2, "--out", out], [out.parent]


def bad_start(tmp, hist, world):
    out = tmp / "D"
    return ["make-data", "--out", out, "--customers", 20, "--weeks", 20, "--start", "someday"], [out]


BAD_INPUT: list = [
    ("negative amount", negative_amount, 2, ["transactions.csv", f"row {NEG_ROW}", "amount"]),
    ("propensity 1.5", propensity_above_one, 2, ["decisions.csv", f"row {PROP_ROW}", "propensity"]),
    ("missing folder", missing_folder, 2, ["no_such_history", "not found"]),
    ("unknown dataset", unknown_dataset, 2, ["nosuchdata", "cdnow"]),
    ("folder and dataset", folder_and_dataset, 2, ["exactly one"]),
    ("bad calibration end", bad_calibration_end, 2, ["--calibration-end", "2023-13-45"]),
    ("empty calibration end", empty_calibration_end, 2, ["--calibration-end", "not a date"]),
    ("out under a file", out_under_a_file, 2, ["blocker.txt"]),
    ("holdout before calibration", holdout_before_calibration, 2, ["--holdout-end", "after --calibration-end"]),
    ("empty holdout end", empty_holdout_end, 2, ["--holdout-end", "not a date"]),
    ("holdout past history", holdout_past_history, 2, ["--holdout-end", "past the end"]),
    ("missing world", missing_world, 2, ["world.json", "clv calibrate"]),
    ("world is a folder", world_is_a_folder, 2, ["is a folder"]),
    ("world is the book", world_is_the_book, 2, ["world.book.parquet", "not a world JSON"]),
    ("nonsense policy", nonsense_policy, 2, ["nonsense"]),
    ("bad population", bad_population, 2, ["--population", "martians"]),
    ("new population without size", new_population_without_size, 2, ["--customers"]),
    ("bad make-data start", bad_start, 2, ["--start", "someday"]),
]


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
@pytest.mark.parametrize(
    "desc,setup,code,needles", BAD_INPUT, ids=[(c.values if hasattr(c, "values") else c)[0] for c in BAD_INPUT]
)
def test_bad_input(desc, setup, code, needles, as_json, history, world_path, tmp_path):
    args, must_not_exist = setup(tmp_path, history, world_path)
    # numeric RuntimeWarnings from a fit that runs before the failure (the "out under a file" case)
    # are not the CLI's message; record them so they never reach the captured stderr, whatever
    # pytest's own warning capture is set to
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        r = clv(*args, *(["--json"] if as_json else []))
    assert r.exit_code == code, (desc, r.exit_code, r.stderr, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:"), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert r.stdout == ""
    for p in must_not_exist:
        assert not p.exists(), f"{p} was written"
