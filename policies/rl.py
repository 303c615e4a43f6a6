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
CARD_KEYS = ("algo", "actions", "observation", "encoder")  # what loading a policy reads from its card

_PPO = {
    "n_envs": 512,  # customers stepped together by the vectorised simulator
    "horizon": 52,  # periods per training episode (one customer-year)
    "gamma": 0.99,  # agent discount per period: a ~2-year effective horizon (see docs)
    "n_steps": 26,  # rollout length per customer slot: 512 x 26 = 13,312 steps per update
    "batch_size": 3328,
    "n_epochs": 4,
    "learning_rate": 3e-4,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.001,  # small: the warm-started actor should refine, not re-randomise
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "net_arch": [64, 64],
    "normalize_reward": True,  # VecNormalize on rewards only (observations are already scaled)
    "reward": "expected",  # Rao-Blackwellised training reward (sim.envs.vec_env.PopulationVecEnv)
    "uplift_features": True,  # observation also carries each action's myopic net value (UpliftEncoder)
    # before RL the actor is fitted to: "BASE" = baseline BASE's decisions (behaviour cloning, the
    # default: RL from scratch drowns the small value of a contact in outcome noise and settles on
    # contacting almost nobody); "rollout:BASE" = the action of largest fitted CRN-rollout advantage
    # with BASE followed afterwards (policies.rollout); "" = nothing (RL from scratch)
    "warm_start": "greedy_uplift",
    "rollout_customers": 20_000,  # customers whose states are labelled ...
    "rollout_every": 4,  # ... every 4 periods of one horizon of the base policy
    "rollout_horizon": 52,  # periods each rollout follows the base policy
    "warm_start_samples": 262_144,  # decisions collected when cloning a baseline
    "warm_start_epochs": 8,
    "critic_warmup_steps": 266_240,  # RL steps with the actor frozen, so the critic is sensible first
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
        "train_freq": 1,  # one gradient step per vectorised step (= n_envs transitions)
        "gradient_steps": 4,
        "target_update_interval": 2_000,
        "exploration_fraction": 0.3,
        "exploration_final_eps": 0.02,
        "net_arch": [64, 64],
        "normalize_reward": True,
        "reward": "expected",
        "uplift_features": True,
        "torch_threads": 2,
    },
}
DEFAULT_STEPS = {"ppo": 2_000_000, "maskable_ppo": 2_000_000, "dqn": 1_000_000}


# the values each numeric hyperparameter may take: (low, high, low included, high included); checked
# when overridden, so a bad value is one line before any work instead of an error deep in SB3 (or
# in the middle of training, after calibration has written its output)
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "n_envs": (1, 1e6, True, True),
    "horizon": (1, 5200, True, True),
    "gamma": (0, 1, False, True),
    "n_steps": (1, 1e6, True, True),
    "batch_size": (2, 1e8, True, True),
    "n_epochs": (1, 1000, True, True),
    "learning_rate": (0, 1, False, True),
    "gae_lambda": (0, 1, True, True),
    "clip_range": (0, 10, False, True),
    "ent_coef": (0, 10, True, True),
    "vf_coef": (0, 10, True, True),
    "max_grad_norm": (0, 1e6, False, True),
    "rollout_customers": (1, 1e8, True, True),
    "rollout_every": (1, 5200, True, True),
    "rollout_horizon": (1, 5200, True, True),
    "warm_start_samples": (0, 1e9, True, True),
    "warm_start_epochs": (0, 1000, True, True),
    "critic_warmup_steps": (0, 1e10, True, True),
    "torch_threads": (1, 256, True, True),
    "buffer_size": (1, 1e9, True, True),
    "learning_starts": (0, 1e10, True, True),
    "train_freq": (1, 1e6, True, True),
    "gradient_steps": (1, 1e6, True, True),
    "target_update_interval": (1, 1e9, True, True),
    "exploration_fraction": (0, 1, True, True),
    "exploration_final_eps": (0, 1, True, True),
}


