"""`clv plan`: the budgeted plan over a horizon (experiments.budget_plan), its frontier, and the
deployment with a randomised control group (experiments.deployment)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (
    ConnectTimeoutOpt,
    JsonOpt,
    _check_out,
    _check_world,
    _emit,
    _infeasible,
    _load_world,
    _progress,
    _user_errors,
    app,
)
from .outputs import PLAN_FILES
from .plan import _budget_list, _constraints


def _check_constraint_keys(world, constraints) -> None:
    """Every constraint names a segment, channel or action of the world (one line naming the option)."""
    from optimizer.problem import unknown_target
    from sim.errors import ConfigError

    for c in constraints:
        problem = unknown_target(c, world)
        if problem:
            raise ConfigError(f"{c.spec}: {problem}")


@app.command()
def plan(
    world_path: Path = typer.Argument(
        ..., metavar="WORLD", help="World JSON written by `clv calibrate` (its book beside it)."
    ),
    policy: str = typer.Option(
        "greedy_uplift",
        "--policy",
        help="The policy whose contacts the budget pays for: a baseline (none, random, bau, churn_threshold, "
        "greedy_uplift) or a folder from `clv train`.",
    ),
    budget: Optional[float] = typer.Option(
        None, "--budget", help="Cash for every contact of the horizon (catalogue costs): the plan written."
    ),
    budgets: Optional[str] = typer.Option(
        None,
        "--budgets",
        help="Comma-separated horizon budgets: the frontier by simulation (frontier.json, frontier.png), with "
        "bau's, greedy_uplift's and the policy alone's (spend, lift) beside it.",
    ),
    horizon: int = typer.Option(52, "--horizon", min=1, help="Periods the budget covers."),
    pacing: str = typer.Option(
        "horizon",
        "--pacing",
        help="horizon (one price for the whole horizon, set on planning seeds), even (the budget left spread "
        "over the periods left) or front (the budget left available every period).",
    ),
    capacity: list[str] = typer.Option(
        [], "--capacity", help="channel:NAME=N or action:NAME=N: at most N contacts per period (repeatable)."
    ),
    min_coverage: list[str] = typer.Option(
        [],
        "--min-coverage",
        help="segment:NAME=F: each period, at least a share F of the segment's proposed contacts go ahead (repeatable).",
    ),
    max_share: list[str] = typer.Option(
        [], "--max-share", help="segment:NAME=F: each period, the segment takes at most a share F of the spend."
    ),
    seeds: int = typer.Option(5, "--seeds", min=2, help="Planning seeds, and as many fresh seeds for the check."),
    seed: int = typer.Option(0, "--seed", help="First planning seed (fresh seeds start at seed + 10000)."),
    customers: Optional[int] = typer.Option(
        None,
        "--customers",
        min=10,
        help="Simulate this many twins (default: the whole book; then the contact list names the book's customers).",
    ),
    out: Path = typer.Option(..., "--out", help="Folder for contacts.parquet, schedule.parquet and plan.json."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=0, help="CPUs of the local Ray the seeds run on (default: all; 0 runs them in-process)."
    ),
    address: Optional[str] = typer.Option(None, "--address", help="An existing Ray cluster for the seeds."),
    connect_timeout: float = ConnectTimeoutOpt,
    control_share: list[str] = typer.Option(
        [],
        "--control-share",
        help="F or segment:NAME=F (repeatable): a randomised share of the book held out with no contact; writes "
        "deployment.csv (every book customer's action, group and exact propensity, a decisions table) and the "
        "experiment's power into plan.json (docs/deployment.md).",
    ),
    explore_share: Optional[float] = typer.Option(
        None,
        "--explore-share",
        help="With --control-share: a share E of the plan's first-period contacts replaced by a uniform draw "
        "among the customer's allowed actions, so every action keeps support (default 0).",
    ),
    experiment_horizon: Optional[int] = typer.Option(
        None,
        "--experiment-horizon",
        min=1,
        help="With --control-share: periods the read-out will measure, for the power (default 13, at most --horizon).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Spend a budget for the whole horizon on a policy's contacts: each period its proposals are
    valued, cut to the budget and the per-period constraints; the plan is judged on fresh seeds.

    With --budgets, the frontier by simulation as well (or alone).

    Example: clv plan world.json --policy greedy_uplift --budget 2000 --horizon 52 --seeds 5 --out plan/ --json
    """
    with _user_errors(), _infeasible(as_json):
        from sim.errors import ConfigError

        if budget is None and budgets is None:
            raise ConfigError("give --budget B (the plan) or --budgets B1,B2,... (the frontier), or both")
        if budget is not None and not (budget > 0 and budget < float("inf")):
            raise ConfigError("budget", value=budget, message="must be a finite number > 0")
        frontier_budgets = None
        if budgets is not None:
            frontier_budgets = _budget_list(budgets, "500,1000,2000")
            if not frontier_budgets or any(not (b > 0 and b < float("inf")) for b in frontier_budgets):
                raise ConfigError("budgets", value=repr(budgets), message="every budget must be a finite number > 0")
        from optimizer.budgeted import PACINGS

        if pacing not in PACINGS:
            raise ConfigError("pacing", value=repr(pacing), message=f"choose {', '.join(PACINGS)}")
        from policies.registry import check_policy_spec

        check_policy_spec(policy)
        cons = _constraints(capacity, min_coverage, max_share)
        deployment = _deployment_settings(control_share, explore_share, experiment_horizon, horizon, seed)
        if deployment is not None and budget is None:
            raise ConfigError("control_share", message="needs --budget B: the deployment is the plan at one budget")
        if deployment is not None and customers is not None:
            raise ConfigError(
                "control_share", message="names the book's customers; drop --customers (the plan then covers the book)"
            )
        _check_out(out, folder=True, inputs=(world_path, policy), writes=PLAN_FILES)
        _check_world(world_path)
        world, book = _load_world(world_path, "book")
        _check_constraint_keys(world, cons)
        if deployment is not None:
            from experiments.deployment import check_control_group, start_date

            start_date(world)
            check_control_group(world, book, deployment)
        from experiments.budget_frontier import plan_frontier, plot_plan_frontier
        from experiments.budget_plan import PlanSettings, plan_at, prepare_plan, write_plan
        from policies.registry import policy_label, resolve_policy

        settings = PlanSettings(
            budget=budget or max(frontier_budgets),
            horizon=horizon,
            pacing=pacing,
            seeds=seeds,
            seed=seed,
            customers=customers,
        )
        pol = resolve_policy(policy, world)
        n_budgets = (1 if budget is not None else 0) + len(frontier_budgets or [])
        total = 4 * seeds + 2 * seeds * n_budgets + (2 * seeds if frontier_budgets else 0)
        total += 2 * seeds if deployment is not None else 0
        done = [0]
        from experiments.ray_session import executor_session

        with (
            _progress(f"planning over {horizon} periods", total) as upd,
            executor_session(workers, address) as executor,
        ):

            def tick(stage: str, d: int, t: int) -> None:
                done[0] += 1
                upd(min(done[0], total), total)

            ctx = prepare_plan(world, book, pol, settings, policy_label(policy), progress=tick, executor=executor)
            result, frontier_doc, plans = None, None, {}
            if frontier_budgets:
                refs = {b: resolve_policy(b, world) for b in ("bau", "greedy_uplift") if b != policy}
                frontier_doc = plan_frontier(ctx, frontier_budgets, cons, refs, plans=plans)
            if budget is not None:  # a budget on the frontier is not planned twice
                result = plans.get(float(budget)) or plan_at(ctx, budget, cons)
            dep = None
            if deployment is not None and result is not None:
                from experiments.deployment import deploy, experiment_power

                dep = deploy(world, book, result.contacts, deployment)
                result.doc["experiment"] = experiment_power(
                    ctx, result.doc, dep, deployment, cons, executor=executor, progress=lambda k: tick("power", 0, 0)
                )
        if result is not None:
            extra = {}
            if dep is not None:
                from experiments.deployment import write_deployment

                out.mkdir(parents=True, exist_ok=True)
                extra["deployment"] = write_deployment(dep, out / "deployment.csv")
            write_plan(result, out, extra)
            doc = result.to_dict()
            if doc.get("experiment", {}).get("warning"):
                typer.echo(f"warning: {doc['experiment']['warning']}", err=True)
        else:
            doc = {}
        if frontier_doc is not None:
            from sim.atomic import atomic_write_json
            from sim.world import json_safe

            out.mkdir(parents=True, exist_ok=True)
            plot_plan_frontier(frontier_doc, out / "frontier.png")
            frontier_doc["files"] = {"frontier": str(out / "frontier.json"), "plot": str(out / "frontier.png")}
            atomic_write_json(out / "frontier.json", json_safe(frontier_doc))
            doc = {**doc, "frontier": frontier_doc} if doc else frontier_doc
    if result is None:
        lines = [f"frontier written to {out}/frontier.json and frontier.png (lift per customer on fresh seeds)"]
        for p in frontier_doc["points"]:
            iv = p["lift_vs_none"]
            lines.append(
                f"  budget {p['budget']:>12,.0f}: spend {p['spend']['mean']:>12,.0f}, lift {iv['mean']:+.3f} "
                f"[{iv['ci_low']:+.3f}, {iv['ci_high']:+.3f}]"
            )
        for r in frontier_doc["references"]:
            lines.append(
                f"  {r['policy']:>20}: spend {r['spend']['mean']:>12,.0f}, lift {r['lift_vs_none']['mean']:+.3f}; "
                f"frontier there {r['frontier_lift_at_its_spend']:+.3f}"
            )
        _emit(doc, as_json, "\n".join(lines))
        return
    lift, fresh_alone = doc["lift_vs_none"], doc["lift_vs_policy_alone"]
    exp = doc.get("experiment")
    exp_line = ""
    if exp is not None:
        mde = "none" if exp["mde"] is None else format(exp["mde"], ".4f")
        need = "none" if exp["control_share_needed"] is None else format(exp["control_share_needed"], ".3f")
        exp_line = (
            f"\n  deployment.csv: {exp['treatment_customers']:,} treatment, {exp['explore_customers']:,} explore, "
            f"{exp['control_customers']:,} control; over {exp['horizon_periods']} periods predicted lift "
            f"{exp['predicted_lift_per_customer']:+.4f} per customer, MDE {mde} "
            f"({'detectable' if exp['detectable'] else 'not detectable'}; control share needed {need})"
        )
    _emit(
        doc,
        as_json,
        f"plan written to {out}: {doc['first_period_contacts']:,} contacts in the first period\n"
        f"  spend {doc['spend']['mean']:,.0f} of {budget:,.0f} over {horizon} periods (pacing {pacing}, price "
        f"{'none' if doc['price'] is None else format(doc['price'], '.3f')})\n"
        f"  lift per customer vs contacting no one {lift['mean']:+.3f} [{lift['ci_low']:+.3f}, {lift['ci_high']:+.3f}] "
        f"on fresh seeds (predicted {doc['predicted_lift']['mean']:+.3f}); vs {doc['policy']} alone "
        f"{fresh_alone['mean']:+.3f} [{fresh_alone['ci_low']:+.3f}, {fresh_alone['ci_high']:+.3f}]"
        + (
            f"\n  frontier of {len(frontier_doc['points'])} budgets in {out}/frontier.json and frontier.png"
            if frontier_doc
            else ""
        )
        + exp_line,
    )


def _deployment_settings(
    control_share: list[str], explore_share: Optional[float], experiment_horizon: Optional[int], horizon: int, seed: int
):
    """The DeploymentSettings of --control-share, --explore-share and --experiment-horizon (None
    without --control-share); bad values are one line naming the option."""
    from sim.errors import ConfigError

    if not control_share:
        if explore_share is not None or experiment_horizon is not None:
            given = "explore_share" if explore_share is not None else "experiment_horizon"
            raise ConfigError(given, message="needs {key:control_share} F: it is part of the deployment")
        return None
    from experiments.deployment import DEFAULT_EXPERIMENT_HORIZON, DeploymentSettings, parse_control_shares

    overall, segments = parse_control_shares(control_share)
    if experiment_horizon is not None and experiment_horizon > horizon:
        raise ConfigError(
            "experiment_horizon", value=experiment_horizon, message="must be at most {key:horizon} (the plan's periods)"
        )
    return DeploymentSettings(
        control_share=overall,
        segment_shares=segments,
        explore_share=0.0 if explore_share is None else explore_share,
        seed=seed,
        horizon_periods=experiment_horizon or min(DEFAULT_EXPERIMENT_HORIZON, horizon),
    )
