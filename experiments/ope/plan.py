"""Offline evaluation of a budget plan: what the plan's contacts would have earned at the customers'
first logged decision after the plan date, against doing nothing and against what the bank did.

A plan (`clv allocate`, `clv run`) gives each customer of the book one action (or none) as of a
date. In the logged history each customer meets the bank's logging policy at their own decision
points; the plan's action is taken to happen at the first of them on or after the plan's start
(`start`). On those decisions, one per customer, the plan is a deterministic one-step policy: the
planned action where the rebuilt state allows it, else "none" (counted in `not_allowed`). The
one-step estimators of `experiments.ope.estimators` value it (reward: the data contract's, from the
decision to the customer's next one: transaction margin + product margins held at each period end
- the decision's cost, as in `experiments.ope.data`), with the reward
model cross-fitted on every decision of the window (it does not depend on the candidate).

Returned per estimator: the plan's value per customer, the value of contacting no one, the plan
minus none (the plan's lift) and the plan minus the logged policy's actual mean reward on the same
decisions, each with a percentile bootstrap interval over customers. Paired: every resample draws
the same customers for all four, so the differences' intervals account for their covariance.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import ConfigError

from .data import REWARD_DEFINITION, window_entry
from .estimators import LoggedBandit, make_estimator, support_warning, weight_diagnostics
from .evaluate import CLIPPABLE, MODEL_ONLY, NEEDS_EVERY_ACTION, OPESettings, logged_decisions

BOOT_CHUNK = 250


def _interval(point: float, reps: np.ndarray, alpha: float) -> dict[str, float]:
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return {"value": float(point), "ci_low": float(lo), "ci_high": float(hi)}


def evaluate_plan_offline(
    history,
    world,
    book: pd.DataFrame,
    plan: dict[str, str],
    settings: OPESettings,
    logged=None,
    reference: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Value the plan (`plan`: customer_id -> action name; customers left out get none) on the first
    logged decision of each book customer in [settings.start, settings.end). `logged`: the window's
    `experiments.ope.LoggedDecisions` when already built (same window and world). `reference`:
    another plan of the same form (e.g. what the policy alone would do) valued on the same
    decisions and bootstrap resamples, so `plan_minus_reference` is a paired difference."""
    t0 = time.perf_counter()
    if settings.estimand != "per_decision":
        raise ConfigError("a plan is valued on the per_decision estimand (one decision per customer)")
    if logged is None:
        logged = logged_decisions(history, settings.start, settings.end, world, book)
    o = logged.outcomes
    names = list(world.catalogue.names)
    unknown = sorted((set(plan.values()) | set((reference or {}).values())) - set(names))
    if unknown:
        raise ConfigError(f"plan actions not in the world's catalogue: {', '.join(unknown)}")
    ids = o["customer_id"].astype(str).to_numpy()
    in_book = np.isin(ids, book["customer_id"].astype(str).to_numpy())
    rows = np.flatnonzero((o["step"].to_numpy() == 0) & in_book)
    if rows.size < 2:
        raise ConfigError(
            f"{history.folder}: fewer than two book customers have a logged decision in the window "
            f"{settings.start} to {settings.end}; nothing to evaluate the plan on"
        )
    states = logged.states
    action = states.action[rows]
    masks = states.masks[rows]
    code = {a: i for i, a in enumerate(names)}
    m, n_actions = rows.size, len(names)

    def decisions(p: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(action taken: the planned one where still allowed, else none; allowed; one-hot target)"""
        planned = np.array([code[p.get(c, "none")] for c in ids[rows]], np.int64)
        ok = masks[np.arange(rows.size), planned]
        took = np.where(ok, planned, 0)
        one_hot = np.zeros((m, n_actions))
        one_hot[np.arange(m), took] = 1.0
        return took, ok, one_hot

    taken, allowed, target = decisions(plan)
    target_none = np.zeros((m, n_actions))
    target_none[:, 0] = 1.0

    need_model = any(settings.estimator_of(k) in NEEDS_EVERY_ACTION for k in settings.estimators)
    models: dict[str, Any] = {}
    r_hat = None
    if need_model:
        full, models["reward_model"] = logged.reward_hat(settings)
        r_hat = full[rows]
    reward = o["reward"].to_numpy()[rows]
    pscore = o["propensity"].to_numpy()[rows]
    data = LoggedBandit(reward=reward, action=action, pscore=pscore, target=target, reward_hat=r_hat)
    data_none = LoggedBandit(reward=reward, action=action, pscore=pscore, target=target_none, reward_hat=r_hat)
    arms = {"plan": data, "none": data_none}
    if reference is not None:
        ref_taken, _, target_ref = decisions(reference)
        arms["reference"] = LoggedBandit(
            reward=reward, action=action, pscore=pscore, target=target_ref, reward_hat=r_hat
        )

    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 0x9A1A]))
    logged_value = float(reward.mean())
    est: dict[str, dict[str, list[np.ndarray]]] = {}
    points: dict[str, tuple[float, float]] = {}
    estimators = {}
    for key in settings.estimators:
        name = settings.estimator_of(key)
        estimators[key] = make_estimator(
            name, **({"clip": settings.clip} if settings.clip is not None and name in CLIPPABLE else {})
        )
        points[key] = {arm: estimators[key].estimate(d) for arm, d in arms.items()}
        est[key] = {arm: [] for arm in arms}
    logged_reps = []
    for lo in range(0, settings.n_boot, BOOT_CHUNK):
        idx = rng.integers(0, m, size=(min(BOOT_CHUNK, settings.n_boot - lo), m))
        logged_reps.append(reward[idx].mean(axis=1))
        for key, e in estimators.items():
            for arm, d in arms.items():
                est[key][arm].append(np.atleast_1d(e.estimate_from_indices(d, idx)))
    lg = np.concatenate(logged_reps)
    a = settings.alpha
    estimates = {}
    for key in settings.estimators:
        p, z = np.concatenate(est[key]["plan"]), np.concatenate(est[key]["none"])
        vp, vz = points[key]["plan"], points[key]["none"]
        estimates[key] = {
            "estimator": settings.estimator_of(key),
            "plan": _interval(vp, p, a),
            "none": _interval(vz, z, a),
            "plan_minus_none": _interval(vp - vz, p - z, a),
            "plan_minus_logged": _interval(vp - logged_value, p - lg, a),
        }
        if settings.estimator_of(key) in MODEL_ONLY:
            estimates[key]["ci_excludes_model_bias"] = True
        if reference is not None:
            r, vr = np.concatenate(est[key]["reference"]), points[key]["reference"]
            estimates[key]["reference"] = _interval(vr, r, a)
            estimates[key]["plan_minus_reference"] = _interval(vp - vr, p - r, a)
    diag = weight_diagnostics(data)
    contacted = taken != 0
    return {
        "estimand": "per_decision (each book customer's first logged decision in the window)",
        "window": window_entry(o.iloc[rows], None),
        "reward": REWARD_DEFINITION,
        "decisions": int(m),
        "customers": int(m),
        "plan_contacts": int(contacted.sum()),
        "not_allowed": int((~allowed).sum()),
        "logged_contacts": int((action != 0).sum()),
        "agreement": float((action == taken).mean()),
        **({"reference_contacts": int((ref_taken != 0).sum())} if reference is not None else {}),
        "logged": _interval(logged_value, lg, a),
        "estimates": estimates,
        "diagnostics": {**diag, "warning": support_warning(diag)},
        "models": models,
        "bootstrap": {
            "resamples": settings.n_boot,
            "alpha": a,
            "seed": settings.seed,
            "unit": "customer",
            "paired": True,
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }


__all__ = ["evaluate_plan_offline"]
