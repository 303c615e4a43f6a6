"""Policies by name: the baselines' names, and resolving a name or a `clv train` folder to a policy.

The one owner of the vocabulary "a policy spec": a baseline name (`policies.baselines.BASELINES`)
or the folder (or its model.zip) that `clv train` wrote. Every front end (the CLI, scenario files,
run configs, backtests) checks and labels specs here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sim.errors import ConfigError

from .baselines import BASELINES, make_baseline

BASELINE_NAMES: tuple[str, ...] = tuple(BASELINES)


def is_policy_spec(spec: str) -> bool:
    """A baseline's name or an existing path (cheap: nothing is loaded)."""
    return spec in BASELINES or Path(spec).exists()


def policy_label(spec: str) -> str:
    """How a policy is called in results: a baseline by its name, a trained policy by its folder's name."""
    return spec if spec in BASELINES else Path(spec).name


UNKNOWN_POLICY = f"not a baseline ({', '.join(BASELINE_NAMES)}) nor a trained policy folder"


def check_policy_spec(spec: str, key: str = "policy") -> None:
    """Cheap check (no loading) that `spec` names a baseline or an existing path; ConfigError(key, ...)."""
    if not is_policy_spec(spec):
        raise ConfigError(key, value=spec, message=UNKNOWN_POLICY)


def resolve_policy(spec: str, world, key: str = "policy") -> Any:
    """A policy from a name: a baseline (none, random, bau, churn_threshold, greedy_uplift) or the
    folder (or its model.zip) written by `clv train`."""
    if spec in BASELINES:
        return make_baseline(spec, world)
    path = Path(spec)
    if path.exists():
        from .rl import SB3Policy

        pol = SB3Policy.load(path, world)
        if pol.card.get("world_hash") != world.hash():
            print(
                f"warning: {spec} was trained on world {pol.card.get('world_hash')}, evaluating on {world.hash()}",
                file=sys.stderr,
            )
        return pol
    raise ConfigError(key, value=spec, message=UNKNOWN_POLICY)
