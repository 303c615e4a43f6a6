"""The one-period planning commands: values (the optimizer's value table), allocate (a budget plan)
and frontier (the best plan's value across budgets); `clv plan` (a horizon) is in budget.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import JsonOpt, _check_out, _check_world, _emit, _infeasible, _load_world, _progress, _user_errors, app

CapacityOpt = typer.Option([], "--capacity", help="channel:NAME=N or action:NAME=N: at most N contacts (repeatable).")
MinCoverageOpt = typer.Option(
    [],
    "--min-coverage",
    help="segment:NAME=F: at least a share F of the segment's customers get an action (repeatable).",
)
MaxShareOpt = typer.Option(
    [], "--max-share", help="segment:NAME=F: the segment takes at most a share F of the spend (repeatable)."
)
MethodOpt = typer.Option(
    "auto",
    "--method",
    help="auto (exact for segment-level and small tables, else "
    "lagrangian), exact (OR-Tools MIP) or lagrangian (whole book).",
)
SolverOpt = typer.Option("SCIP", "--solver", help="MIP solver for --method exact: SCIP, CP_SAT or HIGHS.")
TimeLimitOpt = typer.Option(
    None,
    "--time-limit",
    min=0.1,
    help="Seconds the exact MIP solver may take (then its best plan and bound are reported).",
)


@app.command()
def values(
    world_path: Path = typer.Argument(
        ..., metavar="WORLD", help="World JSON from `clv calibrate` (its book beside it)."
    ),
    source: str = typer.Option(
        ...,
        "--source",
        help="sim: the world model's simulated incremental CLV of each action "
        "over none (common random numbers); policy: a policy's advantage "
        "estimates Q(s,a) - Q(s,none), smoothed over customers (needs --policy).",
    ),
    policy: Optional[str] = typer.Option(
        None,
        "--policy",
        help="For --source policy: a baseline (none, random, bau, "
        "churn_threshold, greedy_uplift) or a folder from `clv train`.",
    ),
    continuation: Optional[str] = typer.Option(
        None,
        "--continuation",
        help="For --source sim: what follows the first "
        "period: none (default), a baseline or a "
        "folder from `clv train`.",
    ),
    customers: Optional[int] = typer.Option(
        None,
        "--customers",
        min=1,
        help="Customers valued (default: the whole book; drawn from it as `clv simulate` does).",
    ),
    horizon: Optional[int] = typer.Option(
        None, "--horizon", min=1, help="Periods each branch is followed (default 52)."
    ),
    replications: Optional[int] = typer.Option(
        None, "--replications", min=1, help="Twin draws x futures averaged per customer (default 4)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same table."),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Parquet file for the value table (customer_id, segment, action, "
        "channel, value, cost; read by the optimizer).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Build the optimizer's value table: per customer and allowed action, the expected incremental CLV
    of contacting now over doing nothing (net of the action's cost) and the cost charged to the budget.

    Example: clv values world.json --source sim --customers 20000 --horizon 52 --out values.parquet --json
    """
    with _user_errors():
        from sim.errors import ConfigError

        if source not in ("sim", "policy"):
            raise ConfigError(f"--source {source!r}: choose sim (the world model) or policy (with --policy P)")
        if source == "policy" and policy is None:
            raise ConfigError("--source policy needs --policy P (a baseline or a folder from `clv train`)")
        if source == "sim" and policy is not None:
            raise ConfigError("--policy is for --source policy; with --source sim give --continuation")
        if source == "policy" and continuation is not None:
            raise ConfigError("--continuation is for --source sim; --source policy follows --policy")
        option, spec = ("policy", policy) if source == "policy" else ("continuation", continuation or "none")
        from policies.registry import check_policy_spec

        check_policy_spec(spec, key=option)
        if Path(out).suffix.lower() == ".csv":
            raise ConfigError(f"--out {out}: the value table is written as Parquet; give a .parquet file name")
        _check_out(out, inputs=(world_path, policy, continuation))
        _check_world(world_path)
        from experiments.results import ValueTableResult
        from optimizer.value_sources import (
            DEFAULT_HORIZON,
            DEFAULT_REPLICATIONS,
            values_from_policy,
            values_from_simulation,
        )
        from sim.atomic import atomic_write_parquet

        horizon = horizon or DEFAULT_HORIZON
        replications = replications or DEFAULT_REPLICATIONS
        world, book = _load_world(world_path, "book")
        n = customers or len(book)
        t0 = time.perf_counter()
        with _progress(f"valuing {n:,} customers x {world.n_actions - 1} actions", n * horizon * replications) as upd:
            done = [0]

            def tick(m: int) -> None:
                done[0] += m
                upd(done[0])

            if source == "sim":
                df = values_from_simulation(
                    world, book, customers, horizon, replications, seed, continuation=spec, progress=tick
                )
            else:
                df = values_from_policy(world, book, spec, customers, horizon, replications, seed, progress=tick)
        secs = time.perf_counter() - t0
        atomic_write_parquet(out, df)
        doc = ValueTableResult(
            df,
            str(out),
            source,
            spec,
            horizon,
            replications,
            world=world,
            world_path=str(world_path),
            seed=seed,
            seconds=secs,
        ).to_dict()
    lines = [
        f"wrote {doc['rows']:,} rows ({doc['customers']:,} customers, {doc['customers_with_options']:,} with an "
        f"allowed contact) to {out} in {secs:.1f}s",
        f"{'action':<26}{'rows':>9}{'mean value':>12}{'mean cost':>11}",
    ]
    for a in world.catalogue.names[1:]:
        lines.append(
            f"{a:<26}{doc['rows_by_action'][a]:>9,}{doc['mean_value_by_action'][a]:>12.2f}"
            f"{doc['mean_cost_by_action'][a]:>11.2f}"
        )
    if source == "policy":
        d = doc["diagnostics"]
        lines.append(
            f"advantage fit: held-out R^2 {d['heldout_r2']:.3f}; "
            + ("smoothed values" if d["smoothed"] else "raw means kept (fit no better than the mean)")
        )
    _emit(doc, as_json, "\n".join(lines))


