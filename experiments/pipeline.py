"""The end-to-end job behind `clv run CONFIG`: from a history to a budgeted plan over a horizon,
judged on fresh seeds and offline, and reported.

Steps (each writes its files atomically into the output folder OUT as it finishes; nothing is
written before the config has been checked against the history and the calibrated world):

1. history: load the folder (or bundled dataset), or generate the synthetic bank into OUT/history/
   (staged beside it until the checks pass);
2. calibrate the world on the days up to `calibration_end`, in memory; with `holdout_end`, validate
   it on (calibration_end, holdout_end] (the same fit: `sim.validate` calibrates with the same
   arguments, and its world is the one kept); check the config against it (experiments.run_checks),
   then write OUT/world.json + world.book.parquet and OUT/validation/;
3. policy: train an SB3 agent on the world -> OUT/policy/ (model.zip, card.json; reused when a
   card for the same world, algorithm, steps, seed and hyperparameters is already there), or use a
   baseline or a given `clv train` folder;
4. plan: the budgeted policy (experiments.budget_plan, what `clv plan` runs): every contact the
   policy makes over `plan.horizon` periods is paid from the horizon budget and held to the
   constraints in every period. The frontier over `budgets` (and `budget`) by simulation on fresh
   seeds, with the policy alone and the `compare` baselines beside it -> OUT/frontier.json,
   frontier.png; the plan at `budget` -> OUT/contacts.parquet (the first period's contact list),
   schedule.parquet (per period x segment x channel), plan.json; every run on the fresh seeds
   (none, the policy alone, the plan, the baselines) -> OUT/evaluation.json;
5. scores: one row per book customer under the policy over the plan's horizon (experiments.score,
   what `clv score` runs) -> OUT/scores.parquet; its per-stage and per-segment summary in run.json;
6. with `holdout_end` and logged decisions: the first period's contacts valued offline at each
   book customer's first logged decision in the holdout (`experiments.ope.plan`), beside the
   policy alone's first-period decisions -> OUT/ope.json;
7. OUT/run.json (every figure above, the resolved config, timings) and OUT/report.html.

Seeds: the config's `seed` drives K-means, the validation draws and (unless `policy.seed` is given)
training; the plan sets its price on seeds seed, seed+1, ... (`evaluation.seeds` of them) and is
judged on as many fresh seeds from seed + 10000 (experiments.budget_plan.FRESH_SEED_OFFSET): the
same numbers as `clv plan OUT/world.json --policy ... --seed SEED`, on any number of Ray workers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.errors import ClvError, ConfigError

from .config import parsed_constraints
from .results import CalibrationResult
from .run_checks import calibration_error, check_against_world, check_dates, deployment_settings, ope_settings
from .run_config import RunConfig
from .run_folder import IN_PROGRESS, RUN_OUTPUTS, RunWrites, generated, start_run

STEPS = ("history", "calibration", "policy", "plan", "scores", "ope", "report")

Progress = Callable[[str, int, int], None]  # (step, done, total) within the step
Log = Callable[[str], None]


def _history(cfg: RunConfig, writes: RunWrites, log: Log):
    """(history, source); a generated history is written into a staging folder beside OUT/history
    (moved there once the run's checks pass: RunWrites.commit_history)."""
    from sim.history import load_history

    h = cfg.history
    if "generate" in h:
        from sim.synthetic import BankConfig, write_bank_history

        folder = writes.out / "history"
        if folder.is_dir() and any(folder.iterdir()) and not generated(folder):
            raise ConfigError(
                f"{cfg.file}: history.generate: {folder} holds files that clv did not generate; they would be "
                "overwritten. Give another --out, or move them"
            )
        log(f"generating the synthetic bank history into {folder}")
        staging = writes.stage_history()
        write_bank_history(staging, BankConfig(**h["generate"]))
        history = load_history(staging)
        history.folder = str(folder)  # where it will be: messages name it
        return history, str(folder)
    if "dataset" in h:
        from sim.datasets import load_dataset

        return load_dataset(h["dataset"]), f"<dataset:{h['dataset']}>"
    return load_history(h["path"]), h["path"]


def _fit(cfg: RunConfig, history, log: Log, tick) -> tuple[Any, pd.DataFrame, tuple | None]:
    """(world, book, (validation metrics, artefacts) or None), in memory: nothing is written yet."""
    kw = dict(
        segment_by=cfg.calibration["segment_by"],
        n_segments=cfg.calibration["segments"],
        activity_model=cfg.calibration["activity_model"],
        seed=cfg.seed,
    )
    if cfg.holdout_end is not None:
        from sim.validate import validate

        log(f"calibrating up to {cfg.calibration_end} and validating on the holdout to {cfg.holdout_end}")
        metrics, art = validate(
            history,
            cfg.calibration_end,
            cfg.holdout_end,
            replications=cfg.validation_replications,
            progress=lambda d, t: tick(d, t),
            **kw,
        )
        return art["world"], art["book"], (metrics, art)
    from sim.calibrate import calibrate

    log(f"calibrating up to {cfg.calibration_end}")
    world, book, _ = calibrate(history, cfg.calibration_end, **kw)
    return world, book, None


def _write_world(world, book: pd.DataFrame, validated: tuple | None, out: Path, seconds: float):
    """OUT/world.json + its book and OUT/validation/; returns (validation metrics or None, summary)."""
    validation = None
    if validated is not None:
        from sim.validate import write_outputs

        metrics, art = validated
        metrics["files"] = write_outputs(out / "validation", metrics, art)
        validation = metrics
    world.save_with_book(out / "world.json", book)
    summary = CalibrationResult(
        world,
        str(out / "world.json"),
        str(out / world.book_file),
        customers=int(len(book)),
        seconds=round(seconds, 2),
    ).summary()
    return validation, summary


def _card_matches(card_path: Path, world, train: dict[str, Any]) -> bool:
    from policies.rl import hyperparameters

    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    hp = json.loads(json.dumps(hyperparameters(train["algo"], train["set"])))
    return (
        card.get("world_hash") == world.hash()
        and card.get("algo") == train["algo"]
        and card.get("steps") == train["steps"]
        and card.get("seed") == train["seed"]
        and card.get("hyperparameters") == hp
    )


def _policy(cfg: RunConfig, world, book, out: Path, log: Log, tick, given=None) -> tuple[Any, dict[str, Any]]:
    """The run's policy: `given` (a baseline or folder the checks resolved), the agent in OUT/policy
    when its card matches, or a new one trained there."""
    from policies.registry import resolve_policy

    if "spec" in cfg.policy:
        pol = given if given is not None else resolve_policy(cfg.policy["spec"], world)
        return pol, {"policy": cfg.policy["spec"], "trained": False}
    t = cfg.policy["train"]
    folder = out / "policy"
    if (folder / "model.zip").is_file() and _card_matches(folder / "card.json", world, t):
        log(f"reusing the trained {t['algo']} in {folder} (same world, steps, seed and hyperparameters)")
        pol = resolve_policy(str(folder), world)
        card = pol.card
        reused = True
    else:
        from policies.rl import train

        # the old card goes first: a kill between the new model.zip and its card then leaves no card
        # (the next run trains again) rather than a new model beside a card that matches the old one
        (folder / "card.json").unlink(missing_ok=True)
        log(f"training {t['algo']} for {t['steps']:,} customer-periods")
        pol, card = train(
            world,
            t["algo"],
            steps=t["steps"],
            seed=t["seed"],
            out=folder,
            overrides=t["set"],
            population="book",
            book=book,
            progress=lambda d, tot: tick(d, tot),
            world_path=str(out / "world.json"),
        )
        reused = False
    curve = card.get("training_curve") or []
    return pol, {
        "policy": str(folder),
        "trained": True,
        "reused": reused,
        "algo": card["algo"],
        "steps": card["steps"],
        "seed": card["seed"],
        "seconds": card.get("seconds"),
        "hyperparameters": card.get("hyperparameters"),
        "training_curve": curve,
        "final_mean_episode_return": curve[-1]["mean_episode_return"] if curve else None,
    }


def _plan(cfg: RunConfig, world, book: pd.DataFrame, policy, out: Path, tick, executor) -> dict[str, Any]:
    """The frontier, the plan at `budget` and the fresh-seed runs; writes the step's files."""
    from policies.registry import resolve_policy
    from sim.atomic import atomic_write_json
    from sim.world import json_safe

    from .budget_frontier import plan_frontier, plot_plan_frontier
    from .budget_plan import PlanSettings, prepare_plan, write_plan

    settings = PlanSettings(
        budget=cfg.budget,
        horizon=cfg.plan_horizon,
        pacing=cfg.plan_pacing,
        seeds=cfg.evaluation_seeds,
        seed=cfg.seed,
    )
    budgets = sorted(set(cfg.budgets) | {cfg.budget})
    K = cfg.evaluation_seeds
    total = 4 * K + 2 * K * len(budgets) + 2 * K * len(cfg.compare)
    done = [0]

    def step(stage: str, d: int, t: int) -> None:
        done[0] += 1
        tick(min(done[0], total), total)

    label = cfg.policy_label
    ctx = prepare_plan(world, book, policy, settings, label, progress=step, executor=executor)
    plans: dict[float, Any] = {}
    refs = {b: resolve_policy(b, world) for b in cfg.compare}
    fr = plan_frontier(ctx, budgets, parsed_constraints(cfg.constraints), refs, plans=plans)
    plot_plan_frontier(fr, out / "frontier.png")
    fr["files"] = {"frontier": str(out / "frontier.json"), "plot": str(out / "frontier.png")}
    atomic_write_json(out / "frontier.json", json_safe(fr))
    plan = plans[cfg.budget]
    extra: dict[str, str] = {}
    deployment = deployment_settings(cfg)
    if deployment is not None:  # the plan ships with a randomised control group and its power
        from .deployment import deploy, experiment_power, write_deployment

        dep = deploy(world, book, plan.contacts, deployment)
        plan.doc["experiment"] = experiment_power(
            ctx, plan.doc, dep, deployment, parsed_constraints(cfg.constraints), executor=executor
        )
        extra["deployment"] = write_deployment(dep, out / "deployment.csv")
    write_plan(plan, out, extra)
    p = plan.to_dict()
    runs = {
        "none": {"clv": p["clv_none"], "spend": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}},
        f"{label} alone": {
            "clv": p["clv_policy_alone"],
            "spend": p["policy_alone_spend"],
            "contacts": p["policy_alone_contacts"],
            "lift_vs_none": p["policy_alone_lift_vs_none"],
        },
        "plan": {"clv": p["clv"], "spend": p["spend"], "contacts": p["contacts"], "lift_vs_none": p["lift_vs_none"]},
    }
    for r in fr["references"]:
        if r["policy"] not in runs:
            runs[r["policy"]] = {k: r[k] for k in ("clv", "spend", "contacts", "lift_vs_none")}
    evaluation = {
        "customers": p["customers"],
        "periods": p["horizon"],
        "seeds_used": p["seeds"]["fresh"],
        "planning_seeds": p["seeds"]["planning"],
        "runs": runs,
        "plan_vs_policy_alone": p["lift_vs_policy_alone"],
        "check": {**p["check"], "predicted_lift": p["predicted_lift"], "fresh_lift": p["fresh_lift"]},
        "units": p["units"],
        "world": str(out / "world.json"),
    }
    atomic_write_json(out / "evaluation.json", json_safe(evaluation))
    return {"frontier": fr, "plan": p, "evaluation": evaluation, "contacts": plan.contacts}


