"""One row per book customer for the CRM and the lifecycle team (`clv score`): value, stage, churn
warning, RFM, products, payment regularity, the next best action under a policy, and tags.

Where each column comes from (a world and its book; `ScoreSettings` holds every knob):

- `segment`, `stage`: the book's segment (by name) and the world's stage rules on the customer's
  tenure and recency now. `recency`, `frequency`, `monetary`, `tenure`: the book's.
- `p_alive`: the book's posterior P(alive) at the calibration cut-off.
- `churn_prob_13`, `churn_prob_26`, `churn_prob_52`: P(the customer has left by h periods from
  now), from their posterior, Rao-Blackwellised over the `draws` posterior draws of (alive,
  lam, mu) (the digital twins' own draws): a customer dead now has left; an alive one with dropout
  hazard mu (Pareto/NBD) leaves within h periods with probability 1 - e^{-mu h}, and with BG/NBD
  (dropout with probability p after each purchase, purchases at rate lam) 1 - e^{-lam p h}. It
  grows with h from 1 - p_alive. Contacts and seasonality are left out: the warning if nothing
  is done.
- `expected_transactions_h`, `expected_clv_h`, `clv_p10`, `clv_p90`, `stage_next`,
  `stage_next_prob`, `next_product`, `next_product_prob`: `draws` digital twins of each customer
  (posterior draws, the alive flag stratified: `sim.population.state_from_book`) run for `horizon` periods under
  the policy: mean transactions, the mean, 10th and 90th percentiles over the twins of the
  discounted contract reward (transaction margin + product margins - contact costs, discounted as
  the world says), the most frequent stage at the horizon and its share, and among the products
  not held now the one the twins open most often, with the share that open it.
- `r_score`, `f_score`, `m_score`: RFM quintile scores 1-5 (5 = most recent, most frequent, highest
  spend; ranks, ties by order). `value_tier` layers expected CLV: top (the best 5 %), high (next
  15 %), medium (next 30 %), low (the rest).
- `products` (names held, comma-separated), `cross_holding` (their count), `prod_<name>`.
- `payment_period`, `payment_strength`, `turned_irregular`: the book's, when calibration wrote
  them (sim.regularity); absent otherwise.
- `next_best_action`, `nba_value`, `nba_cost`, `runner_up`, `runner_up_value`, `reason`: the
  policy's contact advantages Q^pi(s, a) - Q^pi(s, none) (`optimizer.budgeted.fit_contact_values`:
  rollouts on twins of their own, a fitted model applied to every customer's state now). The
  policy's own choice now is the next best action (for the policy "none": the allowed action of
  largest positive advantage, else none); the runner-up is the best other allowed action.
  `nba_value` is in discounted value units net of the contact's cost, over `value_horizon`
  periods. `eligible_channels`, `periods_since_contact` (-1 never contacted), `opted_out`.
- `tags`: the rules of a tags.yaml (experiments.tags), the shipped default library unless given.

Customers are scored in blocks of BLOCK rows, each with a seed spawned from one SeedSequence, so
the numbers are the same in-process or on any number of Ray workers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.churn import CHURN_HORIZONS, churn_probabilities, stratified_uniforms
from sim.errors import ConfigError

BLOCK = 20_000  # customers per scoring task
TIERS = (("top", 0.95), ("high", 0.80), ("medium", 0.50), ("low", 0.0))


@dataclass(frozen=True)
class ScoreSettings:
    """Every knob of one scoring run, in one place."""

    horizon: int = 52  # periods of expected CLV, transactions, stage and product
    draws: int = 16  # digital twins per customer
    policy: str = "none"  # the policy the twins follow and whose next best action is given
    value_customers: int = 2000  # twins the contact values are fitted on
    value_horizon: int = 26  # periods a valued contact is followed for
    seed: int = 0

    def __post_init__(self):
        for key, lo in (("horizon", 1), ("draws", 2), ("value_customers", 10), ("value_horizon", 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(key, value=v, message=f"must be a whole number >= {lo}")
        if self.draws > 1000:
            raise ConfigError("draws", value=self.draws, message="must be <= 1000")
        if self.horizon > 520:
            raise ConfigError("horizon", value=self.horizon, message="must be <= 520 periods")


# ---- one block of customers --------------------------------------------------------------------


def _mode_share(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `codes` (n, draws): the most frequent code and its share."""
    counts = np.stack([(codes == j).sum(axis=1) for j in range(k)], axis=1)
    best = counts.argmax(axis=1)
    return best, counts[np.arange(len(best)), best] / codes.shape[1]


