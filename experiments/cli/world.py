"""The world commands: make-data, calibrate, validate, simulate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import (
    ConnectTimeoutOpt,
    DatasetOpt,
    HistoryArg,
    JsonOpt,
    _check_out,
    _check_world,
    _date,
    _emit,
    _err,
    _load,
    _load_world,
    _progress,
    _user_errors,
    app,
)
from .outputs import VALIDATION_FILES, check_not_users_history


@app.command("make-data")
def make_data(
    out: Path = typer.Option(..., "--out", help="Folder to write the synthetic bank history into."),
    customers: int = typer.Option(6000, "--customers", min=10, max=20_000_000, help="Customers in the book."),
    weeks: int = typer.Option(156, "--weeks", min=20, help="Weeks of history."),
    start: str = typer.Option("2022-01-03", "--start", help="First day of the history (a Monday is tidy)."),
    decision_every: int = typer.Option(
        4, "--decision-every", min=1, help="Weeks between logged decision points per customer."
    ),
    seed: int = typer.Option(7, "--seed", help="Random seed; same seed, same files."),
    kind: str = typer.Option(
        "bank",
        "--kind",
        help="bank: the synthetic bank (BTYD-style, with campaigns); hmm: a hidden-Markov engagement "
        "process with seasonality (sim/engagement_hmm.py; no decisions or products).",
    ),
    fmt: str = typer.Option(
        "auto",
        "--format",
        help="csv: one CSV per table; parquet: each table a folder of Parquet parts, one per block of "
        "250,000 customers (sim/bank_parts.py), as a warehouse exports them; auto: csv up to 1,000,000 "
        "customers, parquet above (bank only).",
    ),
    workers: Optional[int] = typer.Option(
        None,
        "--workers",
        min=0,
        help="--format parquet: CPUs of the local Ray for the blocks (default: all; 0 in-process).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Generate a synthetic bank history with known ground truth (truth.json beside it).

    Example: clv make-data --out data/bank --customers 6000 --weeks 156 --seed 7

    A bank-sized book as partitioned Parquet: clv make-data --out data/big --customers 10000000 --weeks 52
    """
    with _user_errors():
        from sim.errors import ConfigError
        from sim.synthetic import BankConfig, write_bank_history

        if kind not in ("bank", "hmm"):
            raise ConfigError(f"--kind must be bank or hmm, got {kind!r}")
        if fmt not in ("auto", "csv", "parquet"):
            raise ConfigError(f"--format must be auto, csv or parquet, got {fmt!r}")
        if fmt == "auto":
            fmt = "parquet" if kind == "bank" and customers > 1_000_000 else "csv"
        if fmt == "parquet" and kind != "bank":
            raise ConfigError("--format parquet is for --kind bank; the hmm history is written as CSV")
        start = _date(start, "--start")
        if start < "1950-01-01":  # the history reader refuses dates before 1950 (sim.history)
            _err(f"--start {start}: is before 1950; histories start in 1950 or later (the reader refuses older dates)")
        _check_out(out, folder=True)
        check_not_users_history(out)
        t0 = time.perf_counter()
        if kind == "hmm":
            from sim.engagement_hmm import HMMConfig, write_hmm_history

            summary = write_hmm_history(out, HMMConfig(customers=customers, weeks=weeks, start=start, seed=seed))
        else:
            cfg = BankConfig(customers=customers, weeks=weeks, start=start, decision_every=decision_every, seed=seed)
            if fmt == "parquet":
                from experiments.ray_session import executor_session
                from sim.bank_parts import BLOCK, blocks, write_bank_parts

                n_blocks = len(blocks(customers, BLOCK))
                with executor_session(0 if n_blocks == 1 else workers) as ex, _progress("blocks", n_blocks) as upd:
                    done = [0]

                    def tick(k: int) -> None:
                        done[0] += k
                        upd(done[0], n_blocks)

                    summary = write_bank_parts(out, cfg, executor=ex, progress=tick)
            else:
                summary = write_bank_history(out, cfg)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
    _emit(
        summary,
        as_json,
        f"wrote synthetic {'bank' if kind == 'bank' else 'engagement (hmm)'} history to {out} "
        f"({summary['customers']} customers, {summary['transactions']} transactions, "
        f"{summary['decisions']} logged decisions)",
    )