def _first_period_of_policy(world, book: pd.DataFrame, policy, seed: int) -> dict[str, str]:
    """The policy alone's first-period contacts for the book (customer_id -> action name)."""
    from optimizer.budgeted import first_period_actions
    from policies.base import as_simulator_policy

    acts = first_period_actions(world, book, as_simulator_policy(policy), seed)
    ids, names = book["customer_id"].astype(str).to_numpy(), world.catalogue.names
    return {ids[k]: names[int(acts[k])] for k in np.flatnonzero(acts > 0)}


def _ope(history, world, book, plan: dict[str, str], reference: dict[str, str], settings, logged) -> dict[str, Any]:
    from .ope.plan import evaluate_plan_offline

    return evaluate_plan_offline(history, world, book, plan, settings, logged=logged, reference=reference)


def _scores(cfg: RunConfig, world, book, policy, out: Path, tick, executor) -> dict[str, Any]:
    """OUT/scores.parquet: one row per book customer under the run's policy (experiments.score), over
    the plan's horizon; returns the summary (per segment and per stage)."""
    from sim.atomic import atomic_path
    from sim.history import restore_customer_ids

    from .score import ScoreSettings, score_customers

    settings = ScoreSettings(horizon=cfg.plan_horizon, policy=cfg.policy_label, seed=cfg.seed)
    scores, summary = score_customers(
        world, book, settings, policy=policy, executor=executor, progress=lambda s, d, t: tick(d, t)
    )
    scores["customer_id"] = restore_customer_ids(scores["customer_id"].to_numpy(), world.customer_id_type)
    with atomic_path(out / "scores.parquet") as tmp:
        scores.to_parquet(tmp, index=False)
    return {**summary, "file": "scores.parquet"}


