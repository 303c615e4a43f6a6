"""A budgeted policy over a horizon: every contact a base policy makes over T periods is subject to
one cash budget for the whole horizon and to the allocation constraints, each period.

Each period the base policy (a baseline or a trained agent) proposes its contacts. Each proposal
is valued by `ContactValues`: the policy's own advantage of that contact over not contacting,
Q^pi(s, a) - Q^pi(s, none), fitted (policies.rollout.fit_advantages) on common-random-number
rollouts at states the policy visits over the horizon, on customers and random streams of their
own (never the seeds the plan is judged on: no in-sample selection). The period's contacts are
then chosen by the `BudgetRule`:

- pacing `horizon` (default): one price for the whole horizon; a proposal goes ahead when its
  value exceeds price x cost. The price is set on planning seeds so that the expected spend over
  the horizon meets the budget (`tune_price`), and the budget left is a hard cap in every period;
  the price may be negative (the budget then also pays for the policy's contacts the value model
  rates lowest); a budget the policy never reaches has no price: the budgeted policy is the policy;
- pacing `even`: the budget left is spread evenly over the periods left (unspent money carries
  over); within a period, proposals by value per unit of cost while the period's money lasts;
- pacing `front`: as `even`, with the whole budget left available in every period.

With per-period constraints (channel or action capacities, minimum coverage and maximum spend
shares by segment, as in `clv allocate`) a period's choice is solved by the optimizer
(`optimizer.allocate.allocate`, the Lagrangian engine warm-started from the previous period's
multipliers); coverage and shares then refer to the customers with a proposal in that period,
and a proposal whose value is not positive is left out unless coverage needs it.

The budget is cash: the catalogue cost of every contact made over the horizon, the policy's own
included. All customers are stepped together period by period (a budget is shared by all of them),
in the chunks and random streams of `sim.population.simulate`, with common random numbers, so the
runs of "none", the policy alone and the budgeted policy on one seed differ only by their actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.errors import ConfigError

PACINGS = ("horizon", "even", "front")
RUN_MODES = ("none", "policy", "budgeted")


# ---- what a contact is worth --------------------------------------------------------------------
@dataclass
class ContactValues:
    """The base policy's advantage of a contact over none at a state: `predict(X)` on the state's
    features (`encoder.encode(obs)`) gives (n, A), 0 for none, in discounted value units."""

    encoder: Any
    predict: Callable[[np.ndarray], np.ndarray]
    fit: dict[str, Any] = field(default_factory=dict)

    def of(self, obs: dict[str, np.ndarray], rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Value of making contact `actions[k]` with customer `rows[k]` now."""
        if rows.size == 0:
            return np.zeros(0)
        sub = {k: v[rows] for k, v in obs.items()}
        return self.of_features(np.asarray(self.encoder.encode(sub), np.float32), actions)

    def of_features(self, x: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """As `of`, from the rows' features already encoded with `encoder`."""
        if len(x) == 0:
            return np.zeros(0)
        return self.predict(np.asarray(x, np.float32))[np.arange(len(x)), actions]


def default_snapshots(periods: int, count: int = 4) -> list[int]:
    """Periods at which the value model sees the policy's states: spread over the horizon."""
    return sorted({int(t) for t in np.linspace(0, max(periods - 1, 0), count)})


def fit_contact_values(
    world,
    book: pd.DataFrame | None,
    policy,
    periods: int,
    value_horizon: int,
    customers: int,
    seed: int,
    snapshots: list[int] | None = None,
    progress: Callable[[int], None] | None = None,
    continuation=None,
) -> ContactValues:
    """Fit the policy's contact advantages on `customers` twins drawn from the book (their own
    random key), at `snapshots` of the horizon, each contact followed by the policy for
    `value_horizon` periods on common random numbers. The fit's held-out R^2 is in `fit`."""
    from policies.rl import UpliftEncoder
    from policies.rollout import fit_advantages, rollout_labels

    snaps = default_snapshots(periods) if snapshots is None else sorted(set(snapshots))
    labels = rollout_labels(
        world, policy, customers, snaps, value_horizon, seed, book=book, progress=progress, continuation=continuation
    )
    encoder = getattr(policy, "encoder", None)
    if encoder is None or not hasattr(encoder, "encode"):
        encoder = UpliftEncoder(world)
    obs = {k: np.concatenate([o[k] for o in labels.obs]) for k in labels.obs[0]}
    x = np.asarray(encoder.encode(obs), np.float32)
    predict, fit = fit_advantages(x, labels.q, labels.masks, int(seed))
    fit.update(
        {
            "states": int(len(x)),
            "snapshots": snaps,
            "value_horizon": int(value_horizon),
            "customers": int(customers),
            "seed": int(seed),
        }
    )
    return ContactValues(encoder=encoder, predict=predict, fit=fit)


# ---- which proposals go ahead -------------------------------------------------------------------
@dataclass
class BudgetRule:
    """How a period's proposals are cut to the budget and the constraints (module docstring)."""

    budget: float
    periods: int
    pacing: str = "horizon"
    price: float | None = None  # horizon pacing: a proposal's value must exceed price x cost; None: no price
    constraints: list = field(default_factory=list)  # optimizer Constraint objects, held every period
    hard_cap: bool = True  # the budget left caps every period (off only while the price is tuned)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.budget) and self.budget > 0):
            raise ConfigError("budget", value=self.budget, message="must be a finite number > 0")
        if self.periods < 1:
            raise ConfigError("horizon", value=self.periods, message="must be >= 1")
        if self.pacing not in PACINGS:
            raise ConfigError("pacing", value=repr(self.pacing), message=f"choose {', '.join(PACINGS)}")

    def period_cap(self, spent: float, t: int) -> float:
        if not self.hard_cap:
            return float("inf")
        left = max(self.budget - spent, 0.0)
        return left / (self.periods - t) if self.pacing == "even" else left


def _greedy_fill(score: np.ndarray, cost: np.ndarray, cap: float, positive_only: bool) -> np.ndarray:
    """Rows (with score > 0 when `positive_only`) by score per unit of cost, while their cumulative
    cost fits `cap`."""
    keep = np.flatnonzero(score > 0) if positive_only else np.arange(score.size)
    if keep.size == 0:
        return keep
    ratio = score[keep] / np.maximum(cost[keep], 1e-12)
    order = keep[np.argsort(-ratio, kind="stable")]
    return np.sort(order[np.cumsum(cost[order]) <= cap + 1e-9])


@dataclass
class PeriodChoice:
    rows: np.ndarray  # indexes into the period's proposals that go ahead
    multipliers: np.ndarray | None = None  # the optimizer's, when it was used
    coverage_need: float = 0.0  # what this period's minimum coverage cost at least


def coverage_need(constraints: list, cost: np.ndarray, segment: np.ndarray, world) -> float:
    """The least a period's minimum-coverage constraints cost: the cheapest share F of each named
    segment's proposals (capacities and shares left aside: a lower bound, what is reserved)."""
    names = [s.name for s in world.segments]
    need = 0.0
    for c in constraints:
        if c.kind == "min-coverage" and c.scope == "segment" and c.key in names:
            rows = np.flatnonzero(segment == names.index(c.key))
            k = int(np.ceil(c.limit * rows.size - 1e-9))
            need += float(np.sort(cost[rows])[:k].sum())
    return need


def choose_contacts(
    rule: BudgetRule,
    value: np.ndarray,
    cost: np.ndarray,
    action: np.ndarray,
    segment: np.ndarray,
    spent: float,
    t: int,
    world,
    lam0: np.ndarray | None = None,
    need_seen: float = 0.0,
) -> PeriodChoice:
    """The proposals (value, cost, catalogue action, segment index) that go ahead in period t.
    `need_seen`: the largest coverage need of the run's earlier periods (what is kept for later ones)."""
    cap = rule.period_cap(spent, t)
    priced = rule.pacing == "horizon" and rule.price is not None
    score = value - rule.price * cost if priced else value
    if not rule.constraints:
        # a price (a binding budget, horizon pacing) must be cleared; otherwise every proposal the
        # budget left can pay for goes ahead, the best value per unit of cost first
        return PeriodChoice(_greedy_fill(score, cost, cap, positive_only=priced))
    from .allocate import allocate
    from .diagnose import InfeasibleError
    from .problem import AllocationProblem, budget_constraint

    need = coverage_need(rule.constraints, cost, segment, world)
    if need > 0 and np.isfinite(cap) and rule.pacing != "even":
        # keep for every later period the most a period's coverage has cost in this run, so that
        # coverage does not run out of money before the horizon ends (needs vary by +-40 % from
        # period to period on the test bank; even pacing keeps a share per period already)
        cap = max(cap - max(need, need_seen) * (rule.periods - t - 1), min(cap, need))
    from .values import ValueTable

    n = value.size
    names = list(world.catalogue.names[1:])
    channels = world.catalogue.contact_channels
    j = action.astype(np.int64) - 1
    eligible = np.zeros((n, len(names)), bool)
    eligible[np.arange(n), j] = True
    val = np.where(eligible, score[:, None], 0.0)
    cst = np.where(eligible, cost[:, None], 0.0)
    table = ValueTable(
        ids=np.arange(n).astype(str),
        segment=segment.astype(np.int64),
        segments=[s.name for s in world.segments],
        actions=names,
        channels=channels,
        action_channel=np.array(world.catalogue.contact_channel_index()[1:], np.int64),
        value=val,
        cost=cst,
        eligible=eligible,
        source=f"period {t}",
    )
    budget_row = [budget_constraint(cap)] if np.isfinite(cap) else []
    problem = AllocationProblem(table, budget_row + list(rule.constraints))
    warm = lam0 if lam0 is not None and len(lam0) == problem.K else None
    try:
        try:  # the Lagrangian engine, warm-started: an exact solve every period costs ~0.2 s against ~0.01 s
            alloc = allocate(problem, method="lagrangian", lam0=warm)
        except InfeasibleError:  # the exact solve says whether it is (with the diagnosis) or the engine missed
            alloc = allocate(problem, method="exact")
    except InfeasibleError as e:
        d = e.diagnosis
        if budget_row and "budget" in d.conflicts and d.smallest_budget is not None:
            others = ", ".join(c for c in d.conflicts if c != "budget")
            at_least = spent + d.smallest_budget * (rule.periods - t)
            d = replace(
                d,
                smallest_budget=at_least,
                message=f"the budget left for this period ({cap:,.2f} of {rule.budget:,.2f} for the horizon) cannot "
                f"pay for {others}, which needs {d.smallest_budget:,.2f} in this period; a horizon budget of about "
                f"{at_least:,.0f} would pay for it in every period left (raise the budget, or relax the constraint)",
            )
        raise InfeasibleError(d, f"period {t}") from None
    return PeriodChoice(np.flatnonzero(alloc.units.sum(axis=1) > 0), np.asarray(alloc.multipliers, float), need)


# ---- one run over the horizon -------------------------------------------------------------------
@dataclass
class HorizonRun:
    """What one seed's run produced: per customer, per period, and the first period's decisions."""

    clv: np.ndarray  # (N,) discounted reward over the horizon
    spend: float  # cash spent over the horizon
    contacts: int
    segment: np.ndarray  # (N,) int
    by_period: pd.DataFrame  # period, segment, channel (index into catalogue.contact_channels): contacts, spend, value
    first_period: pd.DataFrame | None  # row, action, value, cost of period 0's contacts (budgeted runs)
    multipliers: list = field(default_factory=list)  # per period, when the optimizer ran
    proposals: tuple[np.ndarray, np.ndarray] | None = None  # (value, cost) of every proposal (record_values)


class _Asked:
    """One period's proposals of the policy on one simulator: the actions of every customer, the
    observation they were made on, and, when the policy reads the value model's own features
    (an agent whose encoder is the values' encoder), those features of the customers asked
    (`live`), so that the proposals are valued without encoding the same states twice."""

    def __init__(self, actions: np.ndarray, obs: dict, live: np.ndarray | None = None, x: np.ndarray | None = None):
        self.actions, self.obs, self.live, self.x = actions, obs, live, x

    def values(self, values: "ContactValues", rows: np.ndarray) -> np.ndarray:
        """The contact values of the proposals of customers `rows` (indices into the simulator)."""
        if self.x is not None and rows.size:
            return values.of_features(self.x[np.searchsorted(self.live, rows)], self.actions[rows])
        return values.of(self.obs, rows, self.actions[rows])


def _proposals(policy_fn: Callable, sim, encoder=None) -> _Asked:
    """The policy's actions for every customer of `sim` and the observation they were made on.

    A policies.base policy (or its simulator adapter) is asked only about the customers with a
    contact allowed, drawing from the simulator's policy stream: where "none" is the only allowed
    action every policy must choose it, and an agent's forward pass is most of a period's work.
    `encoder`: the contact values' encoder; when it is the policy's own (an SB3Policy reads its
    encoded features as they are), the features are computed once for both."""
    policy = getattr(policy_fn, "policy", policy_fn)
    obs = sim.observe()
    if not hasattr(policy, "act"):
        return _Asked(np.asarray(policy_fn(sim), np.int16), obs)
    masks = sim.action_masks()
    live = np.flatnonzero(masks[:, 1:].any(axis=1))
    out = np.zeros(sim.state.n, np.int16)
    x = None
    if live.size:
        sub = {k: v[live] for k, v in obs.items()}
        if encoder is not None and getattr(policy, "encoder", None) is encoder and hasattr(policy, "features"):
            x = np.asarray(encoder.encode(sub), np.float32)
            out[live] = policy.act(x, masks[live], sim.policy_rng)
        else:
            out[live] = policy.act(sub, masks[live], sim.policy_rng)
    return _Asked(out, obs, live, x)


def _simulators(world, book, customers, seed, tables):
    from sim.population import DEFAULT_CHUNK, PopulationSimulator, chunk_seeds, sample_book

    n = len(book) if customers is None else int(customers)
    src = sample_book(book, n, seed)
    sims = []
    for start, stop, seq in chunk_seeds(seed, n, DEFAULT_CHUNK):
        sim = PopulationSimulator.from_book(world, src.iloc[start:stop], seq, tables=tables)
        sim.crn = True
        sims.append(sim)
    return sims


def first_period_actions(world, book: pd.DataFrame, policy_fn: Callable, seed: int) -> np.ndarray:
    """The base policy's own actions in the first period for every book customer, in book order, on
    seed `seed`'s streams (what `run_horizon(..., mode="policy")` does in period 0)."""
    from sim.population import WorldTables

    sims = _simulators(world, book, None, seed, WorldTables.from_world(world))
    return np.concatenate([_proposals(policy_fn, s).actions for s in sims]) if sims else np.zeros(0, np.int16)


def run_horizon(
    world,
    book: pd.DataFrame,
    policy_fn: Callable | None,
    periods: int,
    seed: int,
    mode: str = "budgeted",
    rule: BudgetRule | None = None,
    values: ContactValues | None = None,
    customers: int | None = None,
    tables=None,
    record_values: bool = False,
    sims: list | None = None,
) -> HorizonRun:
    """Run `mode` ("none": no contact; "policy": the base policy alone; "budgeted": its proposals
    through `rule`) for `periods` on the book's twins with seed `seed` (common random numbers).
    `record_values` (mode "policy", with `values`): keep the value and cost of every proposal,
    from which `guess_price` starts the price search. `sims`: simulators to run instead of the
    twins (anything with the PopulationSimulator's observe / action_masks / step / state /
    policy_rng, e.g. the generating world's customers seen through the calibrated world)."""
    from sim.population import WorldTables

    if mode not in RUN_MODES:
        raise ValueError(f"mode must be one of {RUN_MODES}")
    if mode == "budgeted" and (rule is None or values is None):
        raise ValueError("a budgeted run needs a rule and contact values")
    tables = tables or WorldTables.from_world(world)
    sims = _simulators(world, book, customers, seed, tables) if sims is None else sims
    disc = world.economics.discount_per_period
    cost_of = tables.action_cost
    channel_of = np.array(world.catalogue.contact_channel_index(), np.int64)  # by_period's channel index
    n_seg = len(world.segments)
    n_ch = len(world.catalogue.contact_channels)
    clv = [np.zeros(s.state.n) for s in sims]
    offsets = np.cumsum([0] + [s.state.n for s in sims])[:-1]
    shape = (n_seg, max(n_ch, 1))
    rows_out: list[dict] = []
    spent, contacts, lam, need_seen = 0.0, 0, None, 0.0
    first = None
    mults: list = []
    recorded: list = []
    if record_values and values is None:
        raise ValueError("record_values needs contact values")
    for t in range(periods):
        acts = [np.zeros(s.state.n, np.int16) for s in sims]
        value = np.full(shape, np.nan)
        if mode != "none":
            encoder = values.encoder if values is not None and (mode == "budgeted" or record_values) else None
            asked = [_proposals(policy_fn, s, encoder) for s in sims]
            props = [q.actions for q in asked]
            if mode == "policy":
                acts = props
                if record_values:
                    for q in asked:
                        c = np.flatnonzero(q.actions > 0)
                        recorded.append((q.values(values, c), cost_of[q.actions[c]]))
            else:
                cand = [np.flatnonzero(p > 0) for p in props]
                v = np.concatenate([q.values(values, c) for q, c in zip(asked, cand)])
                a = np.concatenate([p[c] for c, p in zip(cand, props)])
                seg = np.concatenate([s.state.segment[c] for s, c in zip(sims, cand)])
                choice = choose_contacts(rule, v, cost_of[a], a, seg, spent, t, world, lam, need_seen)
                need_seen = max(need_seen, choice.coverage_need)
                if choice.multipliers is not None:
                    lam = choice.multipliers
                    mults.append(lam)
                take = np.zeros(a.size, bool)
                take[choice.rows] = True
                lo = 0
                for k, (c, p) in enumerate(zip(cand, props)):
                    sel = take[lo : lo + c.size]
                    acts[k][c[sel]] = p[c[sel]]
                    lo += c.size
                value = np.zeros(shape)
                np.add.at(value, (seg[take], channel_of[a[take]]), v[take])
                if t == 0:
                    rows = np.concatenate([c + o for c, o in zip(cand, offsets)])
                    first = pd.DataFrame(
                        {"row": rows[take], "action": a[take], "value": v[take], "cost": cost_of[a[take]]}
                    )
        count, spend = np.zeros(shape), np.zeros(shape)
        for k, s in enumerate(sims):
            seg_before = s.state.segment.copy()
            out = s.step(acts[k])
            clv[k] += out.reward * disc**t
            spent += float(out.cost.sum())
            contacts += int(out.contacted.sum())
            if out.contacted.any():
                at = (seg_before[out.contacted], channel_of[out.actions[out.contacted]])
                np.add.at(count, at, 1)
                np.add.at(spend, at, out.cost[out.contacted])
        for g, h in zip(*np.nonzero(count)):
            rows_out.append(
                {
                    "period": t,
                    "segment": int(g),
                    "channel": int(h),
                    "contacts": float(count[g, h]),
                    "spend": float(spend[g, h]),
                    "value": float(value[g, h]),
                }
            )
    by_period = pd.DataFrame(rows_out, columns=["period", "segment", "channel", "contacts", "spend", "value"])
    return HorizonRun(
        clv=np.concatenate(clv),
        spend=spent,
        contacts=contacts,
        segment=np.concatenate([s.state.segment for s in sims]),
        by_period=by_period,
        first_period=first,
        multipliers=mults,
        proposals=(
            (np.concatenate([v for v, _ in recorded]), np.concatenate([c for _, c in recorded]))
            if record_values and recorded
            else None
        ),
    )


# ---- many seeds ----------------------------------------------------------------------------------
def _run_job(world, book, fns, values, tables, periods, customers, fn_index, mode, rule, record_values, seed):
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:  # one thread per task: the tasks fill the cores
        torch.set_num_threads(1)
    fn = None if fn_index is None else fns[fn_index]
    return run_horizon(world, book, fn, periods, seed, mode, rule, values, customers, tables, record_values)


def run_jobs(
    world,
    book: pd.DataFrame,
    fns: tuple,
    periods: int,
    jobs: list[tuple],
    values: ContactValues | None = None,
    customers: int | None = None,
    tables=None,
    executor=None,
    progress: Callable[[int], None] | None = None,
) -> list[HorizonRun]:
    """`run_horizon` for every job `(index into fns or None, mode, rule, record_values, seed)`, in
    order: in-process, or all as the tasks of one `executor.map` (e.g.
    experiments.ray_session.RayExecutor), so that runs of different kinds fill the workers
    together instead of waiting for one another. A run depends on its job only, so the runs are
    the same whichever way they are made."""
    from sim.population import WorldTables

    tables = tables or WorldTables.from_world(world)
    shared = (world, book, tuple(fns), values, tables, periods, customers)
    if executor is None:
        out = []
        for job in jobs:
            out.append(_run_job(*shared, *job))
            if progress:
                progress(1)
        return out
    return executor.map(_run_job, shared, [tuple(j) for j in jobs], progress)


def run_seeds(
    world,
    book: pd.DataFrame,
    policy_fn: Callable | None,
    periods: int,
    seeds: list[int],
    mode: str = "budgeted",
    rule: BudgetRule | None = None,
    values: ContactValues | None = None,
    customers: int | None = None,
    tables=None,
    record_values: bool = False,
    executor=None,
    progress: Callable[[int], None] | None = None,
) -> list[HorizonRun]:
    """`run_horizon` of one mode for every seed, in order (`run_jobs`)."""
    jobs = [(None if policy_fn is None else 0, mode, rule, record_values, s) for s in seeds]
    return run_jobs(world, book, (policy_fn,), periods, jobs, values, customers, tables, executor, progress)


# ---- the price of the horizon pacing ------------------------------------------------------------
def guess_price(runs: list[HorizonRun], budget: float) -> float | None:
    """The price at which the policy's own proposals (recorded in its runs, `record_values`) that
    clear it would cost `budget` per run: a first guess, as the budget changes which states the
    customers reach and so what is proposed later."""
    recs = [r.proposals for r in runs if r.proposals is not None and len(r.proposals[0])]
    if not recs:
        return None
    v = np.concatenate([x for x, _ in recs])
    c = np.concatenate([y for _, y in recs])
    ratio = v / np.maximum(c, 1e-12)
    order = np.argsort(-ratio, kind="stable")
    spend = np.cumsum(c[order]) / len(recs)
    k = int(np.searchsorted(spend, budget))
    if k >= len(order):
        return None
    return float(ratio[order[k]])


def tune_price(
    world,
    book: pd.DataFrame,
    policy_fn: Callable,
    values: ContactValues,
    rule: BudgetRule,
    seeds: list[int],
    policy_spend: float,
    customers: int | None = None,
    iterations: int = 12,
    tolerance: float = 0.01,
    progress: Callable[[int], None] | None = None,
    aim: float = 1.0,
    start: float | None = None,
    executor=None,
) -> tuple[float | None, list[dict]]:
    """The price at which the mean uncapped spend over `seeds` meets the budget (within `tolerance`,
    or the lowest price found that keeps it within the budget after `iterations` more runs).

    A proposal goes ahead when value > price x cost, so spend falls as the price rises. The price
    may be negative: when the policy's proposals that the value model rates above 0 cost less than
    the budget, the budget also pays for the least bad of the others, as the policy wanted them
    (its own spend is reached as the price falls). The price starts at 0, its bracket grows by
    factors of 2, then regula falsi. `start`: a first guess (e.g. the price of a nearby budget),
    bracketed from there with steps of a quarter of its size. `executor`: as in `run_seeds`. `aim` > 1 sets the uncapped spend a little above the budget, so
    that in most seeds the hard cap, not the price, ends the spending (a seed whose customers ask
    for less than the tuning seeds' then still spends nearly all of it). None (no price) when the
    policy alone spends no more than the budget (`policy_spend`, its mean spend on the same seeds).
    Returns (price, prices tried)."""
    from sim.population import WorldTables

    if rule.pacing != "horizon" or policy_spend <= rule.budget:
        return None, []
    tables = WorldTables.from_world(world)
    trace: list[dict] = []

    def spend_at(price: float) -> float:
        r = replace(rule, price=price, hard_cap=False)  # the spend the price asks for, uncapped
        runs = run_seeds(
            world, book, policy_fn, rule.periods, seeds, "budgeted", r, values, customers, tables, executor=executor
        )
        out = float(np.mean([run.spend for run in runs]))
        trace.append({"price": price, "spend": out})
        if progress:
            progress(1)
        return out

    budget = rule.budget * aim
    if policy_spend <= budget:  # the aim is past the policy's own spend: every proposal the cap allows
        return None, trace
    p0 = 0.0 if start is None else float(start)
    step = 1.0 if start is None else max(abs(p0) / 4, 0.05)
    s0 = spend_at(p0)
    if abs(s0 - budget) <= tolerance * budget:
        return p0, trace
    if s0 > budget:  # a higher price: raise it until the spend fits
        lo, s_lo = p0, s0
        hi, s_hi = p0 + step, spend_at(p0 + step)
        while s_hi > budget and step < 1e6:
            lo, s_lo, step = hi, s_hi, step * 2
            hi, s_hi = lo + step, spend_at(lo + step)
    else:  # a lower price (below 0 if need be): lower it until the spend exceeds the budget
        hi, s_hi = p0, s0
        lo, s_lo = p0 - step, spend_at(p0 - step)
        flat = 0
        while s_lo <= budget and step < 1e6:
            # the constraints may hold the spend below the budget whatever the price: once two lower
            # prices add (almost) nothing, every proposal they allow already goes ahead
            flat = flat + 1 if s_lo - s_hi <= 0.002 * budget else 0
            if flat >= 2:
                return lo, trace
            hi, s_hi, step = lo, s_lo, step * 2
            lo, s_lo = hi - step, spend_at(hi - step)
        if s_lo <= budget:  # even then within the budget: the lowest price tried
            return lo, trace
    for _ in range(iterations):
        if abs(s_hi - budget) <= tolerance * budget:
            break
        f = (s_lo - budget) / max(s_lo - s_hi, 1e-12)
        mid = lo + float(np.clip(f, 0.1, 0.9)) * (hi - lo)
        s_mid = spend_at(mid)
        if s_mid > budget:
            lo, s_lo = mid, s_mid
        else:
            hi, s_hi = mid, s_mid
    return hi, trace
