"""Kill -9 at chosen points of `clv run`, `clv calibrate` and `clv scenarios` (issue 18): a real
SIGKILL of the command's process group, sent when a file it writes appears. Afterwards every output
file loads (JSON parses, Parquet reads, ...), no process of the command is left (Ray's included),
and a re-run into the same folder completes with the numbers of an uninterrupted run and leaves no
temp file of the killed one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import yaml
from cli_runner import clv, ok_json
from pandas.testing import assert_frame_equal

ROOT = Path(__file__).resolve().parents[1]
HISTORY = ROOT / "examples" / "my_bank"
CONFIG = ROOT / "examples" / "my_bank.yaml"
# the smallest whole run: a baseline policy, two periods, one budget, the fewest seeds and draws
TINY_RUN = [
    "policy=greedy_uplift",
    "plan.horizon=2",
    "evaluation.seeds=2",
    "ope.bootstrap=10",
    "budgets=[100]",
    "budget=100",
    "validation.replications=1",
    "compare=[]",
]
VOLATILE = ("timings", "price_search")  # wall-clock figures differ from run to run (and every *seconds)


def _run_args(out: Path) -> list[str]:
    sets = [a for s in TINY_RUN for a in ("--set", s)]
    return ["run", str(CONFIG), "--out", str(out), *sets, "--workers", "0", "--json"]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """`clv ARGS` in a process group (and session) of its own, so that one killpg reaches it all."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _session(sid: int) -> list[int]:
    """The live (not zombie) processes of session `sid`: the command and whatever it started."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 300) -> None:
    """SIGKILL the process group of `proc` as soon as `ready()`; then nothing of it may be left."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended (status {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    left = _session(proc.pid)
    for _ in range(300):  # Ray's workers, in groups of their own, go with the raylet killed beside them
        if not left:
            break
        time.sleep(0.1)
        left = _session(proc.pid)
    for pid in left:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the killed command left behind: {left}"


def _outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts))


def _temp_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp" in p.name)


def _every_file_loads(folder: Path) -> int:
    """Every output file in `folder` (temp files aside) is whole: returns how many were read."""
    files = _outputs(folder)
    for p in files:
        kind = p.suffix.lower()
        if kind == ".json":
            json.loads(p.read_text())
        elif kind == ".parquet":
            pd.read_parquet(p)
        elif kind == ".csv":
            pd.read_csv(p)
        elif kind == ".png":
            data = p.read_bytes()
            assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), p
        elif kind == ".html":
            assert p.read_text().rstrip().endswith("</html>"), p
        elif kind == ".zip":
            with zipfile.ZipFile(p) as z:
                assert z.testzip() is None, p
        elif kind == ".yaml":
            yaml.safe_load(p.read_text())
        else:
            p.read_text()
    return len(files)


def _normal(doc, out: Path):
    """A result document without its wall-clock figures, its folder written OUT."""
    if isinstance(doc, dict):
        return {k: _normal(v, out) for k, v in doc.items() if k not in VOLATILE and not k.endswith("seconds")}
    if isinstance(doc, list):
        return [_normal(v, out) for v in doc]
    if isinstance(doc, str):
        return doc.replace(str(out), "OUT")
    return doc


def _parquet_difference(x: Path, y: Path) -> str:
    """What differs between two Parquet files whose bytes differ: schema, metadata or which columns
    (and their first differing row), so that a failure says where to look."""
    import pyarrow.parquet as pq

    tx, ty = pq.read_table(x), pq.read_table(y)
    if tx.schema != ty.schema:
        return f"schemas differ: {tx.schema} vs {ty.schema}"
    if tx.schema.metadata != ty.schema.metadata:
        return f"schema metadata differs: {tx.schema.metadata} vs {ty.schema.metadata}"
    if tx.num_rows != ty.num_rows:
        return f"{tx.num_rows} vs {ty.num_rows} rows"
    parts = []
    for col in tx.column_names:
        a, b = tx[col].to_pylist(), ty[col].to_pylist()
        rows = [i for i, (u, v) in enumerate(zip(a, b)) if u != v and not (u != u and v != v)]  # NaN == NaN here
        if rows:
            i, n = rows[0], len(rows)
            parts.append(f"{col} ({n} rows, first row {i}: {a[i]!r} vs {b[i]!r})")
    if not parts:
        fx, fy = pq.ParquetFile(x).metadata, pq.ParquetFile(y).metadata
        return f"same values; file metadata {fx.to_dict()} vs {fy.to_dict()}"
    return "; ".join(parts)


def _same_table(x: Path, y: Path, name: str) -> None:
    """Two Parquet files whose bytes differ hold the same table all the same: the same schema, ids,
    actions and every other exact column, and floats equal to 1e-9 relative (the last bits of a
    float can follow the BLAS kernel and the memory alignment a process happens to get)."""
    import numpy as np
    import pyarrow.parquet as pq

    tx, ty = pq.read_table(x), pq.read_table(y)
    assert tx.schema == ty.schema and tx.num_rows == ty.num_rows, f"{name} differs: {_parquet_difference(x, y)}"
    for col in tx.column_names:
        a, b = tx[col].to_numpy(zero_copy_only=False), ty[col].to_numpy(zero_copy_only=False)
        if a.dtype.kind == "f":
            same = np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
        else:
            same = tx[col].equals(ty[col])
        assert same, f"{name} differs: {_parquet_difference(x, y)}"


def _rerun(args: list[str]) -> dict:
    """`clv ARGS --json` run to its end in a process of its own, as a user re-runs it (and as the
    uninterrupted reference ran): its JSON document."""
    r = subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
    return json.loads(r.stdout)


