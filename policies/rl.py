"""RL agents for a calibrated world: train PPO, DQN or MaskablePPO (stable-baselines3, sb3-contrib)
on the vectorised `PopulationVecEnv`, save the SB3 zip with a JSON card, load it back as a Policy.

Every hyperparameter lives in HYPERPARAMS below (one visible place); `train(..., overrides=)`
changes any of them and the card records the values used. Same seed, same trained policy: the
env draws everything from the seed, SB3 seeds torch and the action space, and torch runs on a
fixed number of threads.
"""
from __future__ import annotations

import json
import time
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .base import PolicyBase, masked_normalise, one_hot

ALGOS = ("ppo", "dqn", "maskable_ppo")
CARD_FILE = "card.json"
MODEL_FILE = "model.zip"
CARD_VERSION = 1

_PPO = {
    "n_envs": 512,            # customers stepped together by the vectorised simulator
    "horizon": 52,            # periods per training episode (one customer-year)
    "gamma": 0.99,            # agent discount per period: a ~2-year effective horizon (see docs)
    "n_steps": 26,            # rollout length per customer slot: 512 x 26 = 13,312 steps per update
    "batch_size": 3328,
    "n_epochs": 4,
    "learning_rate": 3e-4,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "net_arch": [64, 64],
    "normalize_reward": True,  # VecNormalize on rewards only (observations are already scaled)
    "reward": "expected",      # Rao-Blackwellised training reward (sim.vec_env.PopulationVecEnv)
    "torch_threads": 2,
}
HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": dict(_PPO),
    "maskable_ppo": dict(_PPO),
    "dqn": {
        "n_envs": 64,
        "horizon": 52,
        "gamma": 0.99,
        "learning_rate": 5e-4,
        "buffer_size": 200_000,
        "learning_starts": 10_000,
        "batch_size": 256,
        "train_freq": 1,          # one gradient step per vectorised step (= n_envs transitions)
        "gradient_steps": 4,
        "target_update_interval": 2_000,
        "exploration_fraction": 0.3,
        "exploration_final_eps": 0.02,
        "net_arch": [64, 64],
        "normalize_reward": True,
        "reward": "expected",
        "torch_threads": 2,
    },
}
DEFAULT_STEPS = {"ppo": 2_000_000, "maskable_ppo": 2_000_000, "dqn": 1_000_000}


