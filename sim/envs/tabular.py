"""`clv/TabularCustomer-v0`: one customer per episode of a `sim.tabular.TabularWorld`, as a
Gymnasium env (the small world that `policies.dp` solves exactly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from ..tabular import TabularWorld, default_small_world, small_world_from
from ..world import WorldModel
from .render import RENDER_MODES, check_render_mode, rgb_frame


class TabularCustomerEnv(gym.Env):
    """One customer per episode of a TabularWorld (`clv/TabularCustomer-v0`).

    Observation: the state index (Discrete(n_states); SB3 one-hot encodes it). Action: catalogue
    index (Discrete(n_actions)). The start state is drawn from `init`, each next state from P, all
    with `self.np_random`. Reward: the expected reward R[s, a] of the period (same expectation as
    the realised margin, less noise), so the expected discounted return is the DP value exactly.
    terminated on reaching the absorbing "gone" state; truncated after `horizon` steps (default:
    discount**horizon < 1e-3). A masked action is replaced by "none" (info["ineligible"] = True);
    `action_masks()` gives the current state's mask for MaskablePPO.
    """

    metadata = {"render_modes": list(RENDER_MODES), "autoreset_mode": AutoresetMode.NEXT_STEP, "render_fps": 4}

    def __init__(
        self,
        tabular: TabularWorld | None = None,
        world: WorldModel | str | Path | None = None,
        horizon: int | None = None,
        discount: float | None = None,
        render_mode: str | None = None,
        tabular_kwargs: dict[str, Any] | None = None,
    ):
        self.render_mode = check_render_mode("TabularCustomerEnv", render_mode)
        if tabular is not None and world is not None:
            raise ValueError("pass either tabular= or world=, not both")
        if tabular is None:
            if world is None and not tabular_kwargs:
                tabular = default_small_world(discount)
            else:
                if world is None:
                    from ..synthetic import BankConfig, truth_world

                    world = truth_world(BankConfig())
                elif not isinstance(world, WorldModel):
                    world = WorldModel.load(world)
                tabular = small_world_from(world, discount=discount, **(tabular_kwargs or {}))
        elif discount is not None and discount != tabular.discount:
            tabular = tabular.with_discount(discount)
        self.tabular = tw = tabular
        self.discount = tw.discount
        self.horizon = int(horizon) if horizon is not None else tw.horizon
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.observation_space = spaces.Discrete(tw.n_states)
        self.action_space = spaces.Discrete(tw.n_actions)
        self._terminal = tw.terminal
        self._init_cdf = np.cumsum(tw.init)
        # successors of every (action, state) row as cumulative probabilities, for O(log k) sampling
        flat = tw.P.reshape(tw.n_actions * tw.n_states, tw.n_states)
        r, c = np.nonzero(flat)
        self._ptr = np.searchsorted(r, np.arange(flat.shape[0] + 1))
        self._succ = c
        cum = np.cumsum(flat[r, c])
        base = np.concatenate([[0.0], cum])[self._ptr[:-1]]
        self._cum = cum - np.repeat(base, np.diff(self._ptr))  # cumulative within each row
        self._state = 0
        self._t = 0

    def _draw(self, cdf: np.ndarray) -> int:
        u = self.np_random.random() * cdf[-1]
        return min(int(np.searchsorted(cdf, u, side="right")), cdf.size - 1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._state = self._draw(self._init_cdf)
        self._t = 0
        return self._state, {"label": self.tabular.state_labels[self._state]}

    def render(self):
        """ "ansi": the state's label; "rgb_array": `sim.envs.render.rgb_frame` (the state's place
        among the tabular states as the level, the episode's progress)."""
        if self.render_mode is None or not hasattr(self, "_state"):
            return None
        label = self.tabular.state_labels[self._state]
        if self.render_mode == "ansi":
            return f"t={getattr(self, '_t', 0)} state={label}"
        n = max(len(self.tabular.state_labels) - 1, 1)
        gone = "gone" in str(label)
        return rgb_frame(5 if gone else 2, getattr(self, "_t", 0) / max(self.horizon, 1), self._state / n)

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        tw, s = self.tabular, self._state
        a = int(action)
        ineligible = not tw.masks[s, a]
        if ineligible:
            a = 0
        reward = float(tw.R[s, a])
        row = a * tw.n_states + s
        lo, hi = self._ptr[row], self._ptr[row + 1]
        nxt = int(self._succ[lo + self._draw(self._cum[lo:hi])])
        self._state = nxt
        self._t += 1
        terminated = bool(self._terminal[nxt])
        truncated = (not terminated) and self._t >= self.horizon
        info = {"ineligible": ineligible, "action": a, "label": tw.state_labels[nxt]}
        return nxt, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.tabular.masks[self._state].copy()
