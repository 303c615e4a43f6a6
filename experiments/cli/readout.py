"""`clv readout`: the lift of a deployed plan, read out of what happened (experiments.readout)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import JsonOpt, _check_out, _date, _emit, _user_errors, _write_json, app


def _fmt(iv: dict) -> str:
    if iv.get("ci_low") is None:
        return f"{iv['mean']:+,.3f} (no interval)"
    return f"{iv['mean']:+,.3f} [{iv['ci_low']:+,.3f}, {iv['ci_high']:+,.3f}]"


@app.command()
def readout(
    history_dir: Path = typer.Argument(
        ..., metavar="HISTORY", help="History folder holding what happened after the deployment (the data contract)."
    ),
    deployment: Optional[Path] = typer.Option(
        None,
        "--deployment",
        help="The deployment file (`clv plan --control-share`): customer_id, date, action, propensity, group "
        "(treatment, control, explore) [, cost, segment, control_share]; CSV or Parquet. Default with --run: "
        "RUN/deployment.csv.",
    ),
    start: str = typer.Option(..., "--start", help="First day of the read-out window (on or after the deployment)."),
    end: str = typer.Option(..., "--end", help="Day after the read-out window's last day: the window is [start, end)."),
    plan: Optional[Path] = typer.Option(
        None, "--plan", help="The plan's plan.json: its predicted_lift is shown beside the measured lift."
    ),
    predicted: Optional[float] = typer.Option(
        None,
        "--predicted",
        help="The predicted lift per customer in scope over the window (instead of the plan's rescaled one).",
    ),
    world: Optional[Path] = typer.Option(
        None, "--world", help="A world JSON whose book gives the segments (default: customers.csv's segment column)."
    ),
    outcomes: Optional[Path] = typer.Option(
        None, "--outcomes", help="Parquet file: one row per deployed customer with its outcome and pre-period value."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the read-out document as JSON here."),
    run: Optional[Path] = typer.Option(
        None,
        "--run",
        help="A `clv run` folder: reads its deployment.csv and plan.json (unless --deployment / --plan / --predicted "
        "are given), writes RUN/readout.json (unless --out) and renders RUN/report.html again with the "
        "predicted-vs-measured lift chart.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Measure the lift of a deployed plan: treatment vs the randomised control group, per customer,
    on the contract reward over [start, end) (difference in means with Welch's 95 % interval, and
    CUPED on the same earnings over an equally long window before the deployment), per segment
    and per action, the ROI, the plan's prediction beside it and a verdict (confirmed, not
    detected, contradicted). The overall contrast is intent-to-treat (explore customers count as
    assigned) and stratified by segment when the control share differs between segments.

    Example: clv readout history/ --deployment deployment.csv --start 2024-03-04 --end 2024-06-03 --plan plan/plan.json --json

    On a run folder (its deployment and plan; the chart goes into its report): clv readout history/ --run
    demo_out --start 2024-07-01 --end 2024-09-30
    """
    with _user_errors():
        s, e = _date(start, "--start"), _date(end, "--end")
        from sim.errors import ConfigError

        report = None
        if run is not None:  # a `clv run` folder: its deployment, its plan, and the read-out beside its report
            from experiments.reports.run import READOUT_FILE

            if not (run / "run.json").is_file():
                raise ConfigError("run", value=str(run), message="no run.json; give the folder of a finished `clv run`")
            if deployment is None:
                deployment = run / "deployment.csv"
                if not deployment.is_file():
                    raise ConfigError(
                        "run", value=str(run), message="no deployment.csv (the run had no experiment: section)"
                    )
            if plan is None and predicted is None and (run / "plan.json").is_file():
                plan = run / "plan.json"
            out = out or run / READOUT_FILE
            report = run / "report.html"
        if deployment is None:
            raise ConfigError("deployment", message="give the deployment file (or --run RUN_FOLDER)")

        if outcomes is not None and outcomes.suffix.lower() != ".parquet":
            raise ConfigError("outcomes", value=str(outcomes), message="must be a .parquet file")
        if out is not None and out.suffix.lower() != ".json":
            raise ConfigError("out", value=str(out), message="must be a .json file")
        _check_out(out, inputs=(history_dir, deployment, plan, world))
        _check_out(outcomes, option="--outcomes", inputs=(history_dir, deployment, plan, world))
        from experiments.readout import read_out
        from sim.history import load_history, restore_customer_ids

        history = load_history(history_dir)
        doc, table = read_out(history, deployment, s, e, plan=plan, predicted=predicted, world=world)
        if outcomes is not None:
            from sim.atomic import atomic_path

            table = table.copy()
            table["customer_id"] = restore_customer_ids(
                table["customer_id"].to_numpy(), history.report.get("customer_id_type")
            )
            with atomic_path(outcomes) as tmp:
                table.to_parquet(tmp, index=False)
            doc["outcomes"] = str(outcomes)
        if out is not None:
            _write_json(out, doc)
        if report is not None:
            from experiments.reports.run import rewrite_run_report

            doc["report"] = str(rewrite_run_report(run))
    lift = doc["lift"]
    c = doc["customers"]
    th = lift["cuped"]["theta"]
    theta = "theta within each stratum" if th is None else f"theta {th:.3f}"
    lines = [
        f"deployment {doc['deployment_date']}: {c['treatment']:,} treatment, {c['control']:,} control, "
        f"{c['explore']:,} explore (assigned); window {doc['window']['start']} to {doc['window']['end']}",
        f"lift per customer, difference in means: {_fmt(lift['difference_in_means'])}",
        f"lift per customer, CUPED ({theta}): {_fmt(lift['cuped'])}",
    ]
    if doc["estimator"] == "stratified":
        p = doc["lift_pooled"]["difference_in_means"]
        lines.insert(1, f"estimator: stratified by {doc['strata']['by']} (control shares differ); pooled: {_fmt(p)}")
    r = doc["roi"]
    if r["roi"] is not None:
        lines.append(f"ROI: incremental margin / incremental cost = {r['roi']:.2f} (cost {r['incremental_cost']:,.3f})")
    if doc["predicted"] is not None:
        lines.append(f"predicted: {doc['predicted']['per_customer_in_scope']:+,.3f} per customer in scope")
    lines.append(f"verdict: {doc['verdict']['verdict']} ({doc['verdict']['reason']})")
    lines += [f"warning: {w}" for w in doc["warnings"]]
    lines += [f"report: {doc['report']}"] if doc.get("report") else []
    _emit(doc, as_json, "\n".join(lines))
