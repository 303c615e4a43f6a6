"""The budgeted plan judged in the synthetic bank's generating world: a plan made on the world
calibrated from a `clv make-data` history, run on the true customers from the calibration date.

The generating world (sim.synthetic: the config, seed and random streams recorded in the
history's README.json, so the same customers and the same past) is run with the bank's logging
policy to the end of the calibration week. From there the book's customers (those the calibrated
world planned for) continue for the plan's horizon in three arms on common random numbers: no
contact, the policy alone, and the budgeted policy with the plan's price, budget and constraints.
The policy and the contact values see each true customer as the bank does: the observable state
(recency, frequency, monetary, tenure, stage, products, contacts, opt-outs) with the segment the
calibration gave them; the dynamics are the generating world's (latent rates, effects,
seasonality). Rewards are the data contract's (transaction margin + margins of products held -
cost), discounted as in the plan. The truth's intervals are over the continuation seeds only:
the customers are this bank's, not a draw of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import ConfigError

from .budget_plan import PlanContext, interval

TRUTH_KEY = 0x7A0E  # seed-sequence word of the continuation streams (independent of the generator's)


class _SeenState:
    """A true simulator's state with the calibrated segment in place of the true one."""

    def __init__(self, state, segment: np.ndarray):
        self._state = state
        self.segment = segment

    def __getattr__(self, name: str):
        return getattr(self._state, name)


class CalibratedView:
    """A generating-world simulator seen through the calibrated world: what `run_horizon` needs
    (observe, action_masks, step, state, policy_rng), the observations carrying the calibrated
    segment and the products and channels in the calibrated world's order; the dynamics are the
    true simulator's."""

    def __init__(self, sim, segment: np.ndarray, products: np.ndarray, channels: np.ndarray):
        self.sim = sim
        self.state = _SeenState(sim.state, np.asarray(segment))
        self.policy_rng = sim.policy_rng
        self._products, self._channels = products, channels  # calibrated column k = true column [k]

    def observe(self) -> dict[str, np.ndarray]:
        obs = dict(self.sim.observe())
        obs["segment"] = self.state.segment
        obs["products"] = obs["products"][:, self._products]
        obs["opted_out"] = obs["opted_out"][:, self._channels]
        return obs

    def action_masks(self) -> np.ndarray:
        return self.sim.action_masks()

    def step(self, actions):
        return self.sim.step(actions)


def bank_config(history_folder):
    """The BankConfig recorded in a `clv make-data` folder's README.json (ConfigError otherwise);
    a BankConfig is returned as it is."""
    from sim.synthetic import BankConfig

    if isinstance(history_folder, BankConfig):
        return history_folder
    path = Path(history_folder) / "README.json"
    try:
        cfg = json.loads(path.read_text())["config"]
        return BankConfig(**cfg)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: not a `clv make-data` folder's README.json ({type(e).__name__}); the generating world "
            "can only be rebuilt for a synthetic history"
        ) from None


def _column_orders(truth, world) -> tuple[np.ndarray, np.ndarray]:
    """Where each of the calibrated world's products and opt-out channels sits in the true world's
    columns, after checking that both worlds have the same actions (the masks are the true world's)."""
    if list(truth.catalogue.names) != list(world.catalogue.names):
        raise ConfigError(
            f"the calibrated world's actions ({', '.join(world.catalogue.names)}) are not the generating world's "
            f"({', '.join(truth.catalogue.names)})"
        )
    out = []
    for what, a, b in (
        ("products", list(truth.products), list(world.products)),
        ("channels", list(truth.catalogue.channels), list(world.catalogue.channels)),
    ):
        if sorted(a) != sorted(b):
            raise ConfigError(
                f"the calibrated world's {what} ({', '.join(b)}) are not the generating world's ({', '.join(a)})"
            )
        out.append(np.array([a.index(x) for x in b], np.int64))
    return out[0], out[1]


def calibration_weeks(cfg, calibration_end) -> int:
    """Whole weeks of the generating world's window that end on or before `calibration_end` (the
    plan's first period is the week after them; a calibration day inside a week drops that week)."""
    return ((pd.Timestamp(calibration_end) - pd.Timestamp(cfg.start)).days + 1) // 7


