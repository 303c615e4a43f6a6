"""Exact optimum of a small tabular world (value iteration) and exact values of any policy on it.

`value_iteration` solves a `sim.tabular.TabularWorld` (only allowed actions count in the max);
`evaluate_policy_exact` values any stochastic policy by one linear solve,
(I - discount P_pi) V = R_pi, so a learned policy's optimality gap carries no Monte Carlo noise;
`sb3_state_probs` reads a trained stable-baselines3 model's greedy action in every state;
`gap_report` puts a policy's value beside the optimum and the "none" policy's:

  ratio                 = V_pi / V_opt                      (at the initial distribution)
  improvement_captured  = (V_pi - V_none) / (V_opt - V_none)

The second is the honest one: most of a customer's value comes without any contact, so a
policy can reach a high ratio while capturing little of what contacts can add.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from sim.tabular import TabularWorld

from .base import Observation, PolicyBase, masked_normalise, one_hot


@dataclass
class DPSolution:
    """V (S,) optimal values, Q (S, A) with -inf on masked actions, greedy policy (S,)."""

    V: np.ndarray
    Q: np.ndarray
    policy: np.ndarray
    iterations: int
    residual: float
    seconds: float

    def probs(self) -> np.ndarray:
        """(S, A) deterministic probabilities of the greedy policy."""
        return one_hot(self.policy, self.Q.shape[1])

    def value(self, tw: TabularWorld) -> float:
        return float(tw.init @ self.V)


def _stacked(tw: TabularWorld) -> sparse.csr_matrix:
    """P as one sparse (A*S, S) matrix: row a*S + s is P[a, s]."""
    return sparse.csr_matrix(tw.P.reshape(tw.n_actions * tw.n_states, tw.n_states))


def value_iteration(tw: TabularWorld, tol: float = 1e-10, max_iter: int = 100_000) -> DPSolution:
    """Value iteration until the sup-norm change of V is below `tol` (then V is within
    tol * discount / (1 - discount) of the optimum). Masked actions never enter the max."""
    t0 = time.perf_counter()
    S, A, g = tw.n_states, tw.n_actions, tw.discount
    Pst = _stacked(tw)
    R = np.where(tw.masks, tw.R, -np.inf)
    V = np.zeros(S)
    residual, it = np.inf, 0
    while it < max_iter:
        it += 1
        Q = R + g * (Pst @ V).reshape(A, S).T
        V_new = Q.max(axis=1)
        residual = float(np.abs(V_new - V).max())
        V = V_new
        if residual < tol:
            break
    Q = R + g * (Pst @ V).reshape(A, S).T
    # ties (e.g. contacts worth exactly nothing) go to the lowest index, so "none" wins them
    policy = np.argmax(Q >= Q.max(axis=1, keepdims=True) - 1e-12 * (1.0 + np.abs(V))[:, None], axis=1)
    return DPSolution(V=V, Q=Q, policy=policy, iterations=it, residual=residual, seconds=time.perf_counter() - t0)


def _check_probs(tw: TabularWorld, probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, float)
    if probs.shape != (tw.n_states, tw.n_actions):
        raise ValueError(f"probs must have shape {(tw.n_states, tw.n_actions)}, got {probs.shape}")
    if (probs < -1e-12).any() or np.abs(probs.sum(axis=1) - 1.0).max() > 1e-6:
        raise ValueError("probs rows must be probability distributions")
    # a masked action is replaced by "none", as the env does
    out = np.where(tw.masks, probs, 0.0)
    out[:, 0] += np.where(tw.masks, 0.0, probs).sum(axis=1)
    return out


def evaluate_policy_exact(tw: TabularWorld, probs: np.ndarray) -> np.ndarray:
    """V_pi (S,) of a stochastic policy probs (S, A): solves (I - discount P_pi) V = R_pi."""
    probs = _check_probs(tw, probs)
    P_pi = np.einsum("sa,ast->st", probs, tw.P)
    R_pi = (probs * tw.R).sum(axis=1)
    return np.linalg.solve(np.eye(tw.n_states) - tw.discount * P_pi, R_pi)


def policy_value(tw: TabularWorld, probs: np.ndarray) -> float:
    """Expected discounted return from the initial distribution: init @ V_pi."""
    return float(tw.init @ evaluate_policy_exact(tw, probs))


def none_probs(tw: TabularWorld) -> np.ndarray:
    """The "none" policy (never contact)."""
    return one_hot(np.zeros(tw.n_states, int), tw.n_actions)


def optimality_ratio(tw: TabularWorld, probs: np.ndarray, solution: DPSolution | None = None) -> float:
    """policy_value / optimum value."""
    sol = solution or value_iteration(tw)
    return policy_value(tw, probs) / sol.value(tw)


def gap_report(tw: TabularWorld, probs: np.ndarray, solution: DPSolution | None = None) -> dict[str, float]:
    """Value of a policy beside the optimum and "none": ratio and share of the improvement captured."""
    sol = solution or value_iteration(tw)
    v_opt, v_none, v = sol.value(tw), policy_value(tw, none_probs(tw)), policy_value(tw, probs)
    gain = v_opt - v_none
    return {
        "value": v,
        "optimum": v_opt,
        "none_value": v_none,
        "ratio": v / v_opt,
        "none_ratio": v_none / v_opt,
        "improvement_captured": (v - v_none) / gain if gain > 0 else float("nan"),
    }


class DPPolicy(PolicyBase):
    """The optimal policy of a TabularWorld. obs = {"state": (n,) int state indices}."""

    name = "dp_optimal"

    def __init__(self, tw: TabularWorld, solution: DPSolution | None = None):
        self.tabular = tw
        self.solution = solution or value_iteration(tw)

    def action_probs(self, obs: Observation, masks: np.ndarray) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.int64).reshape(-1)
        probs = one_hot(self.solution.policy[state], self.tabular.n_actions)
        return masked_normalise(probs, np.asarray(masks, bool))


def sb3_state_probs(model: Any, tw: TabularWorld) -> np.ndarray:
    """(S, A) one-hot greedy policy of a trained SB3 model (PPO, DQN, MaskablePPO, ...) in every
    state. Masked choices fall back to "none", as in the env; MaskablePPO gets each state's mask."""
    states = np.arange(tw.n_states)
    if "action_masks" in inspect.signature(model.predict).parameters:
        actions, _ = model.predict(states, deterministic=True, action_masks=tw.masks)
    else:
        actions, _ = model.predict(states, deterministic=True)
    actions = np.asarray(actions, dtype=np.int64).reshape(-1)
    actions = np.where(tw.masks[states, actions], actions, 0)
    return one_hot(actions, tw.n_actions)


def occupancy(tw: TabularWorld, probs: np.ndarray) -> np.ndarray:
    """(S,) expected discounted visits of each state from the initial distribution under probs:
    init^T (I - discount P_pi)^-1."""
    probs = _check_probs(tw, probs)
    P_pi = np.einsum("sa,ast->st", probs, tw.P)
    return np.linalg.solve((np.eye(tw.n_states) - tw.discount * P_pi).T, tw.init)


def agreement(tw: TabularWorld, probs: np.ndarray, solution: DPSolution) -> float:
    """Share of the optimal policy's discounted visits (terminal states aside) spent in states
    where the policy's greedy action is optimal too (Q within 1e-9 of V, so ties count)."""
    a = np.argmax(_check_probs(tw, probs), axis=1)
    ok = solution.Q[np.arange(tw.n_states), a] >= solution.V - 1e-9 * (1.0 + np.abs(solution.V))
    w = occupancy(tw, solution.probs()) * ~tw.terminal
    return float((w * ok).sum() / w.sum())