@app.command()
def calibrate(
    history_dir: Optional[Path] = HistoryArg,
    dataset: Optional[str] = DatasetOpt,
    calibration_end: str = typer.Option(..., "--calibration-end", help="Last day (inclusive) of history used."),
    out: Path = typer.Option(..., "--out", help="World model JSON to write (a .book.parquet goes beside it)."),
    segment_by: Optional[str] = typer.Option(
        None,
        "--segment-by",
        help="customers.csv column to segment by (default: its 'segment' column, else K-means on RFM).",
    ),
    segments: int = typer.Option(4, "--segments", min=1, help="K for K-means RFM segments."),
    activity_model: str = typer.Option("pareto_nbd", "--activity-model", help="pareto_nbd (default) or bg_nbd."),
    seed: int = typer.Option(0, "--seed", help="Seed for K-means and bootstrap."),
    as_json: bool = JsonOpt,
) -> None:
    """Fit a world model (activity, dropout, spend, stages, products, response) from history.

    Example: clv calibrate --dataset cdnow --calibration-end 1997-09-30 --out world.json
    """
    with _user_errors():
        ce = _date(calibration_end, "--calibration-end")
        _check_out(out, inputs=(history_dir,), writes=(Path(out).name.removesuffix(".json") + ".book.parquet",))
        hist = _load(history_dir, dataset)  # input errors surface before the fitting code is imported
        from experiments.results import CalibrationResult
        from sim.calibrate import calibrate as run

        world, book, report = run(
            hist, ce, segment_by=segment_by, n_segments=segments, activity_model=activity_model, seed=seed
        )
        out = Path(out)
        book_path = world.save_with_book(out, book)  # the world is renamed into place last, after its book
        doc = CalibrationResult(
            world, str(out), str(book_path), customers=report["customers"], seconds=report["seconds"], report=report
        ).to_dict()
        from sim.calibrate import default_catalogue_warning

        if warning := default_catalogue_warning(world.assumptions):  # also under --json: stdout stays one document
            typer.echo(warning, err=True)
    _emit(
        doc,
        as_json,
        f"world written to {out} ({report['customers']} customers, "
        f"{len(world.segments)} segments, {report['seconds']:.2f}s)\n"
        f"  same-day transactions merged: {report['same_day_merged']}; transactions after the "
        f"calibration end left out: {report['transactions_after_calibration_end']}; customers "
        f"born after it left out: {report['customers_born_after_calibration_end']}"
        + "".join(f"\n  assumed: {a}" for a in world.assumptions),
    )


