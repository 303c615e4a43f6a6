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
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .base import PolicyBase, masked_normalise, one_hot

if TYPE_CHECKING:
    from .progress import Report


def _quiet(step: str, done: int, total: int) -> None:
    return None


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


def UpliftEncoder(world, model_features: bool = True):  # noqa: N802  (was a class; callers build it so)
    """The env's observation with each action's myopic net value (`sim.myopic.MyopicValue`, what
    `GreedyUplift` maximises): `ObservationEncoder.from_world(world)`, the default layout."""
    from sim.envs.customer import ObservationEncoder

    return ObservationEncoder.from_world(world, model_features=model_features, uplift_features=True)


def make_encoder(world, card_encoder: dict[str, Any]):
    """The observation encoder a card describes (a card without `uplift_features` predates them)."""
    from sim.envs.customer import ObservationEncoder

    return ObservationEncoder.from_world(
        world,
        model_features=card_encoder.get("model_features", True),
        uplift_features=bool(card_encoder.get("uplift_features", False)),
    )


def _teacher_data(vec, teacher, samples: int, report: Report = _quiet, step: str = "collecting decisions"):
    """States visited by `teacher` in a copy of the training env, with its decisions."""
    obs_l, act_l, mask_l = [], [], []
    o = vec.reset()
    n = 0
    report(step, 0, samples)
    while n < samples:
        raw, masks = vec.raw_observation(), vec.action_masks()
        a = teacher.act(raw, masks, None)
        obs_l.append(o)
        act_l.append(a.astype(np.int64))
        mask_l.append(masks.copy())
        vec.step_async(a)
        o, *_ = vec.step_wait()
        n += vec.num_envs
        report(step, min(n, samples), samples)
    return np.concatenate(obs_l), np.concatenate(act_l), np.concatenate(mask_l), None


