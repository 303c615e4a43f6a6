"""The configuration file of `clv run CONFIG`: read, check and resolve it before any work starts.

A run config is YAML; paths are relative to the file's folder. Every key but `calibration_end`,
`budgets` and `budget` has a default (see examples/bank_demo.yaml for all of them, commented). The
budgets are cash for every contact over `plan.horizon` periods (the policy's own included)::

    name: my_bank
    history: {path: my_history}        # or {dataset: bank} or {generate: {customers: 6000, weeks: 156, seed: 7}}
    calibration_end: 2024-06-30        # the plan is made as of this day; the world is fitted on the days up to it
    holdout_end: 2024-12-29            # optional: validate on (calibration_end, holdout_end] and judge the plan there
    seed: 0
    calibration: {segment_by: null, segments: 4, activity_model: pareto_nbd}
    validation: {replications: 16}
    policy: {algo: maskable_ppo, steps: 300000, set: {}}   # train an agent; or a baseline name, or a `clv train` folder
    compare: [bau, greedy_uplift]      # baselines simulated beside the plan (points beside the frontier)
    plan: {horizon: 52, pacing: horizon}   # the periods the budget covers; how it is paced over them
    budgets: [500, 1000, 2000, 4000]   # the frontier, by simulation
    budget: 2000                       # the plan that is written (contacts.parquet) and evaluated
    constraints: {capacity: ["channel:rm_call=50"], min_coverage: [], max_share: []}   # held every period
    evaluation: {seeds: 5}             # planning seeds, and as many fresh seeds for the check
    ope: {estimators: [dm, ips, snips, dr], bootstrap: 500, reward_model: ridge, folds: 5}

`--set KEY=VALUE` on the command line overrides any key before the checks (dotted keys reach into
sections: `--set policy.steps=20000`, `--set evaluation.seeds=2`). Every problem is one
ConfigError line naming the file and the key, e.g. "run.yaml: budgets[1]: expected a number >= 0".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policies.registry import BASELINE_NAMES, policy_label
from policies.rl import ALGOS
from sim.datasets import NAMES as DATASETS
from sim.errors import ConfigError
from sim.world import ACTIVITY_MODELS

from .config import (
    CONSTRAINT_KEYS,
    apply_sets,
    check_mapping,
    constraint_texts,
    fail,
    list_value,
    non_negative_number,
    positive_number,
    read_date,
    read_yaml,
    whole_number,
)
from .ope import DEFAULT_ESTIMATORS, ONE_STEP
from .ope.models import REWARD_MODELS

KEYS = (
    "name",
    "history",
    "calibration_end",
    "holdout_end",
    "seed",
    "calibration",
    "validation",
    "policy",
    "compare",
    "plan",
    "values",
    "budgets",
    "budget",
    "constraints",
    "evaluation",
    "experiment",
    "ope",
)
HISTORY_KEYS = ("path", "dataset", "generate")
NAME_MAX, PATH_MAX = 255, 4096  # a file name's and a path's limits on Linux (and most file systems)


def _too_long_path(text: str) -> str | None:
    """Why `text` cannot name a folder on this file system (a part over NAME_MAX bytes, or over
    PATH_MAX in all), or None: said at its key, before the file system is asked."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > PATH_MAX:
        return f"is {len(raw):,} bytes, longer than any path ({PATH_MAX})"
    longest = max((len(part) for part in raw.split(b"/")), default=0)
    if longest > NAME_MAX:
        return f"has a part of {longest:,} bytes, longer than any file name ({NAME_MAX})"
    return None


GENERATE_KEYS = ("customers", "weeks", "seed", "start", "decision_every")
CALIBRATION_KEYS = ("segment_by", "segments", "activity_model")
POLICY_KEYS = ("algo", "steps", "seed", "set")
PLAN_KEYS = ("horizon", "pacing")
VALUES_KEYS = ("source", "horizon", "replications")  # read for old configs; the run no longer uses them
EVALUATION_KEYS = ("seeds", "horizon")
OPE_KEYS = ("estimators", "bootstrap", "reward_model", "folds", "clip", "alpha")
EXPERIMENT_KEYS = ("control_share", "explore_share", "horizon")


