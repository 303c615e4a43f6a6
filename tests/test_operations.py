"""Operations (issue 18): `--address` to a cluster that is not up ends in one line within
`--connect-timeout`; a cell whose Ray worker dies on every try is one line naming it, the finished
cells kept; a command's local Ray leaves no process behind however the command ends (a normal end,
SIGTERM, SIGINT, SIGKILL); progress on a stderr that is not a terminal is lines with the elapsed time.

The commands run as subprocesses with pipes (not a terminal), and Ray's worker processes are killed
for real."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STAMP = r"\[\s*\d+\.\d s\] "  # the elapsed seconds in front of a progress line
PROGRESS_LINE = re.compile(STAMP + r".+: (\d[\d,]*/[\d,]+ \(\d+ %\)|done)$")


def _clv(*args: object, **kw) -> subprocess.Popen:
    """`clv ARGS` in a subprocess, stdout and stderr on pipes."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world_path(calibrated_world) -> Path:
    return calibrated_world[0]


# ---- --address where no cluster answers -----------------------------------------------------------
def test_every_command_with_an_address_has_a_connect_timeout():
    from experiments.cli import app

    group = typer.main.get_command(app)
    with_address = []
    for name, cmd in group.commands.items():
        options = {o for p in cmd.params for o in getattr(p, "opts", ())}
        if "--address" in options:
            with_address.append(name)
            assert "--connect-timeout" in options, name
            timeout = next(p for p in cmd.params if "--connect-timeout" in p.opts)
            assert timeout.default == 60.0, name
    assert {"scenarios", "run", "score", "plan", "ope", "backtest"} <= set(with_address)


def _scenario(folder: Path, world: Path, **keys) -> Path:
    doc = {
        "name": "ops",
        "world": str(world),
        "customers": 300,
        "horizon": 4,
        "seeds": 2,
        "policies": ["none"],
        "budgets": [None],
        **keys,
    }
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "scenario.yaml"
    p.write_text(json.dumps(doc))  # JSON is YAML
    return p


def _small_history(folder: Path) -> Path:
    from sim.synthetic import BankConfig, write_bank_history

    write_bank_history(folder, BankConfig(customers=300, weeks=40, seed=3))
    return folder


@pytest.mark.parametrize("command", ["scenarios", "run", "score", "ope"])
def test_an_address_where_no_cluster_answers_is_one_line_within_the_timeout(tmp_path, world_path, command):
    address = f"127.0.0.1:{_free_port()}"
    args = {
        "scenarios": lambda: ["scenarios", _scenario(tmp_path, world_path), "--out", tmp_path / "out"],
        "run": lambda: ["run", EXAMPLES / "my_bank.yaml", "--out", tmp_path / "out"],
        "score": lambda: ["score", world_path, "--out", tmp_path / "scores.parquet"],
        # checked before the evaluation's work, not when its bootstrap starts Ray
        "ope": lambda: ["ope", _small_history(tmp_path / "h"), "--policy", "bau", "--out", tmp_path / "scores.parquet"],
    }[command]()
    proc = _clv(*args, "--address", address, "--connect-timeout", 5, "--json")
    stdout, stderr = proc.communicate(timeout=120)
    expected = (
        f"--address {address}: no Ray cluster answered within 5 s; start one with `ray start --head` or drop --address"
    )
    assert proc.returncode == 2, stderr
    lines = stderr.splitlines()
    assert [x for x in lines if not PROGRESS_LINE.match(x)] == [f"error: {expected}"]  # no retry logs of Ray
    assert json.loads(stdout) == {"error": expected, "exit_code": 2}
    assert not (tmp_path / "scores.parquet").exists() and not (tmp_path / "out" / "running").exists()


