"""Logged decisions with their outcomes: the rewards off-policy evaluation scores.

The estimand's unit is one logged decision. Its reward is the margin the customer produced from
the decision's day (inclusive) to their next logged decision (exclusive), or to the end of the
observation window for their last one, minus the decision's cost:

    reward = margin_rate * sum(amount of transactions in [date, next_date)) - cost

`cost` is the decision's own cost column when the file has one, otherwise the catalogue's cost
of the action ("none" costs 0). `per_decision` averages these rewards over decisions;
`per_customer` sums them along each customer's logged trajectory (discounted per step when a
discount is given). Product margins are not included: a history has opening dates, not the
monthly margin each product earned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.errors import ConfigError

ESTIMANDS = ("per_decision", "per_customer")
FIRST_DAY = -(1 << 31)  # before any date: DayIndex.position(codes, FIRST_DAY) is a customer's first row


def customer_codes(*ids: np.ndarray) -> list[np.ndarray]:
    """Integer customer codes shared by several id arrays (one code per distinct id)."""
    cats = pd.Categorical(np.concatenate([np.asarray(a) for a in ids]))
    c = cats.codes.astype(np.int64)
    bounds = np.cumsum([0] + [len(a) for a in ids])
    return [c[bounds[k] : bounds[k + 1]] for k in range(len(ids))]


def day_numbers(dates) -> np.ndarray:
    """Days since 1970-01-01 (int64) of datetime-like values."""
    return np.asarray(dates, dtype="datetime64[D]").astype(np.int64)


class DayIndex:
    """A table's rows sorted by (customer code, day), stably, for point-in-time look-ups:
    `position(codes, days)` is, per query, the first sorted row of that customer dated on or after
    the day, so rows [position(c, FIRST_DAY), position(c, d)) are the customer's rows before d."""

    def __init__(self, codes: np.ndarray, days: np.ndarray):
        key = self._key(codes, days)
        self.order = np.argsort(key, kind="stable")
        self.key = key[self.order]
        self.days = np.asarray(days)[self.order]

    @staticmethod
    def _key(codes: np.ndarray, days) -> np.ndarray:
        return np.asarray(codes, np.int64) * (1 << 32) + (np.asarray(days, np.int64) - FIRST_DAY)

    def position(self, codes: np.ndarray, days) -> np.ndarray:
        return np.searchsorted(self.key, self._key(codes, np.broadcast_to(days, np.shape(codes))), side="left")


def decision_outcomes(history, start: str | None = None, end: str | None = None) -> pd.DataFrame:
    """One row per logged decision in [start, end): customer_id, date, action, propensity, cost,
    next_date, margin, reward, step (0-based position in the customer's trajectory).

    `end` closes the last window of every customer (default: the day after the last transaction
    or decision in the history). Raises ConfigError when the history has no decisions."""
    dec = history.decisions
    if dec is None or len(dec) == 0:
        raise ConfigError(
            f"{history.folder}: no decisions table (decisions.csv with customer_id, date, action, "
            "propensity) to evaluate policies on"
        )
    tx = history.transactions
    dec = dec.sort_values(["customer_id", "date"], kind="stable").reset_index(drop=True)
    last_seen = max(tx["date"].max(), dec["date"].max())
    logged_from, logged_to = dec["date"].min().date(), dec["date"].max().date()
    stop = pd.Timestamp(end) if end is not None else last_seen + pd.Timedelta(days=1)
    if start is not None:
        dec = dec[dec["date"] >= pd.Timestamp(start)]
    dec = dec[dec["date"] < stop].reset_index(drop=True)
    if len(dec) == 0:
        raise ConfigError(
            f"{history.folder}: no decisions between {start or 'the start'} and {stop.date()}; "
            f"the decisions run from {logged_from} to {logged_to}"
        )

    cust = dec["customer_id"].to_numpy()
    same_next = np.zeros(len(dec), dtype=bool)
    same_next[:-1] = cust[1:] == cust[:-1]
    dates = dec["date"].to_numpy()
    nxt = np.where(same_next, np.roll(dates, -1), np.datetime64(stop, "ns"))
    nxt = np.minimum(nxt, np.datetime64(stop, "ns"))

    # margin in [date, next) per decision: cumulative sums over transactions sorted by (customer, day)
    dcode, tcode = customer_codes(cust, tx["customer_id"].to_numpy())
    idx = DayIndex(tcode, day_numbers(tx["date"].to_numpy()))
    cum = np.concatenate([[0.0], np.cumsum(tx["amount"].to_numpy(dtype=np.float64)[idx.order])])
    amount = cum[idx.position(dcode, day_numbers(nxt))] - cum[idx.position(dcode, day_numbers(dates))]
    margin = history.economics.margin_rate * amount

    if "cost" in dec.columns:
        cost = dec["cost"].to_numpy(dtype=np.float64)
    elif history.actions is not None:
        table = dict(zip(history.actions.names, history.actions.costs))
        cost = dec["action"].map(lambda a: table.get(a, 0.0)).to_numpy(dtype=np.float64)
    else:
        cost = np.zeros(len(dec))
    step = dec.groupby("customer_id", sort=False).cumcount().to_numpy()
    return pd.DataFrame(
        {
            "customer_id": cust,
            "date": dec["date"].to_numpy(),
            "action": dec["action"].to_numpy(),
            "propensity": dec["propensity"].to_numpy(dtype=np.float64),
            "cost": cost,
            "next_date": nxt,
            "margin": margin,
            "reward": margin - cost,
            "step": step,
        }
    )


def on_policy_value(outcomes: pd.DataFrame, estimand: str = "per_decision", discount: float | None = None) -> float:
    """The logged policy's own value (no weighting): what every estimator is compared with when
    the candidate is the logging policy."""
    if estimand not in ESTIMANDS:
        raise ConfigError(f"estimand {estimand!r}: choose {' or '.join(ESTIMANDS)}")
    if estimand == "per_decision":
        return float(outcomes["reward"].mean())
    g = 1.0 if discount is None else float(discount)
    disc = g ** outcomes["step"].to_numpy(dtype=np.float64)
    per_customer = pd.Series(outcomes["reward"].to_numpy() * disc).groupby(outcomes["customer_id"].to_numpy()).sum()
    return float(per_customer.mean())
