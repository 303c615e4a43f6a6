"""Policies by name: the baselines' names, and resolving a name, a `clv train` folder, a plain SB3 zip
or a Python object (an SB3 model, anything with `predict`) to a policy.

The one owner of the vocabulary "a policy spec": a baseline name (`policies.baselines.BASELINES`),
the folder (or its model.zip) that `clv train` wrote, or a zip from a plain SB3 `model.save()`.
Every front end (the CLI, scenario files, run configs, backtests, `experiments.evaluate`) checks,
labels and adapts specs here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import ConfigError

from .base import PolicyBase, one_hot
from .baselines import BASELINES, make_baseline

BASELINE_NAMES: tuple[str, ...] = tuple(BASELINES)


def is_policy_spec(spec: str) -> bool:
    """A baseline's name or an existing path (cheap: nothing is loaded)."""
    return spec in BASELINES or Path(spec).exists()


def policy_label(spec: str) -> str:
    """How a policy is called in results: a baseline by its name, a trained policy by its folder's
    name, a plain SB3 zip by its file name without .zip."""
    if spec in BASELINES:
        return spec
    p = Path(spec)
    return p.stem if p.suffix == ".zip" and not (p.parent / "card.json").is_file() else p.name


UNKNOWN_POLICY = f"not a baseline ({', '.join(BASELINE_NAMES)}) nor a trained policy folder or model zip"


def check_policy_spec(spec: str, key: str = "policy") -> None:
    """Cheap check (no loading) that `spec` names a baseline or an existing path; ConfigError(key, ...)."""
    if not is_policy_spec(spec):
        raise ConfigError(key, value=spec, message=UNKNOWN_POLICY)


def resolve_policy(spec: str, world, key: str = "policy") -> Any:
    """A policy from a name: a baseline (none, random, bau, churn_threshold, greedy_uplift), the
    folder (or its model.zip) written by `clv train`, or a zip from a plain SB3 `model.save()`
    (no card.json beside it: its inputs are taken to be clv/Customer-v0's observation, and a note
    on stderr says so)."""
    if spec in BASELINES:
        return make_baseline(spec, world)
    path = Path(spec)
    if not path.exists():
        raise ConfigError(key, value=spec, message=UNKNOWN_POLICY)
    from .rl import CARD_FILE, MODEL_FILE, SB3Policy, load_bare_model

    folder = path if path.is_dir() else path.parent
    if (folder / CARD_FILE).is_file() and (path.is_dir() or path.name == MODEL_FILE):
        pol = SB3Policy.load(path, world)
        if pol.card.get("world_hash") != world.hash():
            print(
                f"warning: {spec} was trained on world {pol.card.get('world_hash')}, evaluating on {world.hash()}",
                file=sys.stderr,
            )
        return pol
    zip_path = path / MODEL_FILE if path.is_dir() else path
    if not zip_path.is_file():
        raise ConfigError(key, value=spec, message=f"a folder without {CARD_FILE} or {MODEL_FILE}; {UNKNOWN_POLICY}")
    model, _ = load_bare_model(zip_path)
    pol = as_policy(model, world, name=policy_label(spec), source=str(zip_path))
    print(f"note: {pol.note}", file=sys.stderr)
    return pol


# ---- any object as a policy ------------------------------------------------------------------
# the layouts an observation can have (ObservationEncoder.from_world flags), the env's default first
LAYOUTS = (
    {"model_features": True, "uplift_features": True},
    {"model_features": True, "uplift_features": False},
    {"model_features": False, "uplift_features": True},
    {"model_features": False, "uplift_features": False},
)


def observation_layout(world, n_features: int | None, source: str = "the model") -> tuple[Any, str]:
    """(encoder, note) for a model without a card that reads `n_features` inputs: the env's layout
    (`ObservationEncoder.from_world(world)`, what clv/Customer-v0 and PopulationVecEnv give) when
    the width fits, else the first other layout of that width; ConfigError when none fits."""
    from sim.envs.customer import ObservationEncoder

    default = ObservationEncoder.from_world(world)
    if n_features is None or n_features == default.dim:
        return default, (
            f"{source} has no card: its {default.dim} inputs are assumed to be clv/Customer-v0's "
            "observation (ObservationEncoder.from_world: the layout of the env, PopulationVecEnv and `clv train`)"
        )
    for flags in LAYOUTS[1:]:
        enc = ObservationEncoder.from_world(world, **flags)
        if enc.dim == n_features:
            how = ", ".join(f"{k}={v}" for k, v in flags.items())
            return enc, (
                f"{source} has no card: its {n_features} inputs are assumed to be clv/Customer-v0's "
                f"observation built with {how} (ObservationEncoder.from_world(world, {how}))"
            )
    widths = sorted({ObservationEncoder.from_world(world, **f).dim for f in LAYOUTS})
    raise ConfigError(
        f"{source} reads {n_features} inputs; this world's observation has {default.dim} "
        f"(other layouts: {', '.join(map(str, widths))}); train it on clv/Customer-v0 or PopulationVecEnv of this world"
    )