def test_the_connect_timeout_is_checked(tmp_path, world_path, capsys):
    from experiments.cli.main import run

    code = run(
        ["scenarios", str(_scenario(tmp_path, world_path)), "--out", str(tmp_path / "o"), "--connect-timeout", "0"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: Invalid value for '--connect-timeout'")
    assert not (tmp_path / "o").exists()


# ---- a cell whose worker dies on every try --------------------------------------------------------
def _cells_done(out: Path) -> list[str]:
    folder = out / "cells"
    return sorted(
        p.name[: -len(".parquet")] for p in folder.glob("*.parquet") if not p.name.endswith(".periods.parquet")
    )


def test_a_cell_whose_worker_dies_on_every_try_is_one_line_and_the_finished_cells_are_kept(tmp_path, world_path):
    # two cells of a few seconds one after the other on one worker: the first finishes, then the
    # worker running the second is SIGKILLed on each of Ray's 4 tries (running/<cell>.pid names it)
    scen = _scenario(tmp_path, world_path, customers=20000, horizon=104, seeds=[3, 4], policies=["greedy_uplift"])
    out = tmp_path / "out"
    proc = _clv("scenarios", scen, "--out", out, "--workers", 1)
    killed: list[int] = []
    first = None
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and len(killed) < 4 and time.monotonic() < deadline:
            done = _cells_done(out) if (out / "cells").exists() else []
            first = first or (done[0] if done else None)
            for f in sorted((out / "running").glob("*.pid")) if first and (out / "running").exists() else []:
                text = f.read_text().strip()
                if f.stem != first and text and int(text) not in killed:
                    os.kill(int(text), signal.SIGKILL)
                    killed.append(int(text))
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first is not None and len(set(killed)) == 4, (killed, stderr[-2000:])
    assert proc.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr and stdout == ""
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0])
    assert re.fullmatch(
        r"error: cell greedy_uplift/budget none/seed \d \([0-9a-f]{16}\): its Ray worker died 4 times "
        r"\(killed, or out of memory\?\); 1 of 2 cells are done and kept in .*cells: run the same command "
        r"again to resume",
        errors[0],
    ), errors[0]
    assert f"({first})" not in errors[0]
    # the finished cell is kept and loads; nothing marks a cell as running any more
    assert _cells_done(out) == [first]
    assert len(pd.read_parquet(out / "cells" / f"{first}.parquet")) == 1
    assert not (out / "running").exists()
    # a re-run runs only the cell that failed
    again = _clv("scenarios", scen, "--out", out, "--workers", 1, "--json")
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-2000:]
    doc = json.loads(stdout)
    assert (doc["cells"], doc["run"], doc["skipped"]) == (2, 1, 1)


# ---- no Ray process outlives its command ----------------------------------------------------------
def _table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command line) of every live process (zombies are dead)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] != "Z":
            out[int(name)] = (int(fields[1]), fields[19], cmd)
    return out


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """The processes below `root`: pid -> (start time, command line)."""
    table = _table()
    found: dict[int, tuple[str, str]] = {}
    stack = [root]
    while stack:
        parent = stack.pop()
        for pid, (ppid, start, cmd) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = (start, cmd)
                stack.append(pid)
    return found


