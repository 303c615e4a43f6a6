"""A history whose behaviour is not BTYD-generated: a hidden-Markov engagement process with
seasonality, written in the data-contract format (transactions.csv, customers.csv with
signup_date, economics.yaml, and truth.json beside them).

Each customer moves week by week between hidden states engaged (0), cooling (1), dormant (2) and
gone (3, absorbing) by a Markov chain; purchases in a week are Poisson with the state's rate times
the customer's own multiplier (Gamma, mean 1) and the week's seasonal factor. Unlike Pareto/NBD or
BG/NBD: there is no constant purchase rate (the rate drifts with the state), dormant customers
come back (dormant -> cooling -> engaged), "leaving" is reached through a slow cooling rather than
at a memoryless hazard, and the season moves both the purchases (a December peak) and the
transitions (summer cooling: moves down are more likely in weeks 26-38, moves up less). A share
of customers are regular payers: while engaged, their purchases come on a 4-week cycle (a
salary-day rhythm) instead of spread evenly, so a regular payer who cools breaks the cycle.
Vectorised over customers; one loop over weeks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STATES = ("engaged", "cooling", "dormant", "gone")


@dataclass(frozen=True)
class HMMConfig:
    customers: int = 6000
    weeks: int = 156
    start: str = "2022-01-03"
    seed: int = 11
    signup_weeks: int = 78  # signups spread over the first 78 weeks (plus an opening cohort)
    opening_share: float = 0.3  # customers already signed up in week 0
    # weekly transition matrix (rows: from engaged, cooling, dormant, gone), before seasonality
    transitions: tuple = (
        (0.955, 0.045, 0.000, 0.000),
        (0.080, 0.860, 0.055, 0.005),
        (0.000, 0.030, 0.940, 0.030),
        (0.000, 0.000, 0.000, 1.000),
    )
    rates: tuple = (0.9, 0.3, 0.03, 0.0)  # purchases per week in each state
    rate_shape: float = 2.0  # customer multiplier ~ Gamma(shape, 1/shape)
    purchase_season: float = 0.35  # amplitude of the purchase seasonality (peak mid-December)
    transition_season: float = 0.4  # amplitude of the summer cooling of the transitions
    regular_share: float = 0.4  # customers who, while engaged, pay on a 4-week cycle
    cycle: int = 4
    amount_mean: float = 60.0
    amount_sigma: float = 0.6  # lognormal spread of amounts around the customer's own mean
    margin_rate: float = 0.2


def _season(week_of_year: np.ndarray, amplitude: float, peak: float) -> np.ndarray:
    return 1.0 + amplitude * np.cos(2 * np.pi * (week_of_year - peak) / 52.0)


def generate_hmm_frames(cfg: HMMConfig = HMMConfig()) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(transactions, customers, truth): the tables of the history and its generating facts."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x4A33]))
    n, W = cfg.customers, cfg.weeks
    start = pd.Timestamp(cfg.start)
    P = np.asarray(cfg.transitions, float)
    rates = np.asarray(cfg.rates, float)
    signup_week = np.where(rng.random(n) < cfg.opening_share, 0, rng.integers(0, max(cfg.signup_weeks, 1), n)).astype(
        np.int64
    )
    signup_day = signup_week * 7 + rng.integers(0, 7, n)
    mult = rng.gamma(cfg.rate_shape, 1.0 / cfg.rate_shape, n)
    regular = rng.random(n) < cfg.regular_share
    phase = rng.integers(0, cfg.cycle, n)
    spend = cfg.amount_mean * rng.lognormal(-0.5 * 0.5**2, 0.5, n)
    state = np.zeros(n, np.int8)  # everyone starts engaged at signup
    cust_ix, days = [], []
    state_counts = np.zeros((W, len(STATES)), np.int64)
    for w in range(W):
        woy = (start + pd.Timedelta(weeks=w)).isocalendar().week
        live = signup_week <= w
        if w > 0:  # move, for those signed up before this week
            movers = live & (signup_week < w)
            up = _season(np.array([woy]), -cfg.transition_season, 32.0)[0]  # < 1 in summer
            Q = P.copy()
            for i in range(3):  # moves to a better state scaled by up, to a worse one by 1/up
                for j in range(4):
                    if j < i:
                        Q[i, j] *= up
                    elif j > i:
                        Q[i, j] /= up
                Q[i, i] = 0.0
                Q[i, i] = max(0.0, 1.0 - Q[i].sum())
                Q[i] /= Q[i].sum()
            cum = np.cumsum(Q[state[movers]], axis=1)
            u = rng.random(int(movers.sum()))[:, None]
            state[movers] = (u > cum).sum(axis=1).astype(np.int8)
        state_counts[w] = np.bincount(state[live], minlength=len(STATES))
        lam = rates[state] * mult * _season(np.array([woy]), cfg.purchase_season, 50.0)[0]
        on_cycle = regular & (state == 0)
        # a regular payer's engaged rate is concentrated on one week in `cycle` (same mean)
        lam = np.where(on_cycle, np.where((w - phase) % cfg.cycle == 0, lam * cfg.cycle, 0.0), lam)
        k = rng.poisson(np.where(live, lam, 0.0))
        who = np.flatnonzero(k > 0)
        if who.size:
            ids = np.repeat(who, k[who])
            d = w * 7 + rng.integers(0, 7, ids.size)
            d = np.maximum(d, signup_day[ids])  # never before the signup day
            cust_ix.append(ids)
            days.append(d)
    ids = np.concatenate(cust_ix) if cust_ix else np.zeros(0, np.int64)
    day = np.concatenate(days) if days else np.zeros(0, np.int64)
    amount = np.round(spend[ids] * rng.lognormal(-0.5 * cfg.amount_sigma**2, cfg.amount_sigma, ids.size), 2)
    amount = np.maximum(amount, 0.01)
    names = np.char.add("h", np.char.zfill(np.arange(n).astype(str), 6))
    tx = pd.DataFrame({"customer_id": names[ids], "date": start + pd.to_timedelta(day, unit="D"), "amount": amount})
    tx = tx.sort_values(["customer_id", "date"], kind="stable").reset_index(drop=True)
    customers = pd.DataFrame({"customer_id": names, "signup_date": start + pd.to_timedelta(signup_day, unit="D")})
    truth = {
        "generator": "sim.engagement_hmm",
        "config": {k: (list(map(list, v)) if k == "transitions" else v) for k, v in asdict(cfg).items()},
        "states": list(STATES),
        "final_state_counts": {s: int(c) for s, c in zip(STATES, state_counts[-1])},
        "regular_payers": int(regular.sum()),
    }
    return tx, customers, truth


def write_hmm_history(out: str | Path, cfg: HMMConfig = HMMConfig()) -> dict[str, Any]:
    """Write the history folder (transactions.csv, customers.csv, economics.yaml, truth.json), each
    file atomically; returns a summary."""
    import yaml

    from .atomic import atomic_path, atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tx, customers, truth = generate_hmm_frames(cfg)
    for name, df, col in (("transactions", tx, "date"), ("customers", customers, "signup_date")):
        df = df.copy()
        df[col] = df[col].dt.strftime("%Y-%m-%d")
        with atomic_path(out / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False)
    economics = {"period": "week", "margin_rate": cfg.margin_rate, "annual_discount_rate": 0.08}
    atomic_write_text(out / "economics.yaml", yaml.safe_dump(economics, sort_keys=False))
    atomic_write_json(out / "truth.json", truth)
    return {
        "out": str(out),
        "kind": "hmm",
        "customers": int(len(customers)),
        "transactions": int(len(tx)),
        "decisions": 0,
        "first_day": str(tx["date"].min().date()) if len(tx) else None,
        "last_day": str(tx["date"].max().date()) if len(tx) else None,
        "files": ["transactions.csv", "customers.csv", "economics.yaml", "truth.json"],
    }
