"""The one protocol every policy follows, so the simulator, the optimizer and offline evaluation
can run any of them: `action_probs(obs, masks) -> (n, A)` and `act(obs, masks, rng) -> (n,)`.

`obs` is what a bank can see about n customers, as the dict of arrays returned by
`sim.population.PopulationSimulator.observe()` (recency, frequency, monetary, tenure, stage,
segment, products, last_contact, recent_contacts, opted_out); `masks` is the (n, A) bool array
of allowed actions (`PopulationSimulator.action_masks()`), column 0 being "none".
Policies never see the latent rate or alive flag.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol, runtime_checkable

import numpy as np

Observation = Mapping[str, np.ndarray]


@runtime_checkable
class Policy(Protocol):
    """Anything with a `name`, `action_probs` and `act` is a policy."""

    name: str

    def action_probs(self, obs: Observation, masks: np.ndarray) -> np.ndarray:
        """(n, A) probabilities, zero on masked actions, rows summing to one."""
        ...

    def act(self, obs: Observation, masks: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n,) action indices drawn from `action_probs` (the argmax when rng is None)."""
        ...


class PolicyBase:
    """Shared `act` (inverse-CDF sampling, or argmax without an rng) and mask handling."""

    name = "policy"

    def action_probs(self, obs: Observation, masks: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def act(self, obs: Observation, masks: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        probs = self.action_probs(obs, masks)
        return sample_actions(probs, rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def sample_actions(probs: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """One action per row: inverse CDF with one uniform per row (so common random numbers line
    up across policies), or the most probable action when rng is None."""
    if rng is None:
        return np.argmax(probs, axis=1).astype(np.int16)
    cum = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0])[:, None] * cum[:, -1:]
    a = (u >= cum).sum(axis=1)
    return np.minimum(a, probs.shape[1] - 1).astype(np.int16)


def one_hot(actions: np.ndarray, n_actions: int) -> np.ndarray:
    out = np.zeros((actions.shape[0], n_actions))
    out[np.arange(actions.shape[0]), actions] = 1.0
    return out


def masked_normalise(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Zero the masked entries of non-negative scores and renormalise rows; a row with nothing
    left falls back to "none" (always allowed)."""
    p = np.where(masks, scores, 0.0)
    tot = p.sum(axis=1, keepdims=True)
    empty = tot[:, 0] <= 0
    if empty.any():
        p[empty] = 0.0
        p[empty, 0] = 1.0
        tot[empty] = 1.0
    return p / tot


def as_simulator_policy(policy: Policy, greedy: bool = False) -> Callable:
    """Adapt a policy to the simulator's callable interface `fn(sim) -> actions`.

    Randomness comes from the simulator's `policy_rng`, a stream of its own, so a policy's
    draws never shift the world's random numbers (common random numbers across policies). A
    callable without `act` is taken to be a simulator policy already and returned as is."""
    if not hasattr(policy, "act") and callable(policy):
        return policy

    def fn(sim) -> np.ndarray:
        return policy.act(sim.observe(), sim.action_masks(), None if greedy else sim.policy_rng)

    fn.policy = policy  # type: ignore[attr-defined]
    return fn
