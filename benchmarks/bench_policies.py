"""Issue-3 targets on the calibrated synthetic-bank world: train the default PPO and MaskablePPO
(timed), compare them with every baseline by CRN simulation over seeds, and show *when* the best
one contacts customers compared with the rule playbook and what that timing is worth.

    python benchmarks/bench_policies.py --out bench_out/policies --json

Steps: `clv make-data` + `clv calibrate` (bank, calibration end 2024-06-30) unless --world is
given; train PPO and MaskablePPO with the defaults of policies/rl.py (with --check-determinism
each twice: identical parameters); evaluate every baseline and both agents on seeds
1000..1000+K-1 to pick the best baseline and the best agent, then compare them again on
held-out seeds 2000..2000+K-1 (no selection bias in the reported difference), with the
counterfactual "agent's offers at the playbook's timing"; contact profiles (stage, periods
since last transaction, action) of the agent, bau and greedy. Writes summary.json,
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
        subprocess.run(
            clv + ["calibrate", str(out / "bank"), "--calibration-end", "2024-06-30", "--out", str(world_path)],
            check=True,
            cwd=ROOT,
        )

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

    summary: dict = {
        "world": str(world_path),
        "world_hash": world.hash(),
        "torch_threads": torch.get_num_threads(),
        "agents": {},
    }
    agents = {}
    for algo in ("ppo", "maskable_ppo"):
        t0 = time.perf_counter()
        agents[algo], card = train(
            world,
            algo,
            steps=args.steps,
            seed=args.seed,
            out=out / algo,
            book=book,
            population="book",
            world_path=str(world_path),
        )
        info = {
            "train_seconds": round(time.perf_counter() - t0, 1),
            "train_steps": card["steps"],
            "warm_start": card["warm_start"],
            "model_digest": digest(agents[algo]),
            "hyperparameters": card["hyperparameters"],
        }
        if args.check_determinism:
            again, _ = train(world, algo, steps=args.steps, seed=args.seed, book=book, population="book")
            info["same_seed_same_parameters"] = digest(again) == info["model_digest"]
        summary["agents"][algo] = info

    metrics = ("clv", "retention", "marketing_roi", "cross_sell_rate", "active_share", "contacts")
    pols = {n: make_baseline(n, world) for n in BASELINES}
    pols.update(agents)
    # selection seeds: pick the best baseline and the best learned agent
    res = evaluate(
        world,
        pols,
        customers=args.customers,
        periods=args.periods,
        seeds=args.seeds,
        seed=1000,
        book=book,
        reference="bau",
    )
    baselines = [n for n in BASELINES if n != "none"]
    best = max(baselines, key=lambda n: res["policies"][n]["clv"]["mean"])
    learned = max(agents, key=lambda n: res["policies"][n]["clv"]["mean"])
    summary["selection"] = {
        "seeds": [1000, 1000 + args.seeds - 1],
        "best_baseline": best,
        "best_learned": learned,
        "evaluation": {n: {m: res["policies"][n][m] for m in metrics} for n in pols},
        "learned_vs_best_baseline": {a: paired_difference(res, a, best, "clv") for a in agents},
    }
    # held-out seeds: the chosen agent against every baseline, plus the timing counterfactual
    pols[f"{learned}_offers_at_bau_timing"] = PlaybookTiming(
        agents[learned], pols["bau"], name=f"{learned}_offers_at_bau_timing"
    )
    res = evaluate(
        world,
        pols,
        customers=args.customers,
        periods=args.periods,
        seeds=args.seeds,
        seed=2000,
        book=book,
        reference="bau",
    )
    plot(res, out / "evaluation.png")
    summary["heldout"] = {
        "seeds": [2000, 2000 + args.seeds - 1],
        "evaluation": {n: {m: res["policies"][n][m] for m in metrics} for n in pols},
        "learned_vs_best_baseline": {
            m: paired_difference(res, learned, best, m) for m in ("clv", "retention", "marketing_roi", "contacts")
        },
        "learned_vs_bau": {
            m: paired_difference(res, learned, "bau", m)
            for m in ("clv", "retention", "marketing_roi", "cross_sell_rate")
        },
        "worth_of_learned_timing": paired_difference(res, learned, f"{learned}_offers_at_bau_timing", "clv"),
    }
    if learned != "ppo":
        summary["heldout"]["ppo_vs_best_baseline"] = paired_difference(res, "ppo", best, "clv")
    profiles = {
        n: contact_profile(world, pols[n], args.periods, 2000, args.customers, book=book)
        for n in ("bau", learned, "greedy_uplift")
    }
    plot_timing(profiles, out / "timing.png")
    summary["contact_profiles"] = profiles
    summary["evaluation_setup"] = {
        "customers": args.customers,
        "periods": args.periods,
        "seeds": args.seeds,
        "population": "book twins",
        "crn": True,
    }
    from sim.world import json_safe

    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
    if args.json:
        print(json.dumps(json_safe(summary), indent=2))
    else:
        d = summary["heldout"]["learned_vs_best_baseline"]["clv"]
        print(
            f"{learned} vs {best} on held-out seeds: CLV {d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]; "
            f"vs bau {summary['heldout']['learned_vs_bau']['clv']['relative']:+.1%}"
        )


if __name__ == "__main__":
    main()
