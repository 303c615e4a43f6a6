"""Benchmark `clv scenarios` on Ray: the same CPU-bound sweep with --workers 1 and --workers 2.

Builds a synthetic bank world (clv make-data + clv calibrate) unless --world is given, writes a
scenario of policies x budgets x seeds whose cells take several seconds each, runs it twice in
fresh output folders, each run in its own `clv` process (so each starts and stops its own Ray),
and reports the wall times, the speed-up and whether the two results.parquet are identical.
Target (issue 5): speed-up >= 1.6x on 2 cores.

    python benchmarks/bench_scenarios.py [--customers 50000] [--seeds 6] [--out bench_out/scenarios] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SCENARIO = """\
name: bench_scenarios
world: {world}
population: book
customers: {customers}
horizon: 52
seeds: {seeds}
policies: [bau, greedy_uplift]
budgets: [null, 1000]
constraints:
  capacity: ["channel:rm_call=50"]
values: {{horizon: 26, replications: 1}}
"""


def _clv(*args: str) -> subprocess.CompletedProcess:
    exe = BIN / "clv"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "experiments.cli"]
    return subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out/scenarios", help="working folder (replaced)")
    ap.add_argument("--world", default=None, help="an existing world JSON (default: build a bank world)")
    ap.add_argument("--customers", type=int, default=50000, help="customers per cell")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = Path(a.out).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if a.world is None:
        _clv("make-data", "--out", str(work / "bank"), "--seed", "7")
        _clv("calibrate", str(work / "bank"), "--calibration-end", "2024-06-30", "--out", str(work / "world.json"))
        world = work / "world.json"
    else:
        world = Path(a.world).resolve()
    scen = work / "scenario.yaml"
    scen.write_text(SCENARIO.format(world=world, customers=a.customers, seeds=a.seeds))
    runs = {}
    for w in (1, 2):
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        r = _clv("scenarios", str(scen), "--out", str(work / f"workers{w}"), "--workers", str(w), "--json")
        wall = time.perf_counter() - t0
        doc = json.loads(r.stdout)
        tim = json.loads((work / f"workers{w}" / "timings.json").read_text())
        cell_secs = [c["seconds"] for c in tim["cells"].values()]
        runs[w] = {
            "wall_seconds": round(wall, 2),
            "run_seconds": doc["seconds"],
            "ray_init_seconds": round(tim.get("ray_init_seconds", float("nan")), 2),
            "cells": doc["cells"],
            "cell_seconds_mean": round(sum(cell_secs) / len(cell_secs), 2),
            "cell_seconds_sum": round(sum(cell_secs), 2),
            "worker_pids": len({c["pid"] for c in tim["cells"].values()}),
            # other processes on the machine take cores from the workers: say how busy it was
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
        }
    import pandas as pd

    r1 = pd.read_parquet(work / "workers1" / "results.parquet")
    r2 = pd.read_parquet(work / "workers2" / "results.parquet")
    p1 = pd.read_parquet(work / "workers1" / "periods.parquet")
    p2 = pd.read_parquet(work / "workers2" / "periods.parquet")
    doc = {
        "benchmark": "scenarios",
        "cores": os.cpu_count(),
        "customers_per_cell": a.customers,
        "cells": runs[1]["cells"],
        "workers_1": runs[1],
        "workers_2": runs[2],
        "speedup_wall": round(runs[1]["wall_seconds"] / runs[2]["wall_seconds"], 3),
        "speedup_run": round(runs[1]["run_seconds"] / runs[2]["run_seconds"], 3),
        "results_identical": bool(r1.equals(r2)),
        "periods_identical": bool(p1.equals(p2)),
        "target_speedup": 1.6,
    }
    doc["meets_target"] = doc["speedup_wall"] >= 1.6
    if a.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"{doc['cells']} cells x {a.customers} customers: 1 worker {runs[1]['wall_seconds']:.1f}s, "
            f"2 workers {runs[2]['wall_seconds']:.1f}s, speed-up {doc['speedup_wall']:.2f}x "
            f"(target 1.6x); results identical: {doc['results_identical']}"
        )


if __name__ == "__main__":
    main()
