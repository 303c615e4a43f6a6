"""The job commands: scenarios (a grid of policies x budgets x seeds on Ray) and run (the whole
job from a config: experiments.pipeline)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import JsonOpt, _check_out, _emit, _infeasible, _progress, _user_errors, app


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
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1, help="CPUs of the local Ray (default: all cores); cells run one per CPU."
    ),
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
        "policy, values, budgets, budget, constraints, evaluation, "
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
    lines = [
        f"plan at budget {p['budget']:,.6g}: {p['assigned_customers']:,} of {doc['calibration']['customers']:,} "
        f"customers contacted, "
        f"spend {p['spend']:,.2f}, predicted lift {p['objective']:,.2f} (gap {100 * p['gap']:.4f}%)",
        f"simulated lift per customer on fresh seeds: {sim_lift['mean']:+.3f} "
        f"(95% CI {sim_lift['ci_low']:+.3f} to {sim_lift['ci_high']:+.3f}; predicted "
        f"{chk['predicted_lift_per_customer']:+.3f})",
    ]
    if doc.get("ope"):
        o = doc["ope"]
        main = "dr" if "dr" in o["estimates"] else next(iter(o["estimates"]))
        d = o["estimates"][main]["plan_minus_logged"]
        lines.append(
            f"offline ({main}): plan minus what the bank did, per decision {d['value']:+.3f} "
            f"(95% CI {d['ci_low']:+.3f} to {d['ci_high']:+.3f}) on {o['customers']:,} customers"
        )
    lines += [f"note: {n}" for n in doc.get("notes", [])]
    lines.append(f"done in {doc['timings']['total']:.0f}s; report: {doc['report']}")
    _emit(doc, as_json, "\n".join(lines))
    if as_json:
        typer.echo(f"report: {doc['report']}", err=True)
