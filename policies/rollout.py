"""Rollout policy improvement with common random numbers: label states with the action whose
simulated return is best when a base policy is followed afterwards, to be distilled into a network.

One step of approximate policy iteration (Bertsekas' rollout algorithm; Lagoudakis & Parr 2003,
"reinforcement learning as classification"): from states the base policy visits, every allowed
action is tried once and the base policy is followed for `horizon` periods; all branches share
the same random numbers (the simulator's CRN mode), so Q(s, a) - Q(s, b) is measured on the same
future and its noise is only what the actions change. The greedy improvement argmax_a Q(s, a) is
never worse than the base policy in expectation (policy improvement theorem, up to the horizon's
truncation and the noise). `policies.rl.train` distils the labels into the PPO actor (weighted by
the regret of the base action) before RL fine-tuning.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class RolloutLabels:
    obs: list[dict[str, np.ndarray]]  # bank-visible observation dicts, one per snapshot
    masks: np.ndarray  # (N, A)
    q: np.ndarray  # (N, A) discounted return of each action (-inf where masked)
    base_action: np.ndarray  # (N,)

    @property
    def best(self) -> np.ndarray:
        return np.argmax(self.q, axis=1)

    @property
    def regret(self) -> np.ndarray:
        """What following the base policy's action loses against the best one, per state."""
        return self.q.max(axis=1) - self.q[np.arange(len(self.q)), self.base_action]

    def summary(self) -> dict[str, Any]:
        return {
            "states": int(len(self.q)),
            "changed_share": float((self.best != self.base_action).mean()),
            "mean_regret_of_base": float(self.regret.mean()),
        }


def clone_simulator(sim):
    """An independent copy of a simulator (state and random streams) sharing the world and tables."""
    twin = copy.copy(sim)
    twin.state = copy.deepcopy(sim.state)
    for name in ("rng", "policy_rng"):
        g = getattr(sim, name)
        bg = type(g.bit_generator)()
        bg.state = g.bit_generator.state
        setattr(twin, name, np.random.Generator(bg))
    return twin


def rollout_labels(
    world,
    base,
    customers: int,
    snapshots: list[int],
    horizon: int,
    seed: int,
    book=None,
    discount: float | None = None,
    progress: Callable[[int], None] | None = None,
    continuation=None,
) -> RolloutLabels:
    """Follow `base` (a policies.base policy) with `customers` customers and, at each period in
    `snapshots`, measure Q(s, a) for every allowed action a by CRN rollouts of `horizon` periods,
    each followed by `continuation` (default: `base` itself; "none": no further contact)."""
    from sim.population import PopulationSimulator, WorldTables

    from .base import as_simulator_policy

    tables = WorldTables.from_world(world)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    if book is not None:
        rows = rng.choice(len(book), size=customers, replace=customers > len(book))
        sim = PopulationSimulator.from_book(world, book.iloc[rows].reset_index(drop=True), rng, tables=tables)
    else:
        sim = PopulationSimulator.new_customers(world, customers, rng, tables=tables)
    sim.crn = True
    act = as_simulator_policy(base, greedy=True)
    if continuation is None:
        follow = act
    elif isinstance(continuation, str) and continuation == "none":

        def follow(s):
            return np.zeros(s.state.n, np.int16)
    else:
        follow = as_simulator_policy(continuation, greedy=True)
    gamma = world.economics.discount_per_period if discount is None else discount
    A = tables.n_actions
    obs_l, mask_l, q_l, base_l = [], [], [], []
    for t in range(max(snapshots) + 1):
        if t in snapshots:
            masks = sim.action_masks()
            obs_l.append({k: np.array(v, copy=True) for k, v in sim.observe().items()})
            mask_l.append(masks)
            base_l.append(act(sim))
            q = np.full((customers, A), -np.inf)
            for a in range(A):
                allowed = masks[:, a]
                if not allowed.any():
                    continue
                branch = clone_simulator(sim)
                ret = branch.step(np.where(allowed, a, 0).astype(np.int16)).reward.copy()
                for h in range(1, horizon):
                    ret += gamma**h * branch.step(follow(branch)).reward
                q[allowed, a] = ret[allowed]
                if progress:
                    progress(1)
            q_l.append(q)
        sim.step(act(sim))
    return RolloutLabels(obs_l, np.concatenate(mask_l), np.concatenate(q_l), np.concatenate(base_l))


def fit_advantages(
    X: np.ndarray, q: np.ndarray, masks: np.ndarray, seed: int, epochs: int = 30, hidden: tuple[int, ...] = (128, 128)
) -> tuple[Any, dict[str, float]]:
    """Regress each action's rollout advantage over "none", Q(s, a) - Q(s, none), on the state's
    features by least squares (a small torch MLP, masked to the allowed actions).

    One state's rollout is one draw of the future: the per-state argmax of Q picks whichever
    action's draw was lucky (contacts that happened to precede a would-be dropout win by a whole
    lifetime), so labels come from the fitted conditional mean instead. Returns (predict(X) ->
    (n, A) advantages with 0 for "none", diagnostics incl. held-out R^2)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    A = q.shape[1]
    d = np.where(masks, q - q[:, :1], 0.0)[:, 1:]
    m = masks[:, 1:].astype(np.float32)
    scale = float(np.sqrt((d[m > 0] ** 2).mean())) or 1.0
    held = rng.random(len(X)) < 0.2
    Xt, Dt, Mt = (torch.as_tensor(a, dtype=torch.float32) for a in (X, d / scale, m))
    torch.manual_seed(seed)
    layers, width = [], X.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, A - 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    train_idx = torch.as_tensor(np.flatnonzero(~held))
    for _ in range(epochs):
        perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for i in range(0, len(perm), 2048):
            b = perm[i : i + 2048]
            loss = (((net(Xt[b]) - Dt[b]) ** 2) * Mt[b]).sum() / Mt[b].sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.as_tensor(x, dtype=torch.float32)).numpy() * scale
        return np.concatenate([np.zeros((len(x), 1)), out], axis=1)

    pred = predict(X[held])[:, 1:]
    mh = m[held] > 0
    resid = ((pred - d[held]) ** 2)[mh].sum()
    tot = ((d[held] - d[held][mh].mean()) ** 2)[mh].sum()
    return predict, {
        "heldout_r2": float(1 - resid / tot) if tot > 0 else float("nan"),
        "target_rms": scale,
        "epochs": epochs,
    }
