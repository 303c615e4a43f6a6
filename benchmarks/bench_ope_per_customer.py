"""Per-customer OPE against the trajectory truth (issue 15, section 3): every sequential estimator,
marginalized IS (`mis`) and double RL (`drl`) among them, on synthetic bank histories.

For each seed, a synthetic bank history (sim.synthetic: BankConfig(customers=--customers, seed=s),
its logging policy = playbook + 30 % uniform exploration, a decision every 4 weeks from signup, a
median 26 decisions per customer) is evaluated with `experiments.ope.evaluate_offline
(estimand="per_customer")` for each candidate: the baselines none, bau and greedy_uplift
(policies.baselines) and a small MaskablePPO agent trained once on the generating world with the
project's own training code (policies.rl.train, --agent-steps customer-periods, warm-started from
greedy_uplift as `clv train` does). Reward: the data contract's (margins of transactions and of
products held, minus contact costs), undiscounted.

Truths (experiments.ope.truth.true_values_many, key cv per_customer): the population value of each
candidate deciding every decision of a customer's trajectory in the generating world, from one run
of --truth-customers customers with a control variate; and, per seed, the same customers' value
(the candidate run on exactly the customers of that history), reported beside.

Figures per candidate and estimator: mean absolute relative error, bias, RMSE, 95 % interval
coverage of the population truth, median interval width and effective sample size.

    python benchmarks/bench_ope_per_customer.py --seeds 30 --customers 2000 --truth-customers 100000 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASELINES = ("none", "bau", "greedy_uplift")
AGENT = "ppo"
ESTIMATORS = ("pdis", "wpdis", "dr_seq", "wdr", "fqe", "mis", "drl")
TRUTH_SEED = 10_000


def _policies(world, agent_dir: str | None) -> dict:
    from policies.baselines import make_baseline

    pols = {p: make_baseline(p, world) for p in BASELINES}
    if agent_dir is not None:
        from policies.rl import SB3Policy

        pols[AGENT] = SB3Policy.load(agent_dir, world, name=AGENT)
    return pols


def train_agent(steps: int, out: str) -> dict:
    """A small MaskablePPO on the generating world (the world does not depend on the seed's customers)."""
    import torch

    from policies.rl import train
    from sim.synthetic import BankConfig, truth_world

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    _, card = train(
        truth_world(BankConfig(customers=2000, seed=TRUTH_SEED)),
        algo="maskable_ppo",
        steps=steps,
        seed=0,
        out=out,
        overrides={"torch_threads": 1},
    )
    return {
        "algo": card["algo"],
        "steps": card["steps"],
        "seconds": time.perf_counter() - t0,
        "warm_start": "greedy_uplift",
    }


def population_truth(customers: int, agent_dir: str | None) -> dict:
    import torch

    from experiments.ope.truth import true_values_many
    from sim.synthetic import BankConfig, truth_world

    torch.set_num_threads(1)
    cfg = BankConfig(customers=customers, seed=TRUTH_SEED)
    res = true_values_many(cfg, _policies(truth_world(cfg), agent_dir))
    return {
        p: {
            "per_customer": r["cv"]["per_customer"],
            "per_customer_se": r["cv_se"]["per_customer"],
            "seconds": r["seconds"],
        }
        for p, r in res.items()
    }


def one_seed(seed: int, customers: int, n_boot: int, agent_dir: str | None) -> dict:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from experiments.ope import OPESettings, evaluate_offline, logged_decisions
    from experiments.ope.truth import true_values_many
    from sim.synthetic import BankConfig, generate_bank_history

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = BankConfig(customers=customers, seed=seed)
    hist, truth = generate_bank_history(cfg)
    world = truth["world"]
    pols = _policies(world, agent_dir)
    same = true_values_many(cfg, pols)
    shared = logged_decisions(hist, world=world)
    out = {"seed": seed, "policies": {}}
    for name, pol in pols.items():
        res = evaluate_offline(
            hist,
            OPESettings(estimand="per_customer", estimators=ESTIMATORS, n_boot=n_boot, seed=seed),
            policy=pol,
            world=world,
            logged=shared,
        )
        out["policies"][name] = {
            "same_customers": same[name]["per_customer"],
            "decisions": res["decisions"],
            "estimates": {k: [e["value"], e["ci_low"], e["ci_high"], e["ess"]] for k, e in res["estimates"].items()},
            "recommended": res["recommended"]["estimator"],
            "cells": res["models"].get("cells", {}).get("cells"),
        }
    out["seconds"] = time.perf_counter() - t0
    return out


def summarise(seeds: list[dict], pop: dict) -> dict:
    table = {}
    for p in pop:
        table[p] = {}
        truth = pop[p]["per_customer"]
        same = np.array([s["policies"][p]["same_customers"] for s in seeds])
        for k in ESTIMATORS:
            rows = np.array([s["policies"][p]["estimates"][k] for s in seeds])
            v, lo, hi = rows[:, 0], rows[:, 1], rows[:, 2]
            rel = (v - truth) / abs(truth)
            rs = (v - same) / np.abs(same)
            table[p][k] = {
                "mean_abs_rel_error": float(np.mean(np.abs(rel))),
                "max_abs_rel_error": float(np.max(np.abs(rel))),
                "rmse_rel": float(np.sqrt(np.mean(rel**2))),
                "bias_rel": float(np.mean(rel)),
                "coverage": float(np.mean((lo <= truth) & (truth <= hi))),
                "median_ci_width_rel": float(np.median((hi - lo) / abs(truth))),
                "median_ess": float(np.median(rows[:, 3])),
                "same_customers_mean_abs_rel_error": float(np.mean(np.abs(rs))),
                "same_customers_coverage": float(np.mean((lo <= same) & (same <= hi))),
            }
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--truth-customers", type=int, default=100_000)
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--agent-steps", type=int, default=65_536, help="0: no trained agent, the baselines only")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the full JSON (per seed) here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    import ray

    from experiments.ray_session import ray_session

    with tempfile.TemporaryDirectory(prefix="clv_ope_agent_") as tmp:
        agent_dir, agent = None, None
        if args.agent_steps > 0:
            agent_dir = str(Path(tmp) / AGENT)
            agent = train_agent(args.agent_steps, agent_dir)
            print(f"agent trained in {agent['seconds']:.0f}s", file=sys.stderr)
        with ray_session(args.workers):
            task = ray.remote(num_cpus=1, max_retries=2)(one_seed)
            truth_ref = ray.remote(num_cpus=1)(population_truth).remote(args.truth_customers, agent_dir)
            refs = [
                task.remote(s, args.customers, args.bootstrap, agent_dir)
                for s in range(args.first_seed, args.first_seed + args.seeds)
            ]
            pending = list(refs)
            while pending:
                _, pending = ray.wait(pending, num_returns=1)
                print(
                    f"seeds {len(refs) - len(pending)}/{len(refs)} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr
                )
            seeds = ray.get(refs)
            pop = ray.get(truth_ref)
    doc = {
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "customers": args.customers,
        "median_decisions": float(np.median([s["policies"]["none"]["decisions"] for s in seeds])),
        "truth_customers": args.truth_customers,
        "bootstrap": args.bootstrap,
        "agent": agent,
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
            print(f"{p}: truth per_customer {t['per_customer']:.2f} (se {t['per_customer_se']:.2f})")
            for k, e in rows.items():
                print(
                    f"  {k:<7} mean|err| {e['mean_abs_rel_error']:6.2%}  max {e['max_abs_rel_error']:6.2%}  bias "
                    f"{e['bias_rel']:+6.2%}  cover {e['coverage']:4.0%}  ci width {e['median_ci_width_rel']:6.2%}  "
                    f"ess {e['median_ess']:.0f}  same customers: err {e['same_customers_mean_abs_rel_error']:.2%} "
                    f"cover {e['same_customers_coverage']:.0%}"
                )


if __name__ == "__main__":
    main()
