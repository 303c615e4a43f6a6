"""A real two-node Ray cluster on 127.0.0.1 (issue 19): a head and a second node started with
`ray start` inside the test, `clv plan --address` run across both, the same numbers as in one
process; then the second node killed mid-run, and the plan still completes with the same numbers
(its tasks are retried on the head: nothing lost, nothing counted twice)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PLAN_KEYS = ("spend", "lift_vs_none", "lift_vs_policy_alone", "predicted_lift", "price", "by_channel", "by_segment")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process, from /proc (no psutil in the install)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.append((int(entry.name), ppid, cmd))
    return out


def _descendants(root: int) -> list[int]:
    procs = _processes()
    found, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        kids = [pid for pid, ppid, _ in procs if ppid == p]
        found += kids
        frontier += kids
    return found


def _ray(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def cluster():
    """A head (1 CPU) and a second node (1 CPU) on this machine; yields (address, env, the second
    node's raylet pid). Ray itself swaps 127.0.0.1 for the machine's own address
    (`services.resolve_ip_for_localhost`): the traffic never leaves the machine. The cluster has a
    temp dir of its own, so that stopping it kills its processes only (`ray stop` would kill every
    Ray on the machine); token authentication is off, as for a local cluster."""
    port = _free_port()
    node_port = _free_port()
    temp = tempfile.mkdtemp(prefix="clvray", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    head = _ray(
        "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp, *common, env=env
    )
    address = f"127.0.0.1:{port}"
    try:
        assert head.returncode == 0, head.stderr[-2000:]
        node = _ray(
            "start", "--address", address, "--node-manager-port", str(node_port), *common, env=env
        )  # the second node's raylet is the one listening on node_port
        assert node.returncode == 0, node.stderr[-2000:]
        raylets = [pid for pid, _, cmd in _processes() if "raylet" in cmd and f"--node_manager_port={node_port}" in cmd]
        assert len(raylets) == 1, raylets
        _wait_for_nodes(address, 2, env)
        yield address, env, raylets[0]
    finally:
        for pid, _, cmd in _processes():
            if temp in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_nodes(address: str, count: int, env: dict) -> None:
    code = (
        "import ray, sys, time\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "t = time.time()\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.time() - t < 60: time.sleep(0.5)\n"
        f"sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= {count} else 1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0


def _plan(world: Path, out: Path, env: dict, *extra: str) -> list[str]:
    return [
        str(BIN / "clv"),
        "plan",
        str(world),
        "--policy",
        "greedy_uplift",
        "--budget",
        "80",
        "--horizon",
        "8",
        "--seeds",
        "4",
        "--out",
        str(out),
        "--json",
        *extra,
    ]


def _numbers(doc: dict) -> dict:
    return {k: doc[k] for k in PLAN_KEYS}


def test_a_plan_across_two_nodes_gives_the_in_process_numbers_even_when_a_node_dies(
    calibrated_world, tmp_path, cluster
):
    import pandas as pd

    world, _ = calibrated_world
    address, env, worker_raylet = cluster

    alone = subprocess.run(
        _plan(world, tmp_path / "alone", env, "--workers", "0"), env=env, capture_output=True, text=True, timeout=600
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    expected = _numbers(json.loads(alone.stdout))

    both = subprocess.run(
        _plan(world, tmp_path / "both", env, "--address", address), env=env, capture_output=True, text=True, timeout=600
    )
    assert both.returncode == 0, both.stderr[-2000:]
    assert _numbers(json.loads(both.stdout)) == expected
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "alone" / "contacts.parquet"),
        pd.read_parquet(tmp_path / "both" / "contacts.parquet"),
    )

    # the second node dies while it runs the plan's tasks: they are retried on the head
    run = subprocess.Popen(
        _plan(world, tmp_path / "killed", env, "--address", address),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    busy = False
    while time.time() < deadline and run.poll() is None:
        workers = [
            pid
            for pid in _descendants(worker_raylet)
            if "_run_job" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        ]
        if workers:
            busy = True
            break
        time.sleep(0.2)
    assert busy, "the second node never ran a task of the plan"
    for pid in [worker_raylet, *_descendants(worker_raylet)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-2000:]
    assert _numbers(json.loads(stdout)) == expected
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "alone" / "contacts.parquet"),
        pd.read_parquet(tmp_path / "killed" / "contacts.parquet"),
    )


def test_a_simulation_in_blocks_across_two_nodes_gives_the_in_process_numbers(calibrated_world, tmp_path, cluster):
    """`clv simulate` of 600,000 twins (3 blocks of 2^18) across both nodes: the same files as in
    one process, per customer and per period."""
    import pandas as pd

    world, _ = calibrated_world
    address, env, _ = cluster

    def simulate(out: Path, *extra: str) -> dict:
        cmd = [str(BIN / "clv"), "simulate", str(world), "--policy", "bau", "--customers", "600000"]
        cmd += ["--periods", "6", "--seed", "3", "--out", str(out), "--json", *extra]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    alone = simulate(tmp_path / "alone.parquet", "--workers", "0")
    both = simulate(tmp_path / "both.parquet", "--address", address)
    assert alone["customers"] == both["customers"] == 600_000
    assert alone["clv_per_customer"] == both["clv_per_customer"]
    for name in ("alone.parquet", "alone.periods.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / name), pd.read_parquet(tmp_path / name.replace("alone", "both"))
        )
