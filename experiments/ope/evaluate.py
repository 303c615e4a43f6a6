"""Offline evaluation of a candidate policy on a history's logged decisions (`clv ope`).

Pipeline: logged decisions and their rewards (experiments.ope.data) -> the candidate's
probabilities at the logged states (a clv-engine policy on the rebuilt observations of
experiments.ope.observations, or a column of the decisions table) -> cross-fitted outcome models
(experiments.ope.models) -> estimators (experiments.ope.estimators) -> bootstrap intervals, run
on the caller's executor (`bootstrap_intervals`), with weight diagnostics and a thin-support warning.

Estimands (named in every result):
- per_decision: mean over logged decisions of the reward that would follow the candidate's
  choice at that decision (one-step estimators: dm, ips, snips, dr, sndr).
- per_customer: mean over customers of the (discounted) sum of rewards along the trajectory if
  the candidate made every logged decision (sequential estimators: pdis, wpdis, dr_seq, wdr, fqe).
  The one-step names are accepted and run their sequential counterpart (ips -> pdis, snips ->
  wpdis, dr -> dr_seq, sndr -> wdr, dm -> fqe); the result keeps the requested key and names the
  estimator that ran.

Bootstrap: customers are resampled (a cluster bootstrap: a customer's decisions share their
latent state). The resamples are split in fixed chunks, each with its own seed spawned from the
run's seed, so the intervals are the same whether the chunks run in-process or on an executor
with any number of workers (the caller's: this library knows nothing of Ray or of a CLI).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.errors import ConfigError

from .bootstrap import BOOT_CHUNK, bootstrap_intervals
from .data import ESTIMANDS, REWARD_DEFINITION, decision_outcomes, on_policy_value, window_entry
from .estimators import (
    ESTIMATORS,
    LoggedBandit,
    LoggedTrajectories,
    kish_ess,
    make_estimator,
    weight_diagnostics,
)
from .model_based import support_diagnostics
from .models import REWARD_MODELS
from .recommend import recommend
from .targets import Target, target_from_column, target_from_file, target_from_policy

ONE_STEP = ("dm", "ips", "snips", "dr", "sndr")
SEQUENTIAL = ("pdis", "wpdis", "dr_seq", "wdr", "fqe", "mis", "drl")
SEQUENTIAL_OF = {"ips": "pdis", "snips": "wpdis", "dr": "dr_seq", "sndr": "wdr", "dm": "fqe"}
NEEDS_EVERY_ACTION = frozenset({"dm", "dr", "sndr", "fqe", "dr_seq", "wdr", "drl"})  # model terms sum over actions
MARGINAL = frozenset({"mis", "drl"})  # state-distribution ratios on cells of the rebuilt states (ope.marginal)
CLIPPABLE = frozenset({"ips", "snips", "dr", "sndr"})  # one-step importance weights, capped by --clip
MODEL_ONLY = frozenset({"dm", "fqe"})  # no weights: intervals over the data only, not the model's bias
DEFAULT_ESTIMATORS = ("dm", "ips", "snips", "dr")


@dataclass(frozen=True)
class OPESettings:
    """Every knob of one offline evaluation, in one place."""

    estimand: str = "per_decision"
    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    discount: float | None = None
    clip: float | None = None
    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0
    folds: int = 5
    reward_model: str = "ridge"
    start: str | None = None
    end: str | None = None
    window: int | None = None  # periods after each decision; None: to the customer's next decision

    def __post_init__(self):
        if self.estimand not in ESTIMANDS:
            raise ConfigError("estimand", value=repr(self.estimand), message=f"choose {' or '.join(ESTIMANDS)}")
        if not self.estimators:
            raise ConfigError("estimators", "give at least one estimator")
        allowed = ONE_STEP if self.estimand == "per_decision" else SEQUENTIAL + tuple(SEQUENTIAL_OF)
        for e in self.estimators:
            if e not in allowed:
                hint = " (a sequential estimator: use --estimand per_customer)" if e in SEQUENTIAL else ""
                raise ConfigError(
                    "estimators",
                    f"{e!r} is not an estimator of the {self.estimand} estimand{hint}; "
                    f"choose from {', '.join(allowed)}",
                )
        if len(set(self.estimators)) != len(self.estimators):
            raise ConfigError("estimators", f"{','.join(self.estimators)} names an estimator twice")
        if self.discount is not None and not (0 < self.discount <= 1):
            raise ConfigError("discount", value=self.discount, message="must be in (0, 1]")
        if self.discount is not None and self.estimand == "per_decision":
            raise ConfigError(
                "discount", "{key:discount} applies to the per_customer estimand (add {key:estimand} per_customer)"
            )
        if self.window is not None:
            if isinstance(self.window, bool) or int(self.window) != self.window or self.window < 1:
                raise ConfigError("window", value=self.window, message="must be a whole number of periods >= 1")
            if self.estimand == "per_customer":
                raise ConfigError(
                    "window",
                    "{key:window} applies to the per_decision estimand: windows of N periods overlap along a "
                    "trajectory, so their per_customer sum would count a period twice",
                )
        if self.clip is not None and not self.clip > 0:
            raise ConfigError("clip", value=self.clip, message="must be > 0")
        if self.clip is not None:
            unclipped = [k for k in self.estimators if self.estimator_of(k) not in CLIPPABLE]
            if unclipped:
                raise ConfigError(
                    "clip",
                    value=self.clip,
                    message=f"caps the importance weights of {', '.join(sorted(CLIPPABLE))}; "
                    f"{', '.join(unclipped)} cannot apply it (no one-step weights to cap): drop them from "
                    "{key:estimators} or drop {key:clip}",
                )
        if self.n_boot < 10:
            raise ConfigError(
                "n_boot", value=self.n_boot, message="use at least 10 resamples (1000 for a 95% interval)"
            )
        if not 0 < self.alpha < 1:
            raise ConfigError("alpha", value=self.alpha, message="must be in (0, 1)")
        if self.folds < 1:
            raise ConfigError("folds", value=self.folds, message="must be >= 1")
        if self.reward_model not in REWARD_MODELS:
            raise ConfigError(
                "reward_model", value=repr(self.reward_model), message=f"choose {' or '.join(REWARD_MODELS)}"
            )

    def estimator_of(self, key: str) -> str:
        """The registry name that runs for a requested key."""
        return SEQUENTIAL_OF.get(key, key) if self.estimand == "per_customer" else key


# ----------------------------------------------------------------------------------------------
# data for the estimators


def _history_action_names(history, outcomes: pd.DataFrame) -> list[str]:
    """The actions a candidate given by probabilities is coded with when no world rebuilt the states:
    the history's catalogue, else the logged actions."""
    return list(history.actions.names) if history.actions is not None else sorted(outcomes["action"].unique())


