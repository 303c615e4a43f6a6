"""`PopulationVecEnv`: a stable-baselines3 VecEnv stepping many customers of a calibrated world
at once through the vectorised simulator (one numpy step for all, not n Python envs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from ..population import PopulationSimulator, WorldTables
from ..world import WorldModel
from .customer import DEFAULT_HORIZON, CustomerSource, ObservationEncoder, resolve_world


class PopulationVecEnv(VecEnv):
    """A stable-baselines3 VecEnv whose n_envs "environments" are n customers of one vectorised
    simulator: one numpy step for all of them, not n Python envs.

    Each slot runs one customer for `horizon` periods; when it is done the slot gets a fresh
    customer (SB3 convention: the returned observation is the new customer's, the last one is in
    `infos[i]["terminal_observation"]`, and `infos[i]["TimeLimit.truncated"]` is True so agents
    bootstrap from it). The simulator's calendar keeps running, so with seasonality later
    episodes start later in the year. All randomness flows from the seed given to `seed()`.

    `reward="expected"` (the default for training) pays each period's *expected* transaction
    margin given the customer's latent state instead of the sampled one (a Rao-Blackwellised
    reward): the expected return of every policy is unchanged, the Poisson and spend noise that
    drowns the small effect of a contact in the learning signal is gone. `reward="sampled"` pays
    exactly what the simulator drew. The policy sees the same observations either way.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        world: WorldModel | str | Path | None = None,
        n_envs: int = 256,
        horizon: int = DEFAULT_HORIZON,
        population: str | None = None,
        book=None,
        seed: int = 0,
        reward: str = "expected",
        encoder=None,
    ):
        if int(n_envs) < 1 or int(horizon) < 1:
            raise ValueError("n_envs and horizon must be >= 1")
        if reward not in ("expected", "sampled"):
            raise ValueError(f"reward must be 'expected' or 'sampled', got {reward!r}")
        self.reward_mode = reward
        self.world, population, book = resolve_world(world, population, book)
        self.horizon = int(horizon)
        self.discount = float(self.world.economics.discount_per_period)
        self.tables = WorldTables.from_world(self.world)
        self.source = CustomerSource(self.world, population, book, self.tables)
        # any object with encode(obs) -> (n, D) and space(); the default is the layout of
        # clv/Customer-v0 and of `clv train` agents, so a model trained here acts on either env
        self.encoder = encoder if encoder is not None else ObservationEncoder.from_world(self.world)
        self.render_mode = None  # read by VecEnv.__init__
        VecEnv.__init__(self, int(n_envs), self.encoder.space(), spaces.Discrete(self.tables.n_actions))
        self._seed = int(seed)
        self._sim: PopulationSimulator | None = None
        self._ep_t = np.zeros(self.num_envs, np.int64)
        self._actions = np.zeros(self.num_envs, np.int16)
        self.n_ineligible = 0

    # ---- VecEnv API ---------------------------------------------------------------------
    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        if seed is not None:
            self._seed = int(seed)
        return [self._seed] * self.num_envs

    def reset(self) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence(self._seed))
        state = self.source.draw(self.num_envs, rng)
        self._sim = PopulationSimulator(self.world, state, rng, tables=self.tables)
        self._sim.track_expected = self.reward_mode == "expected"
        self._ep_t[:] = 0
        return self.encoder.encode(self._sim.observe())

    def step_async(self, actions: np.ndarray) -> None:
        a = np.asarray(actions).reshape(-1)
        if a.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {a.shape[0]}")
        self._actions = a.astype(np.int16)

    def step_wait(self):
        sim = self._sim
        out = sim.step(self._actions)
        self.n_ineligible += out.n_ineligible
        self._ep_t += 1
        done = self._ep_t >= self.horizon
        obs = self.encoder.encode(sim.observe())
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        idx = np.flatnonzero(done)
        if idx.size:
            for i in idx:
                infos[i] = {"terminal_observation": obs[i].copy(), "TimeLimit.truncated": True}
            sim.replace(idx, self.source.draw(idx.size, sim.rng))
            self._ep_t[idx] = 0
            obs[idx] = self.encoder.encode({k: v[idx] for k, v in sim.observe().items()})
        reward = out.reward
        if self.reward_mode == "expected":
            reward = reward + self.tables.margin_rate * (out.expected_amount - out.amount)
        return obs, reward.astype(np.float32), done, infos

    def action_masks(self) -> np.ndarray:
        return self._sim.action_masks()

    def raw_observation(self) -> dict[str, np.ndarray]:
        """The bank-visible observation dict of every slot (what policies.base policies read)."""
        return self._sim.observe()

    def close(self) -> None:
        self._sim = None

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        if attr_name == "action_masks":
            m = self._sim.action_masks()
            return [(lambda row=row: row) for row in m[self._indices(indices)]]
        value = getattr(self, attr_name)
        return [value] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        if method_name == "action_masks":  # sb3-contrib's MaskablePPO asks for masks this way
            return list(self._sim.action_masks()[self._indices(indices)])
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def has_attr(self, attr_name: str) -> bool:
        return hasattr(self, attr_name)

    def get_images(self):  # pragma: no cover - no rendering
        return [None] * self.num_envs

    def _indices(self, indices) -> np.ndarray:
        if indices is None:
            return np.arange(self.num_envs)
        if isinstance(indices, int):
            return np.array([indices])
        return np.asarray(list(indices))
