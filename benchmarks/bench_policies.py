"""Issue-3 targets on the calibrated synthetic-bank world: train the default PPO (timed), compare
it with every baseline by CRN simulation over seeds, and show *when* it contacts customers
compared with the rule playbook and what that timing is worth.

    python benchmarks/bench_policies.py --out bench_out/policies --json

Steps: `clv make-data` + `clv calibrate` (bank, calibration end 2024-06-30) unless --world is
given; train PPO with the defaults of policies/rl.py (same seed twice: identical parameters is
checked); evaluate none, random, bau, churn_threshold, greedy_uplift, ppo and the counterfactual
"ppo offers at playbook timing" on --customers twins x --periods, --seeds seeds; contact
profiles (stage, periods since last transaction, action) of ppo and bau. Writes summary.json,
evaluation.png and timing.png into --out.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default=None, help="calibrated world JSON (default: build the bank world)")
    ap.add_argument("--out", default="bench_out/policies")
    ap.add_argument("--steps", type=int, default=None, help="PPO steps (default: policies.rl.DEFAULT_STEPS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--periods", type=int, default=52)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--check-determinism", action="store_true", help="train a second time and compare parameters")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clv = [sys.executable, "-m", "experiments.cli"]
    world_path = Path(args.world) if args.world else out / "world.json"
    if not world_path.exists():
        subprocess.run(clv + ["make-data", "--out", str(out / "bank"), "--seed", "7"], check=True, cwd=ROOT)
        subprocess.run(clv + ["calibrate", str(out / "bank"), "--calibration-end", "2024-06-30", "--out",
                              str(world_path)], check=True, cwd=ROOT)

    import numpy as np
    import pandas as pd
    import torch

    from experiments.evaluate import PlaybookTiming, contact_profile, evaluate, paired_difference, plot, plot_timing
    from policies.baselines import BASELINES, make_baseline
    from policies.rl import train
    from sim.world import WorldModel

    world = WorldModel.load(world_path)
    book = pd.read_parquet(world.book_path(world_path))

    def digest(policy) -> str:
        flat = np.concatenate([p.detach().numpy().ravel() for p in policy.model.policy.parameters()])
        return hashlib.sha256(flat.tobytes()).hexdigest()[:16]

    t0 = time.perf_counter()
    ppo, card = train(world, "ppo", steps=args.steps, seed=args.seed, out=out / "ppo", book=book,
                      population="book", world_path=str(world_path))
    train_seconds = time.perf_counter() - t0
    summary = {"world": str(world_path), "world_hash": world.hash(), "train_seconds": round(train_seconds, 1),
               "train_steps": card["steps"], "warm_start": card["warm_start"], "model_digest": digest(ppo),
               "hyperparameters": card["hyperparameters"], "torch_threads": torch.get_num_threads()}
    if args.check_determinism:
        again, _ = train(world, "ppo", steps=args.steps, seed=args.seed, book=book, population="book")
        summary["same_seed_same_parameters"] = digest(again) == summary["model_digest"]

    pols = {n: make_baseline(n, world) for n in BASELINES}
    pols["ppo"] = ppo
    pols["ppo_offers_at_bau_timing"] = PlaybookTiming(ppo, pols["bau"], name="ppo_offers_at_bau_timing")
    res = evaluate(world, pols, customers=args.customers, periods=args.periods, seeds=args.seeds, seed=1000,
                   book=book, reference="bau")
    plot(res, out / "evaluation.png")
    baselines = [n for n in BASELINES if n != "none"]
    best = max(baselines, key=lambda n: res["policies"][n]["clv"]["mean"])
    summary["evaluation"] = {n: {m: res["policies"][n][m] for m in ("clv", "retention", "marketing_roi",
                                                                      "cross_sell_rate", "active_share", "contacts")}
                             for n in pols}
    summary["best_baseline"] = best
    summary["ppo_vs_best_baseline"] = {m: paired_difference(res, "ppo", best, m)
                                       for m in ("clv", "retention", "marketing_roi", "contacts")}
    summary["ppo_offers_at_bau_timing_vs_best_baseline"] = paired_difference(res, "ppo_offers_at_bau_timing", best, "clv")
    summary["ppo_vs_bau"] = {m: paired_difference(res, "ppo", "bau", m)
                             for m in ("clv", "retention", "marketing_roi", "cross_sell_rate")}
    summary["worth_of_ppo_timing"] = paired_difference(res, "ppo", "ppo_offers_at_bau_timing", "clv")
    profiles = {n: contact_profile(world, pols[n], args.periods, 1000, args.customers, book=book)
                for n in ("bau", "ppo", "greedy_uplift")}
    plot_timing(profiles, out / "timing.png")
    summary["contact_profiles"] = profiles
    summary["evaluation_setup"] = {"customers": args.customers, "periods": args.periods, "seeds": args.seeds,
                                   "population": "book twins", "crn": True}
    from sim.world import json_safe
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
    if args.json:
        print(json.dumps(json_safe(summary), indent=2))
    else:
        d = summary["ppo_vs_best_baseline"]["clv"]
        print(f"trained in {train_seconds:.0f}s; PPO vs {best}: CLV {d['mean']:+.2f} "
              f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]; vs bau {summary['ppo_vs_bau']['clv']['relative']:+.1%}")


if __name__ == "__main__":
    main()
