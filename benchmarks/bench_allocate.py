"""Benchmark the allocation engines: the Lagrangian engine on 1M customers x 10 actions (budget +
channel capacity + min-coverage + max-share), GLOP and CP-SAT on the same model at 100k customers,
and a 20-budget frontier on 1M customers.

Each measurement runs in a fresh child process so its peak memory (ru_maxrss) is its own.

    python benchmarks/bench_allocate.py --customers 1000000 --exact-customers 100000 --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def constraints(n: int):
    from optimizer.problem import budget_constraint, parse_constraint

    return [
        budget_constraint(1.0 * n),
        parse_constraint("capacity", f"channel:rm={int(0.01 * n)}"),
        parse_constraint("min-coverage", "segment:small=0.85"),
        parse_constraint("max-share", "segment:affluent=0.25"),
    ]


def _child(task: str, n: int, seed: int, kw: dict, q) -> None:
    import resource

    import numpy as np

    from optimizer.instances import bank_like_table
    from optimizer.problem import AllocationProblem

    t0 = time.perf_counter()
    table = bank_like_table(n, seed=seed)
    problem = AllocationProblem(table, constraints(n))
    gen = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict = {"task": task, "customers": n, "options": table.n_options, "generate_seconds": gen}
    t0 = time.perf_counter()
    if task == "lagrangian":
        from optimizer.allocate import allocate

        a = allocate(problem, method="lagrangian")
        secs = time.perf_counter() - t0
        counts, spend = a.counts_and_spend()
        usage = problem.usage_from_counts(counts, spend)
        integral = bool(np.all(a.units == np.round(a.units)))
        out.update(
            seconds=secs,
            objective=a.objective,
            bound=a.bound,
            gap=a.gap,
            evaluations=a.extra["evaluations"],
            feasible=problem.feasible(usage),
            integral=integral,
            usage={c.name: [float(u), float(b)] for c, u, b in zip(problem.constraints, usage, problem.b)},
            multipliers=a.multipliers.tolist(),
        )
    elif task in ("GLOP", "PDLP", "CP_SAT", "SCIP", "HIGHS"):
        from optimizer.exact import solve_exact

        r = solve_exact(problem, task, time_limit=kw.get("time_limit"))
        secs = time.perf_counter() - t0
        out.update(
            seconds=secs,
            status=r.status,
            objective=r.objective,
            bound=r.bound,
            duals=None if r.duals is None else r.duals.tolist(),
            time_limit=kw.get("time_limit"),
        )
    elif task == "frontier":
        from optimizer.frontier import frontier

        budgets = [float(b) * n for b in kw["budgets"]]
        doc = frontier(problem, budgets, method="lagrangian")
        secs = time.perf_counter() - t0
        pts = doc["points"]
        out.update(
            seconds=secs,
            budgets=len(budgets),
            max_gap=max(p["gap"] for p in pts),
            seconds_per_budget=[round(p["seconds"], 2) for p in pts],
            evaluations=[p["iterations"] for p in pts],
            values=[p["objective"] for p in pts],
            marginal=[p["marginal_value"] for p in pts],
        )
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_before_solve_mb"] = rss_before
    q.put(out)


class _Out:
    def put(self, doc: dict) -> None:
        sys.stdout.write("RESULT " + json.dumps(doc) + "\n")


def run(task: str, n: int, seed: int, **kw) -> dict:
    """One measurement in a fresh Python process (its own peak memory)."""
    import subprocess

    cmd = [sys.executable, __file__, "--child", json.dumps({"task": task, "n": n, "seed": seed, "kw": kw})]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{task} child failed (exit {proc.returncode}): {proc.stderr[-2000:]}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        job = json.loads(sys.argv[2])
        _child(job["task"], job["n"], job["seed"], job["kw"], _Out())
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--exact-customers", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpsat-time-limit", type=float, default=120.0)
    ap.add_argument("--lp-time-limit", type=float, default=600.0)
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--frontier-budgets", type=int, default=20, help="budgets of the frontier run; 0 skips it")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res: dict = {
        "setup": {
            "customers": args.customers,
            "actions": 10,
            "seed": args.seed,
            "constraints": [
                "budget 1.0 x customers",
                "capacity channel:rm=1% of customers",
                "min-coverage segment:small=0.85",
                "max-share segment:affluent=0.25",
            ],
        }
    }
    runs = [run("lagrangian", args.customers, args.seed) for _ in range(args.repeats)]
    res["lagrangian_1m"] = {
        **runs[-1],
        "seconds_median": statistics.median(r["seconds"] for r in runs),
        "seconds_all": [round(r["seconds"], 2) for r in runs],
        "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
    }
    print(
        json.dumps({"lagrangian_1m": {k: res["lagrangian_1m"][k] for k in ("seconds_all", "gap", "peak_rss_mb_max")}}),
        file=sys.stderr,
        flush=True,
    )
    if args.frontier_budgets >= 2:  # 0 skips the frontier (the 10M-customer run of issue 19)
        budgets = [0.25 + 2.25 * i / (args.frontier_budgets - 1) for i in range(args.frontier_budgets)]
        res["frontier_1m"] = run("frontier", args.customers, args.seed, budgets=budgets)
        print(json.dumps({"frontier_1m": res["frontier_1m"]["seconds"]}), file=sys.stderr, flush=True)
    m = args.exact_customers
    res["lagrangian_small"] = run("lagrangian", m, args.seed)
    if not args.skip_exact:
        res["glop_small"] = run("GLOP", m, args.seed, time_limit=args.lp_time_limit)
        print(
            json.dumps({"glop": [res["glop_small"]["status"], res["glop_small"]["seconds"]]}),
            file=sys.stderr,
            flush=True,
        )
        res["pdlp_small"] = run("PDLP", m, args.seed, time_limit=args.lp_time_limit)
        print(
            json.dumps({"pdlp": [res["pdlp_small"]["status"], res["pdlp_small"]["seconds"]]}),
            file=sys.stderr,
            flush=True,
        )
        res["cpsat_small"] = run("CP_SAT", m, args.seed, time_limit=args.cpsat_time_limit)
        print(
            json.dumps({"cpsat": [res["cpsat_small"]["status"], res["cpsat_small"]["seconds"]]}),
            file=sys.stderr,
            flush=True,
        )
        solved = [r for r in (res["glop_small"], res["pdlp_small"]) if r["status"] == "optimal"]
        lp = solved[0]["objective"] if solved else None
        res["comparison_small"] = {
            "lp_reference": solved[0]["task"] if solved else None,
            "lagrangian_bound_vs_lp_rel": (res["lagrangian_small"]["bound"] - lp) / abs(lp) if lp else None,
            "lagrangian_plan_vs_lp_rel": (res["lagrangian_small"]["objective"] - lp) / abs(lp) if lp else None,
            "cpsat_plan_vs_lagrangian_bound_rel": (res["cpsat_small"]["objective"] - res["lagrangian_small"]["bound"])
            / abs(res["lagrangian_small"]["bound"])
            if res["cpsat_small"]["status"] in ("optimal", "feasible")
            else None,
            "glop_seconds_over_lagrangian_1m_seconds": res["glop_small"]["seconds"]
            / res["lagrangian_1m"]["seconds_median"],
        }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        l1 = res["lagrangian_1m"]
        print(
            f"Lagrangian {args.customers:,} customers: median {l1['seconds_median']:.1f}s, gap {100 * l1['gap']:.5f}%, "
            f"peak RSS {l1['peak_rss_mb_max']:.0f} MB, feasible {l1['feasible']}, integral {l1['integral']}"
        )
        f = res["frontier_1m"]
        print(f"Frontier {f['budgets']} budgets: {f['seconds']:.1f}s, max gap {100 * f['max_gap']:.5f}%")
        if "glop_small" in res:
            print(
                f"GLOP {m:,}: {res['glop_small']['status']} in {res['glop_small']['seconds']:.1f}s; CP-SAT {m:,}: {res['cpsat_small']['status']} "
                f"in {res['cpsat_small']['seconds']:.1f}s; {res['comparison_small']}"
            )


if __name__ == "__main__":
    main()
