"""`clv/Customer-v0`: one customer per episode of a calibrated world, as a Gymnasium env.

It and `sim.envs.vec_env.PopulationVecEnv` (many customers stepped at once) draw customers from a
calibrated world: digital twins of the book's customers (latent rates and alive state drawn from
each one's posterior) or brand-new customers from the segment priors.
Observation: what a bank can see (recency, frequency, monetary, tenure, lifecycle stage, segment,
products held, periods since last contact, recent contact count, opted-out channels) and what the
world's published models make of it (P(alive), expected margin, each contact's myopic net value),
encoded by `ObservationEncoder`, the layout `clv train` agents read; never the latent rate or
alive flag. Action: the catalogue index (0 = none). Reward: margin of the period minus the contact
cost. `action_masks()` gives the contact rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from ..catalogue import STAGES
from ..population import (
    NEVER_CONTACTED,
    POPULATIONS,
    PopulationSimulator,
    PopulationState,
    WorldTables,
    book_columns,
    new_customer_state,
    state_from_book,
    take_rows,
)
from ..world import WorldModel
from .render import RENDER_MODES, check_render_mode, rgb_frame

DEFAULT_HORIZON = 52
OBS_CLIP = 30.0  # every encoded feature lies in [0, OBS_CLIP]


@dataclass
class ObservationEncoder:
    """Bank-visible observation dict -> (n, D) float32 features.

    Counts and amounts go through log1p (heavy tails, same scale for every world); stage and
    segment are one-hot; products and opted-out channels are 0/1: all in [0, OBS_CLIP]. With
    `posterior` (the world's segment models, `sim.posterior.ObservablePosterior`) four model-based
    scores a bank computes from the same observables are added: P(alive), expected transactions
    and margin per period, and expected value of a transaction. With `myopic`
    (`sim.myopic.MyopicValue`) each contact action's myopic expected net value is added last
    (`net_value_<action>`, signed log1p, in [-OBS_CLIP, OBS_CLIP]): the agent can then learn *when*
    a contact pays beyond its immediate value instead of re-deriving the economics from noise.
    The model-based features add no information, only save a network from learning the
    Pareto/NBD algebra.

    One encoder is shared by the env, the VecEnv and every learned policy (`clv train` trains on
    the default, `from_world(world)`), so a trained model reads features the same way wherever it
    runs: `model.predict(env.reset()[0])` works on `gymnasium.make("clv/Customer-v0", world=...)`.
    """

    n_segments: int
    n_products: int
    n_channels: int
    posterior: Any = None  # ObservablePosterior, or None for the plain features
    margin_rate: float = 1.0
    product_margin: np.ndarray | None = None
    myopic: Any = None  # sim.myopic.MyopicValue, or None for no net_value features
    action_names: tuple[str, ...] = ()

    @classmethod
    def from_world(
        cls, world: WorldModel, model_features: bool = True, uplift_features: bool = True
    ) -> "ObservationEncoder":
        """The encoder of `world`: by default with the model-based scores and the actions' myopic
        net values (what `clv train` agents read); the flags are a policy card's `encoder`."""
        post = None
        if model_features:
            from ..posterior import ObservablePosterior

            post = ObservablePosterior(world)
        myopic = None
        if uplift_features:
            from ..myopic import MyopicValue

            myopic = MyopicValue(world, posterior=post)  # post's scores serve both
        pm = world.economics.product_margin_per_period
        return cls(
            len(world.segments),
            len(world.products),
            len(world.catalogue.channels),
            post,
            float(world.economics.margin_rate),
            np.array([float(pm.get(p, 0.0)) for p in world.products]),
            myopic,
            tuple(world.catalogue.names),
        )

    @property
    def model_features(self) -> bool:
        return self.posterior is not None

    @property
    def uplift_features(self) -> bool:
        return self.myopic is not None

    @property
    def features(self) -> dict[str, bool]:
        """The flags that rebuild this layout with `from_world` (a policy card's `encoder`)."""
        return {"model_features": self.model_features, "uplift_features": self.uplift_features}

    @property
    def names(self) -> list[str]:
        return (
            [
                "log_recency",
                "log_frequency",
                "log_monetary",
                "log_tenure",
                "log_last_contact",
                "never_contacted",
                "recent_contacts",
            ]
            + [f"stage_{s}" for s in STAGES]
            + [f"segment_{g}" for g in range(self.n_segments)]
            + [f"product_{p}" for p in range(self.n_products)]
            + [f"opted_out_{c}" for c in range(self.n_channels)]
            + (
                ["p_alive", "log_expected_transactions", "log_value_per_transaction", "log_expected_margin"]
                if self.model_features
                else []
            )
            + [f"net_value_{a}" for a in self.action_names[1:] if self.uplift_features]
        )

    @property
    def _n_uplift(self) -> int:
        return max(len(self.action_names) - 1, 0) if self.uplift_features else 0

    @property
    def dim(self) -> int:
        base = 7 + len(STAGES) + self.n_segments + self.n_products + self.n_channels + 4 * self.model_features
        return base + self._n_uplift

    def space(self) -> spaces.Box:
        low = np.zeros(self.dim, np.float32)
        if self._n_uplift:
            low[-self._n_uplift :] = -OBS_CLIP  # net values are signed
        return spaces.Box(low, np.full(self.dim, OBS_CLIP, np.float32), dtype=np.float32)

    def encode(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        n = np.asarray(obs["recency"]).shape[0]
        u = self._n_uplift
        out = np.zeros((n, self.dim - u), np.float32)
        never = np.asarray(obs["last_contact"]) >= NEVER_CONTACTED
        out[:, 0] = np.log1p(obs["recency"])
        out[:, 1] = np.log1p(obs["frequency"])
        out[:, 2] = np.log1p(np.maximum(obs["monetary"], 0.0))
        out[:, 3] = np.log1p(obs["tenure"])
        out[:, 4] = np.where(never, 0.0, np.log1p(obs["last_contact"]))
        out[:, 5] = never
        out[:, 6] = obs["recent_contacts"]
        k = 7
        out[np.arange(n), k + np.asarray(obs["stage"], np.int64)] = 1.0
        k += len(STAGES)
        out[np.arange(n), k + np.asarray(obs["segment"], np.int64)] = 1.0
        k += self.n_segments
        if self.n_products:
            out[:, k : k + self.n_products] = obs["products"]
        k += self.n_products
        if self.n_channels:
            out[:, k : k + self.n_channels] = obs["opted_out"]
        k += self.n_channels
        scores = None
        if self.model_features and n:
            p_alive = self.posterior.p_alive(obs)
            lam, mu = self.posterior.rates(obs)
            spend = self.posterior.spend_per_transaction(obs)
            scores = (p_alive, lam, mu, spend)
            value = np.maximum(spend, 0.0)
            tx = p_alive * lam
            margin = self.margin_rate * tx * value
            if self.n_products:
                margin = margin + np.asarray(obs["products"], float) @ self.product_margin
            out[:, k] = p_alive
            out[:, k + 1] = np.log1p(tx)
            out[:, k + 2] = np.log1p(value)
            out[:, k + 3] = np.log1p(margin)
        np.clip(np.nan_to_num(out, nan=0.0, posinf=OBS_CLIP), 0.0, OBS_CLIP, out=out)
        if not u:
            return out
        if scores is not None and self.myopic.posterior is not self.posterior:
            scores = None  # a myopic value of other models computes its own
        v = np.nan_to_num(self.myopic.values(obs, scores=scores)[:, 1:], nan=0.0)
        extra = np.clip(np.sign(v) * np.log1p(np.abs(v)), -OBS_CLIP, OBS_CLIP).astype(np.float32)
        return np.concatenate([out, extra], axis=1)


class CustomerSource:
    """Where new customers come from: the book's digital twins (`population="book"`, one row drawn
    uniformly per customer, latents from that row's posterior) or brand-new customers ("new")."""

    def __init__(self, world: WorldModel, population: str = "book", book=None, tables: WorldTables | None = None):
        if population not in POPULATIONS:
            raise ValueError(f"population must be 'book' or 'new', got {population!r}")
        if population == "book" and book is None:
            raise ValueError("population='book' needs the calibrated book (or use population='new')")
        self.world = world
        self.population = population
        self.tables = tables or WorldTables.from_world(world)
        self.cols = None if population == "new" else (book if isinstance(book, dict) else book_columns(book))
        self.n_book = 0 if self.cols is None else len(self.cols["segment"])

    def draw(self, n: int, rng: np.random.Generator) -> PopulationState:
        if self.cols is None:
            return new_customer_state(self.world, n, rng, self.tables)
        rows = rng.integers(0, self.n_book, size=n)
        return state_from_book(self.world, take_rows(self.cols, rows), rng, self.tables)


def resolve_world(world: WorldModel | str | Path | None, population: str | None, book=None):
    """(WorldModel, population, book) from what a user passes to `gymnasium.make`: a WorldModel,
    a path to a world JSON (its book beside it is loaded), or None for the synthetic bank's true
    world with new customers (handy for trying things out)."""
    if world is None:
        from ..synthetic import BankConfig, truth_world

        return truth_world(BankConfig()), population or "new", None
    if isinstance(world, (str, Path)):
        path = Path(world)
        world = WorldModel.load(path)
        if book is None and population != "new":
            book = world.read_book(path)
    if population is None:
        population = "book" if book is not None else "new"
    return world, population, book


class CustomerEnv(gym.Env):
    """One customer per episode, drawn from a calibrated world; `horizon` periods per episode.

    `gymnasium.make("clv/Customer-v0", world="world.json", horizon=52, discount=0.9985)`.
    `discount` is the per-period factor used for `info["discounted_return"]` and by agents that
    read it (default: the world's economics). An action the contact rules forbid is replaced by
    "none" and flagged in `info["ineligible"]`; use `action_masks()` (MaskablePPO) to avoid it.
    Episodes end by truncation at the horizon only: whether the customer is still alive is hidden.

    The observation is `ObservationEncoder.from_world(world)`'s, the one `PopulationVecEnv` and
    `clv train` agents use, so a trained model acts on it directly: `model.predict(obs)`. An agent
    trained on another layout (a card whose `encoder` flags differ) gets its own with
    `encoder=policy.encoder` (any object with `encode(obs) -> (n, D)` and `space()`).
    `raw_observation()` is the bank-visible dict that `policies` policies read.
    """

    metadata = {"render_modes": list(RENDER_MODES), "autoreset_mode": AutoresetMode.NEXT_STEP, "render_fps": 4}

    def __init__(
        self,
        world: WorldModel | str | Path | None = None,
        horizon: int = DEFAULT_HORIZON,
        discount: float | None = None,
        population: str | None = None,
        book=None,
        render_mode: str | None = None,
        encoder=None,
    ):
        self.render_mode = check_render_mode("clv/Customer-v0", render_mode)
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.world, population, book = resolve_world(world, population, book)
        self.horizon = int(horizon)
        self.discount = float(self.world.economics.discount_per_period if discount is None else discount)
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}")
        self.tables = WorldTables.from_world(self.world)
        self.source = CustomerSource(self.world, population, book, self.tables)
        self.encoder = encoder if encoder is not None else ObservationEncoder.from_world(self.world)
        self.observation_space = self.encoder.space()
        self.action_space = spaces.Discrete(self.tables.n_actions)
        self.action_names = list(self.world.catalogue.names)
        self._sim: PopulationSimulator | None = None
        self._t = 0
        self._return = 0.0

    def _obs(self) -> np.ndarray:
        return self.encoder.encode(self._sim.observe())[0]

    def raw_observation(self) -> dict[str, np.ndarray]:
        """The bank-visible observation dict of the customer (n = 1), what `policies` policies read:
        `policy.act(env.raw_observation(), env.action_masks()[None])`."""
        if self._sim is None:
            raise RuntimeError("call reset() before raw_observation()")
        return self._sim.observe()

    def _info(self) -> dict[str, Any]:
        st = self._sim.state
        return {
            "stage": STAGES[int(st.stage[0])],
            "segment": self.world.segments[int(st.segment[0])].name,
            "discounted_return": self._return,
            "t": self._t,
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        state = self.source.draw(1, self.np_random)
        self._sim = PopulationSimulator(self.world, state, self.np_random, tables=self.tables)
        self._t = 0
        self._return = 0.0
        return self._obs(), self._info()

    def render(self):
        """ "ansi": the customer's stage, segment, recency, frequency and return so far as a line of
        text; "rgb_array": `sim.envs.render.rgb_frame` (stage colour, progress, recency as a bar)."""
        if self.render_mode is None or self._sim is None:
            return None
        st, i = self._sim.state, self._info()
        if self.render_mode == "ansi":
            return (
                f"t={self._t}/{self.horizon} stage={i['stage']} segment={i['segment']} recency={int(st.recency[0])} "
                f"frequency={int(st.frequency[0])} return={self._return:.2f}"
            )
        level = 1.0 - min(int(st.recency[0]), 52) / 52.0
        return rgb_frame(int(st.stage[0]), self._t / self.horizon, level)

    def action_masks(self) -> np.ndarray:
        if self._sim is None:
            raise RuntimeError("call reset() before action_masks()")
        return self._sim.action_masks()[0].copy()

    def step(self, action):
        if self._sim is None:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        if not 0 <= a < self.tables.n_actions:
            raise ValueError(
                f"unknown action {action!r}; actions are 0..{self.tables.n_actions - 1} "
                f"({', '.join(self.action_names)})"
            )
        out = self._sim.step(np.array([a], np.int16))
        reward = float(out.reward[0])
        self._return += reward * self.discount**self._t
        self._t += 1
        info = self._info()
        info.update(
            ineligible=bool(out.n_ineligible),
            contacted=bool(out.contacted[0]),
            cost=float(out.cost[0]),
            transactions=int(out.transactions[0]),
        )
        return self._obs(), reward, False, self._t >= self.horizon, info
