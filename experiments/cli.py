"""The `clv` command line: every command has --help with an example and --json for scripts.

Heavy libraries (pandas, scipy, torch, ray, ortools) are imported inside the commands, so
`clv --help` and input validation answer fast. With --json, stdout carries exactly one JSON
document; progress and logs go to stderr. Bad input exits with status 2 and one line naming
the file, row and column; nothing is written.
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="clv-engine: calibrate customer worlds from history, simulate them, and plan "
                       "interventions. Run `clv COMMAND --help` for each command.")

EXIT_INPUT = 2
DATASETS = ("cdnow", "bank")
BASELINE_NAMES = ("none", "random", "bau", "churn_threshold", "greedy_uplift")  # policies.baselines.BASELINES


# settings whose command-line option is not the setting's name with "-" for "_"
OPTION_NAMES = {"n_boot": "--bootstrap"}


def option_name(key: str) -> str:
    """How the command line calls the setting `key` (ConfigError.key): `reward_model` -> `--reward-model`."""
    return OPTION_NAMES.get(key) or "--" + key.replace("_", "-")


def _err(msg: str, code: int = EXIT_INPUT) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn known input errors into one line on stderr and exit status 2."""
    from sim.errors import ClvError, ConfigError
    try:
        yield
    except ConfigError as e:
        _err(e.about(option_name))
    except ClvError as e:
        _err(str(e))
    except FileNotFoundError as e:
        _err(f"{e.filename}: not found")
    except OSError as e:  # e.g. --out under an existing file, or a folder without write permission
        _err(f"{e.filename}: {e.strerror}" if e.filename else str(e))


def _emit(doc: dict[str, Any], as_json: bool, human: str) -> None:
    if as_json:
        from sim.world import json_safe  # NaN/inf become null: the document stays valid JSON
        sys.stdout.write(json.dumps(json_safe(doc), indent=2, default=_json_default, allow_nan=False) + "\n")
    else:
        typer.echo(human)


def _json_default(o: Any) -> Any:
    import numpy as np
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


