"""Logged decisions with their outcomes: the rewards off-policy evaluation scores.

The estimand's unit is one logged decision. Its reward is the data contract's period reward
(DESIGN.md) summed over the decision's window, minus the decision's cost:

    reward = margin_rate * sum(amount of transactions in [date, next_date))
             + sum over the period ends e in (date, next_date] of the margins of the products held at e
             - cost

The window runs from the decision's day (inclusive) to the customer's next logged decision
(exclusive), or to the end of the observation window for their last one; with `window=N` it is
the N periods after the decision instead (the one-step deviation, then what the bank did: windows
of one customer may then overlap, so it is for one-step estimates only).

Periods are the economics' (`period`), on the calibration's grid: period 0 starts at the earliest
birth of the history (its first signup date, or first transaction when customers.csv has no
signup dates; `sim.features.build_panel`), so a period end is origin + k * period_days. A product
is held at a period end when its last open/close event dated before that end is an `open`
(products.csv); a product whose first event is a `close` was held since before the history. Its
margin is economics.yaml's `product_margin_per_period` (0 for a product it does not name). This is
what the simulator rewards each period (`sim.population.PopulationSimulator.step`) and what
`clv make-data` records as each decision's reward (truth_decisions.parquet).

`cost` is the decision's own cost column when the file has one, otherwise the catalogue's cost
of the action ("none" costs 0). `per_decision` averages these rewards over decisions;
`per_customer` sums them along each customer's logged trajectory (discounted per step when a
discount is given).
"""

from __future__ import annotations

from typing import Any

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


def period_grid(history) -> tuple[float, float]:
    """(origin, period_days) of the history's period grid, the origin as days since 1970-01-01:
    the earliest birth (first signup date, or first transaction without signup dates), as in
    calibration's activity panel."""
    days = [day_numbers(history.transactions["date"].to_numpy()).min()]
    cust = history.customers
    if cust is not None and "signup_date" in cust.columns:
        su = cust["signup_date"].dropna()
        if len(su):
            days.append(day_numbers(su.to_numpy()).min())
    return float(min(days)), float(history.economics.period_days)


def _period_ends(x: np.ndarray, origin: float, period: float) -> np.ndarray:
    """Number of period ends origin + k * period (k >= 1) in (origin, x]; differences of it count
    the ends in any interval (a, b]."""
    return np.floor((np.asarray(x, np.float64) - origin) / period + 1e-9)


