"""`clv plan`: a budget for every contact of the horizon, spent by a budgeted policy, judged on fresh
seeds (optimizer.budgeted does the work; this module makes the plan and its checks).

1. The base policy's contact values are fitted on rollouts of their own (`fit_contact_values`):
   each contact at states the policy visits, followed by no contact (`value_continuation`; the
   marginal worth among the policy's own contacts undervalues them once a budget cuts most of
   them: on the demo world, +1.5 instead of +2.7 per customer at a budget of 2,000).
2. On K planning seeds (seed, seed+1, ...): "none" and the policy alone; with pacing `horizon`
   the price that meets the budget is set on them; the budgeted policy's lift over "none" on
   these seeds is the `predicted_lift`.
3. On K fresh seeds (seed + 10000, ...), never used to set anything: "none", the policy alone and
   the budgeted policy, with common random numbers, give `clv`, `lift_vs_none` (= `fresh_lift`),
   `lift_vs_policy_alone`, `spend` and what each segment, channel and period received, each with
   its 95 % interval over seeds. `check` says whether the prediction holds: the predicted lift lies
   inside the fresh lift's interval.

Outputs (`write_plan`): DIR/contacts.parquet (the first period's contacts: customer_id, action,
channel, segment, value, cost, reason), DIR/schedule.parquet (per period x segment x channel: mean
contacts, spend and value of the contacts made, over the fresh seeds) and DIR/plan.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.errors import ConfigError

from .evaluate import mean_ci

FRESH_SEED_OFFSET = 10_000  # fresh seeds: never used to fit or tune anything


@dataclass(frozen=True)
class PlanSettings:
    """Every setting of `clv plan` (one visible place; the CLI's defaults are these)."""

    budget: float
    horizon: int = 52
    pacing: str = "horizon"
    seeds: int = 5
    seed: int = 0
    customers: int | None = None  # None: the whole book
    value_customers: int = 2000  # twins the contact values are fitted on
    value_horizon: int = 26  # periods each valued contact is followed for
    # what follows a valued contact in its rollouts: "none" (the contact's worth on its own: under a
    # budget below the policy's own spend most of its later contacts are not made) or "policy"
    # (its marginal worth among all the policy's contacts, which saturate one another)
    value_continuation: str = "none"
    price_seeds: int = 2  # planning seeds the horizon price is set on (runs are the cost of planning)
    price_iterations: int = 12
    # the uncapped spend the price aims at, as a multiple of the budget: the hard cap then ends the
    # spending in most seeds (at 1.0 a seed that asks for less than the tuning seeds spends ~93 %)
    price_aim: float = 1.03

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or self.seeds < 2:
            raise ConfigError("seeds", value=self.seeds, message="must be >= 2 (intervals are over seeds)")
        if self.value_customers < 10:
            raise ConfigError("value_customers", value=self.value_customers, message="must be >= 10")
        if self.value_continuation not in ("none", "policy"):
            raise ConfigError(
                "value_continuation", value=repr(self.value_continuation), message="choose none or policy"
            )
        if self.value_horizon < 1:
            raise ConfigError("value_horizon", value=self.value_horizon, message="must be >= 1")


@dataclass
class BudgetPlan:
    """A plan and its checks; `to_dict()` is plan.json."""

    doc: dict[str, Any]
    contacts: pd.DataFrame
    schedule: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        return self.doc


def interval(x) -> dict[str, float]:
    """Mean and 95 % Student-t interval over seeds, as a JSON mapping."""
    return mean_ci(np.asarray(x, float)).to_dict()


def _reason(value: float, cost: float, price: float | None, pacing: str, unit: str = "margin units") -> str:
    v, c = f"{value:.2f} {unit}", f"{cost:.2f} {unit}"
    if pacing == "horizon" and price is None:
        return f"worth {v} for a cost of {c}: the budget covers every contact the policy makes"
    if pacing == "horizon" and price < 0:
        return (
            f"worth {v} for a cost of {c}: the budget covers the policy's contacts down to {price:.3f} per unit of cost"
        )
    if pacing == "horizon":
        return f"worth {v} against a cost of {c}, above the budget's price of {price:.3f} per unit of cost"
    return f"worth {v} for a cost of {c}: among this period's best value per unit of cost"


@dataclass
class PlanContext:
    """What every budget of one plan shares: the world, the base policy, its contact values, and
    the runs of "none" and of the policy alone on the planning and the fresh seeds."""

    world: Any
    book: pd.DataFrame
    policy_fn: Callable
    policy_label: str
    settings: PlanSettings
    values: Any
    tables: Any
    plan_seeds: list[int]
    fresh_seeds: list[int]
    none_plan: list
    alone_plan: list
    none_fresh: list
    alone_fresh: list
    seconds: float
    progress: Callable[[str, int, int], None] | None = None
    executor: Any = None  # runs the seeds (experiments.ray_session.RayExecutor); None: in-process

    @property
    def customers(self) -> int:
        """How many customers each run simulates: the book's, or the `customers` twins drawn from it."""
        return len(self.book) if self.settings.customers is None else self.settings.customers

    def runs(
        self, seeds: list[int], mode: str, rule=None, policy_fn: Callable | None = None, record_values: bool = False
    ) -> list:
        from optimizer.budgeted import run_seeds

        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            if self.progress:
                self.progress(mode, done[0], len(seeds))

        fn = policy_fn or self.policy_fn
        T, n = self.settings.horizon, self.settings.customers
        return run_seeds(
            self.world,
            self.book,
            fn,
            T,
            seeds,
            mode,
            rule,
            self.values,
            n,
            self.tables,
            record_values,
            self.executor,
            tick,
        )

    def batch(self, jobs: list[tuple]) -> list:
        """Runs of the base policy, as `(mode, rule, record_values, seed)` jobs, all in one
        `run_jobs` (one map of the executor: the workers stay busy across the kinds of run)."""
        from optimizer.budgeted import run_jobs

        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            if self.progress:
                self.progress("runs", done[0], len(jobs))

        full = [(None if mode == "none" else 0, mode, rule, rec, seed) for mode, rule, rec, seed in jobs]
        T, n = self.settings.horizon, self.settings.customers
        return run_jobs(
            self.world, self.book, (self.policy_fn,), T, full, self.values, n, self.tables, self.executor, tick
        )


def prepare_plan(
    world,
    book: pd.DataFrame,
    policy,
    settings: PlanSettings,
    policy_label: str = "policy",
    progress: Callable[[str, int, int], None] | None = None,
    executor=None,
) -> PlanContext:
    """Fit the policy's contact values and run "none" and the policy alone on every seed (on
    `executor` when given: the same numbers as in-process)."""
    from optimizer.budgeted import fit_contact_values
    from policies.base import as_simulator_policy
    from sim.population import WorldTables

    t0 = time.perf_counter()
    if book is None or len(book) == 0:
        raise ConfigError("the world has no book of customers to plan for; recalibrate it with `clv calibrate`")
    K = settings.seeds
    values = fit_contact_values(
        world,
        book,
        policy,
        settings.horizon,
        settings.value_horizon,
        settings.value_customers,
        settings.seed + 0x9A11,
        continuation="none" if settings.value_continuation == "none" else None,
    )
    ctx = PlanContext(
        world=world,
        book=book,
        policy_fn=as_simulator_policy(policy),
        policy_label=policy_label,
        settings=settings,
        values=values,
        tables=WorldTables.from_world(world),
        plan_seeds=[settings.seed + k for k in range(K)],
        fresh_seeds=[settings.seed + FRESH_SEED_OFFSET + k for k in range(K)],
        none_plan=[],
        alone_plan=[],
        none_fresh=[],
        alone_fresh=[],
        seconds=0.0,
        progress=progress,
        executor=executor,
    )
    # the policy alone on the price's seeds (recording what it proposes: where the price search
    # starts); "none" and the policy alone on the fresh seeds; "none" on every planning seed
    k = min(settings.price_seeds, K)
    jobs = (
        [("policy", None, True, x) for x in ctx.plan_seeds[:k]]
        + [("none", None, False, x) for x in ctx.plan_seeds]
        + [("none", None, False, x) for x in ctx.fresh_seeds]
        + [("policy", None, False, x) for x in ctx.fresh_seeds]
    )
    runs = ctx.batch(jobs)
    ctx.alone_plan, ctx.none_plan = runs[:k], runs[k : k + K]
    ctx.none_fresh, ctx.alone_fresh = runs[k + K : k + 2 * K], runs[k + 2 * K :]
    ctx.seconds = time.perf_counter() - t0
    return ctx


def plan_at(
    ctx: PlanContext, budget: float, constraints: list | None = None, price_guess: float | None = None
) -> BudgetPlan:
    """The plan at `budget` on a prepared context (the module docstring's steps 2 and 3);
    `price_guess` starts the price search (the frontier passes the previous budget's price)."""
    from optimizer.budgeted import BudgetRule, guess_price, tune_price

    t0 = time.perf_counter()
    settings = replace(ctx.settings, budget=budget)
    world, book, T, K = ctx.world, ctx.book, settings.horizon, settings.seeds
    rule = BudgetRule(budget, T, settings.pacing, constraints=list(constraints or []))
    plan_seeds, fresh_seeds, alone_p, none_p = ctx.plan_seeds, ctx.fresh_seeds, ctx.alone_plan, ctx.none_plan
    k = min(settings.price_seeds, K)
    policy_spend = float(np.mean([r.spend for r in alone_p[:k]]))
    price, trace = tune_price(
        world,
        book,
        ctx.policy_fn,
        ctx.values,
        rule,
        plan_seeds[:k],
        policy_spend,
        settings.customers,
        settings.price_iterations,
        aim=settings.price_aim,
        start=guess if (guess := guess_price(alone_p[:k], budget * settings.price_aim)) is not None else price_guess,
        executor=ctx.executor,
    )
    rule = replace(rule, price=price)
    both = ctx.batch([("budgeted", rule, False, x) for x in plan_seeds + fresh_seeds])  # one map for both
    planned, fresh = both[:K], both[K:]
    predicted = [b.clv.mean() - n.clv.mean() for b, n in zip(planned, none_p)]
    t_plan = time.perf_counter() - t0

    none_f, alone_f = ctx.none_fresh, ctx.alone_fresh
    lift_none = [b.clv.mean() - n.clv.mean() for b, n in zip(fresh, none_f)]
    lift_alone = [b.clv.mean() - a.clv.mean() for b, a in zip(fresh, alone_f)]
    alone_lift = [a.clv.mean() - n.clv.mean() for a, n in zip(alone_f, none_f)]
    spend = [b.spend for b in fresh]
    fresh_iv, pred_iv = interval(lift_none), interval(predicted)
    agrees = bool(fresh_iv["ci_low"] <= pred_iv["mean"] <= fresh_iv["ci_high"])

    segs = [s.name for s in world.segments]
    channels = world.catalogue.contact_channels
    sched = pd.concat([r.by_period.assign(seed=s) for r, s in zip(fresh, fresh_seeds)], ignore_index=True)
    full = (
        sched.groupby(["period", "segment", "channel"])[["contacts", "spend", "value"]].sum().div(K).reset_index()
        if len(sched)
        else pd.DataFrame(columns=["period", "segment", "channel", "contacts", "spend", "value"])
    )
    full["segment"] = [segs[i] for i in full["segment"]]
    full["channel"] = [channels[i] for i in full["channel"]]

    def by(col: str) -> list[dict]:
        per_seed = sched.groupby(["seed", col])[["contacts", "spend"]].sum()
        out = []
        names = segs if col == "segment" else channels
        for i, name in enumerate(names):
            rows = [per_seed.loc[(s, i)] if (s, i) in per_seed.index else None for s in fresh_seeds]
            c = [0.0 if r is None else float(r["contacts"]) for r in rows]
            sp = [0.0 if r is None else float(r["spend"]) for r in rows]
            out.append({col: name, "contacts": interval(c), "spend": interval(sp)})
        return out

    per_period = (
        sched.groupby(["seed", "period"])[["contacts", "spend"]].sum().groupby("period").mean()
        if len(sched)
        else pd.DataFrame(columns=["contacts", "spend"])
    )
    by_period = [
        {"period": int(p), "contacts": float(r["contacts"]), "spend": float(r["spend"])}
        for p, r in per_period.iterrows()
    ]

    from sim.history import restore_customer_ids

    first = planned[0].first_period
    ids = book["customer_id"].to_numpy() if settings.customers is None else None
    names = np.asarray(world.catalogue.names, dtype=object)
    ch_of = np.array(["none"] + [channels[i] for i in world.catalogue.contact_channel_index()[1:]], dtype=object)
    seg_idx = book["segment"].to_numpy() if "segment" in book.columns else np.zeros(len(book), int)
    contacts = pd.DataFrame(
        {
            "customer_id": restore_customer_ids(ids[first["row"].to_numpy()], world.customer_id_type)
            if ids is not None
            else first["row"].to_numpy(),
            "action": names[first["action"].to_numpy()],
            "channel": ch_of[first["action"].to_numpy()],
            "segment": [segs[int(i)] for i in seg_idx[first["row"].to_numpy()]] if ids is not None else "",
            "value": first["value"].to_numpy(),
            "cost": first["cost"].to_numpy(),
        }
    )
    unit = world.economics.money_unit
    contacts["reason"] = [_reason(v, c, price, rule.pacing, unit) for v, c in zip(contacts["value"], contacts["cost"])]
    contacts = contacts.sort_values("value", ascending=False, kind="stable").reset_index(drop=True)

    spent_all = float(np.mean(spend)) >= 0.95 * settings.budget  # the budget, not the constraints, ends spending
    shadow = [
        {
            "constraint": "budget",
            "shadow_price": (0.0 if price is None or not spent_all else price)
            if rule.pacing == "horizon"
            else float("nan"),
            "meaning": "discounted CLV (over the whole book) that one more unit of budget buys at the margin: "
            "the horizon price"
            + ("" if spent_all else f"; 0: the constraints keep the spend at {float(np.mean(spend)):,.0f}"),
        }
    ]
    mults = [m for r in fresh for m in r.multipliers]
    if mults and constraints:
        m = np.mean(np.array(mults), axis=0)
        offset = len(m) - len(constraints)
        for k, c in enumerate(constraints):
            unit = {
                "capacity": "one more contact allowed",
                "max-share": "one more unit of share (0.01 = one percentage point: a hundredth of it)",
                "min-coverage": "one more unit of coverage required (0.01 = one percentage point: a hundredth of "
                "it; a cost)",
            }.get(c.kind, "one more unit")
            shadow.append(
                {
                    "constraint": c.name,
                    "shadow_price": float(m[offset + k]) * T,
                    "meaning": f"discounted CLV over the horizon of {unit} in every period",
                }
            )

    n = ctx.customers
    doc = {
        "budget": float(settings.budget),
        "horizon": T,
        "pacing": rule.pacing,
        "price": price,
        "policy": ctx.policy_label,
        "customers": int(n),
        "seeds": {"planning": plan_seeds, "fresh": fresh_seeds},
        "spend": interval(spend),
        "spend_share_min": float(min(spend) / settings.budget),
        "spend_share_max": float(max(spend) / settings.budget),
        "policy_alone_spend": interval([a.spend for a in alone_f]),
        "budget_binds": bool(np.mean([a.spend for a in alone_p]) > settings.budget and spent_all),
        "clv": interval([b.clv.mean() for b in fresh]),
        "clv_none": interval([x.clv.mean() for x in none_f]),
        "contacts": interval([b.contacts / n for b in fresh]),
        "policy_alone_contacts": interval([a.contacts / n for a in alone_f]),
        "clv_policy_alone": interval([a.clv.mean() for a in alone_f]),
        "lift_vs_none": fresh_iv,
        "lift_vs_policy_alone": interval(lift_alone),
        "policy_alone_lift_vs_none": interval(alone_lift),
        "predicted_lift": pred_iv,
        "fresh_lift": fresh_iv,
        "check": {
            "predicted_inside_fresh_ci": agrees,
            "difference": pred_iv["mean"] - fresh_iv["mean"],
            "note": "predicted on the planning seeds (where the price was set); fresh seeds were used for nothing else",
        },
        "roi": interval([lf * n / max(s, 1e-12) for lf, s in zip(lift_none, spend)]),
        "shadow_prices": shadow,
        "by_segment": by("segment"),
        "by_channel": by("channel"),
        "by_period": by_period,
        "value_model": ctx.values.fit,
        "price_search": trace,
        "first_period_contacts": int(len(contacts)),
        "units": "per customer over the horizon, discounted CLV (spend: cash over the whole horizon)",
        "seconds": {
            "values_and_references": ctx.seconds,
            "planning": t_plan,
            "total": ctx.seconds + time.perf_counter() - t0,
        },
    }
    return BudgetPlan(doc=doc, contacts=contacts, schedule=full)


def write_plan(plan: BudgetPlan, out: Path, extra_files: dict[str, str] | None = None) -> dict[str, str]:
    """DIR/contacts.parquet, DIR/schedule.parquet, DIR/plan.json, each written atomically;
    `extra_files` (name: path) are files written beside them (e.g. deployment.csv), listed in `files`."""
    from sim.atomic import atomic_write_json, atomic_write_parquet
    from sim.world import json_safe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "contacts": str(out / "contacts.parquet"),
        "schedule": str(out / "schedule.parquet"),
        **(extra_files or {}),
    }
    atomic_write_parquet(out / "contacts.parquet", plan.contacts)
    atomic_write_parquet(out / "schedule.parquet", plan.schedule)
    plan.doc["files"] = {**files, "plan": str(out / "plan.json")}
    atomic_write_json(out / "plan.json", json_safe(plan.doc))
    return plan.doc["files"]