@contextmanager
def _progress(description: str, total: int, enabled: bool = True):
    """A rich progress bar on stderr; yields advance(done) callable."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    console = Console(stderr=True)
    show = enabled and console.is_terminal
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=not show) as prog:
        task = prog.add_task(description, total=total)

        def update(done: int, tot: int | None = None) -> None:
            prog.update(task, completed=done, total=tot or total)
        yield update


def _check_out(path: Optional[Path], option: str = "--out", folder: bool = False) -> None:
    """Fail before any work when an output path cannot be written (a parent is a file, or the
    nearest existing folder is not writable)."""
    import os
    from sim.errors import ConfigError
    if path is None:
        return
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {p}: exists and is not a folder")
    if not folder and p.is_dir():
        raise ConfigError(f"{option} {p}: is a folder; give a file name")
    parent = p if folder else p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {p}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{option} {p}: {parent} is not writable")


def _check_source(history_dir: Optional[Path], dataset: Optional[str]) -> None:
    """The cheap checks on where the history comes from, before anything heavy is imported."""
    from sim.errors import ConfigError, HistoryError
    if (history_dir is None) == (dataset is None):
        _err("give exactly one of HISTORY_DIR or --dataset NAME (" + ", ".join(DATASETS) + ")")
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; bundled: {', '.join(DATASETS)}")
    if history_dir is not None and not Path(history_dir).is_dir():
        raise HistoryError(str(history_dir), None, None, "history folder not found; give the folder that holds "
                                                         "transactions.csv, or --dataset " + "|".join(DATASETS))


def _load(history_dir: Optional[Path], dataset: Optional[str]):
    _check_source(history_dir, dataset)
    from sim.datasets import load_dataset
    from sim.history import load_history
    if dataset is not None:
        return load_dataset(dataset)
    return load_history(history_dir)


HistoryArg = typer.Argument(None, help="History folder holding transactions.csv or .parquet (optionally "
                                       "customers, products, decisions, actions.yaml, economics.yaml, stages.yaml).",
                            show_default=False)
DatasetOpt = typer.Option(None, "--dataset", help="Bundled dataset instead of a folder: cdnow or bank.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout (logs go to stderr).")

# options shared by the offline-evaluation commands (ope, backtest)
ClipOpt = typer.Option(None, "--clip", help="Cap on importance weights (ips, dr).")
BootstrapOpt = typer.Option(1000, "--bootstrap", help="Bootstrap resamples of customers for the intervals.")
AlphaOpt = typer.Option(0.05, "--alpha", help="1 - confidence level of the intervals.")
FoldsOpt = typer.Option(5, "--folds", help="Cross-fitting folds of the outcome models (by customer).")
RewardModelOpt = typer.Option("ridge", "--reward-model", help="ridge (fast) or hgb (gradient boosting).")
RayWorkersOpt = typer.Option(None, "--workers", min=0, help="CPUs of the local Ray for the bootstrap "
                                                           "(default: all; 0 runs it in-process).")
RayAddressOpt = typer.Option(None, "--address", help="An existing Ray cluster for the bootstrap.")
OutJsonOpt = typer.Option(None, "--out", help="Write the result JSON here too.")


@app.command("make-data")
def make_data(
    out: Path = typer.Option(..., "--out", help="Folder to write the synthetic bank history into."),
    customers: int = typer.Option(6000, "--customers", min=10, help="Customers in the book."),
    weeks: int = typer.Option(156, "--weeks", min=20, help="Weeks of history."),
    start: str = typer.Option("2022-01-03", "--start", help="First day of the history (a Monday is tidy)."),
    decision_every: int = typer.Option(4, "--decision-every", min=1,
                                       help="Weeks between logged decision points per customer."),
    seed: int = typer.Option(7, "--seed", help="Random seed; same seed, same files."),
    as_json: bool = JsonOpt,
) -> None:
    """Generate a synthetic bank history with known ground truth (truth.json beside it).

    Example: clv make-data --out data/bank --customers 6000 --weeks 156 --seed 7
    """
    with _user_errors():
        from sim.synthetic import BankConfig, write_bank_history
        start = _date(start, "--start")
        _check_out(out, folder=True)
        t0 = time.perf_counter()
        cfg = BankConfig(customers=customers, weeks=weeks, start=start, decision_every=decision_every, seed=seed)
        summary = write_bank_history(out, cfg)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
    _emit(summary, as_json, f"wrote synthetic bank history to {out} "
                            f"({summary['customers']} customers, {summary['transactions']} transactions, "
                            f"{summary['decisions']} logged decisions)")


@app.command()
def calibrate(
    history_dir: Optional[Path] = HistoryArg,
    dataset: Optional[str] = DatasetOpt,
    calibration_end: str = typer.Option(..., "--calibration-end", help="Last day (inclusive) of history used."),
    out: Path = typer.Option(..., "--out", help="World model JSON to write (a .book.parquet goes beside it)."),
    segment_by: Optional[str] = typer.Option(None, "--segment-by", help="customers.csv column to segment by "
                                                                        "(default: its 'segment' column, else K-means on RFM)."),
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
        _check_out(out)
        hist = _load(history_dir, dataset)  # input errors surface before the fitting code is imported
        from sim.calibrate import calibrate as run
        world, book, report = run(hist, ce, segment_by=segment_by, n_segments=segments,
                                  activity_model=activity_model, seed=seed)
        out = Path(out)
        book_path = world.save_with_book(out, book)   # the world is renamed into place last, after its book
        doc = {"world": str(out), "book": str(book_path), "world_hash": world.hash(),
               "customers": report["customers"], "segments": [s.name for s in world.segments],
               "activity_model": world.activity_model,
               "activity": world.segments[0].activity if len(world.segments) == 1 else
               {s.name: s.activity for s in world.segments},
               "stage_rules": world.stage_rules.__dict__, "seasonality_modelled": world.seasonality is not None,
               "same_day_merged": report["same_day_merged"],
               "transactions_used": report["transactions_used"],
               "transactions_after_calibration_end": report["transactions_after_calibration_end"],
               "customers_born_after_calibration_end": report["customers_born_after_calibration_end"],
               "assumptions": world.assumptions,
               "seconds": report["seconds"]}
    _emit(doc, as_json, f"world written to {out} ({report['customers']} customers, "
                        f"{len(world.segments)} segments, {report['seconds']:.2f}s)\n"
                        f"  same-day transactions merged: {report['same_day_merged']}; transactions after the "
                        f"calibration end left out: {report['transactions_after_calibration_end']}; customers "
                        f"born after it left out: {report['customers_born_after_calibration_end']}"
                        + "".join(f"\n  assumed: {a}" for a in world.assumptions))


@app.command()
def validate(
    history_dir: Optional[Path] = HistoryArg,
    dataset: Optional[str] = DatasetOpt,
    calibration_end: str = typer.Option(..., "--calibration-end", help="Last day of the calibration window."),
    holdout_end: str = typer.Option(..., "--holdout-end", help="Last day of the holdout window."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for validation.json, tracking.png, tables "
                                                           "and the world."),
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
        _check_out(out, folder=True)
        hist = _load(history_dir, dataset)  # input errors surface before the fitting code is imported
        from sim.validate import validate as run, write_outputs
        t0 = time.perf_counter()
        with _progress("simulating holdout", 1) as upd:
            metrics, art = run(hist, ce, he, replications=replications, seed=seed, segment_by=segment_by,
                               n_segments=segments, activity_model=activity_model, progress=upd)
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        if out is not None:
            metrics["files"] = write_outputs(out, metrics, art)
    keys = ("customers", "holdout_repeat_actual", "holdout_repeat_predicted", "aggregate_error",
            "per_customer_corr", "per_customer_mae", "active_auc", "holdout_value_error", "top_decile_value_share")
    human = "\n".join(f"{k}: {metrics[k]:.4f}" if isinstance(metrics[k], float) else f"{k}: {metrics[k]}"
                      for k in keys)
    if out is not None:
        human += f"\noutputs in {out}/ (validation.json, tracking.png, conditional_expectation.csv, world.json)"
    _emit(metrics, as_json, human)


@app.command()
def simulate(
    world_path: Path = typer.Argument(..., metavar="WORLD", help="World JSON from `clv calibrate`."),
    policy: str = typer.Option("none", "--policy", help="Policy to run: a baseline (none, random, bau, "
                                                         "churn_threshold, greedy_uplift) or a folder from `clv train`."),
    customers: Optional[int] = typer.Option(None, "--customers", min=1,
                                            help="Customers to simulate (default: the whole book)."),
    periods: int = typer.Option(52, "--periods", min=1, help="Periods to simulate."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same numbers."),
    population: str = typer.Option("book", "--population",
                                   help="book: digital twins of the calibrated customers (resampled to "
                                        "--customers); new: brand-new customers from the segment priors."),
    out: Path = typer.Option(..., "--out", help="Parquet file, one row per simulated customer "
                                                "(per-period totals go to FILE.periods.parquet)."),
    as_json: bool = JsonOpt,
) -> None:
    """Simulate a population under a policy with the vectorised simulator.

    Example: clv simulate world.json --policy none --customers 100000 --periods 52 --seed 1 --out sim.parquet
    """
    with _user_errors():
        from sim.errors import ConfigError
        if population not in ("book", "new"):
            raise ConfigError(f"--population must be book or new, got {population!r}")
        from policies.registry import check_policy_spec
        check_policy_spec(policy)
        if population == "new" and customers is None:
            raise ConfigError("--population new needs --customers N")
        _check_out(out)
        _check_world(world_path)
        from sim.atomic import atomic_path
        from policies.registry import policy_label, resolve_policy
        from policies.base import as_simulator_policy
        from sim.population import simulate as run
        world, book = _load_world(world_path, population)
        pol = as_simulator_policy(resolve_policy(policy, world))
        n = customers or len(book)
        t0 = time.perf_counter()
        with _progress(f"simulating {n:,} customers x {periods} periods", n * periods) as upd:
            done = [0]

            def tick(m: int) -> None:
                done[0] += m
                upd(done[0])
            res = run(world, pol, periods, seed, book=book, customers=customers, progress=tick)
        secs = time.perf_counter() - t0
        out = Path(out)
        periods_path = out.with_name(out.name.removesuffix(".parquet") + ".periods.parquet")
        with atomic_path(out) as tmp:
            res.customers.to_parquet(tmp, index=False)
        with atomic_path(periods_path) as tmp:
            res.periods.to_parquet(tmp, index=False)
        c = res.customers
        disc = world.economics.discount_per_period
        doc = {"world": str(world_path), "world_hash": world.hash(), "policy": policy, "population": population,
               "customers": int(len(c)), "periods": periods, "seed": seed, "out": str(out),
               "periods_out": str(periods_path),
               "clv_per_customer": float(c["clv"].mean()), "margin_per_customer": float(c["reward"].mean()),
               "transactions_per_customer": float(c["transactions"].mean()),
               "retention_at_horizon": float(c["alive_end"].mean()),
               "active_share_at_horizon": float((c["end_stage"].isin(["new", "growth", "maturity"])).mean()),
               "contacts_per_customer": float(c["contacts"].mean()),
               "discount_per_period": disc,
               "customer_steps_per_second": float(len(c) * periods / max(secs, 1e-9)), "seconds": round(secs, 3)}
    _emit(doc, as_json, f"simulated {doc['customers']:,} customers x {periods} periods in {secs:.1f}s -> {out}\n"
                        f"CLV per customer {doc['clv_per_customer']:.2f}, retention at horizon "
                        f"{doc['retention_at_horizon']:.3f}")


def _check_world(world_path: Path) -> None:
    from sim.errors import ConfigError
    if not Path(world_path).is_file():
        raise ConfigError(f"{world_path}: world file not found; create one with `clv calibrate`"
                          if not Path(world_path).exists() else f"{world_path}: is a folder, not a world JSON file; "
                          "pass the .json that `clv calibrate` wrote")


def _load_world(world_path: Path, population: str):
    """(world, book or None) for --population book|new."""
    from sim.errors import ConfigError
    from sim.world import WorldModel
    world = WorldModel.load(world_path)
    if population == "new":
        return world, None
    bp = world.book_path(world_path)
    if bp is None or not bp.exists():
        raise ConfigError(f"{world_path}: its book ({bp}) is missing; use --population new or recalibrate")
    import pandas as pd
    return world, pd.read_parquet(bp)


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """--set key=value pairs (values parsed as JSON when they can be: numbers, lists, true/false)."""
    from sim.errors import ConfigError
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE, e.g. --set learning_rate=0.0001")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


@app.command()
def train(
    world_path: Path = typer.Argument(..., metavar="WORLD", help="World JSON from `clv calibrate`."),
    algo: str = typer.Option("ppo", "--algo", help="ppo, maskable_ppo (masks from the contact rules) or dqn."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Customer-periods of experience "
                                                                      "(default: 2,000,000 for PPO, 1,000,000 for DQN)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same trained policy."),
    out: Path = typer.Option(..., "--out", help="Folder for model.zip and card.json."),
    population: str = typer.Option("book", "--population", help="book: digital twins of the calibrated "
                                                                "customers; new: brand-new customers."),
    sets: list[str] = typer.Option([], "--set", help="Override a hyperparameter, e.g. --set n_envs=256 "
                                                     "(repeatable; see policies/rl.py HYPERPARAMS)."),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", help="Folder for TensorBoard logs (optional)."),
    as_json: bool = JsonOpt,
) -> None:
    """Train an RL agent (stable-baselines3) on a calibrated world with the vectorised simulator.

    Writes the SB3 zip and a JSON card (world hash, algo, hyperparameters, seed, training curve).

    Example: clv train world.json --algo ppo --steps 2000000 --seed 0 --out agents/ppo
    """
    with _user_errors():
        from sim.errors import ConfigError
        if algo not in ("ppo", "dqn", "maskable_ppo"):
            raise ConfigError(f"--algo {algo!r}: choose ppo, maskable_ppo or dqn")
        if population not in ("book", "new"):
            raise ConfigError(f"--population must be book or new, got {population!r}")
        overrides = _parse_sets(sets)
        if tensorboard is not None:
            import importlib.util
            if importlib.util.find_spec("tensorboard") is None:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")
        _check_world(world_path)
        _check_out(out, folder=True)
        from policies.rl import DEFAULT_STEPS, hyperparameters
        try:
            hyperparameters(algo, overrides)
        except ValueError as e:
            raise ConfigError(f"--set: {e}") from None
        world, book = _load_world(world_path, population)
        from policies.rl import train as run
        total = int(steps or DEFAULT_STEPS[algo])
        with _progress(f"training {algo}", total) as upd:
            _, card = run(world, algo, steps=total, seed=seed, out=out, overrides=overrides, population=population,
                          book=book, tensorboard=str(tensorboard) if tensorboard else None,
                          progress=lambda done, tot: upd(done, tot), world_path=str(world_path))
    curve = card["training_curve"]
    doc = {k: card[k] for k in ("algo", "seed", "steps", "world_hash", "hyperparameters", "seconds")}
    doc.update(out=str(out), model=str(Path(out) / "model.zip"), card=str(Path(out) / "card.json"),
               final_mean_episode_return=curve[-1]["mean_episode_return"] if curve else None,
               training_curve=curve)
    _emit(doc, as_json, f"trained {algo} for {card['steps']:,} steps in {card['seconds']:.0f}s -> {out}/model.zip"
                        + (f"\nmean episode return at the end: {curve[-1]['mean_episode_return']:.2f}" if curve else ""))


@app.command()
def evaluate(
    world_path: Path = typer.Argument(..., metavar="WORLD", help="World JSON from `clv calibrate`."),
    policies: list[str] = typer.Option(..., "--policy", help="A baseline (none, random, bau, churn_threshold, "
                                                             "greedy_uplift) or a folder from `clv train`; repeatable."),
    customers: int = typer.Option(20_000, "--customers", min=1, help="Customers per run."),
    periods: int = typer.Option(52, "--periods", min=1, help="Periods per run."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds (runs per policy); CIs are over seeds."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    population: str = typer.Option("book", "--population", help="book (digital twins) or new customers."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Policy to compare the others with "
                                                                      "(default: bau if given, else the first)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for evaluation.json and evaluation.png."),
    as_json: bool = JsonOpt,
) -> None:
    """Compare policies by simulation with common random numbers; 95% CIs over seeds.

    Reports per policy CLV per customer (discounted), retention at horizon, marketing ROI, cross-sell
    rate, active share and contacts per customer, and each policy's paired difference to the reference.

    Example: clv evaluate world.json --policy none --policy bau --policy agents/ppo --customers 20000 --periods 52 --seeds 5 --json
    """
    with _user_errors():
        from sim.errors import ConfigError
        if population not in ("book", "new"):
            raise ConfigError(f"--population must be book or new, got {population!r}")
        if len(set(policies)) != len(policies):
            dup = next(p for p in policies if policies.count(p) > 1)
            raise ConfigError(f"--policy {dup}: given twice; give each policy once")
        _check_world(world_path)
        _check_out(out, folder=True)
        world, book = _load_world(world_path, population)
        from experiments.evaluate import evaluate as run, plot
        from policies.registry import policy_label, resolve_policy
        pols = {}
        for spec in policies:
            p = resolve_policy(spec, world)
            name = policy_label(spec)
            pols[name] = p
        if reference is not None and reference not in pols:
            raise ConfigError(f"--reference {reference!r} is not among the policies: {', '.join(pols)}")
        t0 = time.perf_counter()
        with _progress("evaluating", seeds * len(pols)) as upd:
            done = [0]

            def tick(k: int) -> None:
                done[0] += k
                upd(done[0])
            res = run(world, pols, customers=customers, periods=periods, seeds=seeds, seed=seed, book=book,
                      reference=reference, progress=tick)
        res["seconds"] = round(time.perf_counter() - t0, 2)
        res["world"] = str(world_path)
        res["population"] = population
        if out is not None:
            from sim.atomic import atomic_write_json
            from sim.world import json_safe
            Path(out).mkdir(parents=True, exist_ok=True)
            plot(res, Path(out) / "evaluation.png")
            res["files"] = [str(Path(out) / "evaluation.json"), str(Path(out) / "evaluation.png")]
            atomic_write_json(Path(out) / "evaluation.json", json_safe(res))
    lines = [f"{'policy':<18}{'CLV':>10}{'retention':>11}{'ROI':>8}{'contacts':>10}"]
    for n, m in res["policies"].items():
        lines.append(f"{n:<18}{m['clv']['mean']:>10.2f}{m['retention']['mean']:>11.3f}"
                     f"{m['marketing_roi']['mean']:>8.2f}{m['contacts']['mean']:>10.2f}")
    for n, d in res["vs_reference"].items():
        c = d["clv"]
        lines.append(f"{n} vs {res['reference']}: CLV {c['mean']:+.2f} (95% CI {c['ci_low']:+.2f} to {c['ci_high']:+.2f})")
    _emit(res, as_json, "\n".join(lines))


@app.command()
def values(
    world_path: Path = typer.Argument(..., metavar="WORLD", help="World JSON from `clv calibrate` (its book beside it)."),
    source: str = typer.Option(..., "--source", help="sim: the world model's simulated incremental CLV of each action "
                                                     "over none (common random numbers); policy: a policy's advantage "
                                                     "estimates Q(s,a) - Q(s,none), smoothed over customers (needs --policy)."),
    policy: Optional[str] = typer.Option(None, "--policy", help="For --source policy: a baseline (none, random, bau, "
                                                                "churn_threshold, greedy_uplift) or a folder from `clv train`."),
    continuation: Optional[str] = typer.Option(None, "--continuation", help="For --source sim: what follows the first "
                                                                            "period: none (default), a baseline or a "
                                                                            "folder from `clv train`."),
    customers: Optional[int] = typer.Option(None, "--customers", min=1, help="Customers valued (default: the whole "
                                                                             "book; drawn from it as `clv simulate` does)."),
    horizon: Optional[int] = typer.Option(None, "--horizon", min=1, help="Periods each branch is followed (default 52)."),
    replications: Optional[int] = typer.Option(None, "--replications", min=1,
                                               help="Twin draws x futures averaged per customer (default 4)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same table."),
    out: Path = typer.Option(..., "--out", help="Parquet file for the value table (customer_id, segment, action, "
                                                "channel, value, cost; read by the optimizer)."),
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
        _check_out(out)
        _check_world(world_path)
        from optimizer.value_sources import (DEFAULT_HORIZON, DEFAULT_REPLICATIONS, values_from_policy,
                                             values_from_simulation)
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
                df = values_from_simulation(world, book, customers, horizon, replications, seed,
                                            continuation=spec, progress=tick)
            else:
                df = values_from_policy(world, book, spec, customers, horizon, replications, seed, progress=tick)
        secs = time.perf_counter() - t0
        atomic_write_parquet(out, df)
        diag = df.attrs["diagnostics"]
        rows_by_action = df["action"].value_counts(sort=False)
        actions = [a for a in world.catalogue.names[1:] if rows_by_action.get(a, 0) > 0]
        doc = {"out": str(out), "world": str(world_path), "world_hash": world.hash(), "source": source,
               **({"continuation": spec} if source == "sim" else {"policy": spec}),
               "rows": int(len(df)), "customers": int(diag["customers"]),
               "customers_with_options": int(df["customer_id"].nunique()), "actions": actions,
               "horizon": horizon, "replications": replications, "seed": seed, "seconds": round(secs, 3),
               "rows_by_action": {a: int(rows_by_action.get(a, 0)) for a in world.catalogue.names[1:]},
               "mean_value_by_action": diag["mean_value_by_action"],
               "mean_cost_by_action": diag["mean_cost_by_action"],
               "mean_standard_error_by_action": diag["mean_standard_error_by_action"],
               "cost_clipped_rows": diag["cost_clipped_rows"], "resampled": diag["resampled"]}
        if source == "policy":
            doc["diagnostics"] = {k: v for k, v in diag.items() if k not in doc}
    lines = [f"wrote {doc['rows']:,} rows ({doc['customers']:,} customers, {doc['customers_with_options']:,} with an "
             f"allowed contact) to {out} in {secs:.1f}s",
             f"{'action':<26}{'rows':>9}{'mean value':>12}{'mean cost':>11}"]
    for a in world.catalogue.names[1:]:
        lines.append(f"{a:<26}{doc['rows_by_action'][a]:>9,}{doc['mean_value_by_action'][a]:>12.2f}"
                     f"{doc['mean_cost_by_action'][a]:>11.2f}")
    if source == "policy":
        d = doc["diagnostics"]
        lines.append(f"advantage fit: held-out R^2 {d['heldout_r2']:.3f}; "
                     + ("smoothed values" if d["smoothed"] else "raw means kept (fit no better than the mean)"))
    _emit(doc, as_json, "\n".join(lines))


EXIT_INFEASIBLE = 3
CapacityOpt = typer.Option([], "--capacity", help="channel:NAME=N or action:NAME=N: at most N contacts (repeatable).")
MinCoverageOpt = typer.Option([], "--min-coverage", help="segment:NAME=F: at least a share F of the segment's "
                                                        "customers get an action (repeatable).")
MaxShareOpt = typer.Option([], "--max-share", help="segment:NAME=F: the segment takes at most a share F of the "
                                                  "spend (repeatable).")
MethodOpt = typer.Option("auto", "--method", help="auto (exact for segment-level and small tables, else "
                                                  "lagrangian), exact (OR-Tools MIP) or lagrangian (whole book).")
SolverOpt = typer.Option("SCIP", "--solver", help="MIP solver for --method exact: SCIP, CP_SAT or HIGHS.")
TimeLimitOpt = typer.Option(None, "--time-limit", min=0.1, help="Seconds the exact MIP solver may take "
                                                                "(then its best plan and bound are reported).")


def _allocation_problem(values_path: Path, budget: Optional[float], capacity: list[str], min_coverage: list[str],
                        max_share: list[str]):
    from optimizer.problem import AllocationProblem, budget_constraint, parse_constraint
    from optimizer.values import load_values
    cons = [parse_constraint("capacity", c) for c in capacity] + \
           [parse_constraint("min-coverage", c) for c in min_coverage] + \
           [parse_constraint("max-share", c) for c in max_share]
    if budget is not None:
        cons.insert(0, budget_constraint(budget))
    table = load_values(values_path)
    return AllocationProblem(table, cons)


@contextmanager
def _infeasible(as_json: bool) -> Iterator[None]:
    """An infeasible problem: the diagnosis on stderr (one line), as JSON on stdout with --json, exit 3."""
    from optimizer.diagnose import InfeasibleError
    try:
        yield
    except InfeasibleError as e:
        if as_json:
            _emit({"status": "infeasible", **e.diagnosis.to_dict()}, True, "")
        _err(str(e), EXIT_INFEASIBLE)


@app.command()
def allocate(
    values_path: Path = typer.Argument(..., metavar="VALUES", help="Value table (Parquet or CSV): customer_id, "
                                                                  "segment, action, channel, value, cost[, count]."),
    budget: float = typer.Option(..., "--budget", help="Total marketing budget (same units as the cost column)."),
    capacity: list[str] = CapacityOpt,
    min_coverage: list[str] = MinCoverageOpt,
    max_share: list[str] = MaxShareOpt,
    method: str = MethodOpt,
    solver: str = SolverOpt,
    time_limit: Optional[float] = TimeLimitOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Parquet file for the per-customer plan with its "
                                                           "explanation (value, priced cost, runner-up, margin)."),
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
        _check_out(out)
        problem = _allocation_problem(values_path, budget, capacity, min_coverage, max_share)
        from optimizer.allocate import allocate as solve_allocation
        from sim.atomic import atomic_write_parquet
        with _progress(f"allocating {problem.table.n:,} rows", 200) as upd:
            result = solve_allocation(problem, method=method, solver=solver, time_limit=time_limit,
                                      progress=lambda i: upd(min(i, 200)))
        doc = result.summary()
        if out is not None:
            atomic_write_parquet(out, result.plan_frame())
            doc["out"] = str(out)
    lines = [f"{doc['method']} ({doc['solver']}): value {doc['objective']:,.2f}, bound {doc['bound']:,.2f}, "
             f"gap {100 * doc['gap']:.4f}%, spend {doc['spend']:,.2f}, {doc['assigned_customers']:,} of "
             f"{doc['customers']:,} customers assigned, {doc['seconds']:.2f}s"]
    for u, sp in zip(doc["usage"], doc["shadow_prices"]):
        lines.append(f"  {u['constraint']:<34} used {u['used']:>14,.4g} of {u['limit']:<12,.4g} "
                     f"shadow price {sp['shadow_price']:,.4g} per {sp['per']}")
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
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the frontier (default: frontier.png beside "
                                                             "the value table)."),
    as_json: bool = JsonOpt,
) -> None:
    """The efficient frontier: for each budget the best plan's value, its bound and gap, the
    marginal value of one more unit of budget, and every shadow price; each solve starts from the
    previous budget's multipliers. Writes a PNG.

    Example: clv frontier values.parquet --budgets 5000,10000,20000,40000 --capacity channel:rm_call=300 --json
    """
    with _user_errors(), _infeasible(as_json):
        from sim.errors import ConfigError
        try:
            levels = [float(x) for x in budgets.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--budgets {budgets!r}: expected comma-separated numbers, e.g. 1e5,2e5") from None
        png = plot or Path(values_path).with_name("frontier.png")
        if png.suffix.lower() != ".png":
            raise ConfigError(f"--plot {png}: give a .png file name")
        _check_out(png, "--plot")
        problem = _allocation_problem(values_path, None, capacity, min_coverage, max_share)
        from optimizer.frontier import frontier as sweep, plot_frontier
        from sim.atomic import atomic_path
        with _progress(f"frontier over {len(levels)} budgets", len(levels)) as upd:
            doc = sweep(problem, levels, method=method, solver=solver, time_limit=time_limit, progress=upd)
        with atomic_path(png) as tmp:
            plot_frontier(doc, tmp)
        doc["plot"] = str(png)
    lines = [f"{'budget':>14}{'value':>16}{'gap %':>10}{'spend':>16}{'marginal':>11}{'shadow':>10}"]
    for p in doc["points"]:
        if p["objective"] is None:
            lines.append(f"{p['budget']:>14,.0f}  infeasible: {p['message']}")
            continue
        mv = "" if p["marginal_value"] is None else f"{p['marginal_value']:.4f}"
        lines.append(f"{p['budget']:>14,.0f}{p['objective']:>16,.2f}{100 * p['gap']:>10.4f}{p['spend']:>16,.2f}"
                     f"{mv:>11}{p['budget_shadow_price']:>10.4f}")
    lines.append(f"{doc['method']}: {len(levels)} budgets in {doc['seconds']:.1f}s; plot: {png}")
    _emit(doc, as_json, "\n".join(lines))


@app.command()
def ope(
    history_dir: Path = typer.Argument(..., metavar="HISTORY_DIR", help="History folder with decisions.csv "
                                                                       "(customer_id, date, action, propensity[, cost])."),
    policy: Optional[str] = typer.Option(None, "--policy", help="The candidate: a baseline (none, random, bau, "
                                                                "churn_threshold, greedy_uplift) or a folder from `clv train`."),
    target_prob_column: Optional[str] = typer.Option(None, "--target-prob-column", help="Instead of --policy: a "
                                                     "decisions column holding the candidate's probability of each "
                                                     "logged action (a policy made elsewhere); ips/snips (pdis/wpdis)."),
    world_path: Optional[Path] = typer.Option(None, "--world", help="World JSON the policy acts in (default: "
                                                                    "calibrate the history before --start, or all of it)."),
    estimators: str = typer.Option("dm,ips,snips,dr", "--estimators", help="Comma-separated: dm, ips, snips, dr, "
                                   "sndr (per_decision); pdis, wpdis, dr_seq, wdr, fqe (per_customer; the one-step "
                                   "names run their sequential counterparts)."),
    estimand: str = typer.Option("per_decision", "--estimand", help="per_decision (mean reward after a decision) or "
                                                                    "per_customer (sum over a customer's decisions)."),
    discount: Optional[float] = typer.Option(None, "--discount", help="Per-decision discount of the per_customer sum."),
    clip: Optional[float] = ClipOpt,
    bootstrap: int = BootstrapOpt,
    alpha: float = AlphaOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the folds and the bootstrap."),
    folds: int = FoldsOpt,
    reward_model: str = RewardModelOpt,
    start: Optional[str] = typer.Option(None, "--start", help="Evaluate decisions from this date."),
    end: Optional[str] = typer.Option(None, "--end", help="... up to this date (exclusive); closes reward windows."),
    workers: Optional[int] = RayWorkersOpt,
    address: Optional[str] = RayAddressOpt,
    out: Optional[Path] = OutJsonOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Estimate a candidate policy's value from the logged decisions (off-policy evaluation), with
    bootstrap confidence intervals (Ray tasks), effective sample sizes and a warning when the
    logging policy rarely did what the candidate would do.

    Example: clv ope bank/ --policy greedy_uplift --world world.json --estimators dm,ips,snips,dr --json
    """
    with _user_errors():
        from sim.errors import ConfigError
        _check_source(history_dir, None)
        _check_out(out)
        start_d = _date(start, "--start") if start else None
        end_d = _date(end, "--end") if end else None
        if (policy is None) == (target_prob_column is None):
            raise ConfigError("give --policy P or --target-prob-column COL (exactly one)")
        if world_path is not None:
            _check_world(world_path)
        from experiments.ope import OPESettings, evaluate_offline
        from experiments.ray_session import executor_for
        settings = OPESettings(estimand=estimand, estimators=_names(estimators), discount=discount, clip=clip, n_boot=bootstrap, alpha=alpha, seed=seed, folds=folds,
                               reward_model=reward_model, start=start_d, end=end_d)
        history = _load(history_dir, None)
        world = book = pol = None
        world_note = None
        if policy is not None:
            world, book, world_note = _ope_world(history, world_path, start_d)
            from policies.registry import policy_label, resolve_policy
            pol = resolve_policy(policy, world)
        with _progress("offline evaluation", 1) as upd:
            res = evaluate_offline(history, settings, policy=pol, world=world, book=book,
                                   target_column=target_prob_column, executor=executor_for(workers, address),
                                   progress=lambda stage, d, t: upd(d, t))
        res["history"] = str(history_dir)
        res["world"] = world_note
        if policy is not None:
            res["policy"] = policy
        if out is not None:
            from sim.atomic import atomic_write_json
            from sim.world import json_safe
            atomic_write_json(out, json_safe(res))
    lines = [f"{res['policy']} on {res['decisions']:,} decisions of {res['customers']:,} customers "
             f"({res['window']['start']} to {res['window']['end']}), estimand {res['estimand']}",
             f"logged policy's own value: {res['logged_policy_value']:.4g}",
             f"{'estimator':<10}{'value':>12}{'95% CI' if abs(alpha - 0.05) < 1e-12 else 'CI':>26}{'ESS':>10}"]
    for k, e in res["estimates"].items():
        lines.append(f"{k:<10}{e['value']:>12.4g}   [{e['ci_low']:>10.4g}, {e['ci_high']:>10.4g}]{e['ess']:>10.0f}")
    if res["diagnostics"].get("warning"):
        lines.append("warning: " + res["diagnostics"]["warning"])
    _emit(res, as_json, "\n".join(lines))


