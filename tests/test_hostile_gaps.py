"""Issue 18's gaps found by the audit in docs/reliability.md, each as a table of (hostile input,
exit status, the line): memory exhaustion under a real address-space limit, dates after the
history for `clv run` and `clv validate`, and a `clv train` folder whose card is good but whose
model.zip is missing or damaged."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_kills import TINY_RUN

from experiments.cli.main import run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# ---- memory exhaustion ---------------------------------------------------------------------------
# clv simulate resamples --customers from the book in one array: 10**9 customers is 7.45 GiB of
# int64, far past a 1.5 GB address space, while importing what simulate needs (numpy, pandas,
# pyarrow) fits in it (about 1 GB measured: a 1,000 MB limit still reaches the allocation)
AS_LIMIT = 1_536 * 2**20


def _limit_address_space():  # runs in the child between fork and exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


@pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(__import__("resource"), "RLIMIT_AS"),
    reason="RLIMIT_AS is enforced on Linux only (macOS accepts it and ignores it)",
)
def test_memory_exhaustion_under_a_real_limit_is_one_line_saying_how_much(calibrated_world, tmp_path):
    out = tmp_path / "sim.parquet"
    argv = [str(calibrated_world[0]), "--customers", "1000000000", "--periods", "1", "--workers", "0"]
    p = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "simulate", *argv, "--out", str(out)],
        preexec_fn=_limit_address_space,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "CLV_DEBUG": "0"},  # one BLAS thread: no stack per core
        timeout=120,
    )
    line = _one_line(p.stderr)
    assert p.returncode == 1, p.stderr
    assert line.startswith("error: out of memory (one allocation of 7.45 GiB, an array of shape (1000000000,))")
    assert "fewer customers" in line and p.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nor a temp file: nothing was half-written


@pytest.mark.parametrize(
    "message, words",
    [
        ("Unable to allocate 7.45 GiB for an array with shape (1000000000,) and data type int64", "7.45 GiB"),
        ("malloc of size 8000000000 failed", "one allocation of 7.45 GiB"),  # pyarrow's MemoryError
        ("", None),  # a bare MemoryError: the line says what to do, no size
    ],
)
def test_the_memory_line_takes_the_size_from_the_errors_own_words(monkeypatch, tmp_path, capsys, message, words):
    import sim.synthetic

    def boom(*a, **k):
        raise MemoryError(message)

    monkeypatch.setattr(sim.synthetic, "write_bank_history", boom)
    assert run(["make-data", "--customers", "50", "--weeks", "30", "--out", str(tmp_path / "h")]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: out of memory") and "fewer customers" in line
    assert (words in line) if words else line.startswith("error: out of memory: ")


# ---- dates after the history ---------------------------------------------------------------------
# examples/my_bank runs from 2023-01-03 to 2024-12-29; TINY_RUN: the fastest whole run (tests/test_kills.py)
OUTSIDE = "is outside the history (2023-01-03 to 2024-12-29); pick a day inside it"


@pytest.mark.parametrize(
    "dates, line",
    [
        (["calibration_end=2030-01-01", "holdout_end=null", "ope=null"], f"calibration_end: 2030-01-01 {OUTSIDE}"),
        (["calibration_end=2024-12-30", "holdout_end=null", "ope=null"], f"calibration_end: 2024-12-30 {OUTSIDE}"),
        (["calibration_end=2025-01-15", "holdout_end=2025-06-30"], f"calibration_end: 2025-01-15 {OUTSIDE}"),
        (["calibration_end=2022-06-30"], f"calibration_end: 2022-06-30 {OUTSIDE}"),
        (
            ["holdout_end=2025-06-30"],
            "holdout_end: 2025-06-30 is past the last transaction (2024-12-29); pick a day up to it, or null for no holdout",
        ),
    ],
)
def test_clv_run_refuses_dates_outside_the_history_before_writing(tmp_path, capsys, dates, line):
    out = tmp_path / "out"
    sets = [a for s in [*TINY_RUN, *dates] for a in ("--set", s)]
    code = run(["run", str(EXAMPLES / "my_bank.yaml"), "--out", str(out), *sets, "--workers", "0"])
    got = _one_line(capsys.readouterr().err)
    assert code == 2 and got == f"error: {EXAMPLES / 'my_bank.yaml'}: {line}", got
    assert not out.exists()


@pytest.mark.parametrize("calibration_end", ["2024-12-30", "2030-01-01"])
def test_clv_validate_refuses_a_calibration_end_after_the_history(tmp_path, capsys, calibration_end):
    out = tmp_path / "v"
    argv = ["validate", str(EXAMPLES / "my_bank"), "--calibration-end", calibration_end, "--holdout-end", "2031-01-01"]
    assert run([*argv, "--replications", "1", "--out", str(out)]) == 2
    got = _one_line(capsys.readouterr().err)
    assert got.startswith(f"error: --calibration-end {calibration_end}: is after the last transaction (2024-12-29)")
    assert not out.exists()


def test_clv_validate_from_the_last_day_is_a_pure_forecast(tmp_path, capsys):
    """README: with D1 the history's last day and D2 after it, the same columns, actuals missing."""
    code = run(
        ["validate", str(EXAMPLES / "my_bank"), "--calibration-end", "2024-12-29", "--holdout-end", "2025-03-01"]
        + ["--replications", "1", "--json"]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["forecast_only"] is True
    assert doc["holdout_repeat_actual"] is None and doc["holdout_repeat_predicted"] > 0


# ---- a `clv train` folder with a good card and a bad model.zip -------------------------------------
@pytest.fixture(scope="module")
def trained(calibrated_world, tmp_path_factory):
    """(world, folder) of a real `clv train` PPO agent, trained as little as makes one (64 steps, no
    warm start: about a second of training on top of importing SB3)."""
    world = str(calibrated_world[0])
    folder = tmp_path_factory.mktemp("agent") / "ppo"
    tiny = ["warm_start=''", "n_envs=8", "n_steps=8", "batch_size=64", "n_epochs=1"]
    sets = [a for s in tiny for a in ("--set", s)]
    assert run(["train", world, "--algo", "ppo", "--steps", "64", "--seed", "0", *sets, "--out", str(folder)]) == 0
    assert {p.name for p in folder.iterdir()} == {"card.json", "model.zip"}
    return world, folder


def _rezip(drop: str | None = None, member: str | None = None, data: bytes = b""):
    """An edit that rewrites model.zip without `drop`, or with `member`'s bytes replaced by `data`."""

    def edit(path: Path) -> None:
        good = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(path, "w") as zout:
            for name in zin.namelist():
                if name != drop:
                    zout.writestr(name, data if name == member else zin.read(name))

    return edit


def _cut_member(member: str):
    def edit(path: Path) -> None:
        with zipfile.ZipFile(path) as z:
            half = z.read(member)[: len(z.read(member)) // 2]
        _rezip(member=member, data=half)(path)

    return edit


def _as_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


RETRAIN = "retrain with `clv train`"
DAMAGES = [
    ("missing", Path.unlink, "model.zip: is missing (its card.json is there"),
    ("a directory", _as_directory, "model.zip: is not a file"),
    ("empty", lambda p: p.write_bytes(b""), "not a model.zip written by `clv train` (File is not a zip file)"),
    ("not a zip", lambda p: p.write_text("hello"), "not a model.zip written by `clv train` (File is not a zip file)"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a model.zip written by"),
    ("without data", _rezip(drop="data"), "There is no item named 'data'"),
    ("without policy.pth", _rezip(drop="policy.pth"), "the zip lacks policy.pth"),
    ("without the optimizer", _rezip(drop="policy.optimizer.pth"), "the zip lacks policy.optimizer.pth"),
    ("policy.pth not torch", _rezip(member="policy.pth", data=b"garbage"), "cannot load the model's weights"),
    ("policy.pth cut short", _cut_member("policy.pth"), "cannot load the model's weights"),
    ("data not JSON", _rezip(member="data", data=b"{bad"), "not a model.zip written by `clv train` (Expecting"),
]
COMMANDS = {
    "evaluate": lambda w, f, o: (
        ["evaluate", w, "--policy", f, "--customers", "50", "--periods", "2", "--seeds", "2"] + ["--out", o]
    ),
    "plan": lambda w, f, o: ["plan", w, "--policy", f, "--budget", "10", "--horizon", "2", "--seeds", "2", "--out", o],
    "score": lambda w, f, o: ["score", w, "--policy", f, "--horizon", "2", "--draws", "2", "--out", o + ".parquet"],
}


# every damage through `clv evaluate`; `clv plan` and `clv score` load a policy through the same
# policies.registry.resolve_policy, so three damages each (the card's check, the zip's, torch's)
CASES = [("evaluate", *d) for d in DAMAGES] + [
    (command, *d)
    for command in ("plan", "score")
    for d in DAMAGES
    if d[0] in ("missing", "truncated", "policy.pth not torch")
]


@pytest.mark.parametrize("command, damage, edit, message", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_train_folder_with_a_bad_model_zip_is_one_line(trained, tmp_path, capsys, command, damage, edit, message):
    import shutil

    world, good = trained
    folder = tmp_path / "ppo"
    shutil.copytree(good, folder)
    edit(folder / "model.zip")
    out = tmp_path / "out"
    code = run([str(a) for a in COMMANDS[command](world, str(folder), str(out))])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"error: {folder / 'model.zip'}: ") and message in line, line
    assert ("copy the model.zip" in line or RETRAIN in line) and len(line) < 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ppo"]  # no output, not even a temp file


def test_the_trained_folder_itself_loads(trained, tmp_path):
    """The fixture's folder is good: each damage above is what makes its line (evaluate's command
    line as above; score's on a whole book takes 25 s)."""
    world, folder = trained
    assert run(COMMANDS["evaluate"](world, str(folder), str(tmp_path / "e"))) == 0
    assert any((tmp_path / "e").iterdir())