@dataclass(frozen=True)
class RunConfig:
    """A checked run config; `to_dict()` is what run.json records as `config`."""

    name: str
    file: str
    history: dict[str, Any]  # {"path": abs folder} | {"dataset": name} | {"generate": {...}}
    calibration_end: str
    holdout_end: str | None
    seed: int
    calibration: dict[str, Any]
    validation_replications: int
    policy: dict[str, Any]  # {"train": {algo, steps, seed, set}} | {"spec": baseline name or folder}
    compare: tuple[str, ...]
    plan_horizon: int  # periods the budgets cover (and the plan is simulated over)
    plan_pacing: str  # optimizer.budgeted.PACINGS
    budgets: tuple[float, ...]
    budget: float
    constraints: dict[str, tuple[str, ...]]
    evaluation_seeds: int
    ope: dict[str, Any] | None  # None: `ope: null`, no offline evaluation
    experiment: dict[str, Any] | None = None  # the deployment with a control group (experiments.deployment)
    overrides: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the config holds that this version ignores, said in run.json

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compare"], d["budgets"] = list(self.compare), list(self.budgets)
        d["constraints"] = {k: list(v) for k, v in self.constraints.items()}
        d["notes"] = list(self.notes)
        return d

    @property
    def policy_label(self) -> str:
        if "train" in self.policy:
            return self.policy["train"]["algo"]
        return policy_label(self.policy["spec"])


def _date(file: str, key: str, v: Any, required: bool) -> str | None:
    if v is None:
        if required:
            fail(file, key, "missing; give a date YYYY-MM-DD")
        return None
    d = read_date(v)
    if d is None:
        fail(file, key, f"{v!r} is not a date; use YYYY-MM-DD")
    return d


