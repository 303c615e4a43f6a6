"""The budgeted policy over a horizon (`clv plan`) on a calibrated world: what a budget buys on fresh
seeds, whether the prediction holds, whether the budget binds, and how long it takes.

Runs `clv plan`'s library calls for one budget (timed: values, references, planning, fresh seeds)
and a frontier of budgets (timed), and prints one JSON document. Use the demo's world and agent:

    make demo
    python benchmarks/bench_budget_plan.py --world demo_out/world.json --policy demo_out/policy \\
        --budget 2000 --budgets 500,1000,2000,4000,6000,9000,13000,18000 --seeds 5 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--policy", default="greedy_uplift")
    ap.add_argument("--budget", type=float, default=2000.0)
    ap.add_argument("--budgets", default="")
    ap.add_argument("--horizon", type=int, default=52)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="Ray CPUs the seeds run on (0: in-process)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from experiments.budget_frontier import plan_frontier
    from experiments.budget_plan import PlanSettings, plan_at, prepare_plan
    from policies.registry import policy_label, resolve_policy
    from sim.world import WorldModel, json_safe

    world = WorldModel.load(args.world)
    book = world.read_book(args.world)
    pol = resolve_policy(args.policy, world)
    settings = PlanSettings(budget=args.budget, horizon=args.horizon, seeds=args.seeds)
    out: dict = {"world": args.world, "policy": args.policy, "customers": len(book), "horizon": args.horizon}

    import contextlib

    from experiments.ray_session import executor_for, ray_session

    executor = executor_for(args.workers)
    stack = contextlib.ExitStack()
    if executor is not None:  # Ray's start is timed: it is part of what a user waits for
        t_ray = time.perf_counter()
        stack.enter_context(ray_session(args.workers))
        out["ray_start_seconds"] = time.perf_counter() - t_ray
    t0 = time.perf_counter() - out.get("ray_start_seconds", 0.0)
    ctx = prepare_plan(world, book, pol, settings, policy_label(args.policy), executor=executor)
    plan = plan_at(ctx, args.budget).to_dict()
    out["one_budget"] = {
        "wall_seconds": time.perf_counter() - t0,  # Ray's start included
        **{
            k: plan[k]
            for k in (
                "budget",
                "spend",
                "spend_share_min",
                "price",
                "lift_vs_none",
                "predicted_lift",
                "lift_vs_policy_alone",
                "policy_alone_lift_vs_none",
                "policy_alone_spend",
                "check",
                "seconds",
            )
        },
    }
    if args.budgets:
        budgets = [float(b) for b in args.budgets.split(",")]
        refs = {b: resolve_policy(b, world) for b in ("bau", "greedy_uplift") if b != args.policy}
        t1 = time.perf_counter()
        front = plan_frontier(ctx, budgets, None, refs)
        out["frontier"] = {"seconds": time.perf_counter() - t1 + ctx.seconds, **front}
    stack.close()
    out["workers"] = args.workers
    if args.json:
        print(json.dumps(json_safe(out), indent=2))
    else:
        p = out["one_budget"]
        print(
            f"budget {p['budget']:,.0f}: lift {p['lift_vs_none']['mean']:+.3f} on fresh seeds (predicted "
            f"{p['predicted_lift']['mean']:+.3f}), spend {p['spend']['mean']:,.0f}, {p['wall_seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