def score_block(world, book: pd.DataFrame, policy, settings: ScoreSettings, seed_seq) -> dict[str, np.ndarray]:
    """The simulated and posterior columns of one block of book customers (module docstring)."""
    from policies.base import as_simulator_policy
    from sim.catalogue import STAGES
    from sim.population import PopulationSimulator, WorldTables, state_from_book

    n, R, H = len(book), settings.draws, settings.horizon
    tables = WorldTables.from_world(world)
    rng = np.random.default_rng(seed_seq)
    rows = np.repeat(np.arange(n), R)
    twins = book.iloc[rows].reset_index(drop=True)
    u = stratified_uniforms(n, R, rng, dims=1)  # the alive flag stratified; rates drawn (a third faster)
    state = state_from_book(world, twins, rng, tables, uniforms=u)
    churn = churn_probabilities(world.activity_model, state.alive, state.lam, state.mu, n)
    sim = PopulationSimulator(world, state, rng, tables=tables)
    # "none" never contacts: step without asking it (half the time of a block)
    act = as_simulator_policy(policy) if policy is not None and getattr(policy, "name", None) != "none" else None
    disc = world.economics.discount_per_period
    start_products = sim.state.products.copy()
    clv = np.zeros(n * R)
    tx = np.zeros(n * R)
    for t in range(H):
        out = sim.step(act(sim) if act is not None else None)
        clv += out.reward * disc**t
        tx += out.transactions
    stage_next, stage_share = _mode_share(sim.state.stage.reshape(n, R), len(STAGES))
    opened = (sim.state.products & ~start_products).reshape(n, R, -1).mean(axis=1)  # (n, P)
    held = start_products.reshape(n, R, -1)[:, 0, :]
    opened = np.where(held, -1.0, opened)
    nxt = opened.argmax(axis=1) if opened.shape[1] else np.zeros(n, int)
    nxt_p = opened[np.arange(n), nxt] if opened.shape[1] else np.zeros(n)
    c = clv.reshape(n, R)
    return {
        **churn,
        "expected_transactions_h": tx.reshape(n, R).mean(axis=1),
        "expected_clv_h": c.mean(axis=1),
        "clv_p10": np.quantile(c, 0.10, axis=1),
        "clv_p90": np.quantile(c, 0.90, axis=1),
        "stage_next": stage_next,
        "stage_next_prob": stage_share,
        "next_product": np.where(nxt_p > 0, nxt, -1),
        "next_product_prob": np.maximum(nxt_p, 0.0),
    }


def _block_task(world, book, policy, settings, start, stop, seed_seq):
    return score_block(world, book.iloc[start:stop], policy, settings, seed_seq)


# ---- the next best action ----------------------------------------------------------------------


def next_best_actions(world, book: pd.DataFrame, policy, settings: ScoreSettings, progress=None) -> dict:
    """The policy's choice now, its advantage and cost, and the runner-up, for every book customer
    (module docstring). Also the allowed actions' channels now."""
    from optimizer.budgeted import fit_contact_values
    from sim.population import PopulationSimulator

    values = fit_contact_values(
        world,
        book,
        policy,
        settings.horizon,
        settings.value_horizon,
        settings.value_customers,
        settings.seed,
        snapshots=[0],
        progress=progress,
    )
    now = PopulationSimulator.from_book(world, book, np.random.SeedSequence([settings.seed, 0xB00C]))
    obs, masks = now.observe(), now.action_masks()
    adv = np.zeros(masks.shape)
    for lo in range(0, len(book), 200_000):
        sub = {k: v[lo : lo + 200_000] for k, v in obs.items()}
        adv[lo : lo + 200_000] = values.predict(np.asarray(values.encoder.encode(sub), np.float32))
    adv[:, 0] = 0.0
    adv = np.where(masks, adv, -np.inf)
    if getattr(policy, "name", None) == "none":
        best = adv.argmax(axis=1)
        pick = np.where(adv[np.arange(len(best)), best] > 0, best, 0)
    else:
        pick = np.asarray(policy.action_probs(obs, masks)).argmax(axis=1)
    other = adv.copy()
    other[np.arange(len(pick)), pick] = -np.inf
    runner = other.argmax(axis=1)
    runner_ok = np.isfinite(other[np.arange(len(pick)), runner])
    costs = np.asarray(world.catalogue.costs, float)
    val = adv[np.arange(len(pick)), pick]
    return {
        "pick": pick,
        "value": np.where(np.isfinite(val), val, 0.0),
        "cost": costs[pick],
        "runner_up": np.where(runner_ok, runner, -1),
        "runner_up_value": np.where(runner_ok, other[np.arange(len(pick)), runner], np.nan),
        "masks": masks,
        "fit": values.fit,
    }


