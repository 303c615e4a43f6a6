"""Build the optimizer's value tables from a calibrated world: per customer and action, the simulated
incremental CLV of contacting now over doing nothing, and what the contact costs.

Two sources (`clv values --source sim|policy`):

- `values_from_simulation`: the world model's own answer. For every action a (and "none", the
  reference) the book's digital twins are branched at t = 0: a is applied to the customers for
  whom it is allowed (`PopulationSimulator.action_masks()`), then a continuation policy ("none"
  by default, or any baseline or trained policy) is followed for `horizon - 1` periods. All
  branches of one replication share the same random numbers (the simulator's CRN mode), so
  CLV_a - CLV_none is measured on the same future and its noise is only what the action
  changes; replications draw new twins (latent rates and alive state from each customer's
  posterior) and new futures. `value` = mean over replications of CLV_a - CLV_none (CLV =
  discounted margin minus discounted contact cost, as in `sim.population.simulate`), so it is
  net of every cost the action causes; `cost` = mean over replications of the discounted contact
  cost of branch a minus that of the none branch, i.e. what the decision charges to the
  marketing budget (with continuation "none" exactly the action's catalogue cost; with a
  contacting continuation it can come out below 0 when contacting now displaces a dearer contact
  the policy would have made: it is then charged as 0, `value` keeps the full difference, and the
  diagnostics count such rows).
- `values_from_policy`: a trained (or baseline) policy's advantage estimates
  Q^pi(s, a) - Q^pi(s, none): the same branching with the policy as continuation, then smoothed
  across customers by a least-squares fit on the bank-visible features
  (`policies.rollout.fit_advantages`); the raw means are kept when the fit's held-out R^2 is
  below 0. Diagnostics go to `df.attrs["diagnostics"]`.

Only the customers an action is allowed for are simulated in its branch: each branch holds
its own subset of the customers and takes their rows of the block of uniforms the whole
population draws each period (`_Recorder` / `_Replay`), which is exactly what a full copy of
the simulator would give them (tested against full copies); on the bank world that is 40 % of
the work of full copies. Same seed, same table.

The table has one row per customer x allowed action (never "none", never a masked action) and
the columns of `optimizer.values` (customer_id, segment, action, channel, value, cost, cash_cost).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.catalogue import NO_CHANNEL

DEFAULT_HORIZON = 52  # periods each branch is followed (one year of weeks)
DEFAULT_REPLICATIONS = 4  # twin draws x futures per customer; on the bank world 20,000
# customers x 52 weeks x 4 take 10-13 s on one core (continuation
# none; see values_from_simulation)
CHUNK = 65_536  # customers branched together (bounds memory: ~A/3 copies of their state)
COLUMNS = ("customer_id", "segment", "action", "channel", "value", "cost", "cash_cost")

Progress = Callable[[int], None]


@contextmanager
def _one_torch_thread(load: bool = False):
    """Torch on one thread while branching and fitting (restored after), when torch is loaded (or
    `load`): the network sees one branch's customers at a time, a second thread buys little, and
    on a machine whose other core is busy two threads made the run 3x slower (measured)."""
    if load:
        import importlib

        importlib.import_module("torch")
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---- common random numbers for subsets of the customers ------------------------------------------
class _Recorder:
    """World generator of the branch that holds every customer: draws each period's block of
    uniforms from the real generator and keeps it for the other branches. In CRN mode
    `PopulationSimulator.step` makes exactly one draw per period, `rng.random((n, k))`; anything
    else means the simulator changed and the branches would no longer share their random numbers,
    so it fails loudly."""

    def __init__(self, gen: np.random.Generator):
        self.gen = gen
        self.block: np.ndarray | None = None
        self.period = -1

    def random(self, size=None, *args, **kwargs):
        if self.block is not None or args or kwargs or size is None:
            raise RuntimeError(
                "value_sources: the simulator drew other random numbers than one block of uniforms "
                "per period in CRN mode; the branches would not share them"
            )
        self.block = self.gen.random(size)
        self.period += 1
        return self.block

    def next_period(self) -> None:
        self.block = None

    def __getattr__(self, name: str):
        raise AttributeError(f"value_sources: a CRN branch asked for rng.{name}; only rng.random((n, k)) is expected")


class _Replay:
    """World generator of a branch holding the customers `idx`: their rows of the recorder's block."""

    def __init__(self, rec: _Recorder, idx: np.ndarray):
        self.rec, self.idx, self.period = rec, idx, -1

    def random(self, size=None, *args, **kwargs):
        block = self.rec.block
        if (
            block is None
            or self.period == self.rec.period
            or args
            or kwargs
            or tuple(np.atleast_1d(size)) != (self.idx.size, block.shape[1])
        ):
            raise RuntimeError("value_sources: a CRN branch drew random numbers out of step with the reference branch")
        self.period = self.rec.period
        return block[self.idx]

    def __getattr__(self, name: str):
        raise AttributeError(f"value_sources: a CRN branch asked for rng.{name}; only rng.random((n, k)) is expected")