def _same_run(a: Path, b: Path) -> None:
    """Folders `a` and `b` hold the same run: the same files, the tables byte for byte, the JSON
    documents equal but for timings and the folder's name."""
    names = [str(p.relative_to(a)) for p in _outputs(a)]
    assert names == [str(p.relative_to(b)) for p in _outputs(b)]
    for name in names:
        x, y = a / name, b / name
        if x.suffix == ".parquet":
            if hashlib.sha256(x.read_bytes()).digest() != hashlib.sha256(y.read_bytes()).digest():
                _same_table(x, y, name)
        elif x.suffix == ".json":
            assert _normal(json.loads(x.read_text()), a) == _normal(json.loads(y.read_text()), b), name


def test_clv_run_killed_twice_then_rerun_gives_the_uninterrupted_numbers(tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    ref = _start(_run_args(ref_out), tmp_path / "ref.log")  # the uninterrupted run, beside the killed ones
    try:
        # 1. just after the run has marked OUT: writing the world, its book and validation/
        _kill_when(_start(_run_args(out), tmp_path / "k1.log"), (out / "RUN_IN_PROGRESS").exists, "RUN_IN_PROGRESS")
        _every_file_loads(out)
        # 2. the re-run, killed once the frontier is written: planning, before the scores and run.json
        _kill_when(_start(_run_args(out), tmp_path / "k2.log"), (out / "frontier.json").exists, "frontier.json")
        assert _every_file_loads(out) >= 5 and (out / "RUN_IN_PROGRESS").exists()
        assert not (out / "run.json").exists()  # the folder says it holds an unfinished run
        assert ref.wait(timeout=600) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    finally:
        if ref.poll() is None:
            os.killpg(ref.pid, signal.SIGKILL)
            ref.wait()
    doc = _rerun(_run_args(out))  # 3. the re-run completes
    assert not (out / "RUN_IN_PROGRESS").exists() and _temp_files(out) == []  # the killed runs' temp files are gone
    _every_file_loads(out)
    _same_run(ref_out, out)
    assert doc["plan"]["lift_vs_none"] == json.loads((ref_out / "run.json").read_text())["plan"]["lift_vs_none"]


def _calibrate_args(out: Path) -> list[str]:
    return ["calibrate", str(HISTORY), "--calibration-end", "2024-06-30", "--out", str(out / "world.json"), "--json"]


def test_clv_calibrate_killed_mid_write_then_rerun_gives_the_same_world(tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    out.mkdir()
    ref = _start(_calibrate_args(ref_out), tmp_path / "ref.log")
    try:
        # the first thing written (a temp file of the book, or the book itself): the world is not there yet
        _kill_when(_start(_calibrate_args(out), tmp_path / "k.log"), lambda: any(out.iterdir()), "a file in OUT")
        _every_file_loads(out)
        assert (
            not (out / "world.json").exists() or (out / "world.book.parquet").exists()
        )  # never a world without its book
        assert ref.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    finally:
        if ref.poll() is None:
            os.killpg(ref.pid, signal.SIGKILL)
            ref.wait()
    _rerun(_calibrate_args(out))
    assert _temp_files(out) == []
    _same_run(ref_out, out)


SCENARIO = """\
name: killed
world: {world}
customers: 300
horizon: 8
seeds: 3
policies: [none, greedy_uplift]
budgets: [null]
"""


def _reference_cells(scen: Path) -> pd.DataFrame:
    """The scenario's cells run one after the other in this process, without Ray."""
    from experiments.scenarios import cell_id, fingerprints, load_scenario, run_cell

    sc = load_scenario(scen)
    spec = {"world": Path(sc.world).read_text(), "book": pd.read_parquet(sc.book), "scenario": sc.to_dict()}
    rows = []
    for c in sc.cells():
        c["cell_id"] = cell_id(sc, c, fingerprints(sc))
        rows.append(run_cell(spec, c)[0])
    return pd.DataFrame(rows)


def test_clv_scenarios_killed_with_its_ray_then_resumed_gives_the_same_cells(tmp_path, calibrated_world):
    scen = tmp_path / "scen.yaml"
    scen.write_text(SCENARIO.format(world=calibrated_world[0]))
    out = tmp_path / "out"
    args = ["scenarios", str(scen), "--out", str(out), "--workers", "1", "--json"]
    proc = _start(args, tmp_path / "k.log")

    def first_cell() -> bool:
        cells = out / "cells"  # a cell's table is written after its periods: it marks the cell done
        return cells.is_dir() and any(
            p.name.endswith(".parquet") and ".periods." not in p.name for p in cells.iterdir()
        )

    failed: list[BaseException] = []

    def watch() -> None:  # Ray's GCS, raylet, agents and worker are killed with the driver: none may linger
        try:
            _kill_when(proc, first_cell, "a finished cell")
        except BaseException as e:  # noqa: BLE001 - reported by the test's thread below
            failed.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        ref = _reference_cells(scen)  # meanwhile, on the other core
        watcher.join()
        if failed:
            raise failed[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert 1 <= _every_file_loads(out) and not (out / "results.parquet").exists()
    doc = ok_json(clv(*args))  # the re-run resumes: the finished cells are not run again
    assert doc["cells"] == 6 and doc["skipped"] >= 1 and doc["run"] == 6 - doc["skipped"]
    assert _temp_files(out) == []
    _every_file_loads(out)
    res = pd.read_parquet(out / "results.parquet")
    assert_frame_equal(res.drop(columns="scenario"), ref[list(res.columns[1:])], check_exact=True, check_dtype=False)


@pytest.fixture(autouse=True)
def _no_ray_in_this_process():
    """The re-runs start their own local Ray and must stop it again."""
    yield
    import ray

    assert not ray.is_initialized()
