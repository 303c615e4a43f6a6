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
    deployment: Path = typer.Option(
        ...,
        "--deployment",
        help="The deployment file (`clv plan --control-share`): customer_id, date, action, propensity, group "
        "(treatment, control, explore) [, cost]; CSV or Parquet.",
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
    as_json: bool = JsonOpt,
) -> None:
    """Measure the lift of a deployed plan: treatment vs the randomised control group, per customer,
    on the contract reward over [start, end) (difference in means with Welch's 95 % interval, and
    CUPED on the same earnings over an equally long window before the deployment), per segment
    and per action, the ROI, the plan's prediction beside it and a verdict (confirmed, not
    detected, contradicted). Explore customers are left out of the contrast.

    Example: clv readout history/ --deployment deployment.csv --start 2024-03-04 --end 2024-06-03 --plan plan/plan.json --json
    """
    with _user_errors():
        s, e = _date(start, "--start"), _date(end, "--end")
        from sim.errors import ConfigError

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
    lift = doc["lift"]
    c = doc["customers"]
    lines = [
        f"deployment {doc['deployment_date']}: {c['treatment']:,} treatment, {c['control']:,} control, "
        f"{c['explore']:,} explore (left out); window {doc['window']['start']} to {doc['window']['end']}",
        f"lift per customer, difference in means: {_fmt(lift['difference_in_means'])}",
        f"lift per customer, CUPED (theta {lift['cuped']['theta']:.3f}): {_fmt(lift['cuped'])}",
    ]
    r = doc["roi"]
    if r["roi"] is not None:
        lines.append(f"ROI: incremental margin / incremental cost = {r['roi']:.2f} (cost {r['incremental_cost']:,.3f})")
    if doc["predicted"] is not None:
        lines.append(f"predicted: {doc['predicted']['per_customer_in_scope']:+,.3f} per customer in scope")
    lines.append(f"verdict: {doc['verdict']['verdict']} ({doc['verdict']['reason']})")
    lines += [f"warning: {w}" for w in doc["warnings"]]
    _emit(doc, as_json, "\n".join(lines))
