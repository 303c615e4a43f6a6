"""Backtest candidate policies on a history split at a date (`clv backtest`).

1. Calibrate a world on the history before the split date D (or take a given world and its book).
2. Resolve the candidates in that world (baselines or folders from `clv train`).
3. Evaluate each candidate on what happened after D, two ways:
   - OPE on the logged decisions dated on or after D (experiments.ope, estimand per_decision:
     the mean reward following a decision: the data contract's reward from the decision to the
     customer's next decision, or to the end of the history: margin_rate * amount spent + the
     margins of the products held at each period end - the contact cost; experiments.ope.data);
   - simulation of the calibrated world's book (digital twins as of D) for the periods between D
     and the end of the history (at least MIN_PERIODS), several seeds, common random numbers.
4. Compare both with the logged policy's actual outcome after D: its on-policy per-decision value
   (experiments.ope.data.on_policy_value), known exactly, with no model.

What the simulation's `per_decision_reward` is: to match OPE's estimand, the candidate acts only
at decision points spaced like the logged ones (`cadence`: the median gap between a customer's
consecutive logged decisions, in periods; each simulated customer gets a fixed offset, so 1 in
`cadence` of them is at a decision point in any period) and is silent in between. The reward counted
is the simulator's period reward, the same contract reward as OPE's (transaction margin + product
margins - contact costs), undiscounted, summed over the horizon and divided by the
number of decision windows (horizon / cadence) per customer. It is a mean reward per customer per
decision window, the simulated counterpart of OPE's mean reward per logged decision. The
discounted CLV per customer over the horizon (with product margins, as `clv evaluate` reports it)
is given too.

Rankings: candidates ordered best first by the main OPE estimator (dr when requested, else the
first estimator) and by the simulated per-decision reward; Kendall's tau between the two orders
(+1 identical, -1 reversed) and whether both pick the same best policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.errors import ConfigError

from .ope import OPESettings

MIN_PERIODS = 4


@dataclass(frozen=True)
class BacktestSettings:
    """Knobs of a backtest besides the split date and the candidates: the offline evaluation's
    (estimand per_decision; its seed is also the first simulation seed) and the simulation's."""

    ope: OPESettings = field(default_factory=OPESettings)
    seeds: int = 5  # simulation seeds (CIs over seeds)
    customers: int | None = None  # simulated customers (default: the whole book)
    workers: int | None = None  # Ray CPUs for the OPE bootstrap (0: in-process)
    address: str | None = None  # an existing Ray cluster

    def main_estimator(self) -> str:
        return "dr" if "dr" in self.ope.estimators else self.ope.estimators[0]


