"""The offline-evaluation commands: ope (a policy valued from the logged decisions) and backtest
(policies ranked after a split date by OPE and by simulation)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (
    ConnectTimeoutOpt,
    JsonOpt,
    _check_out,
    _check_source,
    _check_world,
    _date,
    _emit,
    _load,
    _names,
    _progress,
    _user_errors,
    _write_json,
    app,
)

# options shared by the offline-evaluation commands (ope, backtest)
ClipOpt = typer.Option(None, "--clip", help="Cap on importance weights (ips, dr).")
BootstrapOpt = typer.Option(1000, "--bootstrap", help="Bootstrap resamples of customers for the intervals.")
AlphaOpt = typer.Option(0.05, "--alpha", help="1 - confidence level of the intervals.")
FoldsOpt = typer.Option(5, "--folds", help="Cross-fitting folds of the outcome models (by customer).")
RewardModelOpt = typer.Option("ridge", "--reward-model", help="ridge (fast) or hgb (gradient boosting).")
RayWorkersOpt = typer.Option(
    None, "--workers", min=0, help="CPUs of the local Ray for the bootstrap (default: all; 0 runs it in-process)."
)
RayAddressOpt = typer.Option(None, "--address", help="An existing Ray cluster for the bootstrap.")
OutJsonOpt = typer.Option(None, "--out", help="Write the result JSON here too.")


def _ope_world(history, world_path: Optional[Path], start: Optional[str]):
    """(world, book, note) for offline evaluation: the given world, or one calibrated on the history
    before `start` (the whole history without one)."""
    if world_path is not None:
        from sim.world import WorldModel

        world = WorldModel.load(world_path)
        return world, world.read_book(world_path), str(world_path)
    import pandas as pd

    from sim.calibrate import calibrate as fit

    last = history.transactions["date"].max()
    cut = pd.Timestamp(start) - pd.Timedelta(days=1) if start else last
    typer.echo(f"calibrating a world on {history.folder} up to {cut.date()} (give --world to reuse one)", err=True)
    world, book, _ = fit(history, cut)
    return world, book, f"calibrated on the history up to {cut.date()}"


@app.command()
def ope(
    history_dir: Path = typer.Argument(
        ...,
        metavar="HISTORY_DIR",
        help="History folder with decisions.csv (customer_id, date, action, propensity[, cost]).",
    ),
    policy: Optional[str] = typer.Option(
        None,
        "--policy",
        help="The candidate: a baseline (none, random, bau, "
        "churn_threshold, greedy_uplift) or a folder from `clv train`.",
    ),
    target_prob_column: Optional[str] = typer.Option(
        None,
        "--target-prob-column",
        help="Instead of --policy: a "
        "decisions column holding the candidate's probability of each "
        "logged action (a policy made elsewhere); ips/snips (pdis/wpdis).",
    ),
    target_probs: Optional[Path] = typer.Option(
        None,
        "--target-probs",
        help="Instead of --policy: a CSV or Parquet file of a candidate made elsewhere, one row per logged "
        "decision and action: customer_id, date, action, probability (absent rows are 0). Every estimator "
        "can use it; the model-based ones fit on the states rebuilt in --world.",
    ),
    world_path: Optional[Path] = typer.Option(
        None,
        "--world",
        help="World JSON the policy acts in (default: calibrate the history before --start, or all of it).",
    ),
    estimators: str = typer.Option(
        "dm,ips,snips,dr",
        "--estimators",
        help="Comma-separated: dm, ips, snips, dr, "
        "sndr (per_decision); pdis, wpdis, dr_seq, wdr, fqe, mis, drl (per_customer; the one-step "
        "names run their sequential counterparts).",
    ),
    estimand: str = typer.Option(
        "per_decision",
        "--estimand",
        help="per_decision (mean reward after a decision) or per_customer (sum over a customer's decisions).",
    ),
    discount: Optional[float] = typer.Option(None, "--discount", help="Per-decision discount of the per_customer sum."),
    clip: Optional[float] = ClipOpt,
    bootstrap: int = BootstrapOpt,
    alpha: float = AlphaOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the folds and the bootstrap."),
    folds: int = FoldsOpt,
    reward_model: str = RewardModelOpt,
    start: Optional[str] = typer.Option(None, "--start", help="Evaluate decisions from this date."),
    end: Optional[str] = typer.Option(None, "--end", help="... up to this date (exclusive); closes reward windows."),
    window: Optional[int] = typer.Option(
        None,
        "--window",
        help="A decision's reward is summed over the N periods after it (the candidate's choice, then what "
        "the bank did), so a one-step estimate sees product and retention value; default: to the customer's "
        "next decision. per_decision only.",
    ),
    model_replications: int = typer.Option(
        10,
        "--model-replications",
        min=0,
        help="Simulator seeds of the model-based answer shown beside the estimates (`model_based`: the "
        "candidate run in the world's simulator from the logged customers' states; --policy only); 0 skips it.",
    ),
    workers: Optional[int] = RayWorkersOpt,
    address: Optional[str] = RayAddressOpt,
    connect_timeout: float = ConnectTimeoutOpt,
    out: Optional[Path] = OutJsonOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Estimate a candidate policy's value from the logged decisions (off-policy evaluation), with
    bootstrap confidence intervals (Ray tasks), effective sample sizes and a warning when the
    logging policy rarely did what the candidate would do; beside them, the world's simulator's own
    (model-based) value of a --policy candidate.

    Example: clv ope bank/ --policy greedy_uplift --world world.json --estimators dm,ips,snips,dr --json
    """
    with _user_errors():
        from sim.errors import ConfigError

        _check_source(history_dir, None)
        _check_out(out, inputs=(history_dir, world_path, target_probs, policy))
        start_d = _date(start, "--start") if start else None
        end_d = _date(end, "--end") if end else None
        if sum(x is not None for x in (policy, target_prob_column, target_probs)) != 1:
            raise ConfigError("give one candidate: --policy P, --target-prob-column COL or --target-probs FILE")
        if target_probs is not None and not target_probs.is_file():
            raise ConfigError(
                "target_probs", value=str(target_probs), message="no such file; give a CSV or Parquet file"
            )
        if world_path is not None:
            _check_world(world_path)
        if model_replications == 1:  # now, not after the evaluation's work
            raise ConfigError(
                "model_replications", value=1, message="give at least 2 seeds for an interval (0: no model)"
            )
        from experiments.ope import OPESettings, evaluate_offline, logged_decisions
        from experiments.ope.evaluate import NEEDS_EVERY_ACTION
        from experiments.ray_session import check_address, executor_session

        check_address(address)  # now, not after the evaluation's work: its Ray starts at the bootstrap

        settings = OPESettings(
            estimand=estimand,
            estimators=_names(estimators),
            discount=discount,
            clip=clip,
            n_boot=bootstrap,
            alpha=alpha,
            seed=seed,
            folds=folds,
            reward_model=reward_model,
            start=start_d,
            end=end_d,
            window=window,
        )
        history = _load(history_dir, None)
        world = book = pol = None
        world_note = None
        if policy is not None:
            world, book, world_note = _ope_world(history, world_path, start_d)
            from policies.registry import resolve_policy

            pol = resolve_policy(policy, world)
        elif target_probs is not None and (
            world_path is not None or any(settings.estimator_of(k) in NEEDS_EVERY_ACTION for k in settings.estimators)
        ):
            world, book, world_note = _ope_world(history, world_path, start_d)
        model = pol is not None and model_replications > 0
        # the states rebuilt once, for the estimates and the model-based answer
        logged = logged_decisions(history, start_d, end_d, world, book, window) if model else None
        # one Ray session (none with --workers 0) for the bootstrap and the simulator's replications
        with executor_session(workers, address) as executor, _progress("offline evaluation", 1) as upd:
            res = evaluate_offline(
                history,
                settings,
                policy=pol,
                world=world,
                book=book,
                target_column=target_prob_column,
                target_probs=target_probs,
                executor=executor,
                progress=lambda stage, d, t: upd(d, t),
                logged=logged,
            )
            res["model_based"] = None
            if model:
                from experiments.ope.model_based import model_based_value

                res["model_based"] = model_based_value(
                    history, logged, pol, settings, book, model_replications, executor, res["logged_policy_value"]
                )
        res["history"] = str(history_dir)
        res["world"] = world_note
        if policy is not None:
            res["policy"] = policy
        if out is not None:
            _write_json(out, res)
    lines = [
        f"{res['policy']} on {res['decisions']:,} decisions of {res['customers']:,} customers "
        f"({res['window']['start']} to {res['window']['end']}), estimand {res['estimand']}, "
        f"reward window {res['window']['rule']}",
        f"logged policy's own value: {res['logged_policy_value']:.4g}",
        f"{'estimator':<10}{'value':>12}{'95% CI' if abs(alpha - 0.05) < 1e-12 else 'CI':>26}{'ESS':>10}",
    ]
    for k, e in res["estimates"].items():
        lines.append(f"{k:<10}{e['value']:>12.4g}   [{e['ci_low']:>10.4g}, {e['ci_high']:>10.4g}]{e['ess']:>10.0f}")
    if res.get("recommended"):
        lines.append(f"recommended: {res['recommended']['estimator']}")
    mb = res.get("model_based")
    if mb:
        lines.append(
            f"{'model':<10}{mb['value']:>12.4g}   [{mb['ci_low']:>10.4g}, {mb['ci_high']:>10.4g}]"
            f"  the world's simulator, {mb['replications']} seeds (not an OPE estimate; its interval is "
            "Monte-Carlo only, excludes the model's error)"
        )
        rp = mb["logged_replay"]
        rel = f" ({rp['gap'] / abs(rp['actual']):+.1%})" if rp["actual"] else ""
        lines.append(
            f"{'':<10}replaying the logged actions it gives {rp['value']:.4g}, the logged policy earned "
            f"{rp['actual']:.4g}{rel}: the model's own error on a known value"
        )
    if res["diagnostics"].get("warning"):
        lines.append("warning: " + res["diagnostics"]["warning"])
    _emit(res, as_json, "\n".join(lines))


