"""What the bank saw about each customer at each logged decision, in the simulator's observation format.

Off-policy evaluation needs a candidate policy's probability of every logged action *at the state
the logging policy acted in*. A clv-engine policy reads `sim.population.PopulationSimulator.observe()`
(recency, frequency, monetary, tenure, stage, segment, products, last_contact, recent_contacts,
opted_out) and the action masks; this module rebuilds both from the history files, point in time:
only rows dated before the decision's day are used.

Conventions (periods of `world.economics.period_days`; chosen so that on the synthetic bank,
where decisions fall on the first day of a week, the rebuilt features equal the simulator's):

- birth: the signup date when customers.csv has one, else the first transaction.
- tenure = floor(days since birth / period); frequency and monetary: count and sum of the
  transactions in [birth, decision day).
- recency = ceil(days since the last such transaction / period) - 1 (0 when the customer bought
  in the period just before the decision); tenure when there was none.
- products: held after every product event dated before the decision day, plus the products
  opened on the signup day when the decision is on the signup day (the account's starting
  products; later same-day events are taken to follow the decision).
- last_contact = ceil(days since the last logged contact / period) - 1 (contacts are logged
  decisions whose action is not "none"); `sim.population.NEVER_CONTACTED` when there was none.
- recent_contacts: the simulator's decayed contact count, sum over earlier contacts of
  contact_decay ** (periods since that contact's period - 1).
- opted_out: a history does not record opt-outs, so every channel is taken as open (a candidate
  may then be credited with a channel the customer had closed; the logging propensity of such a
  logged action is then usually tiny or the action absent, so the effect on estimates is small).
- segment: the world's segmentation (the customers.csv column for attribute segments, the world's
  book for K-means segments; customers unknown to it get segment 0, counted in `unknown_segment`).
- stage: the world's stage rules on (tenure, recency); masks: the world's contact rules
  (`sim.population.action_masks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.errors import ConfigError
from sim.population import NEVER_CONTACTED, WorldTables, action_masks

from .data import FIRST_DAY, DayIndex, customer_codes, day_numbers


@dataclass
class DecisionStates:
    """Observations and masks at n logged decisions (rows in the order of the outcomes frame)."""

    obs: dict[str, np.ndarray]
    masks: np.ndarray  # (n, A) allowed actions under the world's contact rules
    action: np.ndarray  # (n,) logged action index in the world's catalogue
    unknown_segment: int  # decisions whose customer the world's segmentation does not know

    def __len__(self) -> int:
        return int(self.action.shape[0])


def _births(
    history, outcomes: pd.DataFrame, dc: np.ndarray, tc: np.ndarray, tday: np.ndarray, dday: np.ndarray
) -> np.ndarray:
    """Birth day per decision: signup date if known, else the first transaction (else the decision).
    dc, tc: shared customer codes of the decisions and the transactions; tday, dday: their days."""
    first = pd.Series(tday).groupby(tc).min()
    birth = first.reindex(dc).to_numpy(dtype=np.float64).copy()
    cust = history.customers
    if cust is not None and "signup_date" in cust.columns:
        sc = pd.Series(day_numbers(cust["signup_date"].to_numpy()), index=cust["customer_id"].to_numpy())
        sign = sc.reindex(outcomes["customer_id"].to_numpy()).to_numpy(dtype=np.float64)
        ok = np.isfinite(sign)
        birth[ok] = sign[ok]
    birth = np.where(np.isfinite(birth), birth, dday)
    return np.minimum(birth, dday).astype(np.int64)


def _segments(history, world, outcomes: pd.DataFrame, book: pd.DataFrame | None) -> tuple[np.ndarray, int]:
    names = [s.name for s in world.segments]
    seg_rule = world.segmentation or {}
    ids = outcomes["customer_id"].to_numpy()
    if seg_rule.get("method") == "attribute":
        col = seg_rule.get("column", "segment")
        cust = history.customers
        if cust is None or col not in cust.columns:
            raise ConfigError(
                f"{history.folder}: the world segments customers by the customers.csv column "
                f"{col!r}, which this history does not have; use a world calibrated on this history"
            )
        lab = pd.Series(cust[col].astype(str).to_numpy(), index=cust["customer_id"].to_numpy()).reindex(ids)
        index = {n: i for i, n in enumerate(names)}
        seg = lab.map(index)
    elif book is not None:
        seg = pd.Series(book["segment"].to_numpy(), index=book["customer_id"].astype(str).to_numpy()).reindex(ids)
    else:
        raise ConfigError(
            "the world segments customers by K-means; give its book (the parquet beside the "
            "world JSON) to place the history's customers"
        )
    unknown = seg.isna().to_numpy()
    return np.where(unknown, 0, seg.fillna(0).to_numpy()).astype(np.int16), int(unknown.sum())


def _contacts(
    outcomes: pd.DataFrame, period_days: float, decay: float, dday: np.ndarray, contacted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """last_contact and recent_contacts before each decision, from the customer's earlier decisions
    (outcomes are sorted by customer and date; `step` is the position in the trajectory)."""
    n = len(outcomes)
    step = outcomes["step"].to_numpy()
    last = np.full(n, NEVER_CONTACTED, np.int64)
    recent = np.zeros(n)
    prev_day = np.full(n, np.iinfo(np.int64).min)  # day of the last contact so far
    for s in range(1, int(step.max()) + 1 if n else 0):
        rows = np.flatnonzero(step == s)
        p = rows - 1  # the customer's previous decision
        gap = np.ceil((dday[rows] - dday[p]) / period_days).astype(np.int64)
        recent[rows] = recent[p] * decay**gap + np.where(contacted[p], decay ** (gap - 1), 0.0)
        prev_day[rows] = np.where(contacted[p], dday[p], prev_day[p])
    has = prev_day > np.iinfo(np.int64).min
    last[has] = np.ceil((dday[has] - prev_day[has]) / period_days).astype(np.int64) - 1
    return np.minimum(last, NEVER_CONTACTED).astype(np.int32), recent


def decision_states(history, world, outcomes: pd.DataFrame, book: pd.DataFrame | None = None) -> DecisionStates:
    """Observations and masks at every decision of `outcomes` (from `experiments.ope.data.decision_outcomes`),
    as the world's simulator would present them to a policy."""
    tables = WorldTables.from_world(world)
    pdays = float(world.economics.period_days)
    names = list(world.catalogue.names)
    index = {a: i for i, a in enumerate(names)}
    action = outcomes["action"].map(index)
    if action.isna().any():
        i = int(np.flatnonzero(action.isna().to_numpy())[0])
        raise ConfigError(
            f"decision of {outcomes['customer_id'].iloc[i]} on "
            f"{pd.Timestamp(outcomes['date'].iloc[i]).date()}: action {outcomes['action'].iloc[i]!r} "
            f"is not in the world's catalogue ({', '.join(names)}); use a world calibrated on this "
            "history"
        )
    action = action.to_numpy(dtype=np.int64)
    n = len(outcomes)
    ids = outcomes["customer_id"].to_numpy()
    dday = day_numbers(outcomes["date"].to_numpy())
    tx = history.transactions
    dc, tc = customer_codes(ids, tx["customer_id"].to_numpy())
    tday = day_numbers(tx["date"].to_numpy())
    birth = _births(history, outcomes, dc, tc, tday, dday)

    # only transactions since birth count (a signup after earlier purchases restarts the count)
    txi = DayIndex(tc, tday)
    lo = txi.position(dc, birth)
    hi = np.maximum(txi.position(dc, dday), lo)
    amount = np.concatenate([[0.0], np.cumsum(tx["amount"].to_numpy(dtype=np.float64)[txi.order])])
    frequency = (hi - lo).astype(np.int32)
    monetary = amount[hi] - amount[lo]
    tenure = np.floor((dday - birth) / pdays).astype(np.int32)
    last_tx = np.where(hi > lo, txi.days[np.maximum(hi - 1, 0)], 0)
    recency = np.where(hi > lo, np.ceil((dday - last_tx) / pdays) - 1, tenure).astype(np.int32)

    P = len(world.products)
    products = np.zeros((n, P), bool)
    pe = history.products
    if P and pe is not None and len(pe):
        known = pe["product"].isin(world.products).to_numpy()
        pe = pe[known]
        pc, ec = customer_codes(ids, pe["customer_id"].to_numpy())
        eday = day_numbers(pe["date"].to_numpy())
        pidx = pd.Index(world.products).get_indexer(pe["product"].to_numpy())
        sign = np.where(pe["event"].to_numpy() == "open", 1, -1)
        for j in range(P):
            m = pidx == j
            if not m.any():
                continue
            ev = DayIndex(ec[m], eday[m])
            sign_j = sign[m][ev.order]
            first, before, through = ev.position(pc, FIRST_DAY), ev.position(pc, dday), ev.position(pc, dday + 1)
            # state after the last event before the day (events sorted by date within customer)
            held = np.where(before > first, sign_j[np.maximum(before - 1, 0)], 0) > 0
            # starting products opened on the signup day count at a decision on that day
            on_day = (through > before) & (dday == birth)
            opened_today = np.where(on_day, sign_j[np.maximum(through - 1, 0)] > 0, False)
            products[:, j] = held | opened_today

    contacted = action > 0
    last_contact, recent = _contacts(outcomes, pdays, float(tables.contact_decay), dday, contacted)
    segment, unknown = _segments(history, world, outcomes, book)
    stage = world.stage_rules.assign(tenure, recency)
    obs = {
        "recency": recency,
        "frequency": frequency,
        "monetary": monetary,
        "tenure": tenure,
        "stage": stage,
        "segment": segment,
        "products": products,
        "last_contact": last_contact,
        "recent_contacts": recent,
        "opted_out": np.zeros((n, tables.n_channels), bool),
    }
    masks = action_masks(tables, stage, last_contact, obs["opted_out"])
    return DecisionStates(obs=obs, masks=masks, action=action, unknown_segment=unknown)
