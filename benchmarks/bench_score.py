"""`clv score` at scale: one row per customer for a book tiled to `--customers` (the demo world's
book repeated with fresh ids), timed per stage, with the peak memory of the process tree.

    make demo
    python benchmarks/bench_score.py --world demo_out/world.json --customers 1000000 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--policy", default="none")
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--horizon", type=int, default=52)
    ap.add_argument("--workers", type=int, default=2, help="Ray CPUs the blocks run on (0: in-process)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import numpy as np

    from experiments.ray_session import executor_session
    from experiments.score import ScoreSettings, score_customers
    from policies.registry import resolve_policy
    from sim.world import WorldModel

    world = WorldModel.load(args.world)
    base = world.read_book(args.world)
    reps = -(-args.customers // len(base))
    book = base.iloc[np.tile(np.arange(len(base)), reps)[: args.customers]].reset_index(drop=True)
    book["customer_id"] = np.char.add("B", np.arange(len(book)).astype(str)).astype(object)
    settings = ScoreSettings(horizon=args.horizon, draws=args.draws, policy=args.policy)
    pol = resolve_policy(args.policy, world)
    t0 = time.perf_counter()
    with executor_session(args.workers) as ex:
        t_ray = time.perf_counter() - t0
        scores, summary = score_customers(world, book, settings, policy=pol, executor=ex)
    wall = time.perf_counter() - t0
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    doc = {
        "customers": len(scores),
        "columns": len(scores.columns),
        "policy": args.policy,
        "draws": args.draws,
        "horizon": args.horizon,
        "workers": args.workers,
        "wall_seconds": wall,
        "ray_start_seconds": t_ray,
        "stage_seconds": summary["seconds"],
        "peak_rss_gb_largest_process": peak / 1e6,
    }
    print(json.dumps(doc, indent=1) if args.json else doc)


if __name__ == "__main__":
    main()