def hyperparameters(algo: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The defaults of `algo` with `overrides` applied; unknown names are an error."""
    if algo not in HYPERPARAMS:
        raise ValueError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
    hp = deepcopy(HYPERPARAMS[algo])
    for k, v in (overrides or {}).items():
        if k not in hp:
            raise ValueError(f"unknown hyperparameter {k!r} for {algo}; known: {', '.join(sorted(hp))}")
        hp[k] = type(hp[k])(v) if isinstance(hp[k], (int, float)) and not isinstance(hp[k], bool) else v
    return hp


def _make_model(algo: str, env, hp: dict[str, Any], seed: int, tensorboard: str | None):
    common = dict(policy_kwargs={"net_arch": list(hp["net_arch"])}, seed=seed, verbose=0,
                  tensorboard_log=tensorboard, device="cpu", gamma=hp["gamma"], learning_rate=hp["learning_rate"])
    if algo in ("ppo", "maskable_ppo"):
        kw = {k: hp[k] for k in ("n_steps", "batch_size", "n_epochs", "gae_lambda", "clip_range", "ent_coef",
                                 "vf_coef", "max_grad_norm")}
        if algo == "ppo":
            from stable_baselines3 import PPO
            return PPO("MlpPolicy", env, **kw, **common)
        from sb3_contrib import MaskablePPO
        return MaskablePPO("MlpPolicy", env, **kw, **common)
    from stable_baselines3 import DQN
    kw = {k: hp[k] for k in ("buffer_size", "learning_starts", "batch_size", "train_freq", "gradient_steps",
                             "target_update_interval", "exploration_fraction", "exploration_final_eps")}
    return DQN("MlpPolicy", env, **kw, **common)


def train(world, algo: str = "ppo", steps: int | None = None, seed: int = 0, out: str | Path | None = None,
          overrides: dict[str, Any] | None = None, population: str | None = None, book=None,
          tensorboard: str | None = None, progress: Callable[[int, int], None] | None = None,
          world_path: str | None = None) -> tuple["SB3Policy", dict[str, Any]]:
    """Train `algo` on `world` (a WorldModel or a world JSON path, its book beside it) for `steps`
    customer-periods. Writes out/model.zip and out/card.json when `out` is given (atomically:
    the card, the file that says a training finished, is written last). Returns (policy, card)."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from sim.customer_env import resolve_world
    from sim.vec_env import PopulationVecEnv

    hp = hyperparameters(algo, overrides)
    steps = int(DEFAULT_STEPS[algo] if steps is None else steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(world, (str, Path)):
        world_path = world_path or str(world)
    world, population, book = resolve_world(world, population, book)
    torch.set_num_threads(int(hp["torch_threads"]))
    vec = PopulationVecEnv(world, n_envs=hp["n_envs"], horizon=hp["horizon"], population=population, book=book,
                           seed=seed, reward=hp["reward"])
    env = VecMonitor(vec)
    if hp["normalize_reward"]:
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=hp["gamma"])
    model = _make_model(algo, env, hp, seed, tensorboard)

    curve: list[dict[str, float]] = []

    class _Curve(BaseCallback):
        """Mean undiscounted return of the episodes finished since the last record."""

        def __init__(self, every: int):
            super().__init__()
            self.every, self.next_at, self.returns = every, every, []

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                ep = info.get("episode")
                if ep is not None:
                    self.returns.append(ep["r"])
            if self.num_timesteps >= self.next_at:
                if self.returns:
                    curve.append({"timesteps": int(self.num_timesteps),
                                  "mean_episode_return": float(np.mean(self.returns)),
                                  "episodes": len(self.returns)})
                self.returns = []
                self.next_at += self.every
            if progress is not None:
                progress(int(self.num_timesteps), steps)
            return True

    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, callback=_Curve(max(steps // 50, hp["n_envs"] * hp["horizon"])),
                progress_bar=False)
    seconds = time.perf_counter() - t0
    import sb3_contrib
    import stable_baselines3
    card = {
        "card_version": CARD_VERSION, "algo": algo, "seed": seed, "steps": steps,
        "world_hash": world.hash(), "world_path": world_path, "population": population,
        "hyperparameters": hp, "observation": vec.encoder.names, "actions": list(world.catalogue.names),
        "encoder": {"model_features": vec.encoder.model_features},
        "training_curve": curve, "seconds": round(seconds, 2), "ineligible_actions_replaced": int(vec.n_ineligible),
        "versions": {"stable_baselines3": stable_baselines3.__version__, "sb3_contrib": sb3_contrib.__version__,
                     "torch": torch.__version__},
    }
    policy = SB3Policy(model, card, world)
    if out is not None:
        save(policy, out)
    return policy, card


def save(policy: "SB3Policy", out: str | Path) -> None:
    from sim.atomic import atomic_path, atomic_write_json
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / MODEL_FILE) as tmp:
        policy.model.save(tmp)
        # SB3 appends .zip when the name lacks it
        zipped = Path(str(tmp) + ".zip")
        if zipped.exists():
            zipped.replace(tmp)
    atomic_write_json(out / CARD_FILE, policy.card)


class SB3Policy(PolicyBase):
    """A trained SB3 agent behind the policy protocol. Deterministic by default (the most probable
    allowed action, or the best allowed Q-value for DQN); `deterministic=False` samples the
    actor's masked distribution."""

    def __init__(self, model, card: dict[str, Any], world, deterministic: bool = True, name: str | None = None):
        from sim.customer_env import ObservationEncoder
        self.model = model
        self.card = card
        self.algo = card["algo"]
        self.deterministic = deterministic
        # the features are computed with the world the policy acts in (its segment models)
        self.encoder = ObservationEncoder.from_world(world, **card["encoder"])
        if self.encoder.names != card["observation"]:
            from sim.errors import ConfigError
            raise ConfigError(f"policy {card['algo']} was trained on observations {card['observation']}; this world "
                              f"gives {self.encoder.names} (different segments, products or channels)")
        self.name = name or card["algo"]

    @classmethod
    def load(cls, path: str | Path, world, deterministic: bool = True, name: str | None = None) -> "SB3Policy":
        """From a folder written by `train` (card.json + model.zip), to act in `world`."""
        from sim.errors import ConfigError
        path = Path(path)
        folder = path.parent if path.suffix == ".zip" else path
        card_path = folder / CARD_FILE
        if not card_path.is_file():
            raise ConfigError(f"{folder}: no {CARD_FILE}; expected a folder written by `clv train`")
        card = json.loads(card_path.read_text())
        if card.get("algo") not in ALGOS:
            raise ConfigError(f"{card_path}: unknown algo {card.get('algo')!r}")
        if card["algo"] == "ppo":
            from stable_baselines3 import PPO as cls_
        elif card["algo"] == "dqn":
            from stable_baselines3 import DQN as cls_
        else:
            from sb3_contrib import MaskablePPO as cls_
        model = cls_.load(folder / MODEL_FILE, device="cpu")
        return cls(model, card, world, deterministic=deterministic, name=name or folder.name)

    def scores(self, obs, chunk: int = 65_536) -> np.ndarray:
        """(n, A) action probabilities of the actor (PPO) or Q-values (DQN), before masking."""
        import torch
        x = self.encoder.encode(obs)
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], chunk):
                t = torch.as_tensor(x[i:i + chunk])
                if self.algo == "dqn":
                    out.append(self.model.q_net(t).numpy())
                else:
                    out.append(self.model.policy.get_distribution(t).distribution.probs.numpy())
        A = len(self.card["actions"])
        return np.concatenate(out) if out else np.zeros((0, A))

    def action_probs(self, obs, masks: np.ndarray) -> np.ndarray:
        s = self.scores(obs).astype(np.float64)
        if self.algo == "dqn" or self.deterministic:
            best = np.argmax(np.where(masks, s, -np.inf), axis=1)
            return one_hot(best, masks.shape[1])
        return masked_normalise(s, masks)
