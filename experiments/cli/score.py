"""`clv score`: one row per book customer for the CRM and the lifecycle team (experiments.score)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import ConnectTimeoutOpt, JsonOpt, _check_out, _check_world, _emit, _progress, _user_errors, app


@app.command()
def score(
    world_path: Path = typer.Argument(..., metavar="WORLD", help="World JSON from `clv calibrate` (with its book)."),
    out: Path = typer.Option(..., "--out", help="Parquet file: one row per book customer."),
    policy: str = typer.Option(
        "none",
        "--policy",
        help="The policy the twins follow and whose next best action is given: a baseline (none, random, bau, "
        "churn_threshold, greedy_uplift) or a folder from `clv train`. With none, the next best action is the "
        "allowed contact of largest positive value.",
    ),
    horizon: int = typer.Option(52, "--horizon", help="Periods of expected CLV, transactions, stage and product."),
    draws: int = typer.Option(16, "--draws", help="Digital twins per customer (stratified posterior draws)."),
    as_of: Optional[str] = typer.Option(
        None,
        "--as-of",
        help="The date the scores are as of (default: the world's calibration end, its book's date). Another "
        "date needs --history: the world is recalibrated on it up to that day with the world's own settings.",
    ),
    history_dir: Optional[Path] = typer.Option(
        None, "--history", help="The history folder to recalibrate on for --as-of (e.g. the world's own, updated)."
    ),
    tags_path: Optional[Path] = typer.Option(
        None, "--tags", help="A tags.yaml of rule-based tags (default: the shipped library)."
    ),
    csv: bool = typer.Option(False, "--csv", help="Also write the scores as CSV beside the Parquet file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the twins and the value model; same seed, same numbers."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=0, help="CPUs of the local Ray for the twins (default: all; 0 runs in-process)."
    ),
    address: Optional[str] = typer.Option(None, "--address", help="An existing Ray cluster."),
    connect_timeout: float = ConnectTimeoutOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Score every customer of a world's book: segment, stage now and next, P(alive), churn
    probabilities at 13/26/52 periods, expected transactions and CLV with a 10-90 % interval, RFM
    scores and value tier, products and the next likely one, payment regularity, the next best
    action with its value, cost, runner-up and reason, eligible and opted-out channels, and tags.

    Example: clv score world.json --out scores.parquet --policy greedy_uplift --horizon 52 --json
    """
    with _user_errors():
        from experiments.score import ScoreSettings
        from sim.errors import ConfigError

        settings = ScoreSettings(horizon=horizon, draws=draws, policy=policy, seed=seed)
        from policies.registry import check_policy_spec

        check_policy_spec(policy)
        _check_world(world_path)
        if out.suffix.lower() != ".parquet":
            raise ConfigError("out", value=str(out), message="must be a .parquet file (add --csv for a CSV copy)")
        from sim.world import WorldModel

        world = WorldModel.load(world_path)
        book_path = world.book_path(world_path)
        csv_path = out.with_suffix(".csv")
        _check_out(out, inputs=(world_path, book_path, history_dir, tags_path))
        if csv:
            _check_out(csv_path, option="--csv", inputs=(world_path, book_path, history_dir, tags_path))
        recalibrate = None
        if as_of is not None:
            from .common import _date

            day = _date(as_of, "--as-of")
            if world.calibration_end is None or day != str(world.calibration_end)[:10]:
                if history_dir is None:
                    raise ConfigError(
                        "as_of",
                        value=day,
                        message=f"the book of {world_path} is as of {str(world.calibration_end)[:10]}; give "
                        "--history HISTORY to recalibrate on it up to that day",
                    )
                recalibrate = day
        elif history_dir is not None:
            raise ConfigError("history", "{key:history} is for recalibrating to {key:as_of}: give {key:as_of} DATE too")
        tags = None
        if tags_path is not None:  # checked against the score's columns before any work
            from experiments.tags import load_tags, score_columns

            tags = load_tags(tags_path, columns=score_columns(world.products))
        world_note = str(world_path)
        if recalibrate is not None:
            from .common import _load

            history = _load(history_dir, None)
            import pandas as pd

            first, last = history.transactions["date"].min(), history.transactions["date"].max()
            if not first <= pd.Timestamp(recalibrate) <= last:
                raise ConfigError(
                    "as_of",
                    value=recalibrate,
                    message=f"is outside the history {history_dir} ({first.date()} to {last.date()}); "
                    "give a day inside it",
                )
            from sim.calibrate import calibrate_like

            world, book, _ = calibrate_like(world, history, recalibrate)
            world_note = f"{world_path} recalibrated on {history_dir} up to {recalibrate} with its settings"
        else:
            if book_path is None or not book_path.exists():
                raise ConfigError(f"{world_path}: its book ({book_path}) is missing; recalibrate with `clv calibrate`")
            book = world.read_book(world_path)
        from policies.registry import resolve_policy

        pol = resolve_policy(policy, world)
        from experiments.ray_session import executor_session
        from experiments.score import score_customers

        with executor_session(workers, address) as ex, _progress("scoring customers", 1) as upd:
            scores, summary = score_customers(
                world, book, settings, policy=pol, tags=tags, executor=ex, progress=lambda s, d, t: upd(d, t)
            )
        from sim.atomic import atomic_path
        from sim.history import restore_customer_ids

        scores["customer_id"] = restore_customer_ids(scores["customer_id"].to_numpy(), world.customer_id_type)
        with atomic_path(out) as tmp:
            scores.to_parquet(tmp, index=False)
        if csv:
            with atomic_path(csv_path) as tmp:
                scores.to_csv(tmp, index=False)
        doc = {
            "world": world_note,
            "as_of": str(world.calibration_end)[:10] if world.calibration_end else None,
            "out": str(out),
            "csv": str(csv_path) if csv else None,
            "policy": policy,
            "columns": list(scores.columns),
            **summary,
        }
    lines = [
        f"scored {doc['customers']:,} customers as of {doc['as_of']} -> {out}"
        + (f" (and {doc['csv']})" if doc["csv"] else ""),
        f"expected CLV over {horizon} periods: {doc['expected_clv_h']:,.2f} per customer",
        f"{'stage':<12}{'customers':>10}{'CLV':>12}{'P(alive)':>10}{'churn 26':>10}{'contact':>9}",
    ]
    for r in doc["by_stage"]:
        lines.append(
            f"{r['stage']:<12}{r['customers']:>10,}{r['expected_clv_h']:>12,.2f}{r['p_alive']:>10.2f}"
            f"{r['churn_prob_26']:>10.2f}{r['contact_share']:>9.0%}"
        )
    _emit(doc, as_json, "\n".join(lines))