def _check_value(algo: str, key: str, default: Any, value: Any) -> Any:
    """`value` as the type of `default`, in RANGES[key]; ValueError (one line) otherwise."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {repr(value)[:80]}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number, got {value}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {repr(value)[:80]}") from None
        if not np.isfinite(v):
            raise ValueError(f"{key} must be finite, got {value}")
        if isinstance(default, int) and v != round(v):
            raise ValueError(f"{key} must be a whole number, got {value}")
        lo, hi, lo_in, hi_in = RANGES.get(key, (-np.inf, np.inf, True, True))
        if v < lo or (v == lo and not lo_in) or v > hi or (v == hi and not hi_in):
            span = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
            raise ValueError(f"{key} must be in {span}, got {value}")
        return type(default)(v)
    if key == "reward" and value not in ("expected", "sampled"):
        raise ValueError(f"reward must be expected or sampled, got {repr(value)[:80]}")
    if key == "warm_start":
        from .baselines import BASELINES

        base = value.removeprefix("rollout:") if isinstance(value, str) else None
        if base is None or (value and base not in BASELINES):
            raise ValueError(
                f'warm_start must be a baseline ({", ".join(BASELINES)}), rollout:BASELINE or "" (none), '
                f"got {repr(value)[:80]}"
            )
    if key == "net_arch":
        if not isinstance(value, list) or not value or not all(isinstance(u, int) and 0 < u <= 100_000 for u in value):
            raise ValueError(f"net_arch must be a list of layer widths, e.g. [64, 64], got {repr(value)[:80]}")
    return value


def hyperparameters(algo: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The defaults of `algo` with `overrides` applied; unknown names and values out of their range
    (RANGES) are an error."""
    if algo not in HYPERPARAMS:
        raise ValueError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")
    hp = deepcopy(HYPERPARAMS[algo])
    for k, v in (overrides or {}).items():
        if k not in hp:
            raise ValueError(f"unknown hyperparameter {k!r} for {algo}; known: {', '.join(sorted(hp))}")
        hp[k] = _check_value(algo, k, hp[k], v)
    return hp


class UpliftEncoder:
    """The env's observation features plus, per action, the myopic expected net value of making
    that contact now (policies.baselines.GreedyUplift.values: a function of the observables and
    the world's published models), on a signed log scale. The agent can then learn *when* a
    contact pays beyond its immediate value instead of re-deriving the economics from noise."""

    def __init__(self, world, model_features: bool = True):
        from sim.envs.customer import ObservationEncoder

        from .baselines import GreedyUplift

        self.base = ObservationEncoder.from_world(world, model_features=model_features)
        self.greedy = GreedyUplift(world)
        self.actions = list(world.catalogue.names)

    @property
    def model_features(self) -> bool:
        return self.base.model_features

    @property
    def names(self) -> list[str]:
        return self.base.names + [f"net_value_{a}" for a in self.actions[1:]]

    @property
    def dim(self) -> int:
        return self.base.dim + len(self.actions) - 1

    def space(self):
        from gymnasium import spaces

        from sim.envs.customer import OBS_CLIP

        low = np.r_[np.zeros(self.base.dim), np.full(len(self.actions) - 1, -OBS_CLIP)].astype(np.float32)
        return spaces.Box(low, np.full(self.dim, OBS_CLIP, np.float32), dtype=np.float32)

    def encode(self, obs) -> np.ndarray:
        from sim.envs.customer import OBS_CLIP

        v = self.greedy.values(obs)[:, 1:]
        extra = np.clip(np.sign(v) * np.log1p(np.abs(v)), -OBS_CLIP, OBS_CLIP).astype(np.float32)
        return np.concatenate([self.base.encode(obs), extra], axis=1)


def make_encoder(world, card_encoder: dict[str, Any]):
    """The observation encoder a card describes."""
    from sim.envs.customer import ObservationEncoder

    if card_encoder.get("uplift_features"):
        return UpliftEncoder(world, card_encoder.get("model_features", True))
    return ObservationEncoder.from_world(world, model_features=card_encoder.get("model_features", True))


def _teacher_data(vec, teacher, samples: int):
    """States visited by `teacher` in a copy of the training env, with its decisions."""
    obs_l, act_l, mask_l = [], [], []
    o = vec.reset()
    n = 0
    while n < samples:
        raw, masks = vec.raw_observation(), vec.action_masks()
        a = teacher.act(raw, masks, None)
        obs_l.append(o)
        act_l.append(a.astype(np.int64))
        mask_l.append(masks.copy())
        vec.step_async(a)
        o, *_ = vec.step_wait()
        n += vec.num_envs
    return np.concatenate(obs_l), np.concatenate(act_l), np.concatenate(mask_l), None