class ProductMargins:
    """The product-margin part of the contract reward over any window of a customer:
    `between(codes, a, b)` = sum over the period ends e in (a, b] of the margins of the products
    held at e (days as day numbers; `codes` as `customer_codes` gives them).

    With holding changes (t_j, +-m_j) per customer (an open adds the product's margin, a close
    removes it), sum_{e in (a, b]} M(e) = G(b) - G(a) where G(x) = sum_{t_j < x} s_j m_j (F(x) - F(t_j))
    and F counts period ends (`_period_ends`): each change contributes its margin once per end
    after it."""

    def __init__(
        self, products: pd.DataFrame | None, codes: np.ndarray | None, margins: dict, grid: tuple[float, float]
    ):
        self.origin, self.period = grid
        self.empty = True
        if products is None or not len(products) or not any(float(v) != 0 for v in margins.values()):
            return
        m = products["product"].map(lambda p: float(margins.get(p, 0.0))).to_numpy(np.float64)
        keep = m != 0
        if not keep.any():
            return
        day = day_numbers(products["date"].to_numpy())[keep]
        code = np.asarray(codes, np.int64)[keep]
        prod = pd.factorize(products["product"].to_numpy()[keep])[0].astype(np.int64)
        is_open = (products["event"].to_numpy()[keep] == "open").astype(np.int8)
        m = m[keep]
        order = np.lexsort((np.arange(day.size), day, prod, code))  # stable within a day: the file's order
        code, prod, day, is_open, m = code[order], prod[order], day[order], is_open[order], m[order]
        first = np.ones(code.size, bool)
        first[1:] = (code[1:] != code[:-1]) | (prod[1:] != prod[:-1])
        before = np.empty(code.size, np.int8)
        before[1:] = is_open[:-1]
        before[first] = np.where(is_open[first] == 1, 0, 1)  # a first close: held since before the history
        change = (is_open - before).astype(np.float64)
        # a first close also needs the holding that it ends: opened before every window
        held_early = first & (is_open == 0)
        early_day = float(day.min()) - 1.0
        ev_code = np.concatenate([code, code[held_early]])
        ev_day = np.concatenate([day.astype(np.float64), np.full(int(held_early.sum()), early_day)])
        ev_val = np.concatenate([change * m, m[held_early]])
        nz = ev_val != 0
        ev_code, ev_day, ev_val = ev_code[nz], ev_day[nz], ev_val[nz]
        self.index = DayIndex(ev_code, np.ceil(ev_day).astype(np.int64))
        val = ev_val[self.index.order]
        ends = _period_ends(ev_day[self.index.order], self.origin, self.period)
        self.s1 = np.concatenate([[0.0], np.cumsum(val)])
        self.s2 = np.concatenate([[0.0], np.cumsum(val * ends)])
        self.empty = False

    def _g(self, codes: np.ndarray, x: np.ndarray) -> np.ndarray:
        pos = self.index.position(codes, np.ceil(x).astype(np.int64))
        lo = self.index.position(codes, FIRST_DAY)
        s1 = self.s1[pos] - self.s1[lo]
        s2 = self.s2[pos] - self.s2[lo]
        return _period_ends(x, self.origin, self.period) * s1 - s2

    def between(self, codes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.empty:
            return np.zeros(np.shape(codes))
        return self._g(codes, np.asarray(b, np.float64)) - self._g(codes, np.asarray(a, np.float64))


def window_margins(
    history,
    customer_ids: np.ndarray,
    start_day: np.ndarray,
    end_day: np.ndarray,
    grid: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The contract reward's two earning parts over one window per query, before any cost:
    (margin_rate x the amounts of the customer's transactions dated in [start_day, end_day),
    the margins of the products they hold at each period end in (start_day, end_day]).

    `customer_ids` as the history holds them (text), `start_day` and `end_day` as day numbers
    (`day_numbers`; an end may fall inside a day: transactions on days before it count), `grid`
    the (origin, period_days) of `period_grid` (computed when None). A customer absent from the
    history earns 0. `decision_outcomes` and the read-out of a deployed plan (experiments.readout)
    both score windows with it."""
    tx = history.transactions
    prods = history.products
    if grid is None:
        grid = period_grid(history)
    cust = np.asarray(customer_ids)
    day = np.broadcast_to(np.asarray(start_day, np.float64), cust.shape)
    nxt_day = np.broadcast_to(np.asarray(end_day, np.float64), cust.shape)
    # cumulative sums over transactions sorted by (customer, day)
    ids = [cust, tx["customer_id"].to_numpy()] + ([prods["customer_id"].to_numpy()] if prods is not None else [])
    codes = customer_codes(*ids)
    dcode, tcode = codes[0], codes[1]
    idx = DayIndex(tcode, day_numbers(tx["date"].to_numpy()))
    cum = np.concatenate([[0.0], np.cumsum(tx["amount"].to_numpy(dtype=np.float64)[idx.order])])
    hi = np.ceil(nxt_day).astype(np.int64)  # transactions on days < next (next may fall inside a day)
    amount = cum[idx.position(dcode, hi)] - cum[idx.position(dcode, day.astype(np.int64))]
    margin = history.economics.margin_rate * amount
    held = ProductMargins(
        prods, codes[2] if prods is not None else None, history.economics.product_margin_per_period, grid
    )
    return margin, held.between(dcode, day, nxt_day)


def decision_outcomes(
    history, start: str | None = None, end: str | None = None, window: int | None = None
) -> pd.DataFrame:
    """One row per logged decision in [start, end): customer_id, date, action, propensity, cost,
    next_date, margin (transactions), product_margin, reward, step (0-based position in the
    customer's trajectory).

    `end` closes the last window of every customer (default: the end of the period holding the
    last transaction, product event or decision of the history). `window`: each decision's window
    is the `window` periods after it (capped at `end`) instead of the time to the customer's next
    decision. Raises ConfigError when the history has no decisions."""
    dec = history.decisions
    if dec is None or len(dec) == 0:
        raise ConfigError(
            f"{history.folder}: no decisions table (decisions.csv with customer_id, date, action, "
            "propensity) to evaluate policies on"
        )
    if window is not None and (isinstance(window, bool) or int(window) != window or window < 1):
        raise ConfigError("window", value=window, message="must be a whole number of periods >= 1")
    tx = history.transactions
    prods = history.products
    origin, period = period_grid(history)
    dec = dec.sort_values(["customer_id", "date"], kind="stable").reset_index(drop=True)
    last_seen = max(tx["date"].max(), dec["date"].max())
    if prods is not None and len(prods):
        last_seen = max(last_seen, prods["date"].max())
    logged_from, logged_to = dec["date"].min().date(), dec["date"].max().date()
    if end is not None:
        stop_day = float(day_numbers(np.array([pd.Timestamp(end)]))[0])
    else:  # the end of the period holding the last thing seen
        last_day = float(day_numbers(np.array([last_seen]))[0])
        stop_day = origin + (_period_ends(last_day, origin, period) + 1.0) * period
    stop = pd.Timestamp(int(np.ceil(stop_day)), unit="D")
    if start is not None:
        dec = dec[dec["date"] >= pd.Timestamp(start)]
    dec = dec[dec["date"] < stop].reset_index(drop=True)
    if len(dec) == 0:
        raise ConfigError(
            f"{history.folder}: no decisions between {start or 'the start'} and {stop.date()}; "
            f"the decisions run from {logged_from} to {logged_to}"
        )

    cust = dec["customer_id"].to_numpy()
    dates = dec["date"].to_numpy()
    day = day_numbers(dates).astype(np.float64)
    if window is None:
        same_next = np.zeros(len(dec), dtype=bool)
        same_next[:-1] = cust[1:] == cust[:-1]
        nxt_day = np.where(same_next, np.roll(day, -1), stop_day)
    else:
        nxt_day = day + int(window) * period
    nxt_day = np.minimum(nxt_day, stop_day)

    # margin in [date, next) and product margins at the period ends in (date, next] per decision
    margin, product_margin = window_margins(history, cust, day, nxt_day, (origin, period))

    if "cost" in dec.columns:
        cost = dec["cost"].to_numpy(dtype=np.float64)
    elif history.actions is not None:
        table = dict(zip(history.actions.names, history.actions.costs))
        cost = dec["action"].map(lambda a: table.get(a, 0.0)).to_numpy(dtype=np.float64)
    else:
        cost = np.zeros(len(dec))
    step = dec.groupby("customer_id", sort=False).cumcount().to_numpy()
    nxt = (np.datetime64("1970-01-01", "ns") + np.round(nxt_day * 86400e9).astype("timedelta64[ns]")).astype(
        "datetime64[ns]"
    )
    return pd.DataFrame(
        {
            "customer_id": cust,
            "date": dates,
            "action": dec["action"].to_numpy(),
            "propensity": dec["propensity"].to_numpy(dtype=np.float64),
            "cost": cost,
            "next_date": nxt,
            "margin": margin,
            "product_margin": product_margin,
            "reward": margin + product_margin - cost,
            "step": step,
        }
    )


REWARD_DEFINITION = (
    "the data contract's period reward summed over each decision's window: margin_rate x transaction amounts "
    "+ margins of the products held at each period end - the decision's cost"
)


def window_entry(outcomes: pd.DataFrame, periods: int | None) -> dict[str, Any]:
    """The JSON `window` of an evaluation: the dates its decisions and reward windows span, and the
    rule of a decision's reward window."""
    return {
        "start": str(pd.Timestamp(outcomes["date"].min()).date()),
        "end": str(pd.Timestamp(outcomes["next_date"].max()).date()),
        "periods": periods,
        "rule": "to the customer's next decision" if periods is None else f"the {periods} periods after the decision",
    }


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
