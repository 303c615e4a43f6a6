"""The calibrated simulator's own answer beside the off-policy estimates (`clv ope`'s `model_based`), and the
support of the estimator `clv ope` recommends (`support_diagnostics`: the top-level diagnostics and warning).

Model-based value (`model_based_value`): the candidate policy run in the world's simulator
(sim.population.PopulationSimulator) on the logged customers, on the same estimand, reward and discount
as the OPE estimates, as experiments/ope/truth.py runs a candidate in the generating world, but in the
calibrated world and from what the bank knew:

- Twins. per_customer: one per customer of the window, deciding at each of the customer's logged
  decision dates (the calendar does not depend on the policy), the candidate choosing every time; its
  value is sum_t discount^t of its decisions' rewards. per_decision: one per logged decision, the
  candidate choosing that decision and the logged actions at the customer's later decisions inside
  its window (`--window N`; none with the default window); its value is that decision's reward.
- Reward: the simulator's period reward (transaction margin + margins of the products held at the
  period's end - the contact cost: the data contract's) summed over the decision's window, the
  window of experiments/ope/data.py in whole periods of the history's grid (period ends in
  (date, next_date], at least one). With `--window N` only the decision's own cost counts, as there.
- Start states. A twin starts from its customer's state at its first decision, rebuilt from the
  history as OPE rebuilds it (experiments/ope/observations.py), its latent state drawn from the
  world's posterior given those observables (sim.posterior.ObservablePosterior's segment models:
  P(alive | x, t_x, T), rate ~ Gamma(r + x, (alpha + T) x campaign multiplier), hazard
  ~ Gamma(s, beta + T) or BG/NBD's Beta(a, b + x), spend nu ~ the Gamma-Gamma posterior). The
  rebuilt state carries no contact before the window and no campaign effect in force. per_customer
  twins of customers in the world's book start from their book row instead when the book is as of
  the window's start (the book's first day in the window's first period: a world calibrated up to
  the day before `--start`, as `clv ope` calibrates one): the calibration's own posterior, last
  contact and effects in force; they then run without decisions up to their first decision, which
  is when their reward starts counting.
- Replications: `replications` seeds spawned from SeedSequence([seed, MODEL_KEY]) (the OPE settings'
  seed), each with a world stream and a policy stream; the interval is a Student-t interval over
  the replications' means: the model's Monte-Carlo error only, never the model's own error
  (`ci_excludes_model_bias`). `logged_replay` runs the same twins replaying the logged actions,
  beside the logged policy's actual value: how far the model is from the one policy whose value is
  known. Replications run in-process or as tasks of the caller's executor; same numbers either way.

Not an OPE estimate: it is not in `estimates` and never `recommended`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import ConfigError

from .data import REWARD_DEFINITION, _period_ends, day_numbers, period_grid, window_entry
from .estimators import THIN_SUPPORT_ESS_SHARE, support_warning

MODEL_KEY = 0x30DE  # seed-sequence word of the replications: independent of the bootstrap's SeedSequence(seed)
DEFAULT_REPLICATIONS = 10
_NO_WEIGHTS = frozenset({"dm", "fqe"})  # a model's answer: no weights of its own
_MARGINAL = frozenset({"mis", "drl"})


@dataclass
class TwinPlan:
    """What every replication shares, fixed before any draw (periods count from the first twin's entry)."""

    estimand: str
    rows: dict[str, np.ndarray]  # start state of each twin, in the book's columns (sim.population.state_from_book)
    entry: np.ndarray  # (n,) period the twin is created in
    end: np.ndarray  # (n,) first period its reward no longer counts in
    slot: np.ndarray  # (n,) simulator row it lives in (rows are reused once a twin has ended)
    slots: int
    periods: int
    start_date: pd.Timestamp  # the first period's first day (seasonality)
    ev_twin: np.ndarray  # decisions, sorted by period: the twin taking it,
    ev_period: np.ndarray  # its period,
    ev_action: np.ndarray  # the logged action (catalogue index),
    ev_candidate: np.ndarray  # whether the candidate chooses it (else the logged action is taken),
    ev_weight: np.ndarray  # the discount of the rewards that follow it,
    ev_own: np.ndarray  # whether its cost is the twin's (a per_decision twin's later logged decisions: no)
    customers: int
    decisions: int
    from_book: int  # twins started from the world's book
    shared_period: int  # logged decisions dropped because an earlier one of the customer is in the same period

    @property
    def n(self) -> int:
        return int(self.entry.shape[0])


def _effects_in_force(world, states, s: np.ndarray, cust: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per decision, the effect of the customer's last earlier contact of the window still running at
    it (as sim.calibrate.effect_in_force for a book): (code a*S + stage, periods left, fatigue factor)."""
    from sim.catalogue import STAGES
    from sim.population import WorldTables

    tb = WorldTables.from_world(world)
    n = s.size
    idx = np.arange(n)
    contact = np.where(states.action > 0, idx, -1)
    prev = np.r_[-1, np.maximum.accumulate(contact)[:-1]]  # the last contact strictly before each decision
    ok = prev >= 0
    ok[ok] = cust[prev[ok]] == cust[ok]
    j = prev[ok]
    a = states.action[j]
    left = s[j] + tb.duration[a].astype(np.int64) - s[ok]
    code, rem, scale = np.zeros(n, np.int16), np.zeros(n, np.int32), np.zeros(n)
    run = left > 0
    who = idx[ok][run]
    code[who] = a[run] * len(STAGES) + states.obs["stage"][j][run]
    rem[who] = left[run]
    scale[who] = tb.fatigue ** states.obs["recent_contacts"][j][run]
    return code, rem, scale


def _rebuilt_rows(
    world, obs: dict[str, np.ndarray], rows: np.ndarray, repeat_only: bool, effects: tuple[np.ndarray, ...]
) -> dict[str, np.ndarray]:
    """Start states in the book's columns from the observables rebuilt at `rows` and the `effects`
    in force there, the latent state's posterior from the world's segment models (module docstring)."""
    from sim.posterior import ObservablePosterior, btyd_data

    post = ObservablePosterior(world, repeat_only)
    o = {k: np.asarray(v)[rows] for k, v in obs.items()}
    n = rows.size
    x, t_x, T = btyd_data(o, None, repeat_only)
    freq = o["frequency"].astype(float)
    mean = np.divide(o["monetary"].astype(float), freq, out=np.zeros(n), where=freq > 0)
    out = {k: np.zeros(n) for k in ("lam_shape", "lam_rate", "mu_shape", "mu_rate", "nu_shape", "nu_rate")}
    out["p_alive"] = post.p_alive(o) if n else np.zeros(0)
    seg = o["segment"].astype(np.int64)
    for g in np.unique(seg):
        m = seg == g
        pp = post.activity[g].posterior_if_alive(x[m], t_x[m], T[m])
        out["lam_shape"][m] = pp["lam_shape"]
        out["lam_rate"][m] = pp["lam_rate"] * post.multiplier[g]  # campaign-free rates, as the world's
        out["mu_shape"][m], out["mu_rate"][m] = (
            (pp["mu_shape"], pp["mu_rate"]) if post.pareto else (pp["p_a"], pp["p_b"])
        )
        out["nu_shape"][m], out["nu_rate"][m] = post.spend[g].posterior_nu(x[m], mean[m])
    out.update(
        segment=seg.astype(np.int16),
        tenure=o["tenure"],
        recency=o["recency"],
        frequency=o["frequency"],
        monetary=o["monetary"],
        last_contact=o["last_contact"],
        recent_contacts=o["recent_contacts"],
        eff_code=effects[0][rows],
        eff_left=effects[1][rows],
        eff_scale=effects[2][rows],
    )
    for j, p in enumerate(world.products):
        out[f"prod_{p}"] = o["products"][:, j]
    for j, c in enumerate(world.catalogue.channels):
        out[f"optout_{c}"] = o["opted_out"][:, j]
    return out


def _book_start(world, book, outcomes: pd.DataFrame, first_day: float, grid) -> np.ndarray:
    """Each customer's row in the world's book when the book is as of the window's start (its first
    simulated day in the window's first period), else -1."""
    ids = pd.unique(outcomes["customer_id"])
    none = np.full(ids.size, -1)
    if book is None or not world.calibration_end:
        return none
    origin, period = grid
    book_day = float(day_numbers(np.array([pd.Timestamp(world.calibration_end)]))[0]) + 1.0
    if np.floor((book_day - origin) / period + 1e-9) != np.floor((first_day - origin) / period + 1e-9):
        return none
    pos = pd.Index(book["customer_id"].astype(str).to_numpy()).get_indexer(np.asarray(ids).astype(str))
    return np.where(pos >= 0, pos, -1)


def _from_book(book: pd.DataFrame, pos: np.ndarray, columns: list[str]) -> dict[str, np.ndarray]:
    """The book's rows `pos` in `columns` (a campaign effect the book lacks counts as none)."""
    out = {}
    for c in columns:
        if c in book.columns:
            out[c] = book[c].to_numpy()[pos]
        elif c.startswith(("eff_", "optout_", "prod_")) or c in ("last_contact", "recent_contacts"):
            like = {"last_contact": 10_000, "eff_code": 0, "eff_left": 0}.get(c, 0)
            out[c] = np.full(pos.size, like)
        else:
            raise ValueError(f"model_based: the world's book has no column {c!r}")
    return out


def _slots(entry: np.ndarray, end: np.ndarray, periods: int) -> tuple[np.ndarray, int]:
    """A simulator row per twin, a row freed by a twin that ended taken by the next one to enter."""
    slot = np.full(entry.size, -1, np.int64)
    by_entry, by_end = np.argsort(entry, kind="stable"), np.argsort(end, kind="stable")
    eb = np.searchsorted(entry[by_entry], np.arange(periods + 1))
    xb = np.searchsorted(end[by_end], np.arange(periods + 1))
    free, used = np.zeros(0, np.int64), 0
    for t in range(periods):
        free = np.concatenate([free, slot[by_end[xb[t] : xb[t + 1]]]])
        new = by_entry[eb[t] : eb[t + 1]]
        k = min(new.size, free.size)
        slot[new] = np.concatenate([free[:k], np.arange(used, used + new.size - k)])
        used += new.size - k
        free = free[k:]
    return slot, used


def twin_plan(history, logged, settings, book: pd.DataFrame | None = None) -> TwinPlan:
    """The twins of `logged` (experiments.ope.evaluate.LoggedDecisions with rebuilt states) for
    `settings`' estimand and discount (module docstring); `book`: the world's, for the book start."""
    o, states, world = logged.outcomes, logged.states, logged.world
    if states is None:
        raise ValueError("model_based: needs the states rebuilt in a world (logged_decisions(..., world=))")
    grid = period_grid(history)
    origin, period = grid
    day = day_numbers(o["date"].to_numpy()).astype(np.float64)
    nxt = np.asarray(o["next_date"].to_numpy(), "datetime64[ns]").astype(np.int64) / 86400e9
    s = np.floor((day - origin) / period + 1e-9).astype(np.int64)  # the period holding the decision
    length = np.maximum(1, (_period_ends(nxt, origin, period) - _period_ends(day, origin, period)).astype(np.int64))
    cust = pd.factorize(o["customer_id"].to_numpy(), sort=False)[0]
    step = o["step"].to_numpy()
    action = np.asarray(states.action, np.int64)
    cust_col = getattr(history.customers, "columns", ())
    repeat_only = "signup_date" not in cust_col  # births at first purchases: frequency counts the birth one
    n_dec = len(o)
    effects = _effects_in_force(world, states, s, cust)
    if settings.estimand == "per_customer":
        n = int(cust.max()) + 1
        first_row = np.flatnonzero(step == 0)
        last_row = np.r_[first_row[1:], n_dec] - 1
        g = 1.0 if settings.discount is None else float(settings.discount)
        ev = (cust, s, action, np.ones(n_dec, bool), g ** step.astype(np.float64), np.ones(n_dec, bool))
        entry = s[first_row].copy()
        end = s[last_row] + length[last_row]
        rows = _rebuilt_rows(world, states.obs, first_row, repeat_only, effects)
        pos = _book_start(world, book, o, float(day.min()), grid)
        use = pos >= 0
        if use.any():  # the book is as of the window's first period: its customers enter there
            b = _from_book(book, pos[use], list(rows))
            for c in rows:
                rows[c] = rows[c].astype(np.result_type(rows[c], b[c]))  # a copy
                rows[c][use] = b[c]
            entry[use] = s.min()
    else:
        n = n_dec
        entry, end = s.copy(), s + length
        twin, per, act = [np.arange(n)], [s], [action]
        own = [np.ones(n, bool)]
        k = 1
        while True:  # the customer's later logged decisions inside the window: the bank's actions
            i = np.arange(max(n - k, 0))
            i = i[(cust[i + k] == cust[i]) & (s[i + k] < end[i])]
            if not i.size:
                break
            twin.append(i)
            per.append(s[i + k])
            act.append(action[i + k])
            own.append(np.zeros(i.size, bool))
            k += 1
        ev = (
            np.concatenate(twin),
            np.concatenate(per),
            np.concatenate(act),
            np.concatenate(own),  # the candidate chooses exactly the twin's own decision
            np.ones(sum(t.size for t in twin)),
            np.concatenate(own),
        )
        rows = _rebuilt_rows(world, states.obs, np.arange(n), repeat_only, effects)
        use = np.zeros(n, bool)
    ev_twin, ev_period, ev_action, ev_cand, ev_weight, ev_own = ev
    # one action per twin and period: a later decision in the period of an earlier one is dropped
    order = np.lexsort((np.arange(ev_twin.size), ev_period, ev_twin))
    keep = np.ones(order.size, bool)
    keep[1:] = (ev_twin[order][1:] != ev_twin[order][:-1]) | (ev_period[order][1:] != ev_period[order][:-1])
    shared = int((~keep).sum())
    order = order[keep]
    order = order[np.argsort(ev_period[order], kind="stable")]
    t0 = int(entry.min())
    periods = int(end.max()) - t0
    slot, slots = _slots(entry - t0, end - t0, periods)
    return TwinPlan(
        estimand=settings.estimand,
        rows=rows,
        entry=entry - t0,
        end=end - t0,
        slot=slot,
        slots=slots,
        periods=periods,
        start_date=pd.Timestamp(0) + pd.to_timedelta(origin + t0 * period, unit="D"),
        ev_twin=ev_twin[order],
        ev_period=ev_period[order] - t0,
        ev_action=ev_action[order],
        ev_candidate=ev_cand[order],
        ev_weight=ev_weight[order],
        ev_own=ev_own[order],
        customers=int(cust.max()) + 1,
        decisions=n_dec,
        from_book=int(use.sum()),
        shared_period=shared,
    )


def replicate(world, policy, plan: TwinPlan, seq: np.random.SeedSequence, replay: bool = False) -> dict[str, Any]:
    """One replication: {"values": each twin's value, "ineligible": actions the simulator refused}
    under `policy` (anything with `action_probs(obs, masks)`), or replaying the logged actions."""
    from policies.base import sample_actions
    from sim.population import PopulationSimulator, WorldTables, state_from_book, take_rows

    from .truth import _check_probs

    tables = WorldTables.from_world(world)
    world_seq, policy_seq = seq.spawn(2)
    rng, prng = np.random.default_rng(world_seq), np.random.default_rng(policy_seq)
    holder = state_from_book(world, take_rows(plan.rows, np.zeros(plan.slots, np.int64)), rng, tables)
    holder.alive[:] = False  # rows nobody uses yet
    sim = PopulationSimulator(world, holder, rng, start_date=plan.start_date, tables=tables)
    name = str(getattr(policy, "name", type(policy).__name__))
    by_entry = np.argsort(plan.entry, kind="stable")
    by_end = np.argsort(plan.end, kind="stable")
    grid = np.arange(plan.periods + 1)
    eb, xb = np.searchsorted(plan.entry[by_entry], grid), np.searchsorted(plan.end[by_end], grid)
    vb = np.searchsorted(plan.ev_period, grid)
    total = np.zeros(plan.n)
    twin_at = np.full(plan.slots, -1, np.int64)
    counting = np.zeros(plan.slots, bool)
    weight = np.zeros(plan.slots)
    refused = 0
    for t in range(plan.periods):
        gone = plan.slot[by_end[xb[t] : xb[t + 1]]]
        counting[gone], twin_at[gone] = False, -1
        new = by_entry[eb[t] : eb[t + 1]]
        if new.size:
            sim.replace(plan.slot[new], state_from_book(world, take_rows(plan.rows, new), rng, tables))
            twin_at[plan.slot[new]] = new
        actions = np.zeros(plan.slots, np.int16)
        ev = np.arange(vb[t], vb[t + 1])
        if ev.size:
            s = plan.slot[plan.ev_twin[ev]]
            a = plan.ev_action[ev].astype(np.int16)
            cand = plan.ev_candidate[ev] & (not replay)
            if cand.any():
                sc = s[cand]
                masks = sim.action_masks()[sc]
                obs = {k: v[sc] for k, v in sim.observe().items()}
                a[cand] = sample_actions(_check_probs(name, policy.action_probs(obs, masks), masks), prng)
            actions[s] = a
            counting[s] = True
            weight[s] = plan.ev_weight[ev]
        out = sim.step(actions)
        refused += out.n_ineligible
        m = np.flatnonzero(counting)
        total[twin_at[m]] += weight[m] * out.reward[m]
        if ev.size and not plan.ev_own[ev].all():  # a later logged decision's cost is not this decision's
            so = s[~plan.ev_own[ev]]
            total[twin_at[so]] += weight[so] * out.cost[so]
    return {"values": total, "ineligible": refused}


def _replication(world, policy, plan: TwinPlan, seq: np.random.SeedSequence) -> tuple[float, float, int, int]:
    """(candidate's mean, logged replay's mean, their refused actions) of one replication: an executor task."""
    cand, replay = replicate(world, policy, plan, seq), replicate(world, policy, plan, seq, replay=True)
    return float(cand["values"].mean()), float(replay["values"].mean()), cand["ineligible"], replay["ineligible"]


def model_based_value(
    history,
    logged,
    policy,
    settings,
    book: pd.DataFrame | None = None,
    replications: int = DEFAULT_REPLICATIONS,
    executor=None,
    logged_value: float | None = None,
) -> dict[str, Any]:
    """The candidate's value under `logged.world`'s simulator (module docstring), for `settings`'
    estimand, discount and seed: {"value", "ci_low", "ci_high", "ci_excludes_model_bias": True, ...}.
    `logged`: experiments.ope.evaluate.LoggedDecisions with states rebuilt in the world; `book`: the
    world's; `logged_value`: the logged policy's actual value, shown beside the replay of its actions;
    `executor`: runs the replications (`map(fn, shared, calls, progress)`; None: in-process)."""
    from experiments.evaluate import mean_ci

    if int(replications) < 2:
        raise ConfigError(
            "model_replications", value=replications, message="give at least 2 seeds for an interval (0: no model)"
        )
    t0 = time.perf_counter()
    world = logged.world
    plan = twin_plan(history, logged, settings, book)
    seqs = np.random.SeedSequence([int(settings.seed), MODEL_KEY]).spawn(int(replications))
    if executor is None:
        reps = [_replication(world, policy, plan, seq) for seq in seqs]
    else:
        reps = executor.map(_replication, (world, policy, plan), [(seq,) for seq in seqs])
    level = 1 - settings.alpha
    cand = mean_ci(np.array([r[0] for r in reps]), level)
    replay = mean_ci(np.array([r[1] for r in reps]), level)
    start = (
        "each customer's state rebuilt at their first decision of the window, latent state from the world's "
        "posterior given it"
        if plan.estimand == "per_customer"
        else "the state rebuilt at each logged decision, latent state from the world's posterior given it"
    )
    if plan.from_book:
        start += f"; {plan.from_book:,} customers from the world's book, as of the window's start"
    return {
        "value": cand.mean,
        "ci_low": cand.ci_low,
        "ci_high": cand.ci_high,
        "estimator": "calibrated simulator",
        "estimand": plan.estimand,
        "discount": settings.discount,
        "reward": REWARD_DEFINITION,
        "window": window_entry(logged.outcomes, settings.window),
        "ci_excludes_model_bias": True,
        "interval": f"{level:.0%} Student-t interval of the mean over {len(reps)} simulator seeds: the model's "
        "Monte-Carlo error only, not the model's own error",
        "replications": len(reps),
        "per_replication": [r[0] for r in reps],
        "seeds": f"SeedSequence([{int(settings.seed)}, {MODEL_KEY:#x}]).spawn({len(reps)}): world and policy streams",
        "start_states": start,
        "customers": plan.customers,
        "decisions": plan.decisions,
        "twins": plan.n,
        "decisions_sharing_a_period": plan.shared_period,
        "refused_actions": int(sum(r[2] for r in reps)),
        "logged_replay": {
            "value": replay.mean,
            "ci_low": replay.ci_low,
            "ci_high": replay.ci_high,
            "actual": logged_value,
            "gap": None if logged_value is None else replay.mean - logged_value,
            "refused_actions": int(sum(r[3] for r in reps)),
            "what": "the same twins replaying the logged actions, beside the logged policy's actual value",
        },
        "ray": getattr(executor, "name", None) == "ray",
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------------------------
# the support of the recommended estimator


def support_diagnostics(weights: dict, estimates: dict, recommended: dict | None, estimand: str) -> dict:
    """Top-level diagnostics of an evaluation: n, ess, ess_share and the warning describe the support
    of the recommended estimator, from its own weights (mis/drl: the state-marginal weights
    w_t(s_t) rho_t, the median over steps of Kish's ESS; the importance-weighting estimators: their
    weights, clipped as they ran); an estimator without weights (dm, fqe) is described by the data's
    importance weights, which show how far its model extrapolates. `weights`: `weight_diagnostics`
    of the data (one-step weights; per_customer: the whole-trajectory weights, kept as
    `trajectory_weights`)."""
    key = recommended["estimator"] if recommended else None
    own = estimates.get(key) if key else None
    ran = own["estimator"] if own else None
    n = weights["n"]
    if estimand == "per_customer":
        out = {"n": n, "trajectory_weights": {k: v for k, v in weights.items() if k != "n"}}
        base = "the whole-trajectory weights (product of the step ratios)"
    else:
        out = dict(weights)
        base = "the one-step importance weights pi / pi0"
    if own is not None and ran not in _NO_WEIGHTS:
        ess = float(own["ess"])
        what = "state-marginal weights w_t(s_t) rho_t (median over steps of Kish's ESS)" if ran in _MARGINAL else base
        if "clip" in own:
            what += f", clipped at {own['clip']:g}"
    else:
        ess = float(weights["ess"])
        what = base + (f" ({key} has no weights of its own: they show how far its model extrapolates)" if key else "")
    out.update(ess=ess, ess_share=ess / n if n else 0.0, support={"estimator": key, "ran": ran, "weights": what})
    if ran in _MARGINAL:
        warn = None
        if out["ess_share"] < THIN_SUPPORT_ESS_SHARE:
            warn = (
                f"thin support for {key}: effective sample size {ess:.1f} of {n} customers per step "
                f"({out['ess_share']:.2%} < {THIN_SUPPORT_ESS_SHARE:.0%}; smallest step {own.get('ess_min_step', 0):.1f}, "
                f"largest state ratio {own.get('max_state_ratio', float('nan')):.3g}); the candidate reaches states the "
                "logging policy rarely reached, estimates are unreliable"
            )
    else:
        warn = support_warning({**weights, "ess": ess, "ess_share": out["ess_share"], "n": n})
        if warn and key:
            warn = warn.replace("thin support:", f"thin support for {key}:", 1)
    out["warning"] = warn
    return out


__all__ = [
    "DEFAULT_REPLICATIONS",
    "MODEL_KEY",
    "TwinPlan",
    "model_based_value",
    "replicate",
    "support_diagnostics",
    "twin_plan",
]
