"""Posterior churn and inactivity probabilities of book customers.

Both are Rao-Blackwellised over stratified posterior draws of each customer's latent state
(alive, lam, mu) (the digital twins' own draws, `sim.population.state_from_book`):

- churn, P(the customer has left by h periods from now): a customer dead now has left; an alive
  one with dropout hazard mu (Pareto/NBD) leaves within h periods with probability 1 - e^{-mu h},
  and with BG/NBD (dropout with probability p = mu after each purchase, purchases at rate lam)
  1 - e^{-lam p h}. It grows with h from 1 - p_alive.
- inactivity, P(no transaction in the next h periods): dead now, 1; alive under Pareto/NBD (rate
  lam, hazard mu: the first of "purchase" and "leave" comes at rate lam + mu, and it is "leave"
  with probability mu / (lam + mu)) e^{-(lam+mu)h} + mu/(lam+mu) (1 - e^{-(lam+mu)h}); alive
  under BG/NBD (dropout only right after a purchase) e^{-lam h}.

Contacts and seasonality are left out: the warning if nothing is done.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

CHURN_HORIZONS = (13, 26, 52)


def stratified_uniforms(n: int, draws: int, rng: np.random.Generator, dims: int = 4) -> np.ndarray:
    """(n * draws, dims) uniforms behind (alive, lam, mu, nu)[:dims] of every twin, customer-major:
    for each customer and dimension the draws fall one in each of `draws` equal strata, in an order
    of their own per dimension (a Latin hypercube per customer), so few twins cover the posterior
    evenly. `dims=1` stratifies the alive flag only (`sim.population.state_from_book` then draws the
    rates as usual): most of a twin's variance, without the inverse CDFs' cost."""
    perm = np.argsort(rng.random((n, dims, draws)), axis=2)
    u = (perm + rng.random((n, dims, draws))) / draws
    return u.transpose(0, 2, 1).reshape(n * draws, dims)


def _key(h: float) -> str:
    return f"churn_prob_{int(h)}" if float(h).is_integer() else f"churn_prob_{h:g}"


def churn_probabilities(
    activity_model: str,
    alive: np.ndarray,
    lam: np.ndarray,
    mu: np.ndarray,
    n: int,
    horizons: Iterable[float] = CHURN_HORIZONS,
) -> dict[str, np.ndarray]:
    """P(left within h periods) per customer for each h of `horizons` (key churn_prob_<h>),
    averaged over the twins' drawn (alive, lam, mu) (customer-major, n customers; module docstring)."""
    hazard = mu if activity_model == "pareto_nbd" else lam * mu
    out = {}
    for h in horizons:
        p = np.where(alive, -np.expm1(-hazard * h), 1.0)
        out[_key(h)] = p.reshape(n, -1).mean(axis=1)
    return out


def inactivity_probabilities(
    activity_model: str,
    alive: np.ndarray,
    lam: np.ndarray,
    mu: np.ndarray,
    n: int,
    horizons: Iterable[float] = CHURN_HORIZONS,
) -> dict[str, np.ndarray]:
    """P(no transaction in the next h periods) per customer for each h of `horizons` (key
    inactive_prob_<h>), averaged over the twins' drawn (alive, lam, mu) (module docstring)."""
    out = {}
    for h in horizons:
        if activity_model == "pareto_nbd":
            rate = lam + mu
            stay = np.exp(-rate * h)
            leave_first = np.divide(mu, rate, out=np.zeros_like(rate, dtype=float), where=rate > 0)
            p_alive_none = stay + leave_first * (1.0 - stay)
        else:
            p_alive_none = np.exp(-lam * h)
        p = np.where(alive, p_alive_none, 1.0)
        out[_key(h).replace("churn_prob", "inactive_prob")] = p.reshape(n, -1).mean(axis=1)
    return out


def posterior_twins(world, book: pd.DataFrame, draws: int, seed: int):
    """`draws` twins of every book customer (customer-major) with their alive flag and rates drawn
    from the posterior on stratified uniforms: the draws every churn score of the book reads, so
    the same seed gives the same twins to each."""
    from .population import WorldTables, state_from_book

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC4A2]))
    twins = book.iloc[np.repeat(np.arange(len(book)), draws)].reset_index(drop=True)
    u = stratified_uniforms(len(book), draws, rng)
    return state_from_book(world, twins, rng, WorldTables.from_world(world), uniforms=u)


def book_rows(book: pd.DataFrame, ids) -> pd.DataFrame:
    """The book's rows of the customers `ids`, in that order (a hash lookup of the ids); ValueError
    when some are not in the book."""
    from .features import lookup

    pos, found = lookup(book["customer_id"], ids)
    if not found.all():
        raise ValueError(f"{int((~found).sum())} active customers are missing from the book")
    return book.iloc[pos].reset_index(drop=True)


def book_churn_scores(
    world, book: pd.DataFrame, horizon: float, draws: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(churn, inactivity): P(left within `horizon` periods) and P(no transaction within `horizon`
    periods) of every book customer, from `draws` stratified draws of their posterior."""
    n = len(book)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    st = posterior_twins(world, book, draws, seed)
    churn = churn_probabilities(world.activity_model, st.alive, st.lam, st.mu, n, (horizon,))
    idle = inactivity_probabilities(world.activity_model, st.alive, st.lam, st.mu, n, (horizon,))
    return next(iter(churn.values())), next(iter(idle.values()))