def run_pipeline(
    cfg: RunConfig,
    out: str | Path,
    progress: Progress | None = None,
    log: Log | None = None,
    executor=None,
    warn: Log | None = None,
) -> dict[str, Any]:
    """Run every step of `cfg` into the folder `out`; returns the run.json document (also written).
    `warn` receives the warnings a user must see as soon as they are known (a default catalogue
    standing in for actions.yaml), whatever the run's end; default: `log`.
    `executor` runs the plan's seeds (experiments.ray_session.RayExecutor; None: in-process; the
    numbers are the same). Nothing is written until the config has been checked against the
    history and the calibrated world (experiments.run_checks); a user error found later (exit 2)
    removes what the run wrote, and an infeasible plan (exit 3) or a kill leaves RUN_IN_PROGRESS."""
    from optimizer.diagnose import InfeasibleError
    from sim.atomic import clean_stale_temp

    out = Path(out).resolve()
    log = log or (lambda s: None)
    stale = [f"{sub}{n}" for sub in ("", "policy/", "history/") for n in clean_stale_temp(out / sub)]
    if stale:  # a killed run's leftovers (their writer is gone)
        log(f"removed {len(stale)} temp file(s) a killed run left in {out}: {', '.join(stale[:5])}")
    writes = RunWrites.begin(out)
    try:
        return _run(cfg, out, writes, progress, log, executor, warn or log)
    except InfeasibleError:
        raise
    except ClvError:
        removed = writes.undo()
        if removed:
            log(f"removed what this run wrote into {out}: {', '.join(removed)}")
        raise
    except BaseException:  # an internal error or an interrupt: what was written stays, marked unfinished
        if writes.staging is not None:
            writes.undo()
        raise