def load_run_config(path: str | Path, sets: dict[str, Any] | None = None) -> RunConfig:
    """Read, override (`sets`, from --set) and check a run config; ConfigError names file and key."""
    path = Path(path)
    file = str(path)
    doc = read_yaml(path, "run config", "start from examples/bank_demo.yaml or examples/my_bank.yaml")
    check_mapping(file, None, doc, KEYS, f"expected a mapping with the keys {', '.join(KEYS)}")
    if sets:
        doc = apply_sets(doc, sets)
        check_mapping(file, None, doc, KEYS, "")
    base = path.resolve().parent

    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        fail(file, "name", f"expected a non-empty text, got {name!r}")
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:  # runs/NAME: one file name of the file system
        fail(
            file,
            "name",
            f"{name[:80]!r}... is {len(name):,} characters; a run's name names a folder: at most {NAME_MAX} bytes",
        )
    if any(c in name for c in "/\\") or name.strip() in (".", ".."):  # it names the folder runs/NAME
        fail(
            file, "name", f"{name[:80]!r} is not a plain name; it names the output folder runs/NAME, so use no / or .."
        )

    # where the history comes from
    hist = check_mapping(
        file,
        "history",
        doc.get("history"),
        HISTORY_KEYS,
        "expected one of {path: FOLDER}, {dataset: bank} or {generate: {customers: N, ...}}",
    )
    given = [k for k in HISTORY_KEYS if hist.get(k) is not None]
    if len(given) != 1:
        fail(file, "history", "give exactly one of path, dataset or generate")
    if "path" in given:
        too_long = _too_long_path(str(hist["path"]))
        if too_long:
            fail(file, "history.path", f"{str(hist['path'])[:80]!r}... {too_long}; give the history folder's path")
        folder = (base / str(hist["path"])).resolve()
        if not folder.is_dir():
            fail(file, "history.path", f"{hist['path']}: history folder not found (paths are relative to {base})")
        history: dict[str, Any] = {"path": str(folder)}
    elif "dataset" in given:
        if hist["dataset"] not in DATASETS:
            fail(file, "history.dataset", f"unknown dataset {hist['dataset']!r}; bundled: {', '.join(DATASETS)}")
        history = {"dataset": hist["dataset"]}
    else:
        g = check_mapping(
            file,
            "history.generate",
            hist["generate"],
            GENERATE_KEYS,
            "expected a mapping, e.g. {customers: 6000, weeks: 156, seed: 7}",
        )
        gen = {
            # bounded: the synthetic book is built in memory (1e12 customers asked for petabytes)
            "customers": whole_number(file, "history.generate.customers", g.get("customers", 6000), 10, 20_000_000),
            "weeks": whole_number(file, "history.generate.weeks", g.get("weeks", 156), 20, 5_200),
            "seed": whole_number(file, "history.generate.seed", g.get("seed", 7), 0),
            "start": _date(file, "history.generate.start", g.get("start", "2022-01-03"), True),
            "decision_every": whole_number(file, "history.generate.decision_every", g.get("decision_every", 4), 1),
        }
        history = {"generate": gen}

    ce = _date(file, "calibration_end", doc.get("calibration_end"), True)
    he = _date(file, "holdout_end", doc.get("holdout_end"), False)
    if he is not None and he <= ce:
        fail(file, "holdout_end", f"{he} must be after calibration_end {ce}")
    seed = whole_number(file, "seed", doc.get("seed", 0), 0)

    cal = check_mapping(
        file,
        "calibration",
        doc.get("calibration") or {},
        CALIBRATION_KEYS,
        "expected a mapping {segment_by: COLUMN, segments: K, activity_model: pareto_nbd}",
    )
    activity = cal.get("activity_model", "pareto_nbd")
    if activity not in ACTIVITY_MODELS:
        fail(file, "calibration.activity_model", f"expected {' or '.join(ACTIVITY_MODELS)}, got {activity!r}")
    seg_by = cal.get("segment_by")
    if seg_by is not None and not isinstance(seg_by, str):
        fail(file, "calibration.segment_by", f"expected a customers column name, got {seg_by!r}")
    calibration = {
        "segment_by": seg_by,
        "segments": whole_number(file, "calibration.segments", cal.get("segments", 4), 1),
        "activity_model": activity,
    }
    val = check_mapping(
        file, "validation", doc.get("validation") or {}, ("replications",), "expected a mapping {replications: N}"
    )
    val_reps = whole_number(file, "validation.replications", val.get("replications", 16), 1)

    # the policy that acts after the plan's first period
    pol_raw = doc.get("policy", "greedy_uplift")
    if isinstance(pol_raw, str):
        if pol_raw in BASELINE_NAMES:
            policy: dict[str, Any] = {"spec": pol_raw}
        elif (base / pol_raw).is_dir():
            policy = {"spec": str((base / pol_raw).resolve())}
        else:
            fail(
                file,
                "policy",
                f"unknown policy {pol_raw!r}; give a baseline ({', '.join(BASELINE_NAMES)}), a folder "
                "written by `clv train`, or {algo: maskable_ppo, steps: N} to train one",
            )
    else:
        p = check_mapping(
            file,
            "policy",
            pol_raw,
            POLICY_KEYS,
            "expected a baseline name, a `clv train` folder or {algo: maskable_ppo, steps: N}",
        )
        algo = p.get("algo", "maskable_ppo")
        if algo not in ALGOS:
            fail(file, "policy.algo", f"unknown algorithm {algo!r}; choose {', '.join(ALGOS)}")
        from policies.rl import DEFAULT_STEPS, hyperparameters

        overrides = check_mapping(
            file,
            "policy.set",
            p.get("set") or {},
            _hyperparameter_names(algo),
            "expected a mapping of hyperparameters, e.g. {n_envs: 256}",
        )
        try:
            hyperparameters(algo, overrides)
        except ValueError as e:
            fail(file, "policy.set", str(e))
        policy = {
            "train": {
                "algo": algo,
                "steps": whole_number(file, "policy.steps", p.get("steps", DEFAULT_STEPS[algo]), 1),
                "seed": whole_number(file, "policy.seed", p.get("seed", seed), 0),
                "set": dict(overrides),
            }
        }
    compare = []
    for i, c in enumerate(list_value(file, "compare", doc.get("compare", ["bau"]))):
        if c not in BASELINE_NAMES:
            fail(file, f"compare[{i}]", f"unknown baseline {c!r}; known: {', '.join(BASELINE_NAMES)}")
        if c in compare:
            fail(file, f"compare[{i}]", f"{c!r} is given twice")
        compare.append(c)

    notes = []
    if doc.get("values") is not None:
        check_mapping(file, "values", doc["values"], VALUES_KEYS, "expected a mapping, or leave it out")
        notes.append(
            f"{file}: values: ignored; the run's plan values the policy's contacts itself (a one-campaign "
            "value table is `clv values`); remove the section"
        )

    if "budgets" not in doc:
        fail(file, "budgets", "missing; give the horizon budgets of the frontier, e.g. [500, 1000, 2000]")
    budgets = [
        positive_number(file, f"budgets[{i}]", b)
        for i, b in enumerate(list_value(file, "budgets", doc["budgets"], allow_empty=False))
    ]
    if len(set(budgets)) != len(budgets):
        fail(file, "budgets", "a budget is given twice")
    if doc.get("budget") is None:
        fail(file, "budget", "missing; give the horizon budget of the plan to write and evaluate, e.g. 2000")
    budget = positive_number(file, "budget", doc["budget"])

    cons_raw = check_mapping(
        file,
        "constraints",
        doc.get("constraints") or {},
        CONSTRAINT_KEYS,
        "expected a mapping with capacity, min_coverage, max_share",
    )
    constraints = constraint_texts(file, cons_raw)

    ev = check_mapping(
        file, "evaluation", doc.get("evaluation") or {}, EVALUATION_KEYS, "expected a mapping {seeds: N}"
    )
    ev_seeds = whole_number(file, "evaluation.seeds", ev.get("seeds", 5), 2)
    pl = check_mapping(
        file, "plan", doc.get("plan") or {}, PLAN_KEYS, "expected a mapping {horizon: N, pacing: horizon}"
    )
    ev_horizon = None if ev.get("horizon") is None else whole_number(file, "evaluation.horizon", ev["horizon"], 1)
    horizon = whole_number(file, "plan.horizon", pl.get("horizon", ev_horizon or 52), 1)
    if ev_horizon is not None and ev_horizon != horizon:
        fail(
            file,
            "evaluation.horizon",
            f"{ev_horizon} differs from plan.horizon {horizon}: the plan is simulated over the periods its budget "
            "covers; leave evaluation.horizon out",
        )
    from optimizer.budgeted import PACINGS

    pacing = pl.get("pacing", "horizon")
    if pacing not in PACINGS:
        fail(file, "plan.pacing", f"expected {', '.join(PACINGS)}, got {pacing!r}")

    ope: dict[str, Any] | None = None
    if doc.get("ope", {}) is not None:
        o = check_mapping(
            file,
            "ope",
            doc.get("ope") or {},
            OPE_KEYS,
            "expected a mapping, e.g. {estimators: [dm, dr], bootstrap: 500}, or null to skip",
        )
        est = o.get("estimators", list(DEFAULT_ESTIMATORS))
        est = list_value(file, "ope.estimators", est, allow_empty=False)
        for i, e in enumerate(est):
            if e not in ONE_STEP:
                fail(file, f"ope.estimators[{i}]", f"unknown one-step estimator {e!r}; choose {', '.join(ONE_STEP)}")
        rm = o.get("reward_model", "ridge")
        if rm not in REWARD_MODELS:
            fail(file, "ope.reward_model", f"expected {' or '.join(REWARD_MODELS)}, got {rm!r}")
        clip = o.get("clip")
        if clip is not None:
            clip = non_negative_number(file, "ope.clip", clip)
            from .ope.evaluate import OPESettings

            try:  # OPESettings' own checks (clip with estimators that cannot apply it), now, not after the plan
                OPESettings(estimators=tuple(dict.fromkeys(est)), clip=clip)
            except ConfigError as e:
                fail(file, f"ope.{e.key}" if e.key else "ope", ConfigError(e.message).about(lambda k: f"ope.{k}"))
        alpha = o.get("alpha", 0.05)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            fail(file, "ope.alpha", f"expected a number between 0 and 1, got {alpha!r}")
        ope = {
            "estimators": list(dict.fromkeys(est)),
            "bootstrap": whole_number(file, "ope.bootstrap", o.get("bootstrap", 500), 10),
            "reward_model": rm,
            "folds": whole_number(file, "ope.folds", o.get("folds", 5), 2),
            "clip": clip,
            "alpha": float(alpha),
        }
        if he is None:
            fail(
                file,
                "ope",
                "offline evaluation judges the plan on the logged decisions of the holdout: give "
                "holdout_end, or set ope: null",
            )

    experiment = None
    if doc.get("experiment") is not None:
        x = check_mapping(
            file,
            "experiment",
            doc["experiment"],
            EXPERIMENT_KEYS,
            "expected a mapping {control_share: 0.2[, explore_share: 0.05, horizon: 13]}, or leave it out",
        )
        from .deployment import DEFAULT_EXPERIMENT_HORIZON, parse_control_shares

        raw = x.get("control_share")
        if raw is None:
            fail(file, "experiment.control_share", "missing; give the share of customers held out, e.g. 0.2")
        specs = [str(v) for v in (raw if isinstance(raw, list) else [raw])]
        try:
            overall, segments = parse_control_shares(specs)
        except ValueError:
            fail(
                file,
                "experiment.control_share",
                f"{repr(raw)[:80]}: expected a share in [0, 1) (e.g. 0.2), or a list of it and segment:NAME=F",
            )
        explore = x.get("explore_share", 0.0)
        if isinstance(explore, bool) or not isinstance(explore, (int, float)) or not 0 <= explore < 1:
            fail(file, "experiment.explore_share", f"expected a number in [0, 1), got {explore!r}")
        x_h = whole_number(file, "experiment.horizon", x.get("horizon", min(DEFAULT_EXPERIMENT_HORIZON, horizon)), 1)
        if x_h > horizon:
            fail(file, "experiment.horizon", f"{x_h} is beyond plan.horizon {horizon}")
        experiment = {
            "control_share": overall,
            "segment_shares": segments,
            "explore_share": float(explore),
            "horizon": x_h,
        }

    return RunConfig(
        name=name.strip(),
        file=str(path.resolve()),
        history=history,
        calibration_end=ce,
        holdout_end=he,
        seed=seed,
        calibration=calibration,
        validation_replications=val_reps,
        policy=policy,
        compare=tuple(compare),
        plan_horizon=horizon,
        plan_pacing=pacing,
        budgets=tuple(sorted(budgets)),
        budget=budget,
        constraints=constraints,
        evaluation_seeds=ev_seeds,
        ope=ope,
        experiment=experiment,
        overrides=json.loads(json.dumps(sets or {}, default=str)),
        notes=tuple(notes),
    )  # YAML dates as text


def _hyperparameter_names(algo: str) -> tuple[str, ...]:
    from policies.rl import hyperparameters

    return tuple(hyperparameters(algo, {}))


__all__ = ["RunConfig", "load_run_config", "KEYS"]
