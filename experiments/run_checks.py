"""The checks of a run config against its history and its calibrated world that `clv run` makes
before it writes anything (experiments.pipeline calls them between calibrating in memory and
writing the world): each problem is one ConfigError line naming the config file and the key, and
the output folder is left as it was.

What a config can only be checked against once the world exists: the segments, channels and
actions its constraints name, the control group its `experiment:` draws, a policy folder it names
(loaded against the world), and, with `ope:`, that the holdout holds logged decisions of at least
two book customers to judge the plan on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from sim.errors import ConfigError

from .config import check_constraint_names, fail
from .run_config import RunConfig

# the config key of a calibration setting a library names by its argument (sim.calibrate, sim.validate)
CALIBRATION_KEYS = {
    "segment_by": "calibration.segment_by",
    "n_segments": "calibration.segments",
    "activity_model": "calibration.activity_model",
    "replications": "validation.replications",
}


def _about(cfg: RunConfig, section: str | None, e: ConfigError, keys: dict[str, str] | None = None) -> None:
    """Re-raise `e` (a library's error about one of its settings) as the config's key `section.KEY`
    (or `keys[KEY]`), one line naming the config file."""

    def name(k: str) -> str:
        return (keys or {}).get(k) or (f"{section}.{k}" if section else k)

    text = ConfigError(e.message).about(name)
    if e.key is None:
        fail(cfg.file, section, text)
    fail(cfg.file, name(e.key), text if e.value is None else f"{e.value}: {text}")


def calibration_error(cfg: RunConfig, e: ConfigError) -> None:
    """A calibration setting refused by sim.calibrate (e.g. a segment_by column the customers table
    lacks), named by its config key rather than the `clv calibrate` option."""
    if e.key is None:
        raise e
    _about(cfg, None, e, CALIBRATION_KEYS)


def check_dates(cfg: RunConfig, history) -> None:
    """calibration_end inside the history, holdout_end not after its last transaction."""
    first, last = history.transactions["date"].min(), history.transactions["date"].max()
    ce = pd.Timestamp(cfg.calibration_end)
    if ce < first or ce > last:
        fail(
            cfg.file,
            "calibration_end",
            f"{cfg.calibration_end} is outside the history ({first.date()} to {last.date()}); pick a day inside it",
        )
    if cfg.holdout_end is not None and pd.Timestamp(cfg.holdout_end) > last:
        fail(
            cfg.file,
            "holdout_end",
            f"{cfg.holdout_end} is past the last transaction ({last.date()}); pick a day up to it, or null for no "
            "holdout",
        )


def deployment_settings(cfg: RunConfig):
    """The run config's `experiment:` as experiments.deployment.DeploymentSettings (None without one)."""
    if cfg.experiment is None:
        return None
    from .deployment import DeploymentSettings

    x = cfg.experiment
    return DeploymentSettings(
        control_share=x["control_share"],
        segment_shares=dict(x["segment_shares"]),
        explore_share=x["explore_share"],
        seed=cfg.seed,
        horizon_periods=x["horizon"],
    )


def ope_settings(cfg: RunConfig):
    """The `ope:` section as experiments.ope.OPESettings over the holdout (calibration_end, holdout_end]."""
    from .ope import OPESettings

    o = cfg.ope
    start = str((pd.Timestamp(cfg.calibration_end) + pd.Timedelta(days=1)).date())
    end = str((pd.Timestamp(cfg.holdout_end) + pd.Timedelta(days=1)).date())
    return OPESettings(
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


@dataclass
class Checked:
    """What the checks built and the run uses: nothing is built twice."""

    policy: Any = None  # the policy a baseline name or folder resolves to (None: an agent is trained)
    logged: Any = None  # the holdout's logged decisions (experiments.ope.LoggedDecisions) for `ope:`


def _offline_window(cfg: RunConfig, history, world, book: pd.DataFrame):
    """The holdout's logged decisions, refused when fewer than two book customers have one there."""
    from .ope.evaluate import logged_decisions

    try:
        settings = ope_settings(cfg)
    except ConfigError as e:
        _about(cfg, "ope", e)
    try:
        logged = logged_decisions(history, settings.start, settings.end, world, book)
    except ConfigError as e:
        fail(cfg.file, "ope", f"{e}; give a holdout that holds logged decisions, or ope: null")
    o = logged.outcomes
    in_book = o["customer_id"].astype(str).isin(book["customer_id"].astype(str))
    n = int(((o["step"] == 0) & in_book).sum())
    if n < 2:
        fail(
            cfg.file,
            "ope",
            f"{n} book customer(s) have a logged decision in the holdout {settings.start} to {cfg.holdout_end}; "
            "the plan is judged on at least two: give a longer holdout, or ope: null",
        )
    return logged


def check_against_world(cfg: RunConfig, history, world, book: pd.DataFrame) -> Checked:
    """Every check of the config that needs the calibrated world (module docstring)."""
    check_constraint_names(cfg.file, cfg.constraints, world, "the calibrated world")
    if cfg.experiment is not None:  # a control group that cannot be drawn is found before the minutes of work
        from .deployment import check_control_group

        try:
            check_control_group(world, book, deployment_settings(cfg))
        except ConfigError as e:
            _about(cfg, "experiment", e)
    checked = Checked()
    if "spec" in cfg.policy:
        from policies.registry import resolve_policy

        try:
            checked.policy = resolve_policy(cfg.policy["spec"], world)
        except ConfigError as e:
            fail(cfg.file, "policy", str(e) if e.key is None else f"{e.value}: {e.message}")
    n_decisions = 0 if history.decisions is None else len(history.decisions)
    if cfg.ope is not None and n_decisions > 0:
        checked.logged = _offline_window(cfg, history, world, book)
    return checked


__all__ = ["Checked", "calibration_error", "check_against_world", "check_dates", "deployment_settings", "ope_settings"]