def _run(cfg: RunConfig, out: Path, writes: RunWrites, progress, log: Log, executor, warn: Log) -> dict[str, Any]:
    from sim.atomic import atomic_write_json
    from sim.calibrate import default_catalogue_warning
    from sim.world import json_safe

    from .reports import write_run_report

    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    notes: list[str] = list(cfg.notes)
    for n in notes:
        log(f"note: {n}")

    def stage(name: str):
        def tick(done: int, total: int) -> None:
            if progress:
                progress(name, int(done), int(total))

        return tick

    def timed(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    history, source = _history(cfg, writes, log)  # a user's files are checked before OUT is created
    check_dates(cfg, history)
    n_decisions = 0 if history.decisions is None else int(len(history.decisions))
    hist_doc = {
        "source": source,
        "customers": int(history.transactions["customer_id"].nunique()),
        "transactions": int(len(history.transactions)),
        "decisions": n_decisions,
        "first_day": str(history.transactions["date"].min().date()),
        "last_day": str(history.transactions["date"].max().date()),
        "period": history.economics.period,
    }
    timed("history", t0)

    t0 = time.perf_counter()
    try:
        world, book, validated = _fit(cfg, history, log, stage("calibration"))
    except ConfigError as e:
        calibration_error(cfg, e)
    if warning := default_catalogue_warning(world.assumptions):  # said now: the run may still end in exit 3
        warn(warning)
    checked = check_against_world(cfg, history, world, book)  # every config key checked: now OUT is written
    out.mkdir(parents=True, exist_ok=True)
    removed = start_run(out, cfg)
    writes.started = True
    if removed:
        log(f"removed the previous run's outputs from {out}: {', '.join(removed)}")
    writes.commit_history()
    validation, calibration = _write_world(world, book, validated, out, time.perf_counter() - t0)
    timed("calibration", t0)

    t0 = time.perf_counter()
    policy, policy_doc = _policy(cfg, world, book, out, log, stage("policy"), checked.policy)
    timed("policy", t0)

    t0 = time.perf_counter()
    budgets = sorted(set(cfg.budgets) | {cfg.budget})
    log(
        f"planning {cfg.plan_horizon} periods for {len(book):,} customers at {len(budgets)} horizon budgets "
        f"({cfg.evaluation_seeds} planning and {cfg.evaluation_seeds} fresh seeds)"
    )
    made = _plan(cfg, world, book, policy, out, stage("plan"), executor)
    fr, plan_doc, evaluation, contacts = made["frontier"], made["plan"], made["evaluation"], made["contacts"]
    timed("plan", t0)

    t0 = time.perf_counter()
    log(f"scoring {len(book):,} customers (OUT/scores.parquet: one row per customer for the CRM)")
    scores_doc = _scores(cfg, world, book, policy, out, stage("scores"), executor)
    timed("scores", t0)

    ope_doc = None
    if cfg.ope is not None and n_decisions == 0:
        notes.append("the history has no logged decisions: the plan was not evaluated offline")
    elif cfg.ope is not None:
        t0 = time.perf_counter()
        log("evaluating the first period's contacts offline on the holdout's logged decisions")
        first = dict(zip(contacts["customer_id"].astype(str), contacts["action"]))
        alone = _first_period_of_policy(world, book, policy, cfg.seed)
        ope_doc = _ope(history, world, book, first, alone, ope_settings(cfg), checked.logged)
        ope_doc["reference_name"] = f"{cfg.policy_label} alone"
        atomic_write_json(out / "ope.json", json_safe(ope_doc))
        timed("ope", t0)
    elif cfg.holdout_end is None:
        notes.append("no holdout_end: the world is not validated and the plan is not evaluated offline")

    doc = {
        "name": cfg.name,
        "config": cfg.to_dict(),
        "out": str(out),
        "history": hist_doc,
        "calibration": calibration,
        "validation": validation,
        "policy": policy_doc,
        "frontier": fr,
        "plan": plan_doc,
        "evaluation": evaluation,
        "scores": scores_doc,
        "ope": ope_doc,
        "notes": notes,
        "timings": timings,
    }
    t0 = time.perf_counter()
    report = write_run_report(out, json_safe(doc), world)
    timed("report", t0)
    timings["total"] = round(time.perf_counter() - t_all, 2)
    doc["report"] = str(report)
    doc["files"] = sorted(
        {
            "run.json",
            *(
                str(p.relative_to(out))
                for p in out.rglob("*")
                if p.is_file()
                and p.relative_to(out).parts[0] not in ("history", IN_PROGRESS)
                and not any(part.startswith(".") for part in p.relative_to(out).parts)  # temp files
            ),
        }
    )
    atomic_write_json(out / "run.json", json_safe(doc))
    (out / IN_PROGRESS).unlink(missing_ok=True)  # the folder now holds one finished run
    return doc


__all__ = ["run_pipeline", "STEPS", "IN_PROGRESS", "RUN_OUTPUTS"]
