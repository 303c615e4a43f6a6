"""Benchmark: population-simulator throughput (customer-steps per second, one core) against the
plain per-customer Gymnasium env anchor, measured in the same run; medians of --repeats.

    python benchmarks/bench_simulator.py --anchor ../shared/anchors/plain_gym_env.py --json

The world is the full synthetic-bank model (3 segments, 4 products, seasonality, 8 actions with
activity/dropout/adoption effects, fatigue, opt-outs, stage rules). Workloads: the "none"
policy, a campaign policy contacting ~10% of customers per period with a random allowed
action, and a heavy one contacting a random allowed action every time the rules allow it.
Only `step` is timed (policy time is reported separately).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from sim.population import DEFAULT_CHUNK, PopulationSimulator, chunk_seeds  # noqa: E402
from sim.synthetic import BankConfig, truth_world  # noqa: E402


def campaign(rate: float):
    def pol(sim: PopulationSimulator) -> np.ndarray:
        m = sim.action_masks()
        g = sim.rng.random(m.shape) * m
        a = np.argmax(g[:, 1:], axis=1).astype(np.int16) + 1
        a[~m[np.arange(len(a)), a]] = 0
        a[sim.rng.random(len(a)) >= rate] = 0
        return a

    return pol


def measure(world, n: int, steps: int, policy, seed: int) -> tuple[float, float]:
    """n customers stepped in chunks of DEFAULT_CHUNK, as `sim.population.simulate` runs them."""
    sims = [
        PopulationSimulator.new_customers(world, stop - start, seq)
        for start, stop, seq in chunk_seeds(seed, n, DEFAULT_CHUNK)
    ]
    for sim in sims:
        for _ in range(5):  # warm up; let effects and stages mix
            sim.step(policy(sim))
    t_step = t_pol = 0.0
    for _ in range(steps):
        for sim in sims:
            t0 = time.perf_counter()
            a = policy(sim)
            t1 = time.perf_counter()
            sim.step(a)
            t2 = time.perf_counter()
            t_pol += t1 - t0
            t_step += t2 - t1
    return n * steps / t_step, n * steps / (t_step + t_pol)


def run_anchor(path: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, path], capture_output=True, text=True, check=True).stdout
    naive = float(re.search(r"naive per-customer gym env: ([0-9.]+)", out).group(1))
    vec = float(re.search(r"numpy vectorised population: ([0-9.]+)", out).group(1))
    return naive, vec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--anchor", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "anchors", "plain_gym_env.py")
    )
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    world = truth_world(BankConfig())
    workloads = {
        "none": lambda sim: np.zeros(sim.state.n, np.int16),
        "campaign_10pct": campaign(0.10),
        "contact_every_allowed": campaign(1.0),
    }
    res: dict[str, list] = {k: [] for k in workloads}
    res_pol: dict[str, list] = {k: [] for k in workloads}
    anchors_naive, anchors_vec = [], []
    for r in range(args.repeats):
        if os.path.exists(args.anchor):
            a_n, a_v = run_anchor(args.anchor)
            anchors_naive.append(a_n)
            anchors_vec.append(a_v)
        for k, pol in workloads.items():
            s, sp = measure(world, args.customers, args.steps, pol, seed=r)
            res[k].append(s)
            res_pol[k].append(sp)
    med = {k: statistics.median(v) for k, v in res.items()}
    doc = {
        "customers": args.customers,
        "steps": args.steps,
        "repeats": args.repeats,
        "clv_steps_per_second": med,
        "clv_steps_per_second_incl_policy": {k: statistics.median(v) for k, v in res_pol.items()},
    }
    if anchors_naive:
        naive = statistics.median(anchors_naive)
        doc["anchor_plain_gym_env_steps_per_second"] = naive
        doc["anchor_toy_numpy_steps_per_second"] = statistics.median(anchors_vec)
        doc["ratio_vs_plain_env"] = {k: v / naive for k, v in med.items()}
        # the anchor's bare numpy step of its toy model (no rules, effects, products or fatigue): the
        # practical ceiling for a numpy population step, so the fraction of it reached
        doc["ratio_vs_toy_numpy_ceiling"] = {k: v / doc["anchor_toy_numpy_steps_per_second"] for k, v in med.items()}
    print(json.dumps(doc, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in doc.items()))


if __name__ == "__main__":
    main()
