"""Off-policy evaluation of candidate policies on a history's logged decisions, laid out by role as
Open Bandit Pipeline's `ope/`:

- `data`: the logged decisions of a window and their rewards; the logged policy's own value;
- `observations`: what each customer looked like at each decision, rebuilt in a world;
- `logged`: the validated arrays the estimators read (`LoggedBandit`, `LoggedTrajectories`);
- `models`: cross-fitted reward models and fitted Q evaluation;
- `estimators`: one-step and sequential estimators, weight diagnostics, the bootstrap core;
- `evaluate`: settings and `evaluate_offline` (a candidate's value with bootstrap intervals);
- `plan`: the offline value of a one-period plan;
- `truth`: true policy values in the synthetic bank, what the estimators are checked against.

Nothing here knows of the CLI or of Ray: work that can run in parallel takes an executor from
the caller (`experiments.ray_session.RayExecutor`).
"""

from .evaluate import (
    DEFAULT_ESTIMATORS,
    ONE_STEP,
    SEQUENTIAL,
    LoggedDecisions,
    OPESettings,
    bootstrap_intervals,
    evaluate_offline,
    logged_decisions,
)

__all__ = [
    "DEFAULT_ESTIMATORS",
    "LoggedDecisions",
    "ONE_STEP",
    "OPESettings",
    "SEQUENTIAL",
    "bootstrap_intervals",
    "evaluate_offline",
    "logged_decisions",
]