def branch_values(
    sim, horizon: int, continuation: Callable | None, discount: float, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One replication of the CRN branching from `sim` (a PopulationSimulator at the decision time).

    Returns (masks, value, cost), each (n, A): the allowed actions at t = 0 and, where allowed,
    CLV_a - CLV_none and the discounted contact cost of branch a minus that of the none branch
    (0 in column 0 and where masked). `continuation` is the simulator callable followed after the
    first period (None = never contact). `sim` itself is not advanced; its world generator is
    (`horizon` blocks of uniforms). CRN mode is implied."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    n, A = sim.state.n, sim.tables.n_actions
    masks = sim.action_masks().copy()
    rec = _Recorder(sim.rng)
    everyone = np.arange(n)
    branches = [(0, everyone, sim.subset(everyone, rec))]
    for a in range(1, A):
        idx = np.flatnonzero(masks[:, a])
        if idx.size:
            branches.append((a, idx, sim.subset(idx, _Replay(rec, idx))))
    clv = [np.zeros(idx.size) for _, idx, _ in branches]
    dcost = [np.zeros(idx.size) for _, idx, _ in branches]
    for _, _, b in branches:
        b.crn = True
    w = 1.0
    for t in range(horizon):
        rec.next_period()
        for k, (a, idx, b) in enumerate(branches):  # the reference branch first: it draws the block
            if t == 0:
                acts = np.full(idx.size, a, np.int16)
            elif continuation is None:
                acts = None
            else:
                acts = continuation(b)
            out = b.step(acts)
            clv[k] += w * out.reward
            dcost[k] += w * out.cost
        w *= discount
        if progress:
            progress(n)
    value = np.zeros((n, A))
    cost = np.zeros((n, A))
    for k, (a, idx, _) in enumerate(branches[1:], start=1):
        value[idx, a] = clv[k] - clv[0][idx]
        cost[idx, a] = dcost[k] - dcost[0][idx]
    return masks, value, cost


# ---- estimates over replications ------------------------------------------------------------------
@dataclass
class _Estimate:
    ids: np.ndarray  # (n,) str, unique
    segment: np.ndarray  # (n,) int index into world.segments
    masks: np.ndarray  # (n, A) allowed at t = 0
    value: np.ndarray  # (n, A) mean over replications
    value_se: np.ndarray  # (n, A) standard error of the mean (NaN with one replication)
    cost: np.ndarray  # (n, A) mean over replications (clipped at 0 by the caller)
    obs: dict[str, np.ndarray]  # bank-visible observation at t = 0
    resampled: bool


def _select(book: pd.DataFrame, customers: int | None, seed: int) -> tuple[pd.DataFrame, np.ndarray, bool]:
    """The book (or `customers` rows of it, `sim.population.sample_book`) and unique ids: a customer
    drawn more than once (more customers asked for than the book has) is 'ID#2', 'ID#3', ..."""
    from sim.errors import ConfigError
    from sim.population import sample_book

    if book is None or len(book) == 0:
        raise ConfigError("value tables are built for a book of customers; this world has none")
    if customers is not None and int(customers) < 1:
        raise ConfigError(f"customers must be >= 1, got {customers}")
    n = len(book) if customers is None else int(customers)
    src = sample_book(book, n, seed)
    ids = src["customer_id"].astype(str).to_numpy().astype(object)
    resampled = n > len(book)
    s = pd.Series(ids)
    if s.duplicated().any():
        k = s.groupby(s, sort=False).cumcount().to_numpy()
        ids = np.where(k > 0, ids + "#" + (k + 1).astype(str).astype(object), ids)
        if pd.Series(ids).duplicated().any():
            raise ConfigError("the book's customer_id column has duplicates; ids must be unique")
    return src, ids, resampled


class _Rows:
    """The rows `live` of a simulator, as `policies.base.as_simulator_policy` reads it."""

    def __init__(self, sim, live: np.ndarray, masks: np.ndarray):
        self.live, self.masks, self.policy_rng = live, masks, sim.policy_rng
        self._sim = sim

    def observe(self) -> dict[str, np.ndarray]:
        return {k: v[self.live] for k, v in self._sim.observe().items()}

    def action_masks(self) -> np.ndarray:
        return self.masks[self.live]


def continuation_fn(policy) -> Callable:
    """`as_simulator_policy(policy, greedy=True)` (as `policies.rollout` follows a base policy) asked
    only about the customers with a contact allowed: where "none" is the only allowed action every
    policy must choose it (probabilities are zero on masked actions), so leaving out the customers
    with nothing allowed (churned, just contacted, opted out) saves work and changes no decision."""
    from policies.base import as_simulator_policy

    act = as_simulator_policy(policy, greedy=True)

    def fn(sim) -> np.ndarray:
        masks = sim.action_masks()
        live = np.flatnonzero(masks[:, 1:].any(axis=1))
        out = np.zeros(sim.state.n, np.int16)
        if live.size:
            out[live] = act(_Rows(sim, live, masks))
        return out

    fn.policy = policy  # type: ignore[attr-defined]
    return fn


def _continuation(world, continuation) -> tuple[Callable | None, str]:
    """(simulator callable or None for "none", name) from a name, a folder or a policy object."""
    if continuation is None or (isinstance(continuation, str) and continuation == "none"):
        return None, "none"
    if isinstance(continuation, str):
        from policies.registry import resolve_policy

        return continuation_fn(resolve_policy(continuation, world)), continuation
    return continuation_fn(continuation), str(getattr(continuation, "name", type(continuation).__name__))


def _estimate(
    world, book, customers, horizon, replications, seed, continuation: Callable | None, progress: Progress | None
) -> _Estimate:
    from sim.errors import ConfigError
    from sim.population import PopulationSimulator, WorldTables, book_columns, take_rows

    if int(horizon) < 1:
        raise ConfigError(f"horizon must be >= 1, got {horizon}")
    if int(replications) < 1:
        raise ConfigError(f"replications must be >= 1, got {replications}")
    src, ids, resampled = _select(book, customers, seed)
    cols = book_columns(src)
    n, tables = len(src), WorldTables.from_world(world)
    A = tables.n_actions
    gamma = world.economics.discount_per_period
    s1, s2, c1 = np.zeros((n, A)), np.zeros((n, A)), np.zeros((n, A))
    masks = np.zeros((n, A), bool)
    obs: dict[str, list[np.ndarray]] = {}
    starts = list(range(0, n, CHUNK))
    for r, rep in enumerate(np.random.SeedSequence([int(seed), 0x7A1E]).spawn(int(replications))):
        for start, seq in zip(starts, rep.spawn(len(starts))):
            stop = min(n, start + CHUNK)
            sim = PopulationSimulator.from_book(world, take_rows(cols, np.arange(start, stop)), seq, tables=tables)
            sim.crn = True
            m, v, c = branch_values(sim, int(horizon), continuation, gamma, progress)
            if r == 0:
                masks[start:stop] = m
                for k, x in sim.observe().items():
                    obs.setdefault(k, []).append(np.array(x, copy=True))
            elif not np.array_equal(masks[start:stop], m):  # masks depend on observables only
                raise RuntimeError("value_sources: the allowed actions differ between replications")
            s1[start:stop] += v
            s2[start:stop] += v * v
            c1[start:stop] += c
    R = int(replications)
    mean = s1 / R
    se = np.sqrt(np.maximum(s2 / R - mean**2, 0.0) * R / (R - 1) / R) if R > 1 else np.full((n, A), np.nan)
    return _Estimate(
        ids=ids,
        segment=np.asarray(src["segment"]).astype(np.int64),
        masks=masks,
        value=mean,
        value_se=se,
        cost=c1 / R,
        obs={k: np.concatenate(v) for k, v in obs.items()},
        resampled=resampled,
    )


def _frame(world, est: _Estimate, value: np.ndarray, cost: np.ndarray) -> pd.DataFrame:
    """The long table: one row per customer x allowed action (customer order, then catalogue order),
    customer ids in the user's own type."""
    from sim.history import restore_customer_ids

    cat = world.catalogue
    actions = cat.names[1:]
    chan_of = [a.channel or NO_CHANNEL for a in cat.actions[1:]]
    channels = list(dict.fromkeys(chan_of))
    r, j = np.nonzero(est.masks[:, 1:])
    seg_names = [s.name for s in world.segments]
    return pd.DataFrame(
        {
            "customer_id": restore_customer_ids(est.ids[r].astype(str), world.customer_id_type),
            "segment": pd.Categorical.from_codes(est.segment[r], categories=seg_names),
            "action": pd.Categorical.from_codes(j, categories=actions),
            "channel": pd.Categorical.from_codes(
                np.array([channels.index(c) for c in chan_of], np.int64)[j], categories=channels
            ),
            "value": value[r, j + 1].astype(np.float64),
            "cost": cost[r, j + 1].astype(np.float64),
            # the contact's catalogue price: the plan's cash, beside `cost` (the budget's incremental cost)
            "cash_cost": np.asarray(cat.costs[1:], np.float64)[j],
        }
    )


def _by_action(world, masks: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """Mean of x over the customers each action is allowed for (NaN when it is allowed for none)."""
    out = {}
    for a, name in enumerate(world.catalogue.names[1:], start=1):
        m = masks[:, a]
        out[name] = float(x[m, a].mean()) if m.any() else float("nan")
    return out


def _clip_cost(est: _Estimate) -> int:
    """Costs below 0 (contacting now can displace a dearer contact the continuation would have made)
    are charged as 0 to the budget; `value` keeps the full difference. Returns how many were clipped."""
    neg = est.masks & (est.cost < 0)
    est.cost = np.where(neg, 0.0, est.cost)
    return int(neg[:, 1:].sum())


def values_from_simulation(
    world,
    book: pd.DataFrame,
    customers: int | None = None,
    horizon: int = DEFAULT_HORIZON,
    replications: int = DEFAULT_REPLICATIONS,
    seed: int = 0,
    continuation: Any = "none",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The world model's simulated incremental CLV of each allowed action over "none", with common
    random numbers (see the module docstring).

    `book`: the world's book (`world.book_path`); `customers` rows of it are drawn with
    `sim.population.sample_book` (None = the whole book; more than the book resamples with
    replacement and suffixes repeated ids with '#k'). `continuation`: "none", a baseline name, a
    folder written by `clv train`, or a policy object, followed greedily after the first period.
    `progress(k)` is called with k customers each time a period of every branch of a chunk is done
    (total: customers x horizon x replications).

    Returns the long table (customer_id, segment, action, channel, value, cost) with
    `attrs["diagnostics"]`: continuation, replications, horizon, customers, resampled,
    mean value / standard error / cost by action, cost_clipped_rows.

    Measured on the bank world (6,000-customer book resampled to 20,000, 52 weeks, 4 replications,
    one core): 10-13 s with continuation none, 25-30 s with greedy_uplift as continuation.
    """
    cont, name = _continuation(world, continuation)
    with _one_torch_thread():
        est = _estimate(world, book, customers, horizon, replications, seed, cont, progress)
    clipped = _clip_cost(est)
    df = _frame(world, est, est.value, est.cost)
    df.attrs["diagnostics"] = {
        "source": "sim",
        "continuation": name,
        "horizon": int(horizon),
        "replications": int(replications),
        "customers": int(len(est.ids)),
        "resampled": bool(est.resampled),
        "seed": int(seed),
        "mean_value_by_action": _by_action(world, est.masks, est.value),
        "mean_standard_error_by_action": _by_action(world, est.masks, est.value_se),
        "mean_cost_by_action": _by_action(world, est.masks, est.cost),
        "cost_clipped_rows": clipped,
    }
    return df


def values_from_policy(
    world,
    book: pd.DataFrame,
    policy: Any,
    customers: int | None = None,
    horizon: int = DEFAULT_HORIZON,
    replications: int = DEFAULT_REPLICATIONS,
    seed: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """A policy's advantage estimates Q^pi(s, a) - Q^pi(s, none) for every allowed action a.

    `policy`: a baseline name, a folder written by `clv train`, or a policy object. The raw
    per-customer means come from the CRN branching of `values_from_simulation` with the policy as
    continuation; they are then replaced by their fitted conditional mean given the customer's
    bank-visible features (the policy's own encoder for a trained agent, else
    `policies.rl.UpliftEncoder`: the observation plus each action's myopic value), fitted with
    `policies.rollout.fit_advantages`, unless the fit's held-out R^2 is below 0. `cost` stays the
    raw mean (clipped at 0 as in `values_from_simulation`): the budget is charged what the
    branches spent.

    Returns the long table with `attrs["diagnostics"]`: the fit (heldout_r2, target_rms, epochs,
    smoothed), the raw and returned mean value by action, mean cost by action, cost_clipped_rows.
    """
    from policies.rollout import fit_advantages

    cont, name = _continuation(world, policy)
    if cont is None:  # "none" as the policy: Q^none, the world model's own values
        from policies.baselines import make_baseline

        cont, name = _continuation(world, make_baseline("none", world))
    pol = cont.policy
    encoder = getattr(pol, "encoder", None)
    if encoder is None or not hasattr(encoder, "encode"):
        from policies.rl import UpliftEncoder

        encoder = UpliftEncoder(world)
    fit: dict[str, Any] = {"heldout_r2": float("nan")}
    with _one_torch_thread(load=True):  # the fit needs torch: it runs on one thread too
        est = _estimate(world, book, customers, horizon, replications, seed, cont, progress)
        X = np.asarray(encoder.encode(est.obs), np.float32)
        value = est.value
        if est.masks[:, 1:].any() and len(X) >= 10:
            predict, fit = fit_advantages(X, est.value, est.masks, int(seed))
            r2 = fit["heldout_r2"]
            if np.isfinite(r2) and r2 >= 0:
                value = np.where(est.masks, predict(X), 0.0)
    clipped = _clip_cost(est)
    smoothed = value is not est.value
    df = _frame(world, est, value, est.cost)
    df.attrs["diagnostics"] = {
        "source": "policy",
        "policy": name,
        "horizon": int(horizon),
        "replications": int(replications),
        "customers": int(len(est.ids)),
        "resampled": bool(est.resampled),
        "seed": int(seed),
        "smoothed": bool(smoothed),
        "features": int(X.shape[1]),
        **{k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in fit.items()},
        "raw_mean_value_by_action": _by_action(world, est.masks, est.value),
        "mean_standard_error_by_action": _by_action(world, est.masks, est.value_se),
        "mean_value_by_action": _by_action(world, est.masks, value),
        "mean_cost_by_action": _by_action(world, est.masks, est.cost),
        "cost_clipped_rows": clipped,
    }
    return df