@app.command()
def validate(
    history_dir: Optional[Path] = HistoryArg,
    dataset: Optional[str] = DatasetOpt,
    calibration_end: str = typer.Option(..., "--calibration-end", help="Last day of the calibration window."),
    holdout_end: str = typer.Option(..., "--holdout-end", help="Last day of the holdout window."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for validation.json, tracking.png, tables and the world."
    ),
    replications: int = typer.Option(32, "--replications", min=1, help="Digital-twin draws per customer."),
    segment_by: Optional[str] = typer.Option(None, "--segment-by", help="customers.csv column to segment by."),
    segments: int = typer.Option(4, "--segments", min=1, help="K for K-means RFM segments."),
    activity_model: str = typer.Option("pareto_nbd", "--activity-model", help="pareto_nbd (default) or bg_nbd."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    as_json: bool = JsonOpt,
) -> None:
    """Calibrate up to one date, simulate the book to a later date, compare with what happened.

    Example: clv validate --dataset cdnow --calibration-end 1997-09-30 --holdout-end 1998-06-30 --json
    """
    with _user_errors():
        ce = _date(calibration_end, "--calibration-end")
        he = _date(holdout_end, "--holdout-end")
        if he <= ce:
            _err(f"--holdout-end {he} must be after --calibration-end {ce}")
        _check_out(out, folder=True, inputs=(history_dir,), writes=VALIDATION_FILES)
        hist = _load(history_dir, dataset)  # input errors surface before the fitting code is imported
        from sim.validate import validate as run
        from sim.validate import write_outputs

        t0 = time.perf_counter()
        with _progress("simulating holdout", 1) as upd:
            metrics, art = run(
                hist,
                ce,
                he,
                replications=replications,
                seed=seed,
                segment_by=segment_by,
                n_segments=segments,
                activity_model=activity_model,
                progress=upd,
            )
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        if out is not None:
            metrics["files"] = write_outputs(out, metrics, art)
    keys = (
        "customers",
        "holdout_repeat_actual",
        "holdout_repeat_predicted",
        "aggregate_error",
        "per_customer_corr",
        "per_customer_mae",
        "active_auc",
        "holdout_value_error",
        "top_decile_value_share",
    )
    human = "\n".join(f"{k}: {metrics[k]:.4f}" if isinstance(metrics[k], float) else f"{k}: {metrics[k]}" for k in keys)
    ew = metrics.get("early_warning") or {}
    if ew.get("scores"):
        human += f"\nearly warning among {ew['customers']:,} active customers ({ew['base_rate']:.1%} churned):"
        for name, m in ew["scores"].items():
            if m:
                human += f"\n  {name}: AUC {m['auc']:.3f}, top-decile lift {m['top_decile_lift']:.2f}, F1 {m['f1']:.3f}"
    if out is not None:
        human += f"\noutputs in {out}/ (validation.json, tracking.png, conditional_expectation.csv, world.json)"
    _emit(metrics, as_json, human)


@app.command()
def simulate(
    world_path: Path = typer.Argument(..., metavar="WORLD", help="World JSON from `clv calibrate`."),
    policy: str = typer.Option(
        "none",
        "--policy",
        help="Policy to run: a baseline (none, random, bau, "
        "churn_threshold, greedy_uplift) or a folder from `clv train`.",
    ),
    customers: Optional[int] = typer.Option(
        None, "--customers", min=1, help="Customers to simulate (default: the whole book)."
    ),
    periods: int = typer.Option(52, "--periods", min=1, help="Periods to simulate."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same numbers."),
    population: str = typer.Option(
        "book",
        "--population",
        help="book: digital twins of the calibrated customers (resampled to "
        "--customers); new: brand-new customers from the segment priors.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Parquet file, one row per simulated customer (per-period totals go to FILE.periods.parquet).",
    ),
    workers: Optional[int] = typer.Option(
        None,
        "--workers",
        min=0,
        help="CPUs of the local Ray the customer blocks run on (default: all; 0 in-process). "
        "Same numbers at any number.",
    ),
    address: Optional[str] = typer.Option(None, "--address", help="An existing Ray cluster for the blocks."),
    connect_timeout: float = ConnectTimeoutOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Simulate a population under a policy with the vectorised simulator. Books larger than one
    block (262,144 customers) run as Ray tasks, one block each.

    Example: clv simulate world.json --policy none --customers 100000 --periods 52 --seed 1 --out sim.parquet

    On a Ray cluster: clv simulate world.json --customers 3000000 --address 10.0.0.5:6379 --out sim.parquet
    """
    with _user_errors():
        from sim.errors import ConfigError
        from sim.population import POPULATIONS

        if population not in POPULATIONS:
            raise ConfigError(f"--population must be book or new, got {population!r}")
        from policies.registry import check_policy_spec

        check_policy_spec(policy)
        if population == "new" and customers is None:
            raise ConfigError("--population new needs --customers N")
        _check_world(world_path)
        from sim.world import WorldModel

        world = WorldModel.load(world_path)
        periods_name = Path(out).name.removesuffix(".parquet") + ".periods.parquet"
        _check_out(out, inputs=(world_path, world.book_path(world_path)), writes=(periods_name,))
        from experiments.ray_session import executor_session
        from experiments.results import SimulationSummary
        from policies.base import as_simulator_policy
        from policies.registry import resolve_policy
        from sim.atomic import atomic_path
        from sim.population import DEFAULT_CHUNK
        from sim.population import simulate as run

        world, book = _load_world(world_path, population, world)
        pol = as_simulator_policy(resolve_policy(policy, world))
        n = customers or len(book)
        t0 = time.perf_counter()
        one_block = n <= DEFAULT_CHUNK and address is None  # nothing to share out: no Ray to start
        with (
            executor_session(0 if one_block else workers, address) as ex,
            _progress(f"simulating {n:,} customers x {periods} periods", n * periods) as upd,
        ):
            done = [0]

            def tick(m: int) -> None:
                done[0] = min(done[0] + m, n * periods)
                upd(done[0])

            res = run(world, pol, periods, seed, book=book, customers=customers, progress=tick, executor=ex)
        secs = time.perf_counter() - t0
        out = Path(out)
        periods_path = out.with_name(out.name.removesuffix(".parquet") + ".periods.parquet")
        with atomic_path(out) as tmp:
            res.customers.to_parquet(tmp, index=False)
        with atomic_path(periods_path) as tmp:
            res.periods.to_parquet(tmp, index=False)
        doc = SimulationSummary(
            world, str(world_path), policy, population, periods, seed, str(out), str(periods_path), res.customers, secs
        ).to_dict()
    _emit(
        doc,
        as_json,
        f"simulated {doc['customers']:,} customers x {periods} periods in {secs:.1f}s -> {out}\n"
        f"CLV per customer {doc['clv_per_customer']:.2f}, retention at horizon "
        f"{doc['retention_at_horizon']:.3f}",
    )
