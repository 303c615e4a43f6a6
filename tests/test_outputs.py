"""Nothing half-written, nothing of the user's overwritten (issue 18): the temp files a killed writer
left are removed by the next write into their folder (and nobody else's are); a `clv run` whose
config fails against the history or the calibrated world writes nothing (a table of late config
errors); no command's output lands on one of its inputs (a table over every command with an
output option)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import clv

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# ---- temp files of killed writers ----------------------------------------------------------------

WRITER = """
import sys, time
from sim.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    print(tmp.name, flush=True)
    time.sleep(120)
"""


def _writer(target: Path) -> tuple[subprocess.Popen, str]:
    """A process half-way through an atomic write of `target`: (process, its temp file's name)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    return proc, proc.stdout.readline().strip()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_writers_temp_file_is_removed_by_the_next_write_and_no_one_elses(tmp_path):
    from sim.atomic import HOST, atomic_write_json

    folder = tmp_path / "out"
    folder.mkdir()
    killed, killed_tmp = _writer(folder / "world.json")
    live, live_tmp = _writer(folder / "plan.json")
    try:
        assert killed_tmp.startswith(f".world.json.{HOST}-{killed.pid}.") and (folder / killed_tmp).is_file()
        os.killpg(killed.pid, signal.SIGKILL)  # a real kill -9, half-way through the write
        killed.wait()
        dead = _dead_pid()
        old = time.time() - 7200
        made = {
            f".model.zip.{HOST}-{dead}.abcd1234.tmp.zip": None,  # SB3 appends .zip to the temp name
            f".history.{HOST}-{dead}.k2j4h5g6.tmp": "dir",  # a generated history staged by a killed run
            ".report.html.0123abcd.tmp": old,  # an older clv-engine's temp name, untouched for two hours
            ".scores.parquet.q1w2e3r4.tmp": None,  # ... the same, fresh: its writer may still run
            f".cell.parquet.ffffff-{dead}.zxcvbnm1.tmp": None,  # another host's (same pid): fresh, kept
            f".cell2.parquet.ffffff-{dead}.zxcvbnm2.tmp": old,  # another host's, stale: removed
            ".notes.tmp": None,  # the user's
            "my.12345678.tmp": None,
        }
        for name, kind in made.items():
            if kind == "dir":
                (folder / name).mkdir()
                (folder / name / "transactions.csv").write_text("half")
            else:
                (folder / name).write_text("x")
                if kind is not None:
                    os.utime(folder / name, (kind, kind))
        atomic_write_json(folder / "run.json", {"ok": True})  # any write into the folder sweeps it
        left = {p.name for p in folder.iterdir()}
        assert killed_tmp not in left and live_tmp in left  # the live writer's half file is not touched
        assert left == {
            "run.json",
            live_tmp,
            ".scores.parquet.q1w2e3r4.tmp",
            f".cell.parquet.ffffff-{dead}.zxcvbnm1.tmp",
            ".notes.tmp",
            "my.12345678.tmp",
        }
        assert json.loads((folder / "run.json").read_text()) == {"ok": True}
    finally:
        for p in (killed, live):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


# ---- config errors found against the history or the calibrated world: nothing written ------------

FAST = ["policy=greedy_uplift", "validation.replications=1", "plan.horizon=2", "evaluation.seeds=2"]
NO_HOLDOUT = ["holdout_end=null", "ope=null"]


def _sets(items):
    return [a for item in items for a in ("--set", item)]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


LATE = [
    (NO_HOLDOUT + ['constraints.max_share=["segment:nosuch=0.5"]'], "constraints.max_share[0]: no segment 'nosuch'"),
    (NO_HOLDOUT + ['constraints.capacity=["channel:fax=5"]'], "constraints.capacity[0]: no channel 'fax'"),
    (
        NO_HOLDOUT + ['experiment={control_share: [0.2, "segment:nosuch=0.5"]}'],
        "experiment.control_share: segment:nosuch=0.5: no segment 'nosuch'",
    ),
    (NO_HOLDOUT + ["experiment={control_share: 0.0001}"], "experiment.control_share: 0.0001: leaves no control"),
    (NO_HOLDOUT + ["policy=EMPTY"], "policy: EMPTY: a folder without card.json or model.zip"),
    (NO_HOLDOUT + ["calibration.segment_by=nosuch"], "calibration.segment_by: 'nosuch': customers.csv has no such"),
    (
        ["calibration_end=2024-12-24", "holdout_end=2024-12-29"],
        "ope: HIST: no decisions between 2024-12-25 and 2024-12-30",
    ),
    (["holdout_end=null"], "ope: offline evaluation judges the plan on the logged decisions of the holdout"),
]


@pytest.mark.parametrize("sets, message", LATE, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(LATE)])
def test_a_config_error_found_after_calibration_writes_nothing(tmp_path, sets, message):
    """A config that fails against the history or the calibrated world is one line naming the
    config file and key, and OUT is left as it was: an earlier run's files keep their bytes, no
    world, book, validation/ or RUN_IN_PROGRESS appear."""
    empty = tmp_path / "empty_policy"
    empty.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    for f in ("run.json", "world.json", "report.html", "contacts.parquet"):
        (out / f).write_text(f"the earlier run's {f}")
    (out / "policy").mkdir()
    (out / "policy" / "card.json").write_text("{}")
    before = _snapshot(out)
    config = EXAMPLES / "my_bank.yaml"
    items = [s.replace("EMPTY", str(empty)) for s in FAST + sets]
    res = clv("run", config, "--out", out, "--workers", "0", *_sets(items))
    err = res.stderr.strip().splitlines()[-1]
    expected = message.replace("EMPTY", str(empty)).replace("HIST", str(EXAMPLES / "my_bank"))
    assert res.exit_code == 2 and err.startswith(f"error: {config}: ") and expected in err, res.stderr
    assert _snapshot(out) == before


