"""The budgeted policy at bank scale: 1M twins of a calibrated world's book x 52 weeks, one budget,
one seed (the value model, the policy alone with its proposals recorded, the price search and the
budgeted run), in-process; wall time and peak memory (resident set of this process).

    python benchmarks/bench_budget_plan_scale.py --world demo_out/world.json --policy demo_out/policy \\
        --customers 1000000 --budget 333000 --json
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--policy", default="greedy_uplift")
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--budget", type=float, required=True, help="cash for the whole horizon and all twins")
    ap.add_argument("--horizon", type=int, default=52)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from dataclasses import replace

    from optimizer.budgeted import BudgetRule, fit_contact_values, guess_price, run_horizon, tune_price
    from policies.base import as_simulator_policy
    from policies.registry import resolve_policy
    from sim.population import WorldTables
    from sim.world import WorldModel

    t0 = time.perf_counter()
    world = WorldModel.load(args.world)
    book = world.read_book(args.world)
    pol = resolve_policy(args.policy, world)
    fn, tables, n = as_simulator_policy(pol), WorldTables.from_world(world), args.customers
    out: dict = {"customers": n, "horizon": args.horizon, "budget": args.budget, "policy": args.policy}
    values = fit_contact_values(world, book, pol, args.horizon, 26, 2000, args.seed + 0x9A11, continuation="none")
    out["values_seconds"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    alone = run_horizon(world, book, fn, args.horizon, args.seed, "policy", None, values, n, tables, True)
    out["policy_alone"] = {"seconds": time.perf_counter() - t1, "spend": alone.spend, "clv": float(alone.clv.mean())}
    rule = BudgetRule(args.budget, args.horizon)
    t1 = time.perf_counter()
    price, trace = tune_price(
        world,
        book,
        fn,
        values,
        rule,
        [args.seed],
        alone.spend,
        n,
        aim=1.03,
        start=guess_price([alone], args.budget * 1.03),
    )
    out["price"] = {"seconds": time.perf_counter() - t1, "price": price, "runs": len(trace)}
    t1 = time.perf_counter()
    run = run_horizon(
        world, book, fn, args.horizon, args.seed, "budgeted", replace(rule, price=price), values, n, tables
    )
    none = run_horizon(world, book, None, args.horizon, args.seed, "none", customers=n, tables=tables)
    out["budgeted"] = {
        "seconds": time.perf_counter() - t1,
        "spend": run.spend,
        "lift_vs_none": float(run.clv.mean() - none.clv.mean()),
        "lift_vs_policy_alone": float(run.clv.mean() - alone.clv.mean()),
    }
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        json.dumps(out, indent=2)
        if args.json
        else f"{n:,} customers: {out['seconds']:.0f} s, {out['peak_rss_gb']:.1f} GB"
    )


if __name__ == "__main__":
    main()