def _constraints(capacity: list[str], min_coverage: list[str], max_share: list[str]) -> list:
    """The optimizer's Constraint objects of the --capacity, --min-coverage and --max-share options."""
    from optimizer.problem import parse_constraint

    return (
        [parse_constraint("capacity", c) for c in capacity]
        + [parse_constraint("min-coverage", c) for c in min_coverage]
        + [parse_constraint("max-share", c) for c in max_share]
    )


def _budget_list(text: str, example: str) -> list[float]:
    """The numbers of a comma-separated --budgets option."""
    from sim.errors import ConfigError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            "budgets", value=repr(text), message=f"expected comma-separated numbers, e.g. {example}"
        ) from None


def _allocation_problem(
    values_path: Path, budget: Optional[float], capacity: list[str], min_coverage: list[str], max_share: list[str]
):
    from optimizer.problem import AllocationProblem, budget_constraint
    from optimizer.values import load_values

    cons = _constraints(capacity, min_coverage, max_share)
    if budget is not None:
        cons.insert(0, budget_constraint(budget))
    table = load_values(values_path)
    return AllocationProblem(table, cons)


@app.command()
def allocate(
    values_path: Path = typer.Argument(
        ...,
        metavar="VALUES",
        help="Value table (Parquet or CSV): customer_id, segment, action, channel, value, cost[, count].",
    ),
    budget: float = typer.Option(..., "--budget", help="Total marketing budget (same units as the cost column)."),
    capacity: list[str] = CapacityOpt,
    min_coverage: list[str] = MinCoverageOpt,
    max_share: list[str] = MaxShareOpt,
    method: str = MethodOpt,
    solver: str = SolverOpt,
    time_limit: Optional[float] = TimeLimitOpt,
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Parquet file for the per-customer plan with its explanation (value, priced cost, runner-up, margin).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Split a budget across customers: at most one action per customer, only eligible actions,
    within the budget, channel capacities and action caps, with minimum coverage and maximum spend
    share per segment. Reports the plan's value, an upper bound and the certified gap, usage of
    every constraint, shadow prices and totals. Exit 3 with a diagnosis when the constraints
    cannot all hold.

    Example: clv allocate values.parquet --budget 20000 --capacity channel:rm_call=300 --min-coverage segment:mass=0.2 --out plan.parquet --json
    """
    with _user_errors(), _infeasible(as_json):
        if out is not None and Path(out).suffix.lower() == ".csv":
            from sim.errors import ConfigError

            raise ConfigError(f"--out {out}: the plan is written as Parquet; give a .parquet file name")
        _check_out(out, inputs=(values_path,))
        problem = _allocation_problem(values_path, budget, capacity, min_coverage, max_share)
        from optimizer.allocate import allocate as solve_allocation
        from sim.atomic import atomic_write_parquet

        with _progress(f"allocating {problem.table.n:,} rows", 200) as upd:
            result = solve_allocation(
                problem, method=method, solver=solver, time_limit=time_limit, progress=lambda i: upd(min(i, 200))
            )
        doc = result.summary()
        if out is not None:
            atomic_write_parquet(out, result.plan_frame())
            doc["out"] = str(out)
    lines = [
        f"{doc['method']} ({doc['solver']}): value {doc['objective']:,.2f}, bound {doc['bound']:,.2f}, "
        f"gap {100 * doc['gap']:.4f}%, {doc['assigned_customers']:,} of "
        f"{doc['customers']:,} customers assigned, {doc['seconds']:.2f}s",
        # the budget pays the table's cost column, which `clv values` measures as incremental cost
        f"  incremental cost {doc['incremental_cost']:,.2f} (the table's cost column, charged to the budget); "
        + (
            "cash not known (the value table has no cash_cost column; `clv values` writes one)"
            if doc["cash_spend"] is None
            else f"cash {doc['cash_spend']:,.2f} (catalogue cost of the contacts made)"
        ),
    ]
    for u, sp in zip(doc["usage"], doc["shadow_prices"]):
        lines.append(
            f"  {u['constraint']:<34} used {u['used']:>14,.4g} of {u['limit']:<12,.4g} "
            f"shadow price {sp['shadow_price']:,.4g} per {sp['per']}"
        )
    if out is not None:
        lines.append(f"plan written to {out}")
    _emit(doc, as_json, "\n".join(lines))


@app.command()
def frontier(
    values_path: Path = typer.Argument(..., metavar="VALUES", help="Value table (Parquet or CSV), as for allocate."),
    budgets: str = typer.Option(..., "--budgets", help="Comma-separated budgets, e.g. 1e5,2e5,5e5."),
    capacity: list[str] = CapacityOpt,
    min_coverage: list[str] = MinCoverageOpt,
    max_share: list[str] = MaxShareOpt,
    method: str = MethodOpt,
    solver: str = SolverOpt,
    time_limit: Optional[float] = TimeLimitOpt,
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Write a PNG of the frontier here (none is written without it)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """The efficient frontier: for each budget the best plan's value, its bound and gap, the
    marginal value of one more unit of budget, and every shadow price; each solve starts from the
    previous budget's multipliers. Writes a PNG.

    Example: clv frontier values.parquet --budgets 5000,10000,20000,40000 --capacity channel:rm_call=300 --json
    """
    with _user_errors(), _infeasible(as_json):
        from sim.errors import ConfigError

        levels = _budget_list(budgets, "1e5,2e5")
        png = plot  # written only where asked: a run's frontier.png beside the table is not overwritten
        if png is not None and png.suffix.lower() != ".png":
            raise ConfigError(f"--plot {png}: give a .png file name")
        if png is not None:
            _check_out(png, "--plot", inputs=(values_path,))
        problem = _allocation_problem(values_path, None, capacity, min_coverage, max_share)
        from optimizer.frontier import frontier as sweep
        from optimizer.frontier import plot_frontier
        from sim.atomic import atomic_path

        with _progress(f"frontier over {len(levels)} budgets", len(levels)) as upd:
            doc = sweep(problem, levels, method=method, solver=solver, time_limit=time_limit, progress=upd)
        if png is not None:
            with atomic_path(png) as tmp:
                plot_frontier(doc, tmp)
        doc["plot"] = None if png is None else str(png)
    lines = [f"{'budget':>14}{'value':>16}{'gap %':>10}{'incr. cost':>16}{'cash':>16}{'marginal':>11}{'shadow':>10}"]
    for p in doc["points"]:
        if p["objective"] is None:
            lines.append(f"{p['budget']:>14,.0f}  infeasible: {p['message']}")
            continue
        mv = "" if p["marginal_value"] is None else f"{p['marginal_value']:.4f}"
        cash = "–" if p.get("cash_spend") is None else f"{p['cash_spend']:,.2f}"
        lines.append(
            f"{p['budget']:>14,.0f}{p['objective']:>16,.2f}{100 * p['gap']:>10.4f}{p['spend']:>16,.2f}"
            f"{cash:>16}{mv:>11}{p['budget_shadow_price']:>10.4f}"
        )
    lines.append(f"{doc['method']}: {len(levels)} budgets in {doc['seconds']:.1f}s" + (f"; plot: {png}" if png else ""))
    _emit(doc, as_json, "\n".join(lines))