def test_a_generated_history_is_not_left_behind_by_a_config_error(tmp_path):
    out = tmp_path / "runs" / "demo"  # neither folder exists yet
    res = clv(
        "run",
        EXAMPLES / "bank_demo.yaml",
        "--out",
        out,
        "--workers",
        "0",
        *_sets(FAST + NO_HOLDOUT + ["history.generate.customers=300", 'constraints.capacity=["channel:fax=5"]']),
    )
    assert res.exit_code == 2 and "constraints.capacity[0]: no channel 'fax'" in res.stderr
    assert not (tmp_path / "runs").exists()  # the staged history, OUT and its parent are gone


def test_a_user_error_after_the_first_write_removes_what_the_run_wrote(tmp_path):
    """RunWrites.undo, as run_pipeline calls it on a user error found after OUT was written."""
    from experiments.run_folder import IN_PROGRESS, RunWrites, start_run

    cfg = type("Cfg", (), {"file": "run.yaml"})
    fresh = tmp_path / "a" / "out"
    w = RunWrites.begin(fresh)
    (w.stage_history() / "transactions.csv").write_text("generated")
    fresh.mkdir(parents=True, exist_ok=True)
    start_run(fresh, cfg)
    w.started = True
    w.commit_history()
    for f in ("world.json", "plan.json"):
        (fresh / f).write_text("new")
    (fresh / "policy").mkdir()
    assert {p.name for p in fresh.iterdir()} == {"history", "world.json", "plan.json", "policy", IN_PROGRESS}
    w.undo()
    assert not (tmp_path / "a").exists()
    # into an existing folder: what was there before this run (its own files, an agent) stays
    kept = tmp_path / "kept"
    (kept / "policy").mkdir(parents=True)
    (kept / "policy" / "card.json").write_text("{}")
    (kept / "notes.txt").write_text("mine")
    w = RunWrites.begin(kept)
    start_run(kept, cfg)
    w.started = True
    (kept / "world.json").write_text("new")
    assert sorted(w.undo()) == sorted(["world.json", IN_PROGRESS])
    assert _snapshot(kept) == {"notes.txt": _sha("mine"), "policy": "dir", "policy/card.json": _sha("{}")}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- no output over an input ----------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path, calibrated_world):
    """Copies of every kind of input a command reads (the files' contents do not matter where the
    refusal comes before they are read)."""
    world_src = Path(calibrated_world[0])
    h = tmp_path / "hist"
    shutil.copytree(EXAMPLES / "my_bank", h)
    w = tmp_path / "w" / "world.json"
    w.parent.mkdir()
    shutil.copy(world_src, w)
    shutil.copy(world_src.parent / "world.book.parquet", w.parent / "world.book.parquet")
    agent = tmp_path / "agent"  # a world whose file name is one `clv train` writes into its --out
    agent.mkdir()
    shutil.copy(world_src, agent / "card.json")
    shutil.copy(world_src.parent / "world.book.parquet", agent / "world.book.parquet")
    values = tmp_path / "values.parquet"
    values.write_bytes(b"PAR1 a value table")
    png_table = tmp_path / "table.png"
    png_table.write_bytes(b"a value table named .png")
    probs = tmp_path / "probs.csv"
    probs.write_text("customer_id,date,action,probability\n")
    dep = tmp_path / "deployment.parquet"
    dep.write_bytes(b"PAR1 a deployment")
    dep_csv = tmp_path / "deployment.csv"
    dep_csv.write_text("customer_id,date,action,propensity,group\n")
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    scen = tmp_path / "scen.yaml"
    scen.write_text(f"name: s\nworld: {w}\ncustomers: 50\nhorizon: 2\nseeds: 2\npolicies: [bau]\nbudgets: [null]\n")
    config = tmp_path / "run.yaml"
    config.write_text((EXAMPLES / "my_bank.yaml").read_text().replace("path: my_bank", f"path: {h}"))
    return {
        "H": h,
        "W": w,
        "B": w.parent / "world.book.parquet",
        "AGENT": agent,
        "V": values,
        "VPNG": png_table,
        "T": probs,
        "D": dep,
        "DCSV": dep_csv,
        "P": plan,
        "S": scen,
        "C": config,
    }