def _action_codes(outcomes: pd.DataFrame, names: list[str]) -> np.ndarray:
    idx = pd.Index(names).get_indexer(outcomes["action"].to_numpy())
    return idx


def bandit_data(
    outcomes: pd.DataFrame, target: Target, action: np.ndarray, reward_hat: np.ndarray | None, n_actions: int
) -> LoggedBandit:
    """LoggedBandit of the decisions. With only the logged action's target probability, the
    remaining mass sits on an extra column no decision took (ips/snips only read the logged
    action's probability)."""
    n = len(outcomes)
    if target.probs is not None:
        probs = target.probs
    else:
        probs = np.zeros((n, n_actions + 1))
        probs[np.arange(n), action] = target.logged
        probs[:, -1] = 1.0 - target.logged
    return LoggedBandit(
        reward=outcomes["reward"].to_numpy(),
        action=action,
        pscore=outcomes["propensity"].to_numpy(),
        target=probs,
        reward_hat=reward_hat,
    )


def trajectory_index(outcomes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(customer row, step) of every decision in the padded (customers, T) layout."""
    codes, uniq = pd.factorize(outcomes["customer_id"], sort=False)
    step = outcomes["step"].to_numpy()
    return codes, step, len(uniq), int(step.max()) + 1


def trajectory_data(
    outcomes: pd.DataFrame,
    target: Target,
    action: np.ndarray,
    q_hat: np.ndarray | None,
    index: tuple | None = None,
    cell: np.ndarray | None = None,
) -> tuple[LoggedTrajectories, np.ndarray]:
    """LoggedTrajectories (customers x steps) and the customer id of each trajectory (`index`:
    `trajectory_index(outcomes)` when already at hand; `cell`: each decision's MIS cell, for mis/drl)."""
    ci, st, n, T = index if index is not None else trajectory_index(outcomes)

    def pad(values, fill=np.nan, dtype=np.float64):
        out = np.full((n, T) + values.shape[1:], fill, dtype=dtype)
        out[ci, st] = values
        return out

    mask = pad(np.ones(len(outcomes), bool), False, bool)
    v_hat = None
    if q_hat is not None:
        v = (target.probs * q_hat).sum(axis=1)
        q_hat, v_hat = pad(q_hat), pad(v)
    data = LoggedTrajectories(
        reward=pad(outcomes["reward"].to_numpy()),
        action=pad(action, 0, np.int64),
        pscore=pad(outcomes["propensity"].to_numpy()),
        target_prob=pad(target.logged),
        mask=mask,
        q_hat=q_hat,
        v_hat=v_hat,
        cell=None if cell is None else pad(np.asarray(cell), 0, np.int64),
    )
    ids = pd.unique(outcomes["customer_id"])
    return data, np.asarray(ids)


# ----------------------------------------------------------------------------------------------
# the evaluation


def _estimate_entry(key: str, settings: OPESettings, data, point: float, ci: tuple[float, float]) -> dict:
    name = settings.estimator_of(key)
    entry = {"value": point, "ci_low": ci[0], "ci_high": ci[1], "estimator": name}
    if name in MODEL_ONLY:
        entry["ess"] = float(data.n)
        # the bootstrap refits nothing: its interval is the data's noise around the model's answer,
        # so a model's bias (measured: DM covers the truth in 60-82 % of histories) is outside it
        entry["ci_excludes_model_bias"] = True
    else:
        if isinstance(data, LoggedBandit):
            w = data.weights(settings.clip if name in CLIPPABLE else None)
        else:
            w = data.cumulative_weights()[:, -1]
        entry["ess"] = kish_ess(w)
    if name in CLIPPABLE and settings.clip is not None:
        entry["clip"] = settings.clip
    return entry


@dataclass
class LoggedDecisions:
    """What the evaluations of several candidates on one history share: the logged decisions of
    the window with their rewards, the states rebuilt in `world` (None without a world) and their
    features, and the cross-fitted reward model, fitted on first use (it does not depend on the
    candidate). Build with `logged_decisions`; pass to `evaluate_offline(..., logged=)`."""

    outcomes: pd.DataFrame
    start: str | None
    end: str | None
    world: Any = None
    window: int | None = None
    states: Any = None
    _features: np.ndarray | None = None
    _reward_models: dict = field(default_factory=dict)

    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = _features(self.outcomes, self.states, self.world)
        return self._features

    def reward_hat(self, settings: OPESettings) -> tuple[np.ndarray, dict]:
        """Out-of-fold r_hat (n, A) of the settings' reward model, fitted once per (model, folds, seed)."""
        from .models import RewardModel

        key = (settings.reward_model, settings.folds, settings.seed)
        if key not in self._reward_models:
            o = self.outcomes
            self._reward_models[key] = RewardModel(*key).cross_fit(
                self.features(),
                self.states.action,
                o["reward"].to_numpy(),
                o["customer_id"].to_numpy(),
                len(self.world.catalogue.names),
            )
        return self._reward_models[key]


def logged_decisions(
    history, start: str | None = None, end: str | None = None, world=None, book=None, window: int | None = None
) -> LoggedDecisions:
    """The decisions in [start, end) with their rewards (over `window` periods, or to the next
    decision) and, given the `world` candidates act in (and its `book` for K-means segments), the
    states rebuilt at every decision."""
    outcomes = decision_outcomes(history, start, end, window)
    states = None
    if world is not None:
        from .observations import decision_states

        states = decision_states(history, world, outcomes, book)
    return LoggedDecisions(outcomes=outcomes, start=start, end=end, world=world, states=states, window=window)


def evaluate_offline(
    history,
    settings: OPESettings,
    policy=None,
    world=None,
    book=None,
    target_column: str | None = None,
    executor=None,
    progress: Callable[[str, int, int], None] | None = None,
    logged: LoggedDecisions | None = None,
    target_probs=None,
) -> dict[str, Any]:
    """Estimate the candidate's value on the history's logged decisions (see the module docstring).

    Give exactly one candidate: `policy` (with the `world` it acts in, and that world's `book` for
    K-means segments), `target_column` (a decisions column with the logged action's probability),
    or `target_probs` (a file of the whole distribution at every decision, `targets.target_from_file`;
    estimators with a model term also need the `world` whose rebuilt states feed the models).
    `logged`: the history's decisions prepared by `logged_decisions` for the same window and world,
    to share their states and reward model across candidates. `progress(stage, done, total)` is
    told about the bootstrap tasks; `executor` runs them (see `bootstrap_intervals`; None: in-process)."""
    t0 = time.perf_counter()
    if sum(x is not None for x in (policy, target_column, target_probs)) != 1:
        raise ConfigError(
            "give one candidate: a policy ({key:policy}), a target probability column ({key:target_prob_column}) "
            "or a file of target probabilities ({key:target_probs})"
        )
    need_models = any(settings.estimator_of(k) in NEEDS_EVERY_ACTION for k in settings.estimators)
    if target_probs is not None and need_models and world is None:
        raise ConfigError(
            "estimators",
            value=",".join(k for k in settings.estimators if settings.estimator_of(k) in NEEDS_EVERY_ACTION),
            message="fit outcome models on the states rebuilt in a world: give the world as well as {key:target_probs}",
        )
    acts_in_world = policy is not None or (target_probs is not None and world is not None)
    if logged is None:
        logged = logged_decisions(
            history, settings.start, settings.end, world if acts_in_world else None, book, settings.window
        )
    elif (logged.start, logged.end, logged.window) != (settings.start, settings.end, settings.window) or (
        acts_in_world and logged.world is not world
    ):
        raise ValueError("evaluate_offline: `logged` was prepared for another window or world")
    outcomes = logged.outcomes
    if target_column is not None:
        needs = [k for k in settings.estimators if settings.estimator_of(k) in NEEDS_EVERY_ACTION]
        if needs:
            raise ConfigError(
                "estimators",
                value=",".join(needs),
                message="need the candidate's probability of every action, but {key:target_prob_column} "
                "gives only the logged action's; use {key:estimators} "
                f"{'ips,snips' if settings.estimand == 'per_decision' else 'pdis,wpdis'}, "
                "{key:target_probs} or {key:policy}",
            )
        target = target_from_column(history, outcomes, target_column)
        names = _history_action_names(history, outcomes)
        action = _action_codes(outcomes, names)
        n_actions = len(names)
    elif target_probs is not None:
        if logged.states is not None:
            names, action = list(logged.world.catalogue.names), logged.states.action
        else:
            names = _history_action_names(history, outcomes)
            action = _action_codes(outcomes, names)
        target = target_from_file(target_probs, history, outcomes, names)
        n_actions = len(names)
    else:
        states = logged.states
        target, action = target_from_policy(policy, states), states.action
        n_actions = target.probs.shape[1]

    marginal = [k for k in settings.estimators if settings.estimator_of(k) in MARGINAL]
    if marginal and logged.states is None:
        raise ConfigError(
            "estimators",
            value=",".join(marginal),
            message="need the states rebuilt at every decision (their cells): give {key:policy}, or a world with "
            "{key:target_probs}",
        )
    models: dict[str, Any] = {}
    ids = outcomes["customer_id"].to_numpy()
    if settings.estimand == "per_decision":
        reward_hat = None
        if need_models:
            reward_hat, models["reward_model"] = logged.reward_hat(settings)
        data = bandit_data(outcomes, target, action, reward_hat, n_actions)
        groups = pd.factorize(ids)[0]
    else:
        q_hat = None
        index = trajectory_index(outcomes)
        if need_models:
            from .models import FittedQ

            ci, st, _, _ = index
            length = np.bincount(ci)
            remaining = length[ci] - st
            next_row = np.where(st + 1 < length[ci], np.arange(len(outcomes)) + 1, -1)
            q_hat, models["fqe"] = FittedQ(
                discount=settings.discount or 1.0, folds=settings.folds, seed=settings.seed
            ).q_values(logged.features(), action, outcomes["reward"].to_numpy(), target.probs, next_row, ids, remaining)
        cell = None
        if marginal:
            from .marginal import CellRule

            cell, models["cells"] = CellRule().fit(logged.states.obs)
        data, _ = trajectory_data(outcomes, target, action, q_hat, index, cell=cell)
        groups = None

    jobs = []
    for key in settings.estimators:
        name = settings.estimator_of(key)
        kw: dict[str, Any] = {}
        if name in CLIPPABLE and settings.clip is not None:
            kw["clip"] = settings.clip
        if name in SEQUENTIAL:
            kw["discount"] = settings.discount or 1.0
        jobs.append((key, name, kw))
    points = {key: make_estimator(name, **kw).estimate(data) for key, name, kw in jobs}
    total = len(jobs) * -(-settings.n_boot // BOOT_CHUNK)
    done = [0]

    def tick(k: int) -> None:
        done[0] += k
        if progress:
            progress("bootstrap", done[0], total)

    cis = bootstrap_intervals(
        [(name, kw) for _, name, kw in jobs],
        data,
        settings.n_boot,
        settings.alpha,
        settings.seed,
        groups,
        executor=executor,
        progress=tick,
    )
    estimates = {key: _estimate_entry(key, settings, data, points[key], cis[name]) for key, name, _ in jobs}
    for key, name, kw in jobs:
        if name in MARGINAL:  # ess of the marginal weights w_t(s_t) rho_t, not of the trajectory weights
            estimates[key].update(make_estimator(name, **kw).diagnostics(data))
    recommended = recommend(settings.estimand, estimates)
    # the warning reads the recommended estimator's own weights (mis/drl: state-marginal), not the trajectory's
    diag = support_diagnostics(weight_diagnostics(data), estimates, recommended, settings.estimand)
    clipping = None
    if isinstance(data, LoggedBandit) and any(settings.estimator_of(k) in CLIPPABLE for k in settings.estimators):
        from .clipping import clip_levels

        clipping = clip_levels(data, groups)
    logged = on_policy_value(outcomes, settings.estimand, settings.discount)
    return {
        "estimand": settings.estimand,
        "estimates": estimates,
        "recommended": recommended,
        "policy": target.source,
        "discount": settings.discount,
        "decisions": int(len(outcomes)),
        "customers": int(outcomes["customer_id"].nunique()),
        "window": window_entry(outcomes, settings.window),
        "reward": REWARD_DEFINITION,
        "logged_policy_value": logged,
        "diagnostics": {**diag, **target.info},
        "clipping": clipping,
        "models": models,
        "bootstrap": {
            "resamples": settings.n_boot,
            "alpha": settings.alpha,
            "seed": settings.seed,
            "unit": "customer",
            "tasks": total,
            "ray": getattr(executor, "name", None) == "ray",
        },
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "seconds": time.perf_counter() - t0,
    }


def _features(outcomes, states, world) -> np.ndarray:
    """State features of every decision, from its rebuilt observation."""
    from sim.catalogue import STAGES

    from .models import state_features

    window = (outcomes["next_date"] - outcomes["date"]).dt.days.to_numpy() / float(world.economics.period_days)
    return state_features(states.obs, outcomes["date"].to_numpy(), window, len(STAGES), len(world.segments))


__all__ = [
    "OPESettings",
    "Target",
    "LoggedDecisions",
    "logged_decisions",
    "evaluate_offline",
    "bootstrap_intervals",
    "target_from_policy",
    "target_from_column",
    "bandit_data",
    "window_entry",
    "REWARD_DEFINITION",
    "trajectory_data",
    "ESTIMATORS",
    "ONE_STEP",
    "SEQUENTIAL",
]
