"""`clv plan --budgets`: the frontier of a budgeted policy by simulation, one horizon budget at a
time on one prepared context (experiments.budget_plan), beside the (spend, lift) of the baselines
and of the policy alone on the same fresh seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import ConfigError

from .budget_plan import PlanContext, interval, plan_at


def plan_frontier(
    ctx: PlanContext,
    budgets: list[float],
    constraints: list | None = None,
    references: dict[str, Any] | None = None,
    plans: dict[float, Any] | None = None,
) -> dict[str, Any]:
    """For each horizon budget: the budgeted policy's lift over "none" on the fresh seeds with its
    interval, its spend, price and check; the marginal value of budget between budgets (total
    discounted CLV per unit of cash); and the (spend, lift) points of `references` (name -> policy:
    the baselines) and of the policy alone, each run on the same fresh seeds, with where the
    frontier stands at their spend (linear between budgets). `plans`, when given, receives each
    budget's whole BudgetPlan (the caller writes the one it keeps without planning it twice)."""
    from policies.base import as_simulator_policy

    budgets = sorted(set(float(b) for b in budgets))
    if not budgets or any(not (np.isfinite(b) and b > 0) for b in budgets):
        raise ConfigError("budgets", "give budgets that are finite numbers > 0, e.g. 500,1000,2000")
    n = ctx.customers
    points = []
    guess = None
    for b in budgets:
        made = plan_at(ctx, b, constraints, price_guess=guess)
        if plans is not None:
            plans[b] = made
        doc = made.to_dict()
        guess = doc["price"] if doc["price"] is not None else guess
        points.append(
            {
                k: doc[k]
                for k in (
                    "budget",
                    "spend",
                    "spend_share_min",
                    "spend_share_max",
                    "price",
                    "lift_vs_none",
                    "predicted_lift",
                    "lift_vs_policy_alone",
                    "check",
                    "shadow_prices",
                    "budget_binds",
                )
            }
        )
    for prev, cur in zip(points, points[1:]):
        ds = cur["spend"]["mean"] - prev["spend"]["mean"]
        cur["marginal_value"] = (
            (cur["lift_vs_none"]["mean"] - prev["lift_vs_none"]["mean"]) * n / ds if ds > 1e-9 else None
        )
    if points:
        points[0]["marginal_value"] = points[0]["lift_vs_none"]["mean"] * n / max(points[0]["spend"]["mean"], 1e-12)

    def lift_at(spend: float) -> float:
        xs = [0.0] + [p["spend"]["mean"] for p in points]
        ys = [0.0] + [p["lift_vs_none"]["mean"] for p in points]
        return float(np.interp(spend, xs, ys))  # flat beyond the largest budget's spend

    refs = {f"{ctx.policy_label} alone": ctx.alone_fresh}
    for name, pol in (references or {}).items():
        if name not in refs:
            refs[name] = ctx.runs(ctx.fresh_seeds, "policy", policy_fn=as_simulator_policy(pol))
    ref_points = []
    for name, runs in refs.items():
        spend = [r.spend for r in runs]
        lift = [r.clv.mean() - z.clv.mean() for r, z in zip(runs, ctx.none_fresh)]
        iv = interval(lift)
        at = lift_at(float(np.mean(spend)))
        ref_points.append(
            {
                "policy": name,
                "spend": interval(spend),
                "clv": interval([r.clv.mean() for r in runs]),
                "contacts": interval([r.contacts / n for r in runs]),
                "lift_vs_none": iv,
                "frontier_lift_at_its_spend": at,
                "frontier_at_least_as_good": bool(at >= iv["ci_low"]),
                "within_frontier_range": bool(np.mean(spend) <= points[-1]["spend"]["mean"] * 1.0001),
            }
        )
    lifts = [p["lift_vs_none"] for p in points]
    increasing = all(b["ci_high"] >= a["mean"] for a, b in zip(lifts, lifts[1:]))
    mv = [p["marginal_value"] for p in points[1:] if p.get("marginal_value") is not None]
    concave = all(b <= a * 1.05 + 1e-9 for a, b in zip(mv, mv[1:]))
    return {
        "horizon": ctx.settings.horizon,
        "pacing": ctx.settings.pacing,
        "policy": ctx.policy_label,
        "customers": int(n),
        "points": points,
        "references": ref_points,
        "increasing_within_ci": bool(increasing),
        "concave": bool(concave),
        "honest": bool(all(p["check"]["predicted_inside_fresh_ci"] for p in points)),
        "units": "lift per customer over the horizon, discounted CLV; spend: cash over the horizon; marginal "
        "value: total discounted CLV per unit of cash",
        "currency": ctx.world.economics.money_unit,
    }


def plot_plan_frontier(doc: dict[str, Any], path: Path) -> None:
    """The simulated frontier (lift with its fresh-seed interval against spend) and every reference's
    (spend, lift) point on one PNG, written atomically."""
    from matplotlib.figure import Figure

    from sim.atomic import atomic_path

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    pts = doc["points"]
    x = [p["spend"]["mean"] for p in pts]
    y = [p["lift_vs_none"]["mean"] for p in pts]
    ax.fill_between(
        x, [p["lift_vs_none"]["ci_low"] for p in pts], [p["lift_vs_none"]["ci_high"] for p in pts], alpha=0.25
    )
    ax.plot(x, y, "o-", label=f"budgeted {doc['policy']} (fresh seeds, 95% CI)")
    for r in doc["references"]:
        iv = r["lift_vs_none"]
        ax.errorbar(
            r["spend"]["mean"],
            iv["mean"],
            yerr=[[iv["mean"] - iv["ci_low"]], [iv["ci_high"] - iv["mean"]]],
            fmt="s",
            capsize=3,
            label=r["policy"],
        )
    unit = doc.get("currency") or "margin units"
    ax.set_xlabel(f"cash spent over {doc['horizon']} periods ({unit})")
    ax.set_ylabel(f"CLV lift per customer vs contacting no one ({unit})")
    ax.axhline(0, color="#999", lw=0.8)
    ax.legend(fontsize=8)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