def check_policies(policies: list[str]) -> list[str]:
    """The candidates' names, after the cheap checks (known, each once, at least two)."""
    from policies.registry import UNKNOWN_POLICY, is_policy_spec, policy_label

    specs = [p.strip() for p in policies if p and p.strip()]
    if len(specs) < 2:
        raise ConfigError(
            "policies", "give at least two policies to rank, comma-separated (e.g. none,bau,greedy_uplift)"
        )
    for s in specs:
        if not is_policy_spec(s):
            raise ConfigError("policies", f"{s!r} is {UNKNOWN_POLICY}")
    names = [policy_label(s) for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError("policies", f"{', '.join(dup)} given twice; name each policy once")
    return specs


def history_end(history) -> pd.Timestamp:
    """The day after the last transaction or decision: where the after-split window closes."""
    last = history.transactions["date"].max()
    if history.decisions is not None and len(history.decisions):
        last = max(last, history.decisions["date"].max())
    return pd.Timestamp(last) + pd.Timedelta(days=1)


def check_split(history, split_date: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(split, end) after checking the split date falls strictly inside the history."""
    d = pd.Timestamp(split_date)
    first = pd.Timestamp(history.transactions["date"].min())
    end = history_end(history)
    if not first < d < end:
        raise ConfigError(
            "split_date",
            value=d.date(),
            message=f"outside the history ({history.folder} runs from "
            f"{first.date()} to {(end - pd.Timedelta(days=1)).date()}); choose a date inside it "
            "with history on both sides",
        )
    return d, end


def decision_cadence(outcomes: pd.DataFrame, period_days: float) -> int:
    """Median gap between a customer's consecutive logged decisions, in whole periods (>= 1)."""
    d = outcomes.sort_values(["customer_id", "date"], kind="stable")
    same = d["customer_id"].to_numpy()[1:] == d["customer_id"].to_numpy()[:-1]
    gaps = np.diff(d["date"].to_numpy()).astype("timedelta64[D]").astype(np.int64)[same]
    if gaps.size == 0:
        return 1
    return max(1, int(round(float(np.median(gaps)) / period_days)))


def at_cadence(fn: Callable, cadence: int) -> Callable:
    """The simulator policy `fn`, acting only at each customer's decision points (every `cadence`
    periods, customer i offset by i mod cadence) and choosing "none" (0) in between."""
    if cadence <= 1:
        return fn

    def wrapped(sim) -> np.ndarray:
        acts = np.asarray(fn(sim)).copy()
        off = np.arange(len(acts)) % cadence
        acts[(sim.t + off) % cadence != 0] = 0
        return acts

    wrapped.policy = getattr(fn, "policy", None)  # type: ignore[attr-defined]
    return wrapped


def kendall_tau(a: list[str], b: list[str]) -> float | None:
    """Kendall's tau between two orderings of the same names (no ties); None for fewer than two."""
    n = len(a)
    if n < 2:
        return None
    pos = {x: i for i, x in enumerate(b)}
    r = [pos[x] for x in a]
    s = sum(np.sign(r[j] - r[i]) for i in range(n) for j in range(i + 1, n))
    return float(s) / (n * (n - 1) / 2)


def _simulate(
    world,
    book,
    policies: dict[str, Any],
    periods: int,
    cadence: int,
    settings: BacktestSettings,
    tick: Callable[[], None],
) -> dict[str, dict[str, Any]]:
    """Per candidate: discounted CLV and per-decision reward, mean and 95% CI over seeds (CRN)."""
    from policies.base import as_simulator_policy
    from sim.population import simulate

    from .evaluate import mean_ci

    n = settings.customers or len(book)
    windows = periods / cadence
    per_seed: dict[str, dict[str, list[float]]] = {
        k: {"clv": [], "per_decision_reward": [], "contacts": []} for k in policies
    }
    for k in range(settings.seeds):
        s = settings.ope.seed + k
        for name, pol in policies.items():
            res = simulate(
                world, at_cadence(as_simulator_policy(pol), cadence), periods, s, book=book, customers=n, crn=True
            )
            c = res.customers
            per_seed[name]["clv"].append(float(c["clv"].mean()))
            per_seed[name]["per_decision_reward"].append(float(c["reward"].mean()) / windows)
            per_seed[name]["contacts"].append(float(c["contacts"].mean()))
            tick()
    return {
        name: {m: mean_ci(np.array(v)).to_dict() for m, v in d.items()} | {"per_seed": d}
        for name, d in per_seed.items()
    }


def run_backtest(
    history,
    split_date: str,
    policies: list[str],
    settings: BacktestSettings = BacktestSettings(),
    world=None,
    book=None,
    world_note: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Backtest `policies` (baseline names or `clv train` folders) on `history` split at
    `split_date` (see the module docstring). Give `world` and its `book` to skip calibration.
    `progress(stage, done, total)` counts steps: calibration, one OPE per policy, one simulation
    per policy and seed."""
    from policies.registry import policy_label, resolve_policy

    from .ope import evaluate_offline, logged_decisions
    from .ope.data import decision_outcomes, on_policy_value
    from .ray_session import executor_session

    t0 = time.perf_counter()
    specs = check_policies(policies)
    if settings.ope.estimand != "per_decision":
        raise ConfigError(f"a backtest ranks candidates on the per_decision estimand, not {settings.ope.estimand}")
    if settings.seeds < 1:
        raise ConfigError("seeds", value=settings.seeds, message="must be >= 1")
    d, end = check_split(history, split_date)
    split = str(d.date())
    outcomes = decision_outcomes(history, split, None)  # ConfigError when nothing was decided after D
    logged_value = on_policy_value(outcomes, "per_decision")
    warnings: list[str] = []

    total = 1 + len(specs) + settings.seeds * len(specs)
    done = [0]

    def tick(stage: str) -> None:
        done[0] += 1
        if progress:
            progress(stage, done[0], total)

    cal_end = d - pd.Timedelta(days=1)
    if world is None:
        from sim.calibrate import calibrate

        world, book, report = calibrate(history, cal_end)
        world_note = f"calibrated on the history up to {cal_end.date()}"
    else:
        report = {"customers": None if book is None else int(len(book))}
        if world.calibration_end and pd.Timestamp(world.calibration_end) != cal_end:
            warnings.append(
                f"the given world was calibrated up to {world.calibration_end}, not the day before the "
                f"split ({cal_end.date()}): its book is not the customers as of the split"
            )
    if book is None:
        raise ConfigError(
            "the world's book (the digital twins as of the split) is missing; simulation needs it: "
            "recalibrate, or leave out --world"
        )
    tick("calibration")
    if settings.customers is not None and settings.customers > len(book):
        warnings.append(f"--customers {settings.customers} exceeds the book ({len(book)}): twins are resampled")

    pols = {policy_label(s): resolve_policy(s, world, key="policies") for s in specs}
    pdays = float(world.economics.period_days)
    span = (end - d).days / pdays
    periods = max(MIN_PERIODS, int(span))
    if span < MIN_PERIODS:
        warnings.append(f"only {span:.1f} periods of history after the split; simulating {MIN_PERIODS}")
    cadence = decision_cadence(outcomes, pdays)
    book_ids = set(book["customer_id"].astype(str))
    unseen = int((~outcomes["customer_id"].astype(str).isin(book_ids)).sum())
    if unseen:
        warnings.append(
            f"{unseen} of {len(outcomes)} logged decisions after the split are on customers not in the "
            "calibration book (born later): OPE counts them, the simulation does not"
        )

    main = settings.main_estimator()
    out_pols: dict[str, dict[str, Any]] = {}
    # one Ray for every candidate's bootstrap (none with --workers 0)
    ope_after = replace(settings.ope, start=split)
    shared = logged_decisions(history, split, None, world, book)  # states and reward model, once for all candidates
    with executor_session(settings.workers, settings.address) as executor:
        for name, pol in pols.items():
            res = evaluate_offline(
                history, ope_after, policy=pol, world=world, book=book, executor=executor, logged=shared
            )
            est = {
                k: {f: e[f] for f in ("value", "ci_low", "ci_high", "ess", "estimator")}
                for k, e in res["estimates"].items()
            }
            m = est[main]
            diff = {
                "estimator": main,
                "value": m["value"] - logged_value,
                "ci_low": m["ci_low"] - logged_value,
                "ci_high": m["ci_high"] - logged_value,
            }
            diff["ci_excludes_zero"] = bool(diff["ci_low"] > 0 or diff["ci_high"] < 0)
            w = res["diagnostics"].get("warning")
            if w:
                warnings.append(f"{name}: {w}")
            out_pols[name] = {
                "spec": next(s for s in specs if policy_label(s) == name),
                "ope": est,
                "ope_vs_logged": diff,
                "ope_diagnostics": {
                    k: v for k, v in res["diagnostics"].items() if isinstance(v, (int, float, str, type(None)))
                },
            }
            tick(f"OPE {name}")

    sim = _simulate(world, book, pols, periods, cadence, settings, lambda: tick("simulation"))
    for name in pols:
        s = sim[name]
        pdr = s["per_decision_reward"]
        out_pols[name]["simulation"] = {
            "clv": s["clv"],
            "per_decision_reward": pdr,
            "contacts": s["contacts"],
            "per_decision_vs_logged": {k: pdr[k] - logged_value for k in ("mean", "ci_low", "ci_high")},
            "per_seed": s["per_seed"],
        }

    ope_order = sorted(pols, key=lambda n: -out_pols[n]["ope"][main]["value"])
    sim_order = sorted(pols, key=lambda n: -out_pols[n]["simulation"]["per_decision_reward"]["mean"])
    tau = kendall_tau(ope_order, sim_order)
    if ope_order[0] != sim_order[0]:
        warnings.append(f"OPE ({main}) and simulation disagree on the best policy: {ope_order[0]} vs {sim_order[0]}")
    return {
        "split_date": split,
        "history": str(history.folder),
        "window": {"start": split, "end": str(end.date()), "periods": periods, "period": history.economics.period},
        "calibration": {
            "world_hash": world.hash(),
            "calibration_end": world.calibration_end,
            "customers": int(len(book)),
            "source": world_note,
            "seconds": report.get("seconds"),
        },
        "logged": {
            "per_decision": logged_value,
            "decisions": int(len(outcomes)),
            "customers": int(outcomes["customer_id"].nunique()),
            "note": "the logging policy's actual mean reward per decision after the split (on-policy)",
        },
        "estimand": {
            "ope": "per_decision",
            "main_estimator": main,
            "simulation": f"mean reward (transaction margin + product margins - contact cost, undiscounted) "
            "per customer per decision "
            f"window of {cadence} periods, acting only at decision points",
        },
        "simulation_settings": {
            "customers": settings.customers or int(len(book)),
            "periods": periods,
            "seeds": settings.seeds,
            "seed": settings.ope.seed,
            "cadence": cadence,
            "common_random_numbers": True,
        },
        "ope_settings": {
            "estimators": list(settings.ope.estimators),
            "bootstrap": settings.ope.n_boot,
            "alpha": settings.ope.alpha,
            "reward_model": settings.ope.reward_model,
            "folds": settings.ope.folds,
            "clip": settings.ope.clip,
        },
        "policies": out_pols,
        "ranking": {
            "ope": ope_order,
            "simulation": sim_order,
            "kendall_tau": tau,
            "same_best": ope_order[0] == sim_order[0],
        },
        "warnings": warnings,
        "seconds": round(time.perf_counter() - t0, 2),
    }


__all__ = [
    "BacktestSettings",
    "run_backtest",
    "check_policies",
    "check_split",
    "decision_cadence",
    "kendall_tau",
    "at_cadence",
]