@app.command()
def backtest(
    history_dir: Path = typer.Argument(..., metavar="HISTORY_DIR", help="History folder with transactions and "
                                                                       "decisions.csv (customer_id, date, action, propensity[, cost])."),
    split_date: str = typer.Option(..., "--split-date", help="Calibrate on the history before this date; evaluate "
                                                            "on the decisions and outcomes from it on."),
    policies: str = typer.Option(..., "--policies", help="Comma-separated candidates (at least two): baselines (none, "
                                                        "random, bau, churn_threshold, greedy_uplift) or folders from `clv train`."),
    world_path: Optional[Path] = typer.Option(None, "--world", help="World JSON (its book beside it) calibrated up to "
                                                                    "the day before the split; skips calibration."),
    estimators: str = typer.Option("dm,ips,snips,dr", "--estimators", help="Comma-separated OPE estimators of the "
                                   "per_decision estimand: dm, ips, snips, dr, sndr (ranking uses dr if given, else the first)."),
    clip: Optional[float] = ClipOpt,
    bootstrap: int = BootstrapOpt,
    alpha: float = AlphaOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the OPE folds and bootstrap, and first simulation seed."),
    folds: int = FoldsOpt,
    reward_model: str = RewardModelOpt,
    seeds: int = typer.Option(5, "--seeds", min=1, help="Simulation seeds (CIs over seeds)."),
    customers: Optional[int] = typer.Option(None, "--customers", min=1, help="Simulated customers (default: the whole book)."),
    workers: Optional[int] = RayWorkersOpt,
    address: Optional[str] = RayAddressOpt,
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
        _check_out(out)
        split = _date(split_date, "--split-date")
        from experiments.backtest import BacktestSettings, check_policies, run_backtest
        specs = check_policies(policies.split(","))
        if world_path is not None:
            _check_world(world_path)
        from experiments.ope import OPESettings
        ope_settings = OPESettings(estimators=_names(estimators), clip=clip, n_boot=bootstrap, alpha=alpha,
                                   seed=seed, folds=folds, reward_model=reward_model)  # checked before any work
        settings = BacktestSettings(ope_settings, seeds=seeds, customers=customers, workers=workers, address=address)
        history = _load(history_dir, None)
        world = book = note = None
        if world_path is not None:
            world, book, note = _ope_world(history, world_path, split)
        else:
            typer.echo(f"calibrating a world on {history_dir} before {split} (give --world to reuse one)", err=True)
        with _progress("backtest", 1) as upd:
            res = run_backtest(history, split, specs, settings, world=world, book=book, world_note=note,
                               progress=lambda stage, d, t: upd(d, t))
        if out is not None:
            from sim.atomic import atomic_write_json
            from sim.world import json_safe
            atomic_write_json(out, json_safe(res))
    lg = res["logged"]
    main = res["estimand"]["main_estimator"]
    lines = [f"backtest split {res['split_date']}: {lg['decisions']:,} logged decisions of {lg['customers']:,} "
             f"customers after it; logged policy's actual value per decision {lg['per_decision']:.4g}",
             f"{'policy':<18}{'OPE ' + main:>12}{'95% CI' if abs(alpha - 0.05) < 1e-12 else 'CI':>24}"
             f"{'vs logged':>11}{'sim/decision':>14}{'sim CLV':>10}"]
    for n, p in res["policies"].items():
        e, s = p["ope"][main], p["simulation"]
        lines.append(f"{n:<18}{e['value']:>12.4g}   [{e['ci_low']:>9.4g}, {e['ci_high']:>9.4g}]"
                     f"{p['ope_vs_logged']['value']:>+11.4g}{s['per_decision_reward']['mean']:>14.4g}"
                     f"{s['clv']['mean']:>10.2f}")
    r = res["ranking"]
    lines.append(f"ranking OPE: {' > '.join(r['ope'])}; simulation: {' > '.join(r['simulation'])}; "
                 f"Kendall tau {r['kendall_tau']:+.2f}; same best: {'yes' if r['same_best'] else 'no'}")
    lines += [f"warning: {w}" for w in res["warnings"]]
    lines.append(f"{res['seconds']:.1f}s")
    _emit(res, as_json, "\n".join(lines))


def _names(text: str) -> tuple[str, ...]:
    """The names of a comma-separated option, e.g. --estimators dm,ips."""
    return tuple(e.strip() for e in text.split(",") if e.strip())


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


def _date(text: str, option: str) -> str:
    """A calendar date as YYYY-MM-DD (accepts YYYY-MM-DD, YYYYMMDD or an ISO date-time); checked
    without pandas so that bad options are answered at once."""
    import datetime as dt
    t = (text or "").strip()
    for parse in (dt.date.fromisoformat, lambda v: dt.datetime.strptime(v, "%Y%m%d").date(),
                  lambda v: dt.datetime.fromisoformat(v).date()):
        try:
            return str(parse(t))
        except ValueError:
            continue
    _err(f"{option}: {text!r} is not a date (use YYYY-MM-DD)")
    return t


@app.command()
def scenarios(
    file: Path = typer.Argument(..., metavar="FILE", help="Scenario YAML: world, population, customers, horizon, "
                                                         "seeds, policies, budgets, constraints, values "
                                                         "(see examples/scenario_bank.yaml)."),
    out: Path = typer.Option(..., "--out", help="Folder for cells/, results.parquet, periods.parquet, "
                                                "summary.json, timings.json and scenario.json."),
    address: Optional[str] = typer.Option(None, "--address", help="An existing Ray cluster (e.g. ray://head:10001 "
                                                                  "or auto); default: a local Ray started here."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="CPUs of the local Ray (default: all "
                                                                         "cores); cells run one per CPU."),
    as_json: bool = JsonOpt,
) -> None:
    """Run a grid of policies x budgets x seeds over one world, every cell a Ray task; each finished
    cell is written at once, and a re-run skips the cells already done (resume after interruption).

    Example: clv scenarios examples/scenario_bank.yaml --out runs/bank_sweep --workers 2 --json
    """
    with _user_errors():
        from experiments.scenarios import load_scenario, run_scenario
        sc = load_scenario(file)
        _check_out(out, folder=True)
        with _progress(f"scenario {sc.name}", len(sc.cells())) as upd:
            doc = run_scenario(sc, out, address=address, workers=workers, progress=lambda d, t: upd(d, t))
    lines = [f"{doc['cells']} cells ({doc['run']} run, {doc['skipped']} already done) on {doc['workers']} workers "
             f"in {doc['seconds']:.1f}s -> {doc['results']}",
             f"{'policy':<22}{'budget':>10}{'CLV':>10}{'incr. CLV':>11}{'retention':>11}{'contacts':>10}"]
    for s in doc["summary"]:
        b = "-" if s["budget"] is None else f"{s['budget']:g}"
        lines.append(f"{s['policy']:<22}{b:>10}{s['clv']['mean']:>10.2f}{s['incremental_clv']['mean']:>11.2f}"
                     f"{s['retention']['mean']:>11.3f}{s['contacts']['mean']:>10.2f}")
    lines.append(f"report: {doc['report']}" + (f" (offline evaluation: {doc['ope']})" if doc.get("ope") else ""))
    _emit(doc, as_json, "\n".join(lines))


@app.command()
def run(
    config: Path = typer.Argument(..., metavar="CONFIG", help="Run config YAML: history, calibration_end, holdout_end, "
                                                             "policy, values, budgets, budget, constraints, evaluation, "
                                                             "ope (see examples/bank_demo.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: ./runs/NAME, NAME from the "
                                                           "config)."),
    sets: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set policy.steps=20000 or "
                                                     "--set budget=1500 (repeatable; values read as YAML)."),
    as_json: bool = JsonOpt,
) -> None:
    """The whole job in one command: load (or generate) the history, calibrate, validate on the
    holdout, train the policy, build the value table, solve the budget frontier and the plan,
    evaluate the plan in simulation (fresh seeds) and offline (the holdout's logged decisions),
    and write report.html and run.json. Prints where the report is.

    Exit status: 0 done; 2 bad config or input (one line naming the file and key, row or column);
    3 the constraints cannot hold at the plan's budget (the line says the smallest budget that would).

    Example: clv run examples/bank_demo.yaml --out demo_out
    """
    with _user_errors(), _infeasible(as_json):
        from experiments.config import parse_sets
        from experiments.run_config import load_run_config
        cfg = load_run_config(config, parse_sets(sets))
        out = Path(out) if out is not None else Path("runs") / cfg.name
        _check_out(out, folder=True)
        from experiments.pipeline import run_pipeline
        t0 = time.perf_counter()
        with _progress("run", 1) as upd:
            def progress(step: str, done: int, total: int) -> None:
                upd(done, max(total, 1))

            def log(msg: str) -> None:
                typer.echo(f"[{time.perf_counter() - t0:6.1f}s] {msg}", err=True)
            doc = run_pipeline(cfg, out, progress=progress, log=log)
    p, chk = doc["plan"], doc["evaluation"]["plan_check"]
    sim_lift = chk["simulated_lift_per_customer"]
    lines = [f"plan at budget {p['budget']:,.6g}: {p['assigned_customers']:,} of {doc['calibration']['customers']:,} "
             f"customers contacted, "
             f"spend {p['spend']:,.2f}, predicted lift {p['objective']:,.2f} (gap {100 * p['gap']:.4f}%)",
             f"simulated lift per customer on fresh seeds: {sim_lift['mean']:+.3f} "
             f"(95% CI {sim_lift['ci_low']:+.3f} to {sim_lift['ci_high']:+.3f}; predicted "
             f"{chk['predicted_lift_per_customer']:+.3f})"]
    if doc.get("ope"):
        o = doc["ope"]
        main = "dr" if "dr" in o["estimates"] else next(iter(o["estimates"]))
        d = o["estimates"][main]["plan_minus_logged"]
        lines.append(f"offline ({main}): plan minus what the bank did, per decision {d['value']:+.3f} "
                     f"(95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f}) on {o['customers']:,} customers")
    lines += [f"note: {n}" for n in doc.get("notes", [])]
    lines.append(f"done in {doc['timings']['total']:.0f}s; report: {doc['report']}")
    _emit(doc, as_json, "\n".join(lines))
    if as_json:
        typer.echo(f"report: {doc['report']}", err=True)


def main() -> None:  # pragma: no cover
    """The `clv` entry point. Arrow objects still referenced by an error's traceback are freed here,
    while Arrow is alive: left to the interpreter's final teardown, its reader threads can abort
    the process (exit 134 instead of the error's exit status; apache/arrow#34314)."""
    import gc
    try:   # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as cx
    code: Any = 0
    try:
        code = app(standalone_mode=False) or 0   # click's Exit (typer.Exit, --help) comes back as its code
    except cx.NoArgsIsHelpError as e:   # `clv` alone: typer has printed the overview while raising this
        code = e.exit_code
    except cx.UsageError as e:   # a missing or malformed option: one line, like every other error
        where = e.ctx.command_path if e.ctx is not None else "clv"
        typer.echo(f"error: {e.format_message()} (see `{where} --help`)", err=True)
        code = e.exit_code
    except cx.ClickException as e:
        e.show()
        code = e.exit_code
    except cx.Abort:
        typer.echo("aborted", err=True)
        code = 1
    except SystemExit as e:
        code = e.code
    gc.collect()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
