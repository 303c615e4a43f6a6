"""The budgeted plan in the synthetic bank's generating world: does a plan made on the calibrated
world gain, on the true customers, what the calibrated world predicted?

For each budget: the plan is made on the world calibrated from the history (`clv plan`'s library
calls: price set on planning seeds, checked on fresh seeds), then run on the book's true
customers from the calibration week (experiments.budget_truth: the history's generating world,
rebuilt from its README.json) on continuation seeds of its own. Prints one JSON document.

    make demo
    python benchmarks/bench_budget_plan_truth.py --world demo_out/world.json --policy demo_out/policy \\
        --history demo_out/history --budgets 1000,2000,6000 --seeds 5 --truth-seeds 5 --workers 2 --json
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--history", required=True, help="the `clv make-data` folder the world was calibrated on")
    ap.add_argument("--policy", default="greedy_uplift")
    ap.add_argument("--budgets", default="2000")
    ap.add_argument("--horizon", type=int, default=52)
    ap.add_argument("--seeds", type=int, default=5, help="planning seeds, and as many fresh seeds")
    ap.add_argument("--truth-seeds", type=int, default=5, help="continuation seeds in the generating world")
    ap.add_argument("--workers", type=int, default=2, help="Ray CPUs the plan's seeds run on (0: in-process)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from experiments.budget_plan import PlanSettings, plan_at, prepare_plan
    from experiments.budget_truth import check_in_truth
    from experiments.ray_session import executor_session
    from policies.registry import policy_label, resolve_policy
    from sim.world import WorldModel, json_safe

    world = WorldModel.load(args.world)
    book = world.read_book(args.world)
    pol = resolve_policy(args.policy, world)
    budgets = [float(b) for b in args.budgets.split(",")]
    settings = PlanSettings(budget=budgets[0], horizon=args.horizon, seeds=args.seeds)
    out: dict = {"world": args.world, "history": args.history, "policy": args.policy, "customers": len(book)}
    t0 = time.perf_counter()
    with executor_session(args.workers) as executor:
        ctx = prepare_plan(world, book, pol, settings, policy_label(args.policy), executor=executor)
        rows = []
        for b in budgets:
            doc = plan_at(ctx, b).to_dict()
            t1 = time.perf_counter()
            truth = check_in_truth(ctx, args.history, doc, None, list(range(args.truth_seeds)))
            truth["seconds"] = time.perf_counter() - t1
            truth["calibrated_lift_vs_policy_alone"] = doc["lift_vs_policy_alone"]
            truth["calibrated_policy_alone_lift_vs_none"] = doc["policy_alone_lift_vs_none"]
            truth["calibrated_spend"] = doc["spend"]
            rows.append(truth)
    out["budgets"] = rows
    out["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps(json_safe(out), indent=2))
        return
    for r in rows:
        t, p = r["lift_vs_none"], r["predicted_lift"]
        print(
            f"budget {r['budget']:>9,.0f}: true lift {t['mean']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}], "
            f"predicted {p['mean']:+.3f} ({'inside' if r['predicted_inside_truth_ci'] else 'outside'}), "
            f"calibrated fresh {r['calibrated_fresh_lift']['mean']:+.3f}; true spend {r['spend']['mean']:,.0f}"
        )


if __name__ == "__main__":
    main()