@app.command()
def backtest(
    history_dir: Path = typer.Argument(
        ...,
        metavar="HISTORY_DIR",
        help="History folder with transactions and decisions.csv (customer_id, date, action, propensity[, cost]).",
    ),
    split_date: str = typer.Option(
        ...,
        "--split-date",
        help="Calibrate on the history before this date; evaluate on the decisions and outcomes from it on.",
    ),
    policies: str = typer.Option(
        ...,
        "--policies",
        help="Comma-separated candidates (at least two): baselines (none, "
        "random, bau, churn_threshold, greedy_uplift) or folders from `clv train`.",
    ),
    world_path: Optional[Path] = typer.Option(
        None,
        "--world",
        help="World JSON (its book beside it) calibrated up to the day before the split; skips calibration.",
    ),
    estimators: str = typer.Option(
        "dm,ips,snips,dr",
        "--estimators",
        help="Comma-separated OPE estimators of the "
        "per_decision estimand: dm, ips, snips, dr, sndr (ranking uses dr if given, else the first).",
    ),
    clip: Optional[float] = ClipOpt,
    bootstrap: int = BootstrapOpt,
    alpha: float = AlphaOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the OPE folds and bootstrap, and first simulation seed."),
    folds: int = FoldsOpt,
    reward_model: str = RewardModelOpt,
    seeds: int = typer.Option(5, "--seeds", min=1, help="Simulation seeds (CIs over seeds)."),
    customers: Optional[int] = typer.Option(
        None, "--customers", min=1, help="Simulated customers (default: the whole book)."
    ),
    workers: Optional[int] = RayWorkersOpt,
    address: Optional[str] = RayAddressOpt,
    connect_timeout: float = ConnectTimeoutOpt,
    out: Optional[Path] = OutJsonOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Backtest policies on the history after a split date, by OPE and by simulation.

    Calibrates on the history before --split-date, then evaluates each candidate on what happened
    after it, by OPE on the logged decisions and by simulating the calibrated book, and compares
    both with the logging policy's actual per-decision value. Reports how well the OPE and
    simulation rankings agree (Kendall's tau, same best policy).

    Example: clv backtest bank/ --split-date 2024-07-01 --policies none,bau,greedy_uplift --world world.json --json
    """
    with _user_errors():
        _check_source(history_dir, None)
        _check_out(out, inputs=(history_dir, world_path, *policies.split(",")))
        split = _date(split_date, "--split-date")
        from experiments.backtest import BacktestSettings, check_policies, run_backtest

        specs = check_policies(policies.split(","))
        if world_path is not None:
            _check_world(world_path)
        from experiments.ope import OPESettings

        ope_settings = OPESettings(
            estimators=_names(estimators),
            clip=clip,
            n_boot=bootstrap,
            alpha=alpha,
            seed=seed,
            folds=folds,
            reward_model=reward_model,
        )  # checked before any work
        settings = BacktestSettings(ope_settings, seeds=seeds, customers=customers, workers=workers, address=address)
        history = _load(history_dir, None)
        world = book = note = None
        if world_path is not None:
            world, book, note = _ope_world(history, world_path, split)
        else:
            typer.echo(f"calibrating a world on {history_dir} before {split} (give --world to reuse one)", err=True)
        with _progress("backtest", 1) as upd:
            res = run_backtest(
                history,
                split,
                specs,
                settings,
                world=world,
                book=book,
                world_note=note,
                progress=lambda stage, d, t: upd(d, t),
            )
        if out is not None:
            _write_json(out, res)
    lg = res["logged"]
    main = res["estimand"]["main_estimator"]
    lines = [
        f"backtest split {res['split_date']}: {lg['decisions']:,} logged decisions of {lg['customers']:,} "
        f"customers after it; logged policy's actual value per decision {lg['per_decision']:.4g}",
        f"{'policy':<18}{'OPE ' + main:>12}{'95% CI' if abs(alpha - 0.05) < 1e-12 else 'CI':>24}"
        f"{'vs logged':>11}{'sim/decision':>14}{'sim CLV':>10}",
    ]
    for n, p in res["policies"].items():
        e, s = p["ope"][main], p["simulation"]
        lines.append(
            f"{n:<18}{e['value']:>12.4g}   [{e['ci_low']:>9.4g}, {e['ci_high']:>9.4g}]"
            f"{p['ope_vs_logged']['value']:>+11.4g}{s['per_decision_reward']['mean']:>14.4g}"
            f"{s['clv']['mean']:>10.2f}"
        )
    r = res["ranking"]
    lines.append(
        f"ranking OPE: {' > '.join(r['ope'])}; simulation: {' > '.join(r['simulation'])}; "
        f"Kendall tau {r['kendall_tau']:+.2f}; same best: {'yes' if r['same_best'] else 'no'}"
    )
    lines += [f"warning: {w}" for w in res["warnings"]]
    lines.append(f"{res['seconds']:.1f}s")
    _emit(res, as_json, "\n".join(lines))