def _rollout_data(world, encoder, hp: dict[str, Any], seed: int, book, population: str, report: Report = _quiet):
    """States the base policy visits, labelled with the action of largest fitted rollout advantage
    (policies.rollout: CRN rollouts, then a least-squares fit of Q(s, a) - Q(s, none) on features)."""
    from .baselines import make_baseline
    from .rollout import fit_advantages, rollout_labels

    every = int(hp["rollout_every"])
    snaps = list(range(0, int(hp["horizon"]), every))
    step, total, done = f"rolling out {hp['warm_start'].removeprefix('rollout:')}", len(snaps) * world.n_actions, [0]

    def tick(k: int) -> None:
        done[0] += k
        report(step, min(done[0], total), total)

    report(step, 0, total)
    lab = rollout_labels(
        world,
        make_baseline(hp["warm_start"].removeprefix("rollout:"), world),
        int(hp["rollout_customers"]),
        snaps,
        int(hp["rollout_horizon"]),
        seed,
        book=book if population == "book" else None,
        progress=tick,
    )
    report(step, total, total)  # actions allowed to no one are not rolled out
    report("fitting the rollout advantages", 0, 1)
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
    model,
    X: np.ndarray,
    y: np.ndarray,
    M: np.ndarray,
    weights: np.ndarray | None,
    epochs: int,
    seed: int,
    report: Report = _quiet,
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
    step, n = "fitting the actor to them", X.shape[0]
    report(step, 0, epochs * n)
    for e in range(epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        for i in range(0, X.shape[0], 4096):
            b = perm[i : i + 4096]
            loss = -(w[b] * dist_of(b).log_prob(y[b])).sum() / w[b].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            report(step, e * n + min(i + 4096, n), epochs * n)
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
    report: Report | None = None,
) -> tuple["SB3Policy", dict[str, Any]]:
    """Train `algo` on `world` (a WorldModel or a world JSON path, its book beside it) for `steps`
    customer-periods. Writes out/model.zip and out/card.json when `out` is given (atomically:
    the card, the file that says a training finished, is written last). Returns (policy, card).

    `progress(done, total)`: SB3's timesteps so far of `steps` (`TrainingProgress`, an SB3
    callback). `report(step, done, total)`: every part of the work by name, the warm start's
    included (collecting the teacher's decisions, fitting the actor to them, then SB3's timesteps
    in "critic warm-up" and "reinforcement learning"), so that a progress display never sits at 0 %
    while the warm start runs."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from sim.envs.customer import resolve_world
    from sim.envs.vec_env import PopulationVecEnv

    from .progress import TrainingProgress

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
            return True

    t0 = time.perf_counter()
    warm: dict[str, Any] = {}
    say = report or _quiet
    ticker = TrainingProgress(steps, progress, say)
    callback = CallbackList([_Curve(max(steps // 50, hp["n_envs"] * hp["horizon"])), ticker])
    if algo != "dqn" and hp.get("warm_start"):
        if hp["warm_start"].startswith("rollout:"):
            X, y, M, wts, info = _rollout_data(world, encoder, hp, seed, book, population, say)
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
                teacher_env,
                make_baseline(hp["warm_start"], world),
                int(hp["warm_start_samples"]),
                say,
                f"collecting {hp['warm_start']}'s decisions",
            )
            info = {}
        warm = {
            **info,
            **_fit_actor(model, X, y, M, wts, int(hp["warm_start_epochs"]), seed, say),
            "teacher": hp["warm_start"],
        }
        frozen = list(model.policy.mlp_extractor.policy_net.parameters()) + list(model.policy.action_net.parameters())
        warm_steps = min(int(hp["critic_warmup_steps"]), steps)
        if warm_steps:
            for p in frozen:  # the critic learns the cloned policy's values before the actor moves
                p.requires_grad_(False)
            ticker.step = "critic warm-up (actor frozen)"
            model.learn(total_timesteps=warm_steps, callback=callback, progress_bar=False)
            for p in frozen:
                p.requires_grad_(True)
        if steps > warm_steps:
            ticker.step = "reinforcement learning"
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
            if algo in ("ppo", "a2c"):
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
            lr = data.get("learning_rate", hp.get("learning_rate", 0.0))
            # a schedule given as a function is stored pickled: acting needs no learning rate
            out[key] = _constant(float(lr) if isinstance(lr, (int, float)) else 0.0)
        elif key == "clip_range":
            out[key] = float(hp.get("clip_range", 0.2))
        elif key == "policy_kwargs":  # pickled for a class in it; load_bare_model refuses the ones that act
            out[key] = {}
        elif key == "train_freq":
            freq = hp.get("train_freq", 4)
            out[key] = (int(freq[0]), str(freq[1])) if isinstance(freq, (list, tuple)) else (int(freq), "step")
        else:
            out[key] = None
    return out


# a bare `model.save()` zip names its policy class inside a pickle; the class is found by its name
# in the pickle's bytes (nothing is unpickled), the algorithm by the class and the saved fields
_POLICY_CLASSES = (
    (b"MaskableActorCriticPolicy", "maskable_ppo"),
    (b"DQNPolicy", "dqn"),
    (b"ActorCriticPolicy", "ppo"),
)


def load_bare_model(zip_path: str | Path):
    """(model, algo) from a zip written by a plain SB3 `model.save()` (no card): PPO, A2C, DQN or
    MaskablePPO with an MLP policy, loaded like a `clv train` zip (plain_objects: nothing
    unpickled). ConfigError (one line) for anything else."""
    import base64
    import zipfile

    from sim.errors import ConfigError

    zip_path = Path(zip_path)
    how = "save it with SB3's model.save() from PPO, A2C, DQN or MaskablePPO, or train one with `clv train`"
    try:
        with zipfile.ZipFile(zip_path) as z:
            data = json.loads(z.read("data"))
            raw = base64.b64decode(data["policy_class"][":serialized:"])
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(
            f"{zip_path}: not a stable-baselines3 model.zip ({type(e).__name__}: {str(e)[:120]}); {how}"
        ) from None
    algo = next((a for name, a in _POLICY_CLASSES if name in raw), None)
    if algo == "ppo" and "n_epochs" not in data:
        algo = "a2c"  # same policy class as PPO; A2C saves no epochs
    if algo is None or b"MultiInput" in raw or b"Cnn" in raw:
        raise ConfigError(f"{zip_path}: a policy class clv cannot load without unpickling; {how}")
    kwargs = data.get("policy_kwargs")
    if isinstance(kwargs, dict) and ":serialized:" in kwargs:
        # pickled because it holds a class: an optimizer's (A2C's RMSprop) does not change how the
        # network acts and is dropped; an activation or feature extractor would, and is refused
        pickled = base64.b64decode(kwargs[":serialized:"])
        if any(k in pickled for k in (b"activation_fn", b"features_extractor", b"share_features")):
            raise ConfigError(
                f"{zip_path}: its policy_kwargs hold Python objects (activation_fn or a features extractor), "
                "which clv does not unpickle; keep policy_kwargs to net_arch, or train with `clv train`"
            )
    if algo == "ppo":
        from stable_baselines3 import PPO as cls_
    elif algo == "a2c":
        from stable_baselines3 import A2C as cls_
    elif algo == "dqn":
        from stable_baselines3 import DQN as cls_
    else:
        from sb3_contrib import MaskablePPO as cls_
    model = _load_zip(cls_, zip_path, plain_objects(zip_path, algo, {}), how)
    return model, algo


# the members SB3's load reads from a zip it saved (the fields, the network's weights, the
# optimiser's state: `set_parameters` wants both state dicts); checked by name first, so that a
# zip cut short or assembled by hand is said as the member it lacks, not as SB3's own complaint
ZIP_MEMBERS = ("data", "policy.pth", "policy.optimizer.pth")


def _load_zip(cls_, zip_path: Path, custom_objects: dict[str, Any], how: str):
    """`cls_.load(zip_path)`, every way a damaged zip can fail it (a member missing, weights that are
    not a torch file or are cut short, weights of another architecture) as one ConfigError naming
    the zip and `how` (what to do)."""
    import pickle
    import zipfile

    from sim.errors import ConfigError

    try:
        with zipfile.ZipFile(zip_path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{zip_path}: not a zip file ({type(e).__name__}: {str(e)[:120]}); {how}") from None
    missing = [m for m in ZIP_MEMBERS if m not in names]
    if missing:
        raise ConfigError(f"{zip_path}: the zip lacks {', '.join(missing)} (damaged or cut short); {how}")
    try:
        return cls_.load(zip_path, device="cpu", custom_objects=custom_objects)
    except (RuntimeError, ValueError, KeyError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        # torch's own messages run to several sentences about weights_only: its first line is enough
        first = " ".join(str(e).split(". ")[0].split())[:160]
        raise ConfigError(f"{zip_path}: cannot load the model's weights ({type(e).__name__}: {first}); {how}") from None


def _constant(value: float) -> Callable[[float], float]:
    def schedule(_: float) -> float:
        return value

    return schedule


def _layout(encoder) -> str:
    flags = getattr(encoder, "features", None)
    if not isinstance(flags, dict):
        return type(encoder).__name__
    return ", ".join(f"{k}={v}" for k, v in flags.items())


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
        zip_path = folder / MODEL_FILE
        if not zip_path.is_file():  # the card alone cannot act: the weights are in the zip
            what = "is not a file" if zip_path.exists() else "is missing"
            raise ConfigError(
                f"{zip_path}: {what} (its {CARD_FILE} is there; `clv train` writes both); copy the "
                f"{MODEL_FILE} trained with that card back beside it, or retrain with `clv train`"
            )
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
        zip_path = folder / MODEL_FILE
        model = _load_zip(cls_, zip_path, plain_objects(zip_path, card["algo"], card), "retrain with `clv train`")
        return cls(model, card, world, deterministic=deterministic, name=name or folder.name)

    def features(self, obs) -> np.ndarray:
        """(n, D) network inputs: `obs` is the bank-visible dict (what policies read) or an env's
        observation already encoded, (D,) or (n, D), e.g. `env.reset()[0]` of clv/Customer-v0."""
        if isinstance(obs, Mapping):
            return self.encoder.encode(obs)
        x = np.asarray(obs, np.float32)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != self.encoder.dim:
            raise ValueError(
                f"policy {self.name} reads {self.encoder.dim} features ({_layout(self.encoder)}), got an "
                f"observation of shape {tuple(np.shape(obs))}; pass the bank-visible dict (env.raw_observation()) "
                "or build the env with encoder=policy.encoder"
            )
        return x

    def scores(self, obs, chunk: int = 65_536) -> np.ndarray:
        """(n, A) action probabilities of the actor (PPO) or Q-values (DQN), before masking; `obs`
        as in `features`."""
        import torch

        x = self.features(obs)
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
        masks = np.atleast_2d(masks)  # one customer's (A,) masks, as the env's action_masks()
        s = self.scores(obs).astype(np.float64)
        if self.algo == "dqn" or self.deterministic:
            best = np.argmax(np.where(masks, s, -np.inf), axis=1)
            return one_hot(best, masks.shape[1])
        return masked_normalise(s, masks)