def _reason(stage: np.ndarray, churn: np.ndarray, pick: np.ndarray, value: np.ndarray, names: list[str]) -> np.ndarray:
    """One short sentence per customer: why this action. The heads come from a table of (stage,
    risk) and only contacts format a number (a million rows in well under a second)."""
    risk = np.where(churn >= 0.5, 2, np.where(churn >= 0.2, 1, 0))
    stages, scode = np.unique(stage.astype(str), return_inverse=True)
    heads = np.array([f"{st} customer, {r} churn risk" for st in stages for r in ("low", "some", "high")], dtype=object)
    out = heads[scode.ravel() * 3 + risk] + ": no contact is worth its cost now"
    on = np.flatnonzero(pick > 0)
    if on.size:
        acts = np.array(names, dtype=object)[pick[on]]
        worth = np.array([f"{v:+.2f}" for v in value[on]], dtype=object)
        out[on] = heads[scode.ravel()[on] * 3 + risk[on]] + ": " + acts + " is worth " + worth + " net of its cost"
    return out


def _quintile(x: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Scores 1-5 by rank (5 = best); ties broken by position, so every quintile has its share."""
    order = np.argsort(-x if higher_is_better else x, kind="stable")
    rank = np.empty(len(x), np.int64)
    rank[order] = np.arange(len(x))
    return (5 - (rank * 5) // max(len(x), 1)).astype(np.int8)


def _joined(flags: np.ndarray, names: list[str]) -> np.ndarray:
    """Per row of a boolean matrix, the names of its true columns joined by ", " (through a table of
    the 2^k combinations for up to 16 columns)."""
    n, k = flags.shape
    if k == 0:
        return np.full(n, "", dtype=object)
    if k <= 16:
        table = np.array(
            [", ".join(nm for j, nm in enumerate(names) if b >> j & 1) for b in range(1 << k)], dtype=object
        )
        return table[flags.astype(np.int64) @ (1 << np.arange(k, dtype=np.int64))]
    out = np.full(n, "", dtype=object)
    for j, name in enumerate(names):
        on = flags[:, j]
        out[on] = np.where(out[on] == "", name, out[on] + ", " + name)
    return out


# ---- the whole book ----------------------------------------------------------------------------


def score_customers(
    world,
    book: pd.DataFrame,
    settings: ScoreSettings,
    policy=None,
    tags=None,
    executor=None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(scores, summary): one row per book customer (module docstring) and a summary document.
    `policy`: a resolved policy (default: "none"); `tags`: an experiments.tags library (default:
    the shipped one; tags whose columns the score lacks are skipped and listed in the summary); `executor.map(fn, shared, calls, progress)` runs the blocks (None: in-process)."""
    from policies.registry import resolve_policy
    from sim.catalogue import STAGES

    t0 = time.perf_counter()
    if book is None or len(book) == 0:
        raise ConfigError("the world has no book of customers to score (calibrate it on a history)")
    policy = policy if policy is not None else resolve_policy(settings.policy, world)
    n = len(book)
    starts = list(range(0, n, BLOCK))
    seqs = np.random.SeedSequence(settings.seed).spawn(len(starts))
    calls = [(a, min(a + BLOCK, n), q) for a, q in zip(starts, seqs)]
    tick = (lambda k: progress("twins", k, len(calls))) if progress else None
    done = [0]

    def bump(k: int) -> None:
        done[0] += k
        if tick:
            tick(done[0])

    if executor is None:
        parts = []
        for c in calls:
            parts.append(_block_task(world, book, policy, settings, *c))
            bump(1)
    else:
        parts = executor.map(_block_task, (world, book, policy, settings), calls, bump)
    sim_cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    t_sim = time.perf_counter() - t0
    nba = next_best_actions(world, book, policy, settings)
    t_nba = time.perf_counter() - t0 - t_sim

    names = world.catalogue.names
    seg_names = np.array([s.name for s in world.segments], dtype=object)
    tenure = book["tenure"].to_numpy()
    recency = book["recency"].to_numpy()
    stage = np.array(STAGES, dtype=object)[world.stage_rules.assign(tenure, recency)]
    products = list(world.products)
    held = (
        np.column_stack(
            [book[f"prod_{p}"].to_numpy(bool) if f"prod_{p}" in book else np.zeros(n, bool) for p in products]
        )
        if products
        else np.zeros((n, 0), bool)
    )
    clv = sim_cols["expected_clv_h"]
    pct = pd.Series(clv).rank(pct=True, method="first").to_numpy()
    tier = np.full(n, "low", dtype=object)
    for name, lo in TIERS[::-1]:
        tier[pct > lo] = name
    from sim.population import NEVER_CONTACTED

    last = book["last_contact"].to_numpy() if "last_contact" in book else np.full(n, NEVER_CONTACTED)
    channels = world.catalogue.channels
    opted = (
        np.column_stack(
            [book[f"optout_{c}"].to_numpy(bool) if f"optout_{c}" in book else np.zeros(n, bool) for c in channels]
        )
        if channels
        else np.zeros((n, 0), bool)
    )
    action_channel = [a.channel for a in world.catalogue.actions]
    eligible = (
        np.column_stack(
            [nba["masks"][:, [j for j, ch in enumerate(action_channel) if ch == c]].any(axis=1) for c in channels]
        )
        if channels
        else np.zeros((n, 0), bool)
    )
    prod_names = np.array(products + [""], dtype=object)
    cols: dict[str, Any] = {
        "customer_id": book["customer_id"].to_numpy(),
        "segment": seg_names[book["segment"].to_numpy()],
        "stage": stage,
        "stage_next": np.array(STAGES, dtype=object)[sim_cols["stage_next"]],
        "stage_next_prob": sim_cols["stage_next_prob"],
        "p_alive": book["p_alive"].to_numpy(float),
        **{f"churn_prob_{h}": sim_cols[f"churn_prob_{h}"] for h in CHURN_HORIZONS},
        "expected_transactions_h": sim_cols["expected_transactions_h"],
        "expected_clv_h": clv,
        "clv_p10": sim_cols["clv_p10"],
        "clv_p90": sim_cols["clv_p90"],
        "recency": recency,
        "frequency": book["frequency"].to_numpy(),
        "monetary": book["monetary"].to_numpy(float),
        "tenure": tenure,
        "r_score": _quintile(recency.astype(float), higher_is_better=False),
        "f_score": _quintile(book["frequency"].to_numpy(float), higher_is_better=True),
        "m_score": _quintile(book["monetary"].to_numpy(float), higher_is_better=True),
        "value_tier": tier,
        "products": _joined(held, products),
        "cross_holding": held.sum(axis=1).astype(np.int16),
        **{f"prod_{p}": held[:, j] for j, p in enumerate(products)},
        "next_product": prod_names[sim_cols["next_product"]],
        "next_product_prob": sim_cols["next_product_prob"],
    }
    for k in ("payment_period", "payment_strength", "turned_irregular"):
        if k in book:
            cols[k] = book[k].to_numpy()
    pick = nba["pick"]
    names_arr = np.array(names + [""], dtype=object)
    cols.update(
        {
            "next_best_action": names_arr[pick],
            "nba_value": nba["value"],
            "nba_cost": nba["cost"],
            "runner_up": names_arr[nba["runner_up"]],
            "runner_up_value": nba["runner_up_value"],
            "reason": _reason(stage, sim_cols["churn_prob_26"], pick, nba["value"], names),
            "eligible_channels": _joined(eligible, channels),
            "periods_since_contact": np.where(last >= NEVER_CONTACTED, -1, last).astype(np.int32),
            "opted_out": _joined(opted, channels),
        }
    )
    scores = pd.DataFrame(cols)
    from .tags import default_tags

    library, skipped = (tags if tags is not None else default_tags()).available(scores.columns)
    scores = pd.concat([scores, library.apply(scores)], axis=1)
    summary = summarise(scores, settings, nba["fit"])
    summary["tags"] = {
        "file": str(library.file),
        "applied": list(library.names),
        "skipped": skipped,  # tags whose columns this score lacks (e.g. payment regularity of an older world)
        "counts": {t: int(scores[c].sum()) for t, c in zip(library.names, [x.column for x in library.tags])},
    }
    summary["seconds"] = {"twins": t_sim, "next_best_action": t_nba, "total": time.perf_counter() - t0}
    return scores, summary


def summarise(scores: pd.DataFrame, settings: ScoreSettings, fit: dict) -> dict[str, Any]:
    """The JSON summary: per segment and per stage, customers, mean CLV, churn risk and the share
    with a contact recommended; the settings and the value model's fit."""

    def view(by: str) -> list[dict]:
        g = scores.groupby(by, sort=True, observed=True)
        return [
            {
                by: str(k),
                "customers": int(len(d)),
                "expected_clv_h": float(d["expected_clv_h"].mean()),
                "p_alive": float(d["p_alive"].mean()),
                "churn_prob_26": float(d["churn_prob_26"].mean()),
                "contact_share": float((d["next_best_action"] != "none").mean()),
            }
            for k, d in g
        ]

    return {
        "customers": int(len(scores)),
        "expected_clv_h": float(scores["expected_clv_h"].mean()),
        "by_segment": view("segment"),
        "by_stage": view("stage"),
        "next_best_action": {str(k): int(v) for k, v in scores["next_best_action"].value_counts().items()},
        "settings": asdict(settings),
        "value_model": {k: v for k, v in fit.items() if isinstance(v, (int, float, str, list))},
    }
