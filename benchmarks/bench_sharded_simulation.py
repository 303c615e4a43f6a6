"""Benchmark: the simulator's customer blocks as Ray tasks, 2 workers against 1 (issue 19), with
identical numbers; medians of --repeats.

    python benchmarks/bench_sharded_simulation.py --customers 2000000 --periods 26 --repeats 3 --json

The world is the synthetic bank's generating world (`sim.synthetic.truth_world`), the policy
"random" (a contact drawn among the allowed actions for every customer the rules allow: the
heaviest step), new customers in blocks of 2^18 (`sim.population.chunk_seeds`). Each worker count
gets its own local Ray, started before the clock: the timed part is `sim.population.simulate`
with a `RayExecutor`, from submitting the blocks to the combined result. The in-process run
(no Ray) is timed too; every run's per-period totals must be equal to the in-process ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def run(world, customers: int, periods: int, seed: int, workers: int, repeats: int):
    from experiments.ray_session import executor_session
    from sim.population import simulate

    times, result = [], None
    with executor_session(workers) as ex:
        if ex is not None:  # warm the workers (imports) outside the clock
            simulate(world, "random", 1, seed, customers=min(customers, 2 * 2**18), executor=ex)
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = simulate(world, "random", periods, seed, customers=customers, executor=ex)
            times.append(time.perf_counter() - t0)
    return times, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=2_000_000)
    ap.add_argument("--periods", type=int, default=26)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import pandas as pd

    from sim.synthetic import BankConfig, truth_world

    world = truth_world(BankConfig(seed=7))
    doc: dict = {"customers": args.customers, "periods": args.periods, "repeats": args.repeats}
    base_times, base = run(world, args.customers, args.periods, args.seed, 0, args.repeats)
    doc["in_process_seconds"] = [round(t, 2) for t in base_times]
    for w in (1, 2):
        times, res = run(world, args.customers, args.periods, args.seed, w, args.repeats)
        pd.testing.assert_frame_equal(res.periods, base.periods, check_exact=True)
        pd.testing.assert_frame_equal(res.customers, base.customers, check_exact=True)
        doc[f"workers_{w}_seconds"] = [round(t, 2) for t in times]
        print(json.dumps({f"workers_{w}": doc[f"workers_{w}_seconds"]}), file=sys.stderr, flush=True)
    one, two = statistics.median(doc["workers_1_seconds"]), statistics.median(doc["workers_2_seconds"])
    doc["speedup_2_vs_1"] = round(one / two, 3)
    doc["speedup_2_vs_in_process"] = round(statistics.median(base_times) / two, 3)
    doc["identical"] = True
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"1 worker {one:.1f} s, 2 workers {two:.1f} s: {doc['speedup_2_vs_1']:.2f}x, identical numbers")


if __name__ == "__main__":
    main()