def truth_runs(
    ctx: PlanContext, history_folder: str | Path, rule, seeds: list[int], modes=("none", "policy", "budgeted")
) -> dict[str, list]:
    """Per mode, the HorizonRun of the book's true customers on each continuation seed."""
    from optimizer.budgeted import run_horizon
    from sim.population import WorldTables
    from sim.synthetic import logging_chooser, run_bank_weeks, start_bank_run

    cfg = bank_config(history_folder)
    world, book = ctx.world, ctx.book
    if world.calibration_end is None:
        raise ConfigError("the world has no calibration_end; calibrate it on the history first")
    run = start_bank_run(cfg)
    products, channels = _column_orders(run.world, world)
    weeks = calibration_weeks(cfg, world.calibration_end)
    if not 1 <= weeks < cfg.weeks:
        raise ConfigError(f"calibration_end {world.calibration_end} is outside the history's weeks")
    run_bank_weeks(run, logging_chooser(run), weeks=weeks)
    pos = {c: i for i, c in enumerate(run.cid)}
    ids = book["customer_id"].astype(str).to_numpy()
    missing = [c for c in ids if c not in pos]
    if missing:
        raise ConfigError(f"book customer {missing[0]} is not a customer of the generating world")
    idx = np.array([pos[c] for c in ids], np.int64)
    seg = book["segment"].to_numpy().astype(np.int64)
    tables = WorldTables.from_world(world)
    out: dict[str, list] = {m: [] for m in modes}
    for s in seeds:
        for m in modes:
            twin = run.sim.subset(idx, np.random.default_rng(np.random.SeedSequence([int(s), TRUTH_KEY])))
            twin.crn = True
            view = CalibratedView(twin, seg, products, channels)
            out[m].append(
                run_horizon(
                    world,
                    book,
                    ctx.policy_fn,
                    ctx.settings.horizon,
                    s,
                    m,
                    rule if m == "budgeted" else None,
                    ctx.values,
                    None,
                    tables,
                    sims=[view],
                )
            )
    return out


def check_in_truth(
    ctx: PlanContext, history_folder: str | Path, plan_doc: dict[str, Any], constraints: list | None, seeds: list[int]
) -> dict[str, Any]:
    """The plan of `plan_doc` (experiments.budget_plan.plan_at's, made on `ctx`) in the generating
    world: its lift over no contact and over the policy alone, its spend, and whether the lift
    predicted on the calibrated world (planning seeds) and measured there on fresh seeds lie
    inside the truth's 95 % interval."""
    from optimizer.budgeted import BudgetRule

    if ctx.settings.customers is not None:
        raise ConfigError("the check in the generating world runs the book itself: plan without --customers")
    rule = BudgetRule(
        plan_doc["budget"],
        ctx.settings.horizon,
        plan_doc["pacing"],
        price=plan_doc["price"],
        constraints=list(constraints or []),
    )
    runs = truth_runs(ctx, history_folder, rule, seeds)
    none, alone, planned = runs["none"], runs["policy"], runs["budgeted"]
    lift = interval([b.clv.mean() - z.clv.mean() for b, z in zip(planned, none)])
    pred, fresh = plan_doc["predicted_lift"], plan_doc["fresh_lift"]
    return {
        "budget": plan_doc["budget"],
        "seeds": list(seeds),
        "customers": int(len(ctx.book)),
        "lift_vs_none": lift,
        "lift_vs_policy_alone": interval([b.clv.mean() - a.clv.mean() for b, a in zip(planned, alone)]),
        "policy_alone_lift_vs_none": interval([a.clv.mean() - z.clv.mean() for a, z in zip(alone, none)]),
        "spend": interval([b.spend for b in planned]),
        "policy_alone_spend": interval([a.spend for a in alone]),
        "predicted_lift": pred,
        "calibrated_fresh_lift": fresh,
        "predicted_inside_truth_ci": bool(lift["ci_low"] <= pred["mean"] <= lift["ci_high"]),
        "fresh_inside_truth_ci": bool(lift["ci_low"] <= fresh["mean"] <= lift["ci_high"]),
        "units": "per customer of the book over the horizon, discounted CLV in the generating world",
    }


__all__ = ["CalibratedView", "bank_config", "calibration_weeks", "truth_runs", "check_in_truth"]