D = "2024-07-01"
OVER_INPUTS = [
    ("calibrate H --calibration-end 2024-06-30 --out H/customers.csv", "H/customers.csv"),
    ("calibrate H --calibration-end 2024-06-30 --out H/stages.yaml", "H/stages.yaml"),  # not there yet: read if it were
    ("simulate W --periods 2 --out B", "B"),
    ("score W --out B", "B"),
    ("score W --as-of 2024-01-01 --history H --out H/transactions.parquet", "H/transactions.parquet"),
    ("train W --steps 10 --out W", "W"),
    ("train AGENT/card.json --steps 10 --out AGENT", "AGENT/card.json"),
    ("evaluate W --policy bau --out W", "W"),
    ("values W --source sim --out B", "B"),
    ("allocate V --budget 10 --out V", "V"),
    ("frontier VPNG --budgets 1,2 --plot VPNG", "VPNG"),
    ("plan W --budget 10 --out W", "W"),
    ("ope H --policy bau --out H/decisions.csv", "H/decisions.csv"),
    ("ope H --target-probs T --out T", "T"),
    ("ope H --policy bau --world W --out B", "B"),
    (f"backtest H --split-date {D} --policies bau,none --out H/decisions.csv", "H/decisions.csv"),
    (f"backtest H --split-date {D} --policies bau,none --world W --out B", "B"),
    (f"readout H --deployment DCSV --start {D} --end 2024-08-01 --plan P --out P", "P"),
    (f"readout H --deployment D --start {D} --end 2024-08-01 --outcomes D", "D"),
    ("scenarios S --out S", "S"),
    ("run C --out C", "C"),
]


def _path(token: str, paths: dict[str, Path]) -> str:
    head, _, tail = token.partition("/")
    if head in paths:
        return str(paths[head] / tail) if tail else str(paths[head])
    return token


@pytest.mark.parametrize(
    "command, victim", OVER_INPUTS, ids=[c.split()[0] + f"-{i}" for i, (c, _) in enumerate(OVER_INPUTS)]
)
def test_no_output_is_written_over_an_input(inputs, command, victim):
    args = [_path(t, inputs) for t in command.split()]
    target = Path(_path(victim, inputs))
    before = target.read_bytes() if target.exists() else None
    res = clv(*args)
    err = res.stderr.strip()
    assert res.exit_code == 2 and "an input of this command" in err, (res.exit_code, err)
    assert len(err.splitlines()) == 1 and str(target) in err
    assert (target.read_bytes() if target.exists() else None) == before


def test_make_data_never_writes_over_a_users_history(inputs, tmp_path):
    h = inputs["H"]
    before = _snapshot(h)
    res = clv("make-data", "--out", h, "--customers", 20, "--weeks", 20)
    assert res.exit_code == 2 and "holds transactions.csv, which clv did not generate" in res.stderr
    assert _snapshot(h) == before
    again = tmp_path / "gen"  # a generated history is regenerated in place
    for _ in range(2):
        assert clv("make-data", "--out", again, "--customers", 20, "--weeks", 20).exit_code == 0