def _alive(procs: dict[int, tuple[str, str]]) -> dict[int, str]:
    """Those of `procs` still alive (the same pid and start time): pid -> command line."""
    table = _table()
    return {pid: cmd for pid, (start, cmd) in procs.items() if pid in table and table[pid][1] == start}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    "how, status",
    [("normal end", 0), ("SIGTERM", 128 + 15), ("SIGINT", 130), ("SIGKILL", -9)],
)
def test_a_commands_local_ray_leaves_no_process_behind(tmp_path, world_path, how, status):
    # Ray's processes are this command's descendants (matched by parent pid, not by name, so the
    # Ray of anyone else on the machine is not counted); they are noted while a cell runs
    seeds = [0, 1] if how == "normal end" else list(range(20))  # cells of a few seconds: Ray runs when signalled
    scen = _scenario(tmp_path, world_path, customers=20000, horizon=104, seeds=seeds, policies=["greedy_uplift"])
    out = tmp_path / "out"
    proc = _clv("scenarios", scen, "--out", out, "--workers", 1)
    wanted = ("gcs_server", "raylet", "dashboard/agent.py", "runtime_env/agent/main.py", "default_worker.py")
    try:
        deadline = time.monotonic() + 180
        ray_procs: dict[int, tuple[str, str]] = {}
        while proc.poll() is None and time.monotonic() < deadline:
            if list(out.glob("running/*.pid")):  # a cell runs: Ray is up, the agents are starting
                ray_procs.update(_descendants(proc.pid))
                names = " ".join(cmd for _, cmd in ray_procs.values())
                if all(w in names for w in wanted):
                    break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        names = " ".join(cmd for _, cmd in ray_procs.values())
        assert all(w in names for w in wanted), names  # the agents too: they were the ones that lingered
        if how != "normal end":
            os.kill(proc.pid, getattr(signal, how))
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, stderr[-2000:]
    assert "Traceback" not in stderr
    if how in ("SIGINT", "SIGTERM"):
        assert stderr.splitlines()[-1] == {"SIGINT": "interrupted", "SIGTERM": "terminated"}[how]
    deadline = time.monotonic() + 15  # Ray's agents used to wait 60 s for the dead GCS
    while _alive(ray_procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(ray_procs) == {}


# ---- progress on a stderr that is not a terminal ----------------------------------------------------
def test_progress_without_a_terminal_is_lines_with_the_elapsed_time(tmp_path, world_path):
    proc = _clv("simulate", world_path, "--customers", 300, "--periods", 20, "--out", tmp_path / "sim.parquet")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "\r" not in stderr and "\x1b" not in stderr  # no bar, no terminal codes
    lines = [x for x in stderr.splitlines() if re.match(STAMP, x)]
    assert len(lines) >= 3 and all(PROGRESS_LINE.match(x) for x in lines), stderr
    assert len(lines) <= 11, lines  # a line per tenth of the work at most, and one when it is done
    assert re.fullmatch(STAMP + r"simulating 300 customers x 20 periods: [\d,]+/6,000 \(\d+ %\)", lines[0]), lines
    assert re.fullmatch(STAMP + r"simulating 300 customers x 20 periods: done", lines[-1]), lines
    seconds = [float(re.match(r"\[\s*([\d.]+) s\]", x).group(1)) for x in lines]
    assert seconds == sorted(seconds)


def test_progress_lines_name_each_step_and_say_when_it_is_done(capsys):
    """The lines of a job counted by steps (`clv run`: calibration, policy, plan, scores): a tenth
    of a step at most one line, a step's end a line, and the whole a line."""
    from experiments.cli.common import _progress

    with _progress("run", 1) as update:
        for done in range(0, 1001, 50):
            update(done, 1000, step="calibration")
        update(0, 4, step="plan")
        update(1, 4, step="plan")
        update(2, 4, step="plan")  # the plan stops before its estimate of the total
        update(1, 1, step="scores")
    err = capsys.readouterr().err
    text = [re.sub("^" + STAMP, "", x) for x in err.splitlines()]
    assert text == [
        *(f"calibration: {d:,}/1,000 ({d // 10} %)" for d in range(0, 1000, 100)),
        "calibration: done",
        "plan: 0/4 (0 %)",
        "plan: 1/4 (25 %)",
        "plan: 2/4 (50 %)",
        "plan: done",
        "scores: done",
        "run: done",
    ]
    with pytest.raises(RuntimeError), _progress("scenario s", 8) as update:
        update(3, 8)
        raise RuntimeError("stopped")  # the error's own line is the last word: no "done"
    assert [re.sub("^" + STAMP, "", x) for x in capsys.readouterr().err.splitlines()] == ["scenario s: 3/8 (37 %)"]
