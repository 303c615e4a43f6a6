"""Offline evaluation against the truth (issue 5 target: DR relative error <= 5 % at 50k logged
decisions; 95 % intervals cover the truth in >= 90 % of seeds).

For each seed, a synthetic bank history (sim.synthetic, its logging policy = playbook + 30 %
uniform exploration) of `--customers` customers (1,920 give about 50k decisions) is evaluated with
`experiments.ope.evaluate_offline` for each candidate policy, built on the generating world.
Two truths from experiments.ope.truth:

- population: the candidate's value in the generating world (per_decision: one-step value at the
  logged states; per_customer: the candidate making every decision), from one large run of
  `--truth-customers` customers with a control variate (its standard error is printed);
- same customers: the one-step value at exactly the states of this seed's history (the branches
  of the same logging run), which removes the sampling of customers from the comparison.

Seeds run as Ray tasks (`--workers`); each seed's numbers depend only on the seed.

    python benchmarks/bench_ope_truth.py --seeds 60 --customers 1920 --truth-customers 100000 --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

POLICIES = ("none", "bau", "greedy_uplift")
ONE_STEP = ("dm", "ips", "snips", "dr", "sndr")
SEQUENTIAL = ("pdis", "wpdis", "dr_seq", "wdr", "fqe")


def _policies(world):
    from policies.baselines import make_baseline

    return {p: make_baseline(p, world) for p in POLICIES}


def population_truth(customers: int, seed: int) -> dict:
    from experiments.ope.truth import true_values_many
    from sim.synthetic import BankConfig, truth_world

    cfg = BankConfig(customers=customers, seed=seed)
    res = true_values_many(cfg, _policies(truth_world(cfg)))
    return {
        p: {
            "per_decision": r["cv"]["per_decision"],
            "per_decision_se": r["cv_se"]["per_decision"],
            "per_customer": r["cv"]["per_customer"],
            "per_customer_se": r["cv_se"]["per_customer"],
            "seconds": r["seconds"],
        }
        for p, r in res.items()
    }


def one_seed(seed: int, customers: int, n_boot: int, reward_model: str) -> dict:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from experiments.ope import OPESettings, evaluate_offline, logged_decisions
    from experiments.ope.truth import true_values_many
    from sim.synthetic import BankConfig, generate_bank_history

    t0 = time.perf_counter()
    cfg = BankConfig(customers=customers, seed=seed)
    hist, truth = generate_bank_history(cfg)
    world = truth["world"]
    pols = _policies(world)
    same = true_values_many(cfg, pols)
    out = {"seed": seed, "policies": {}}
    shared = logged_decisions(hist, world=world)  # states and reward model, once for every candidate
    for name, pol in pols.items():
        one = evaluate_offline(
            hist,
            OPESettings(estimators=ONE_STEP, n_boot=n_boot, seed=seed, reward_model=reward_model),
            policy=pol,
            world=world,
            logged=shared,
        )
        seq = evaluate_offline(
            hist,
            OPESettings(estimand="per_customer", estimators=SEQUENTIAL, n_boot=n_boot, seed=seed),
            policy=pol,
            world=world,
            logged=shared,
        )
        out["policies"][name] = {
            "same_customers_per_decision": same[name]["per_decision"],
            "decisions": one["decisions"],
            "per_decision": {k: [e["value"], e["ci_low"], e["ci_high"], e["ess"]] for k, e in one["estimates"].items()},
            "per_customer": {k: [e["value"], e["ci_low"], e["ci_high"], e["ess"]] for k, e in seq["estimates"].items()},
            "warning_per_decision": one["diagnostics"]["warning"],
            "warning_per_customer": seq["diagnostics"]["warning"],
        }
    out["seconds"] = time.perf_counter() - t0
    return out


def summarise(seeds: list[dict], pop: dict) -> dict:
    table = {}
    for p in POLICIES:
        table[p] = {}
        for estimand, names in (("per_decision", ONE_STEP), ("per_customer", SEQUENTIAL)):
            for k in names:
                rows = np.array([s["policies"][p][estimand][k] for s in seeds])
                v, lo, hi = rows[:, 0], rows[:, 1], rows[:, 2]
                truth = pop[p][estimand]
                rel = (v - truth) / abs(truth)
                entry = {
                    "mean_abs_rel_error": float(np.mean(np.abs(rel))),
                    "rmse_rel": float(np.sqrt(np.mean(rel**2))),
                    "bias_rel": float(np.mean(rel)),
                    "coverage": float(np.mean((lo <= truth) & (truth <= hi))),
                    "median_ci_width_rel": float(np.median((hi - lo) / abs(truth))),
                    "median_ess": float(np.median(rows[:, 3])),
                }
                if estimand == "per_decision":
                    same = np.array([s["policies"][p]["same_customers_per_decision"] for s in seeds])
                    rs = (v - same) / np.abs(same)
                    entry.update(
                        {
                            "same_customers_mean_abs_rel_error": float(np.mean(np.abs(rs))),
                            "same_customers_coverage": float(np.mean((lo <= same) & (same <= hi))),
                        }
                    )
                table[p][f"{estimand}.{k}"] = entry
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=60)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--customers", type=int, default=1920, help="customers per history (1,920: ~50k decisions)")
    ap.add_argument("--truth-customers", type=int, default=100_000)
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--reward-model", default="ridge")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the full JSON (per seed) here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    import ray

    from experiments.ray_session import ray_session

    with ray_session(args.workers):
        task = ray.remote(num_cpus=1, max_retries=2)(one_seed)
        truth_task = ray.remote(num_cpus=1)(population_truth)
        truth_ref = truth_task.remote(args.truth_customers, 10_000)
        refs = [
            task.remote(s, args.customers, args.bootstrap, args.reward_model)
            for s in range(args.first_seed, args.first_seed + args.seeds)
        ]
        from rich.console import Console
        from rich.progress import Progress

        pending = list(refs)
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task_id = bar.add_task("seeds", total=len(refs))
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.advance(task_id, len(done))
        seeds = ray.get(refs)
        pop = ray.get(truth_ref)
    doc = {
        "seeds": args.seeds,
        "customers": args.customers,
        "median_decisions": float(np.median([s["policies"]["none"]["decisions"] for s in seeds])),
        "truth_customers": args.truth_customers,
        "bootstrap": args.bootstrap,
        "reward_model": args.reward_model,
        "population_truth": pop,
        "summary": summarise(seeds, pop),
        "seconds": time.perf_counter() - t0,
    }
    if args.out:
        args.out.write_text(json.dumps({**doc, "per_seed": seeds}, indent=1))
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(f"{args.seeds} seeds, median {doc['median_decisions']:.0f} decisions, {doc['seconds']:.0f}s")
        for p, rows in doc["summary"].items():
            t = pop[p]
            print(
                f"{p}: truth per_decision {t['per_decision']:.4f} (se {t['per_decision_se']:.4f}), "
                f"per_customer {t['per_customer']:.2f} (se {t['per_customer_se']:.2f})"
            )
            for k, e in rows.items():
                extra = (
                    f"  same customers: err {e['same_customers_mean_abs_rel_error']:.2%} cover "
                    f"{e['same_customers_coverage']:.0%}"
                    if "same_customers_coverage" in e
                    else ""
                )
                print(
                    f"  {k:<22} mean|err| {e['mean_abs_rel_error']:6.2%}  rmse {e['rmse_rel']:6.2%}  bias "
                    f"{e['bias_rel']:+6.2%}  cover {e['coverage']:4.0%}  ci width {e['median_ci_width_rel']:6.2%}"
                    f"  ess {e['median_ess']:.0f}{extra}"
                )


if __name__ == "__main__":
    main()