def _rollout_data(world, encoder, hp: dict[str, Any], seed: int, book, population: str):
    """States the base policy visits, labelled with the action of largest fitted rollout advantage
    (policies.rollout: CRN rollouts, then a least-squares fit of Q(s, a) - Q(s, none) on features)."""
    from .baselines import make_baseline
    from .rollout import fit_advantages, rollout_labels

    every = int(hp["rollout_every"])
    lab = rollout_labels(
        world,
        make_baseline(hp["warm_start"].removeprefix("rollout:"), world),
        int(hp["rollout_customers"]),
        list(range(0, int(hp["horizon"]), every)),
        int(hp["rollout_horizon"]),
        seed,
        book=book if population == "book" else None,
    )
    X = np.concatenate([encoder.encode(o) for o in lab.obs])
    predict, fit = fit_advantages(X, lab.q, lab.masks, seed)
    adv = np.where(lab.masks, predict(X), -np.inf)
    best = np.argmax(adv, axis=1)
    info = {
        **lab.summary(),
        **{f"advantage_{k}": v for k, v in fit.items()},
        "improved_share": float((best != lab.base_action).mean()),
    }
    return X, best.astype(np.int64), lab.masks, None, info


def _fit_actor(
    model, X: np.ndarray, y: np.ndarray, M: np.ndarray, weights: np.ndarray | None, epochs: int, seed: int
) -> dict[str, float]:
    """Fit the actor to labelled decisions by (weighted) maximum likelihood, masked for
    MaskablePPO. Returns the final loss and the share of labels the actor reproduces."""
    import torch

    X = torch.as_tensor(X)
    y = torch.as_tensor(y)
    w = torch.ones(len(y)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    policy = model.policy
    params = list(policy.mlp_extractor.policy_net.parameters()) + list(policy.action_net.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    maskable = "Maskable" in type(policy).__name__

    def dist_of(idx):
        return (
            policy.get_distribution(X[idx], action_masks=M[idx.numpy()])
            if maskable
            else policy.get_distribution(X[idx])
        )

    loss = torch.tensor(0.0)
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], 4096):
            b = perm[i : i + 4096]
            loss = -(w[b] * dist_of(b).log_prob(y[b])).sum() / w[b].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        idx = torch.arange(min(len(y), 65_536))
        probs = dist_of(idx).distribution.probs.numpy()
    best = np.argmax(np.where(M[: len(idx)], probs, -np.inf), axis=1)
    return {
        "loss": float(loss.item()),
        "agreement": float((best == y[: len(idx)].numpy()).mean()),
        "samples": int(X.shape[0]),
    }


def _make_model(algo: str, env, hp: dict[str, Any], seed: int, tensorboard: str | None):
    common = dict(
        policy_kwargs={"net_arch": list(hp["net_arch"])},
        seed=seed,
        verbose=0,
        tensorboard_log=tensorboard,
        device="cpu",
        gamma=hp["gamma"],
        learning_rate=hp["learning_rate"],
    )
    if algo in ("ppo", "maskable_ppo"):
        kw = {
            k: hp[k]
            for k in (
                "n_steps",
                "batch_size",
                "n_epochs",
                "gae_lambda",
                "clip_range",
                "ent_coef",
                "vf_coef",
                "max_grad_norm",
            )
        }
        if algo == "ppo":
            from stable_baselines3 import PPO

            return PPO("MlpPolicy", env, **kw, **common)
        from sb3_contrib import MaskablePPO

        return MaskablePPO("MlpPolicy", env, **kw, **common)
    from stable_baselines3 import DQN

    kw = {
        k: hp[k]
        for k in (
            "buffer_size",
            "learning_starts",
            "batch_size",
            "train_freq",
            "gradient_steps",
            "target_update_interval",
            "exploration_fraction",
            "exploration_final_eps",
        )
    }
    return DQN("MlpPolicy", env, **kw, **common)