def _n_features(model) -> int | None:
    space = getattr(model, "observation_space", None)
    shape = getattr(space, "shape", None)
    if shape is None:
        return None
    if len(shape) != 1:
        raise ConfigError(f"the model reads observations of shape {tuple(shape)}; clv's observation is a flat vector")
    return int(shape[0])


def _check_actions(model, world) -> None:
    n = getattr(getattr(model, "action_space", None), "n", None)
    if n is not None and int(n) != world.n_actions:
        raise ConfigError(
            f"the model chooses among {int(n)} actions; this world has {world.n_actions} "
            f"({', '.join(world.catalogue.names)}); train it on this world"
        )


class PredictPolicy(PolicyBase):
    """Any object with `predict(obs, deterministic=...)` (SB3's signature: returns (actions, state))
    behind the policy protocol: it reads `encoder`'s features of the bank-visible observation, and
    an action the contact rules forbid becomes "none" (as the simulator would make it)."""

    def __init__(self, model, world, encoder, name: str = "model", note: str = ""):
        self.model, self.encoder, self.name, self.note = model, encoder, name, note
        self.n_actions = world.n_actions

    def action_probs(self, obs, masks: np.ndarray) -> np.ndarray:
        masks = np.atleast_2d(masks)
        n = masks.shape[0]
        out = self.model.predict(self.encoder.encode(obs), deterministic=True)
        a = np.asarray(out[0] if isinstance(out, tuple) else out).reshape(-1)
        if a.shape[0] != n or not np.all((a >= 0) & (a < self.n_actions) & (a == np.round(a))):
            raise ValueError(
                f"policy {self.name}: predict() gave {a.shape[0]} actions for {n} customers, or an action "
                f"outside 0..{self.n_actions - 1}"
            )
        a = a.astype(np.intp)
        return one_hot(np.where(masks[np.arange(n), a], a, 0), masks.shape[1])


def as_policy(obj, world, name: str | None = None, source: str | None = None) -> Any:
    """`obj` as a policy of `world`: a policy (has `act`) or a simulator callable as it is; a
    stable-baselines3 model of any discrete-action algorithm (PPO, A2C, DQN, MaskablePPO, ...)
    behind `policies.rl.SB3Policy` (greedy over the allowed actions); any other object with
    `predict(obs, deterministic=...)` behind `PredictPolicy`. A model without a card is taken to
    read clv/Customer-v0's observation (`observation_layout`); the adapter's `note` says so."""
    if hasattr(obj, "act") or (callable(obj) and not hasattr(obj, "predict")):
        return obj
    if not hasattr(obj, "predict"):
        raise ConfigError(
            f"{type(obj).__name__} is not a policy: give a baseline name, a policy (act/action_probs) "
            "or a model with predict(obs, deterministic=...)"
        )
    label = name or type(obj).__name__.lower()
    src = source or f"the {type(obj).__name__} model"
    _check_actions(obj, world)
    encoder, note = observation_layout(world, _n_features(obj), src)
    try:
        from stable_baselines3.common.base_class import BaseAlgorithm
    except ImportError:  # pragma: no cover - SB3 is a dependency
        BaseAlgorithm = ()  # noqa: N806
    policy = getattr(obj, "policy", None)
    if isinstance(obj, BaseAlgorithm) and (hasattr(obj, "q_net") or hasattr(policy, "get_distribution")):
        from .rl import SB3Policy

        card = {
            "algo": "dqn" if hasattr(obj, "q_net") else type(obj).__name__.lower(),
            "encoder": encoder.features,
            "observation": encoder.names,
            "actions": list(world.catalogue.names),
            "source": src,
        }
        pol = SB3Policy(obj, card, world, name=label)
        pol.note = note
        return pol
    return PredictPolicy(obj, world, encoder, name=label, note=note)
