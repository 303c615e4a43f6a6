"""The job commands: scenarios (a grid of policies x budgets x seeds on Ray) and run (the whole
job from a config: experiments.pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (
    ConnectTimeoutOpt,
    JsonOpt,
    _check_out,
    _emit,
    _err,
    _infeasible,
    _progress,
    _user_errors,
    app,
    stamp,
)


@app.command()
def scenarios(
    file: Path = typer.Argument(
        ...,
        metavar="FILE",
        help="Scenario YAML: world, population, customers, horizon, "
        "seeds, policies, budgets, constraints, values "
        "(see examples/scenario_bank.yaml).",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Folder for cells/, results.parquet, periods.parquet, summary.json, timings.json and scenario.json.",
    ),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="An existing Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray started here.",
    ),
    connect_timeout: float = ConnectTimeoutOpt,
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="CPUs of the local Ray (default: all cores); cells run one per CPU."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Run a grid of policies x budgets x seeds over one world, every cell a Ray task; each finished
    cell is written at once, and a re-run skips the cells already done (resume after interruption).

    Exit status: 0 done; 2 a bad scenario file or input (one line naming the key); 1 a cell Ray could
    not finish (its worker died on every try: killed, out of memory): the line names the cell, and
    the cells finished before it are kept for the re-run.

    Example: clv scenarios examples/scenario_bank.yaml --out runs/bank_sweep --workers 2 --json
    """
    with _user_errors():
        from experiments.scenarios import CellFailed, load_scenario, run_scenario

        sc = load_scenario(file)
        from .outputs import SCENARIO_FILES

        inputs = (file, sc.world, sc.book, *sc.policy_paths, (sc.ope or {}).get("history"))
        _check_out(out, folder=True, inputs=inputs, writes=SCENARIO_FILES)
        try:
            with _progress(f"scenario {sc.name}", len(sc.cells())) as upd:
                doc = run_scenario(sc, out, address=address, workers=workers, progress=lambda d, t: upd(d, t))
        except CellFailed as e:  # a worker that died on every try: not the user's input, not a bug here
            _err(str(e), 1)
    lines = [
        f"{doc['cells']} cells ({doc['run']} run, {doc['skipped']} already done) on {doc['workers']} workers "
        f"in {doc['seconds']:.1f}s -> {doc['results']}",
        f"{'policy':<22}{'budget':>10}{'CLV':>10}{'incr. CLV':>11}{'retention':>11}{'contacts':>10}",
    ]
    for s in doc["summary"]:
        b = "-" if s["budget"] is None else f"{s['budget']:g}"
        lines.append(
            f"{s['policy']:<22}{b:>10}{s['clv']['mean']:>10.2f}{s['incremental_clv']['mean']:>11.2f}"
            f"{s['retention']['mean']:>11.3f}{s['contacts']['mean']:>10.2f}"
        )
    lines.append(f"report: {doc['report']}" + (f" (offline evaluation: {doc['ope']})" if doc.get("ope") else ""))
    _emit(doc, as_json, "\n".join(lines))


@app.command()
def run(
    config: Path = typer.Argument(
        ...,
        metavar="CONFIG",
        help="Run config YAML: history, calibration_end, holdout_end, "
        "policy, compare, plan, budgets, budget, constraints, evaluation, "
        "ope (see examples/bank_demo.yaml).",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (default: ./runs/NAME, NAME from the config)."
    ),
    sets: list[str] = typer.Option(
        [],
        "--set",
        help="Override a config key, e.g. --set policy.steps=20000 or "
        "--set budget=1500 (repeatable; values read as YAML).",
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=0, help="CPUs of the local Ray the plan's seeds run on (default: all; 0: in-process)."
    ),
    address: Optional[str] = typer.Option(None, "--address", help="An existing Ray cluster for the plan's seeds."),
    connect_timeout: float = ConnectTimeoutOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The whole job in one command: load (or generate) the history, calibrate, validate on the
    holdout, train the policy, then spend each horizon budget on the policy's contacts (the
    budgeted plan of `clv plan`): the frontier by simulation beside the baselines, the plan at
    `budget` with its first period's contact list, judged on fresh seeds and offline on the
    holdout's logged decisions; writes report.html and run.json. Prints where the report is.

    Exit status: 0 done; 2 bad config or input (one line naming the file and key, row or column);
    3 the constraints cannot hold in some period at a budget (the line names the period and the
    constraint, and what that period needs).

    Example: clv run examples/bank_demo.yaml --out demo_out
    """
    with _user_errors(), _infeasible(as_json):
        from experiments.config import parse_sets
        from experiments.run_config import load_run_config

        cfg = load_run_config(config, parse_sets(sets))
        out = Path(out) if out is not None else Path("runs") / cfg.name
        from experiments.run_folder import RUN_OUTPUTS

        inputs = (config, cfg.history.get("path"), cfg.policy.get("spec"))
        _check_out(out, folder=True, inputs=inputs, writes=RUN_OUTPUTS)
        from experiments.pipeline import run_pipeline
        from experiments.ray_session import executor_session

        with _progress("run", 1) as upd, executor_session(workers, address) as executor:

            def progress(step: str, done: int, total: int) -> None:
                upd(done, max(total, 1), step=step)

            def log(msg: str) -> None:
                typer.echo(f"{stamp()} {msg}", err=True)

            # warnings (the bundled bank's catalogue standing in for actions.yaml) as soon as known
            doc = run_pipeline(
                cfg, out, progress=progress, log=log, executor=executor, warn=lambda m: typer.echo(m, err=True)
            )
    p, ev = doc["plan"], doc["evaluation"]
    lift, vs_alone, pred = p["lift_vs_none"], p["lift_vs_policy_alone"], p["predicted_lift"]
    lines = [
        f"plan at {p['budget']:,.6g} over {p['horizon']} periods: spend {p['spend']['mean']:,.0f} "
        f"(the {p['policy']} alone would spend {p['policy_alone_spend']['mean']:,.0f}); "
        f"{p['first_period_contacts']:,} contacts in the first period (contacts.parquet)",
        f"lift per customer vs contacting no one on fresh seeds: {lift['mean']:+.3f} "
        f"(95% CI {lift['ci_low']:+.3f} to {lift['ci_high']:+.3f}; predicted {pred['mean']:+.3f}, "
        + ("inside" if ev["check"]["predicted_inside_fresh_ci"] else "OUTSIDE")
        + f" the interval); vs {p['policy']} alone {vs_alone['mean']:+.3f} "
        f"(95% CI {vs_alone['ci_low']:+.3f} to {vs_alone['ci_high']:+.3f})",
        "frontier (lift per customer on fresh seeds): "
        + ", ".join(f"{q['budget']:,.6g} -> {q['lift_vs_none']['mean']:+.3f}" for q in doc["frontier"]["points"]),
    ]
    if doc.get("ope"):
        o = doc["ope"]
        main = "dr" if "dr" in o["estimates"] else next(iter(o["estimates"]))
        d = o["estimates"][main]["plan_minus_logged"]
        lines.append(
            f"offline ({main}): first period's contacts minus what the bank did, per decision {d['value']:+.3f} "
            f"(95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f}) on {o['customers']:,} customers"
        )
    lines += [f"note: {n}" for n in doc.get("notes", [])]
    lines.append(f"done in {doc['timings']['total']:.0f}s; report: {doc['report']}")
    _emit(doc, as_json, "\n".join(lines))
    if as_json:
        typer.echo(f"report: {doc['report']}", err=True)
