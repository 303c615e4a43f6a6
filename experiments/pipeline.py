"""The end-to-end job behind `clv run CONFIG`: from a history to a budget plan, evaluated and reported.

Steps (each writes its files atomically into the output folder OUT as it finishes):

1. history: load the folder (or bundled dataset), or generate the synthetic bank into OUT/history/;
2. calibrate the world on the days up to `calibration_end` -> OUT/world.json + world.book.parquet;
   with `holdout_end`, validate it on (calibration_end, holdout_end] first -> OUT/validation/
   (the same fit: `sim.validate` calibrates with the same arguments, and its world is the one kept);
3. policy: train an SB3 agent on the world -> OUT/policy/ (model.zip, card.json; reused when a
   card for the same world, algorithm, steps, seed and hyperparameters is already there), or use a
   baseline or a given `clv train` folder;
4. value table of the whole book, the policy as continuation after the first period -> OUT/values.parquet;
5. the efficient frontier over `budgets` -> OUT/frontier.json, frontier.png; the plan at `budget`
   -> OUT/plan.parquet (one row per customer, with its explanation), plan.json (`clv allocate`'s
   document: value, bound, certified gap, constraint usage, shadow prices, totals);
6. simulation on fresh seeds (never the value table's): none, the policy alone, the plan then the
   policy, no plan then the policy (the value table's own baseline: the plan's predicted lift is
   measured against it) and the `compare` baselines, with common random numbers and 95% intervals
   over seeds -> OUT/evaluation.json;
7. with `holdout_end` and logged decisions: the plan valued offline at each book customer's first
   logged decision in the holdout (`experiments.ope.plan`) -> OUT/ope.json;
8. OUT/run.json (every figure above, the resolved config, timings) and OUT/report.html.

Seeds: the config's `seed` drives K-means, the validation draws, the value table and (unless
`policy.seed` is given) training; the evaluation uses seeds 1000 + seed + k, k < evaluation.seeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from policies.plan import PlanThenPolicy, plan_actions
from sim.errors import ConfigError

from .config import check_constraint_names, parsed_constraints
from .results import CalibrationResult, ValueTableResult
from .run_config import RunConfig

STEPS = ("history", "calibration", "policy", "values", "frontier", "simulation", "ope", "report")
EVALUATION_SEED_OFFSET = 1000

Progress = Callable[[str, int, int], None]  # (step, done, total) within the step
Log = Callable[[str], None]


def _history(cfg: RunConfig, out: Path, log: Log):
    from sim.history import load_history

    h = cfg.history
    if "generate" in h:
        from sim.synthetic import BankConfig, write_bank_history

        folder = out / "history"
        log(f"generating the synthetic bank history into {folder}")
        write_bank_history(folder, BankConfig(**h["generate"]))
        return load_history(folder), str(folder)
    if "dataset" in h:
        from sim.datasets import load_dataset

        return load_dataset(h["dataset"]), f"<dataset:{h['dataset']}>"
    return load_history(h["path"]), h["path"]


def _check_dates(cfg: RunConfig, history) -> None:
    first, last = history.transactions["date"].min(), history.transactions["date"].max()
    ce = pd.Timestamp(cfg.calibration_end)
    if ce < first or ce > last:
        raise ConfigError(
            f"{cfg.file}: calibration_end: {cfg.calibration_end} is outside the history "
            f"({first.date()} to {last.date()}); pick a day inside it"
        )
    if cfg.holdout_end is not None and pd.Timestamp(cfg.holdout_end) > last:
        raise ConfigError(
            f"{cfg.file}: holdout_end: {cfg.holdout_end} is past the last transaction "
            f"({last.date()}); pick a day up to it, or null for no holdout"
        )


def _calibrate(cfg: RunConfig, history, out: Path, log: Log, tick) -> tuple[Any, pd.DataFrame, dict | None, dict]:
    """(world, book, validation metrics or None, calibration summary); writes OUT/world.json."""
    t0 = time.perf_counter()
    kw = dict(
        segment_by=cfg.calibration["segment_by"],
        n_segments=cfg.calibration["segments"],
        activity_model=cfg.calibration["activity_model"],
        seed=cfg.seed,
    )
    validation = None
    if cfg.holdout_end is not None:
        from sim.validate import validate, write_outputs

        log(f"calibrating up to {cfg.calibration_end} and validating on the holdout to {cfg.holdout_end}")
        metrics, art = validate(
            history,
            cfg.calibration_end,
            cfg.holdout_end,
            replications=cfg.validation_replications,
            progress=lambda d, t: tick(d, t),
            **kw,
        )
        world, book = art["world"], art["book"]
        metrics["files"] = write_outputs(out / "validation", metrics, art)
        validation = metrics
    else:
        from sim.calibrate import calibrate

        log(f"calibrating up to {cfg.calibration_end}")
        world, book, _ = calibrate(history, cfg.calibration_end, **kw)
    world.save_with_book(out / "world.json", book)
    summary = CalibrationResult(
        world,
        str(out / "world.json"),
        str(out / world.book_file),
        customers=int(len(book)),
        seconds=round(time.perf_counter() - t0, 2),
    ).summary()
    return world, book, validation, summary


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


def _policy(cfg: RunConfig, world, book, out: Path, log: Log, tick) -> tuple[Any, dict[str, Any]]:
    from policies.registry import resolve_policy

    if "spec" in cfg.policy:
        return resolve_policy(cfg.policy["spec"], world), {"policy": cfg.policy["spec"], "trained": False}
    t = cfg.policy["train"]
    folder = out / "policy"
    if (folder / "model.zip").is_file() and _card_matches(folder / "card.json", world, t):
        log(f"reusing the trained {t['algo']} in {folder} (same world, steps, seed and hyperparameters)")
        pol = resolve_policy(str(folder), world)
        card = pol.card
        reused = True
    else:
        from policies.rl import train

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


def _plan_problems(cfg: RunConfig, df: pd.DataFrame):
    from optimizer.problem import AllocationProblem, budget_constraint
    from optimizer.values import ValueTable

    cons = parsed_constraints(cfg.constraints)
    table = ValueTable.from_frame(df, source="value table")
    return AllocationProblem(table, cons), AllocationProblem(table, [budget_constraint(cfg.budget)] + cons)


def _frontier_and_plan(cfg: RunConfig, df: pd.DataFrame, out: Path, tick) -> tuple[dict, Any, dict]:
    from optimizer.allocate import allocate
    from optimizer.frontier import frontier, plot_frontier
    from sim.atomic import atomic_path, atomic_write_json, atomic_write_parquet
    from sim.world import json_safe

    free, with_budget = _plan_problems(cfg, df)
    fr = frontier(free, list(cfg.budgets), progress=lambda i: tick(i, len(cfg.budgets) + 1))
    with atomic_path(out / "frontier.png") as tmp:
        plot_frontier(fr, tmp)
    fr["plot"] = str(out / "frontier.png")
    atomic_write_json(out / "frontier.json", json_safe(fr))
    alloc = allocate(with_budget)  # InfeasibleError (exit 3) names the constraints and the budget needed
    tick(len(cfg.budgets) + 1, len(cfg.budgets) + 1)
    plan = alloc.summary()
    atomic_write_parquet(out / "plan.parquet", alloc.plan_frame())
    plan["out"] = str(out / "plan.parquet")
    plan["budget"] = cfg.budget
    atomic_write_json(out / "plan.json", json_safe(plan))
    return fr, alloc, plan


def _simulate(
    cfg: RunConfig, world, book: pd.DataFrame, policy, actions: np.ndarray, label: str, predicted_total: float, tick
) -> dict[str, Any]:
    from policies.base import as_simulator_policy
    from policies.baselines import make_baseline
    from sim.population import DEFAULT_CHUNK, chunk_seeds

    from .evaluate import evaluate, paired_difference

    n = len(book)
    starts = [a for a, _, _ in chunk_seeds(0, n, DEFAULT_CHUNK)]
    fn = as_simulator_policy(policy)
    with_plan, without = f"plan, then {label}", f"no plan, then {label}"
    runs: dict[str, Any] = {
        "none": make_baseline("none", world),
        label: policy,
        with_plan: PlanThenPolicy(actions, fn, starts),
        without: PlanThenPolicy(np.zeros(n, np.int16), fn, starts),
    }
    for b in cfg.compare:
        if b not in runs:
            runs[b] = make_baseline(b, world)
    seed0 = EVALUATION_SEED_OFFSET + cfg.seed
    done = [0]

    def step(k: int) -> None:
        done[0] += k
        tick(done[0], cfg.evaluation_seeds * len(runs))

    res = evaluate(
        world,
        runs,
        customers=n,
        periods=cfg.evaluation_horizon,
        seeds=cfg.evaluation_seeds,
        seed=seed0,
        book=book,
        reference=without,
        progress=step,
        crn=True,
    )
    lift = paired_difference(res, with_plan, without, "clv")
    res["plan_check"] = {
        "predicted_lift_per_customer": predicted_total / n,
        "simulated_lift_per_customer": {k: lift[k] for k in ("mean", "ci_low", "ci_high")},
        "predicted_inside_interval": bool(lift["ci_low"] <= predicted_total / n <= lift["ci_high"]),
        "horizons": {"values": cfg.values_horizon, "evaluation": cfg.evaluation_horizon},
        "note": "the value table's predicted lift of the plan (its objective per book customer) against the "
        "simulated CLV of 'plan, then policy' minus 'no plan, then policy', on seeds the value table did "
        "not use. The prediction is in-sample: the optimizer picks the contacts whose estimated values are "
        "highest, so their estimation noise is selected too and the prediction leans optimistic (the "
        "optimizer's curse); the simulated lift is the honest figure"
        + (
            ""
            if cfg.values_horizon == cfg.evaluation_horizon
            else "; the horizons differ, so the two measure different spans"
        ),
    }
    res["vs_none"] = {k: paired_difference(res, k, "none", "clv") for k in runs if k != "none"}
    res["runs"] = {"with_plan": with_plan, "without_plan": without, "policy": label}
    res["seeds_used"] = list(range(seed0, seed0 + cfg.evaluation_seeds))
    return res


def _ope(cfg: RunConfig, history, world, book, plan: dict[str, str]) -> dict[str, Any]:
    from .ope import OPESettings
    from .ope.plan import evaluate_plan_offline

    o = cfg.ope
    start = str((pd.Timestamp(cfg.calibration_end) + pd.Timedelta(days=1)).date())
    end = str((pd.Timestamp(cfg.holdout_end) + pd.Timedelta(days=1)).date())
    settings = OPESettings(
        estimators=tuple(o["estimators"]),
        n_boot=o["bootstrap"],
        alpha=o["alpha"],
        seed=cfg.seed,
        folds=o["folds"],
        reward_model=o["reward_model"],
        clip=o["clip"],
        start=start,
        end=end,
    )
    return evaluate_plan_offline(history, world, book, plan, settings)


def run_pipeline(
    cfg: RunConfig, out: str | Path, progress: Progress | None = None, log: Log | None = None
) -> dict[str, Any]:
    """Run every step of `cfg` into the folder `out`; returns the run.json document (also written)."""
    from sim.atomic import atomic_write_json
    from sim.world import json_safe

    from .reports import write_run_report

    t_all = time.perf_counter()
    out = Path(out).resolve()
    log = log or (lambda s: None)
    timings: dict[str, float] = {}
    notes: list[str] = []

    def stage(name: str):
        def tick(done: int, total: int) -> None:
            if progress:
                progress(name, int(done), int(total))

        return tick

    def timed(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    history, source = _history(cfg, out, log)  # a user's files are checked before OUT is created
    _check_dates(cfg, history)
    out.mkdir(parents=True, exist_ok=True)
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
    world, book, validation, calibration = _calibrate(cfg, history, out, log, stage("calibration"))
    check_constraint_names(cfg.file, cfg.constraints, world, "the calibrated world")
    timed("calibration", t0)

    t0 = time.perf_counter()
    policy, policy_doc = _policy(cfg, world, book, out, log, stage("policy"))
    label = cfg.policy_label
    timed("policy", t0)

    t0 = time.perf_counter()
    from optimizer.value_sources import values_from_policy, values_from_simulation
    from sim.atomic import atomic_write_parquet

    log(f"valuing {len(book):,} customers x {world.n_actions - 1} actions over {cfg.values_horizon} periods")
    total = len(book) * cfg.values_horizon * cfg.values_replications
    done = [0]

    def vtick(m: int) -> None:
        done[0] += m
        stage("values")(done[0], total)

    if cfg.values_source == "policy":  # smoothed over customers: the plan does not chase replication noise
        df = values_from_policy(
            world, book, policy, None, cfg.values_horizon, cfg.values_replications, cfg.seed, progress=vtick
        )
    else:
        df = values_from_simulation(
            world,
            book,
            None,
            cfg.values_horizon,
            cfg.values_replications,
            cfg.seed,
            continuation=policy,
            progress=vtick,
        )
    if len(df) == 0:
        raise ConfigError(
            f"{cfg.file}: no customer of the book has an allowed action at {cfg.calibration_end}; "
            "nothing to plan (check the catalogue's eligible_stages)"
        )
    atomic_write_parquet(out / "values.parquet", df)
    values_doc = ValueTableResult(
        df, str(out / "values.parquet"), cfg.values_source, label, cfg.values_horizon, cfg.values_replications
    ).summary()
    timed("values", t0)

    t0 = time.perf_counter()
    log(f"solving the frontier over {len(cfg.budgets)} budgets and the plan at {cfg.budget:,.6g}")
    fr, alloc, plan_doc = _frontier_and_plan(cfg, df, out, stage("frontier"))
    actions, plan_by_customer = plan_actions(alloc, world, book["customer_id"].astype(str).to_numpy())
    timed("frontier", t0)

    t0 = time.perf_counter()
    log(f"simulating the plan on {cfg.evaluation_seeds} fresh seeds")
    evaluation = _simulate(cfg, world, book, policy, actions, label, float(plan_doc["objective"]), stage("simulation"))
    evaluation["world"] = str(out / "world.json")
    atomic_write_json(out / "evaluation.json", json_safe(evaluation))
    timed("simulation", t0)

    ope_doc = None
    if cfg.ope is not None and n_decisions == 0:
        notes.append("the history has no logged decisions: the plan was not evaluated offline")
    elif cfg.ope is not None:
        t0 = time.perf_counter()
        log("evaluating the plan offline on the holdout's logged decisions")
        ope_doc = _ope(cfg, history, world, book, plan_by_customer)
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
        "values": values_doc,
        "frontier": fr,
        "plan": plan_doc,
        "evaluation": evaluation,
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
                if p.is_file() and p.relative_to(out).parts[0] != "history"
            ),
        }
    )
    atomic_write_json(out / "run.json", json_safe(doc))
    return doc


__all__ = ["run_pipeline", "STEPS", "EVALUATION_SEED_OFFSET"]
