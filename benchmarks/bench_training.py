"""SB3 PPO training throughput: the vectorised PopulationVecEnv against a DummyVecEnv of
`clv/Customer-v0` envs, same world, same PPO settings, same number of steps, in one run.

    python benchmarks/bench_training.py --world WORLD.json --n-envs 64 --steps 66560 --repeats 3 --json

Both sides use the same observation encoder (bank-visible features + model scores) and sampled
rewards; PPO updates are included, as in real training. Reported: customer-steps per second of
`model.learn` (median over repeats) and the ratio. Without --world, the synthetic bank's true
world with new customers is used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default=None, help="world JSON (its book beside it); default: synthetic truth world")
    ap.add_argument("--n-envs", type=int, default=64)
    ap.add_argument("--n-steps", type=int, default=52, help="PPO rollout length per env")
    ap.add_argument("--steps", type=int, default=64 * 52 * 20, help="customer-steps per measured learn() call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    import sim.envs  # noqa: F401
    from sim.envs.customer import CustomerEnv, resolve_world
    from sim.envs.vec_env import PopulationVecEnv

    torch.set_num_threads(2)
    world, population, book = resolve_world(args.world, None)
    kw = dict(
        n_steps=args.n_steps,
        batch_size=args.n_envs * args.n_steps // 4,
        n_epochs=4,
        seed=args.seed,
        verbose=0,
        device="cpu",
        policy_kwargs={"net_arch": [64, 64]},
    )

    def vectorised():
        return PopulationVecEnv(
            world, n_envs=args.n_envs, horizon=52, population=population, book=book, seed=args.seed, reward="sampled"
        )

    def dummy():
        return DummyVecEnv(
            [lambda: CustomerEnv(world, horizon=52, population=population, book=book) for _ in range(args.n_envs)]
        )

    out = {
        "n_envs": args.n_envs,
        "steps_per_run": args.steps,
        "repeats": args.repeats,
        "world": args.world or "synthetic truth world (new customers)",
    }
    for name, make in (("population_vec_env", vectorised), ("dummy_vec_env", dummy)):
        rates = []
        for r in range(args.repeats):
            env = make()
            model = PPO("MlpPolicy", env, **kw)
            t0 = time.perf_counter()
            model.learn(total_timesteps=args.steps)
            rates.append(args.steps / (time.perf_counter() - t0))
        out[name] = {"steps_per_second_median": statistics.median(rates), "runs": rates}
    out["ratio"] = (
        out["population_vec_env"]["steps_per_second_median"] / out["dummy_vec_env"]["steps_per_second_median"]
    )
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"PPO training, {args.n_envs} envs: vectorised {out['population_vec_env']['steps_per_second_median']:,.0f} "
            f"steps/s, DummyVecEnv {out['dummy_vec_env']['steps_per_second_median']:,.0f} steps/s, "
            f"ratio {out['ratio']:.1f}x"
        )


if __name__ == "__main__":
    main()