def train(
    world,
    algo: str = "ppo",
    steps: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    population: str | None = None,
    book=None,
    tensorboard: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    world_path: str | None = None,
) -> tuple["SB3Policy", dict[str, Any]]:
    """Train `algo` on `world` (a WorldModel or a world JSON path, its book beside it) for `steps`
    customer-periods. Writes out/model.zip and out/card.json when `out` is given (atomically:
    the card, the file that says a training finished, is written last). Returns (policy, card)."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from sim.envs.customer import resolve_world
    from sim.envs.vec_env import PopulationVecEnv

    hp = hyperparameters(algo, overrides)
    steps = int(DEFAULT_STEPS[algo] if steps is None else steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(world, (str, Path)):
        world_path = world_path or str(world)
    world, population, book = resolve_world(world, population, book)
    torch.set_num_threads(int(hp["torch_threads"]))
    encoder_card = {"model_features": True, "uplift_features": bool(hp["uplift_features"])}
    encoder = make_encoder(world, encoder_card)
    vec = PopulationVecEnv(
        world,
        n_envs=hp["n_envs"],
        horizon=hp["horizon"],
        population=population,
        book=book,
        seed=seed,
        reward=hp["reward"],
        encoder=encoder,
    )
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
                    curve.append(
                        {
                            "timesteps": int(self.num_timesteps),
                            "mean_episode_return": float(np.mean(self.returns)),
                            "episodes": len(self.returns),
                        }
                    )
                self.returns = []
                self.next_at += self.every
            if progress is not None:
                progress(int(self.num_timesteps), steps)
            return True

    t0 = time.perf_counter()
    warm: dict[str, Any] = {}
    callback = _Curve(max(steps // 50, hp["n_envs"] * hp["horizon"]))
    if algo != "dqn" and hp.get("warm_start"):
        if hp["warm_start"].startswith("rollout:"):
            X, y, M, wts, info = _rollout_data(world, encoder, hp, seed, book, population)
        else:
            from .baselines import make_baseline

            teacher_env = PopulationVecEnv(
                world,
                n_envs=hp["n_envs"],
                horizon=hp["horizon"],
                population=population,
                book=book,
                seed=seed + 1_000_003,
                reward=hp["reward"],
                encoder=encoder,
            )
            X, y, M, wts = _teacher_data(
                teacher_env, make_baseline(hp["warm_start"], world), int(hp["warm_start_samples"])
            )
            info = {}
        warm = {
            **info,
            **_fit_actor(model, X, y, M, wts, int(hp["warm_start_epochs"]), seed),
            "teacher": hp["warm_start"],
        }
        frozen = list(model.policy.mlp_extractor.policy_net.parameters()) + list(model.policy.action_net.parameters())
        warm_steps = min(int(hp["critic_warmup_steps"]), steps)
        if warm_steps:
            for p in frozen:  # the critic learns the cloned policy's values before the actor moves
                p.requires_grad_(False)
            model.learn(total_timesteps=warm_steps, callback=callback, progress_bar=False)
            for p in frozen:
                p.requires_grad_(True)
        if steps > warm_steps:
            model.learn(
                total_timesteps=steps - warm_steps, callback=callback, progress_bar=False, reset_num_timesteps=False
            )
    else:
        model.learn(total_timesteps=steps, callback=callback, progress_bar=False)
    seconds = time.perf_counter() - t0
    import sb3_contrib
    import stable_baselines3

    card = {
        "card_version": CARD_VERSION,
        "algo": algo,
        "seed": seed,
        "steps": steps,
        "world_hash": world.hash(),
        "world_path": world_path,
        "population": population,
        "hyperparameters": hp,
        "observation": vec.encoder.names,
        "actions": list(world.catalogue.names),
        "encoder": encoder_card,
        "warm_start": warm,
        "training_curve": curve,
        "seconds": round(seconds, 2),
        "ineligible_actions_replaced": int(vec.n_ineligible),
        "versions": {
            "stable_baselines3": stable_baselines3.__version__,
            "sb3_contrib": sb3_contrib.__version__,
            "torch": torch.__version__,
        },
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


def plain_objects(zip_path: str | Path, algo: str, card: dict[str, Any]) -> dict[str, Any]:
    """Replacements for every cloudpickled entry of an SB3 model.zip, so that loading one unpickles
    nothing (SB3's `custom_objects`): the policy class from the algorithm, the spaces from their
    plain JSON fields, the schedules from the card's hyperparameters; training-state entries
    (last observations, episode buffers, buffer classes, exploration schedule) are not needed to
    act and SB3 rebuilds them as None or its defaults. The weights are read by torch with
    weights_only=True."""
    import re
    import zipfile

    import gymnasium as gym

    from sim.errors import ConfigError

    try:
        with zipfile.ZipFile(zip_path) as z:
            data = json.loads(z.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{zip_path}: not a model.zip written by `clv train` ({e}); retrain with `clv train`"
        ) from None
    hp = card.get("hyperparameters") or {}
    out: dict[str, Any] = {}
    for key, item in data.items():
        if not (isinstance(item, dict) and ":serialized:" in item):
            continue
        if key == "policy_class":
            if algo == "ppo":
                from stable_baselines3.common.policies import ActorCriticPolicy as policy_class
            elif algo == "dqn":
                from stable_baselines3.dqn.policies import DQNPolicy as policy_class
            else:
                from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy as policy_class
            out[key] = policy_class
        elif key == "observation_space":
            shape = tuple(int(x) for x in re.findall(r"\d+", str(item.get("_shape", ""))))
            out[key] = gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        elif key == "action_space":
            out[key] = gym.spaces.Discrete(int(item["n"]))
        elif key == "lr_schedule":
            lr = float(data.get("learning_rate", hp.get("learning_rate", 0.0)))
            out[key] = _constant(lr)
        elif key == "clip_range":
            out[key] = float(hp.get("clip_range", 0.2))
        elif key == "train_freq":
            freq = hp.get("train_freq", 4)
            out[key] = (int(freq[0]), str(freq[1])) if isinstance(freq, (list, tuple)) else (int(freq), "step")
        else:
            out[key] = None
    return out


def _constant(value: float) -> Callable[[float], float]:
    def schedule(_: float) -> float:
        return value

    return schedule


class SB3Policy(PolicyBase):
    """A trained SB3 agent behind the policy protocol. Deterministic by default (the most probable
    allowed action, or the best allowed Q-value for DQN); `deterministic=False` samples the
    actor's masked distribution."""

    def __init__(self, model, card: dict[str, Any], world, deterministic: bool = True, name: str | None = None):
        self.model = model
        self.card = card
        self.algo = card["algo"]
        self.deterministic = deterministic
        # the features are computed with the world the policy acts in (its segment models)
        self.encoder = make_encoder(world, card["encoder"])
        if self.encoder.names != card["observation"]:
            from sim.errors import ConfigError

            want, got = list(card["observation"]), list(self.encoder.names)
            diff = (
                "; ".join(
                    p
                    for p in (
                        "not in this world: " + ", ".join(n for n in want if n not in got)
                        if set(want) - set(got)
                        else "",
                        "new in this world: " + ", ".join(n for n in got if n not in want)
                        if set(got) - set(want)
                        else "",
                    )
                    if p
                )
                or "same features in another order"
            )
            raise ConfigError(
                f"policy {card['algo']} was trained on a world with other observations ({diff}: "
                "different segments, products or channels); retrain it on this world with `clv train`"
            )
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
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"{card_path}: not a card written by `clv train` ({type(e).__name__}: {str(e)[:120]}); retrain with `clv train`"
            ) from None
        if not isinstance(card, dict):
            raise ConfigError(
                f"{card_path}: not a card written by `clv train` (not a JSON object); retrain with `clv train`"
            )
        if card.get("algo") not in ALGOS:
            raise ConfigError(f"{card_path}: unknown algo {repr(card.get('algo'))[:80]}; retrain with `clv train`")
        missing = [k for k in CARD_KEYS if k not in card]
        if missing:
            raise ConfigError(
                f"{card_path}: the card lacks {', '.join(missing)} (not written by this version's `clv train`); "
                "retrain with `clv train`"
            )
        if not (
            isinstance(card["actions"], list)
            and isinstance(card["observation"], list)
            and isinstance(card["encoder"], dict)
        ):
            raise ConfigError(
                f"{card_path}: actions, observation or encoder of the wrong type; retrain with `clv train`"
            )
        if card["algo"] == "ppo":
            from stable_baselines3 import PPO as cls_
        elif card["algo"] == "dqn":
            from stable_baselines3 import DQN as cls_
        else:
            from sb3_contrib import MaskablePPO as cls_
        model = cls_.load(
            folder / MODEL_FILE, device="cpu", custom_objects=plain_objects(folder / MODEL_FILE, card["algo"], card)
        )
        return cls(model, card, world, deterministic=deterministic, name=name or folder.name)

    def scores(self, obs, chunk: int = 65_536) -> np.ndarray:
        """(n, A) action probabilities of the actor (PPO) or Q-values (DQN), before masking."""
        import torch

        x = self.encoder.encode(obs)
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], chunk):
                t = torch.as_tensor(x[i : i + chunk])
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
