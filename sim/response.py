"""Intervention response (action x stage): priors from sim/data/priors.yaml, estimates from logged
decisions weighted by their propensities, and their precision-weighted blend.

Estimators (per action a and stage s, inverse-propensity weighted, self-normalised):
  activity lift      (Y_a / Y_0 - 1) / F_a, Y = transactions from the decision until the effect
                     ends (D_a periods) or the customer's next logged decision, whichever is first
  adoption uplift    same ratio with Y = openings of the action's target product in that window
  dropout reduction  log(Z_a / Z_0) / (F_a * mu_s * D_a), Z = any transaction in the K periods
                     after the effect window, mu_s = the fitted dropout hazard of stage s
where Y_a is the weighted mean over decisions that took a, Y_0 over decisions that took "none",
and F_a is the mean fatigue factor fatigue ** recent_contacts of the a-decisions, weighted by
each customer's activity before the decision (a pre-treatment proxy of the baseline the lift
multiplies), so the estimates are the unfatigued effects the simulator applies. Decisions taken
while an earlier contact's effect was still running are set aside (a new contact replaces the
running effect in the simulator, which would otherwise bias the "none" arm upwards).
Standard errors come from a customer-clustered (Poisson) bootstrap; rare-event outcomes need
MIN_EVENTS non-zero outcomes per arm. The world uses the precision-weighted blend of estimate
and prior; `source` says per cell whether that is mostly data, mostly prior, or a blend. A lift
measured this way already contains the customers a contact brought back, so cells estimated
from data get no separate reactivation.

A randomised deployment in the decisions (rows with `group` and `planned_action`, the file of
`clv plan --control-share` appended to the history) is its own experiment: for cell (a, s) the
same estimators on the deployment's customers planned for a in stage s, those given a against
those given "none" (its controls), weighted by their exact propensities; only randomised rows
(propensity < 1), and for activity and adoption only the effect window need be observed (the
dropout estimate also needs the K periods after it). Its rows are kept out of the observational
arms, whose "none" arm they would join with the uncontacted customers (propensity 1, no chance of
a, unlike the customers contacted). The two estimates of a cell are combined by inverse variance
before the blend with the prior; fit.response.deployment lists each informed cell. A history
without those columns gets exactly the estimates it got before.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from .catalogue import STAGES, ActionCatalogue
from .world import ResponseModel

EFFECTS = ("activity_lift", "dropout_reduction", "adoption_uplift")
POST_WINDOW = 8  # K: periods after the effect window used to see who stayed
PRE_WINDOW = 8  # periods before a decision whose activity weighs its fatigue factor
BOOTSTRAP = 200
# Above this many customers the bootstrap resamples random groups of customers instead of single
# customers: the random group method (Wolter, Introduction to Variance Estimation, 2nd ed. 2007,
# ch. 2) with groups drawn as an equal-size random partition. Customers are independent, so random
# groups of them are too, and a Poisson bootstrap over the groups is a clustered bootstrap with
# coarser clusters: the same variance with BOOTSTRAP x BOOT_GROUPS weights instead of BOOTSTRAP x N
# (200 x 10M Poisson draws were 100 s and 8 GB). Books up to this size keep one weight a customer.
BOOT_GROUPS = 65_536
MIN_DECISIONS = 30  # per arm and cell; fewer -> no data estimate for that cell
MIN_EVENTS = 20  # per arm, for count outcomes of rare events (product openings)


def load_priors(path: str | None = None) -> dict[str, Any]:
    from .user_yaml import load_yaml_file, load_yaml_text

    if path:
        return load_yaml_file(path)
    return load_yaml_text(resources.files("sim.data").joinpath("priors.yaml").read_text())


def prior_response(catalogue: ActionCatalogue, priors: dict[str, Any]) -> ResponseModel:
    """Response tables taken entirely from the priors file."""
    A, S = len(catalogue), len(STAGES)
    offers = priors["offers"]
    mult = priors.get("stage_multiplier", {})
    tabs = {k: np.zeros((A, S)) for k in (*EFFECTS, "reactivation")}
    duration = [0] * A
    for i, act in enumerate(catalogue.actions[1:], start=1):
        o = offers.get(act.offer or "", offers["default"])
        duration[i] = max(1, int(o.get("duration", offers["default"]["duration"])))
        for j, s in enumerate(STAGES):
            m = float(mult.get(s, 1.0))
            for k in tabs:
                tabs[k][i, j] = float(o.get(k, offers["default"].get(k, 0.0))) * m
    tabs["dropout_reduction"] = np.clip(tabs["dropout_reduction"], 0.0, 0.95)
    tabs["reactivation"] = np.clip(tabs["reactivation"], 0.0, 1.0)
    oo = priors.get("opt_out", {})
    opt_out = {c: float(oo.get(c, oo.get("default", 0.0))) for c in catalogue.channels}
    src = {k: [["prior"] * S for _ in range(A)] for k in EFFECTS}
    return ResponseModel(
        activity_lift=tabs["activity_lift"].tolist(),
        dropout_reduction=tabs["dropout_reduction"].tolist(),
        adoption_uplift=tabs["adoption_uplift"].tolist(),
        reactivation=tabs["reactivation"].tolist(),
        duration=duration,
        opt_out=opt_out,
        fatigue=float(priors.get("fatigue", 0.7)),
        fatigue_half_life=float(priors.get("fatigue_half_life", 4.0)),
        min_gap=int(priors.get("min_gap", 2)),
        source={
            **src,
            "reactivation": "prior",
            "duration": "prior",
            "opt_out": "prior",
            "fatigue": "prior",
            "min_gap": "prior",
        },
        se={k: [[None] * S for _ in range(A)] for k in EFFECTS},
    )


@dataclass
class DecisionData:
    """Logged decisions placed on the activity panel (one row per decision)."""

    cust: np.ndarray  # panel row
    period: np.ndarray  # panel column of the decision
    action: np.ndarray  # catalogue index
    weight: np.ndarray  # 1 / propensity
    stage: np.ndarray  # stage at the decision
    fatigue: np.ndarray  # fatigue ** recent_contacts at the decision
    gap: np.ndarray  # periods until the customer's next logged decision (large if none)
    clean: np.ndarray  # no earlier contact's effect still in force at the decision
    # a randomised deployment's rows: the action the plan chose for the customer (catalogue
    # index), -1 for every other logged decision; None when the history records no deployment
    planned: np.ndarray | None = None


def contact_state(
    cust: np.ndarray, period: np.ndarray, contacted: np.ndarray, n: int, W: int, decay: float
) -> tuple[np.ndarray, np.ndarray]:
    """(recent_contacts at each decision, per-customer (recent, last contact period) at W).

    recent(w) = sum over earlier contacts w' < w of decay ** (w - w' - 1), exactly as the
    simulator updates it; computed column by column over the panel (no per-customer loop)."""
    grid = np.zeros((n, W + 1), np.float32)
    np.add.at(grid, (cust[contacted], period[contacted]), 1.0)
    recent = np.zeros((n, W + 1), np.float32)  # recent[:, w] = value at the start of period w
    for w in range(1, W + 1):
        recent[:, w] = recent[:, w - 1] * decay + grid[:, w - 1]
    at_decision = recent[cust, period].astype(float)
    last = np.full(n, -1)
    np.maximum.at(last, cust[contacted], period[contacted])
    return at_decision, np.stack([recent[:, W], last], axis=1)


def estimate_response(
    prior: ResponseModel,
    catalogue: ActionCatalogue,
    dec: DecisionData,
    counts: np.ndarray,
    opens: np.ndarray | None,
    mu_stage: np.ndarray,
    W: int,
    products: list[str],
    seed: int = 0,
    priors: dict[str, Any] | None = None,
) -> tuple[ResponseModel, dict[str, Any]]:
    """Estimate the effect tables from decisions and blend them with the prior.

    counts: (N, W) transactions per period; opens: (N, W, P) product openings (products in `products` order) or None;
    mu_stage: (S,) mean dropout hazard per period by stage (from the fitted activity model).
    Returns the blended model and a report with raw estimates, standard errors and counts."""
    A, S = len(catalogue), len(STAGES)
    rng = np.random.default_rng(seed)
    n_cust = counts.shape[0]
    # one bootstrap weight per customer (or random group of customers) and replicate (clustered: a
    # customer's decisions move together)
    if n_cust <= BOOT_GROUPS:
        group, n_groups = None, n_cust
    else:
        n_groups = BOOT_GROUPS
        group = (rng.permutation(n_cust) % n_groups).astype(np.int64)
    boot = rng.poisson(1.0, size=(BOOTSTRAP, n_groups)).astype(np.float32)
    cum = np.zeros((n_cust, W + 1), np.int32)  # int32: a period holds at most 32,767 transactions (int16)
    np.cumsum(counts, axis=1, dtype=np.int32, out=cum[:, 1:])
    # cumulative openings of an action's target products, built once per distinct target (a
    # cumsum of the whole (N, W, P) array along its middle axis was 5 s of a 1M-customer book)
    open_cums: dict[tuple[int, ...], np.ndarray] = {}

    def open_cum(plist: list[int]) -> np.ndarray:
        key = tuple(plist)
        if key not in open_cums:
            per = opens[:, :, plist].sum(axis=2, dtype=np.int32) if len(plist) > 1 else opens[:, :, plist[0]]
            c = np.zeros((n_cust, W + 1), np.int32)
            np.cumsum(per, axis=1, dtype=np.int32, out=c[:, 1:])
            open_cums[key] = c
        return open_cums[key]

    pcfg = priors or {}
    rel, floor = float(pcfg.get("prior_sd_relative", 0.5)), float(pcfg.get("prior_sd_floor", 0.05))
    tabs = {k: np.array(getattr(prior, k), float) for k in EFFECTS}
    raw = {k: np.full((A, S), np.nan) for k in EFFECTS}
    se = {k: np.full((A, S), np.nan) for k in EFFECTS}
    src = {k: [["prior"] * S for _ in range(A)] for k in EFFECTS}
    n_obs = np.zeros((A, S), int)
    targets = [a.target_product for a in catalogue.actions]

    def window_sum(c: np.ndarray, p: np.ndarray, lo, hi) -> np.ndarray:
        return cum[c, np.minimum(p + hi, W)] - cum[c, np.minimum(p + lo, W)]

    def boot_sums(cust: np.ndarray, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(BOOTSTRAP,) replicate of each column's sum over an arm's decisions: the columns summed
        per customer, then one product with the replicates' customer weights (a customer's
        decisions share a weight). Gathering the weights per decision instead costs
        BOOTSTRAP x decisions floats per arm (GBs for the "none" arm of a large book)."""
        unit = cust if group is None else group[cust]
        X = np.empty((n_groups, len(cols)), np.float32)
        for j, v in enumerate(cols.values()):
            X[:, j] = np.bincount(unit, weights=np.asarray(v, float), minlength=n_groups)
        S = (boot @ X).astype(np.float64)
        return {k: S[:, j] for j, k in enumerate(cols)}

    def contrast(a: int, s: int, D: int, ia: np.ndarray, i0: np.ndarray, post: np.ndarray | None = None):
        """{effect: (point, bootstrap replicates)} of action a against "none" on the decisions ia
        (took a) and i0 (took none), inverse-propensity weighted and self-normalised within each
        arm. `post` (per decision, None = all): the K periods after the effect window are
        observed, which the dropout estimate needs; the other two need the effect window only."""
        # the effect is measured until it ends or the next decision may replace it; decision
        # times do not depend on the action taken, so both arms get the same windows
        ha, h0 = np.minimum(D, dec.gap[ia]), np.minimum(D, dec.gap[i0])
        ya = window_sum(dec.cust[ia], dec.period[ia], 0, ha)
        y0 = window_sum(dec.cust[i0], dec.period[i0], 0, h0)
        za = (window_sum(dec.cust[ia], dec.period[ia], D, D + POST_WINDOW) > 0).astype(float)
        z0 = (window_sum(dec.cust[i0], dec.period[i0], D, D + POST_WINDOW) > 0).astype(float)
        wa, w0, fa = dec.weight[ia], dec.weight[i0], dec.fatigue[ia]
        # the fatigue factor averaged with weights proportional to each customer's activity
        # before the decision (a pre-treatment proxy of their baseline outcome): the lift
        # scales the baseline, so busier customers, often contacted more, weigh more
        pre = cum[dec.cust[ia], dec.period[ia]] - cum[dec.cust[ia], np.maximum(dec.period[ia] - PRE_WINDOW, 0)] + 0.5
        oa = o0 = None
        if opens is not None and opens.shape[2]:
            tgt = targets[a]
            plist = list(range(opens.shape[2])) if tgt is None else ([products.index(tgt)] if tgt in products else [])
            if plist:
                oc = open_cum(plist)

                def osum(c, p, h):
                    hi, lo = np.minimum(p + h, W), np.minimum(p, W)
                    return (oc[c, hi] - oc[c, lo]).astype(float)

                oa, o0 = osum(dec.cust[ia], dec.period[ia], ha), osum(dec.cust[i0], dec.period[i0], h0)
                # rare events: a ratio of a handful of openings has no usable standard error
                if (o0 > 0).sum() < MIN_EVENTS or (oa > 0).sum() < MIN_EVENTS:
                    oa = o0 = None
        # every weighted sum the estimates need, per arm, on the same bootstrap replicates
        cols_a = {"y": wa * ya, "w": wa, "fat": wa * pre * fa, "pre": wa * pre, "z": wa * za}
        cols_0 = {"y": w0 * y0, "w": w0, "z": w0 * z0}
        zden = "w"
        with_z = True
        if post is not None and not (post[ia].all() and post[i0].all()):
            # the dropout ratio on the decisions whose post-window is observed, its own denominator
            pa_, p0_ = post[ia].astype(float), post[i0].astype(float)
            with_z = post[ia].sum() >= MIN_DECISIONS and post[i0].sum() >= MIN_DECISIONS
            cols_a["z"], cols_0["z"] = wa * za * pa_, w0 * z0 * p0_
            cols_a["wz"], cols_0["wz"] = wa * pa_, w0 * p0_
            zden = "wz"
        if oa is not None:
            cols_a["o"], cols_0["o"] = wa * oa, w0 * o0
        Sa, S0 = boot_sums(dec.cust[ia], cols_a), boot_sums(dec.cust[i0], cols_0)

        def ratio(key: str, den: str = "w") -> tuple[float, np.ndarray]:
            point = (np.sum(cols_a[key]) / np.sum(cols_a[den])) / max(np.sum(cols_0[key]) / np.sum(cols_0[den]), 1e-300)
            bm_a = Sa[key] / np.maximum(Sa[den], 1e-300)
            bm_0 = S0[key] / np.maximum(S0[den], 1e-300)
            return float(point), bm_a / np.maximum(bm_0, 1e-300)

        F = float(np.sum(cols_a["fat"]) / np.sum(cols_a["pre"]))
        Fb = Sa["fat"] / np.maximum(Sa["pre"], 1e-300)
        est: dict[str, tuple[float, np.ndarray]] = {}
        r, rb = ratio("y")
        est["activity_lift"] = ((r - 1) / F, (rb - 1) / Fb)
        if mu_stage[s] > 0 and with_z:
            r2, rb2 = ratio("z", zden)
            denom, denom_b = F * mu_stage[s] * D, Fb * mu_stage[s] * D
            est["dropout_reduction"] = (np.log(max(r2, 1e-12)) / denom, np.log(np.maximum(rb2, 1e-12)) / denom_b)
        if oa is not None:
            r3, rb3 = ratio("o")
            est["adoption_uplift"] = ((r3 - 1) / F, (rb3 - 1) / Fb)
        out = {}
        for k, (point, boots) in est.items():
            b = boots[np.isfinite(boots)]
            if b.size < BOOTSTRAP // 2 or not np.isfinite(point):
                continue
            with np.errstate(over="ignore", invalid="ignore"):  # ratios of near-empty arms
                sd = float(np.std(b, ddof=1))
            if not np.isfinite(sd):
                continue
            out[k] = (float(point), sd, boots)
        return out

    def prior_weight(sd: float, p: float) -> float:
        """The data's weight against the prior p in their precision-weighted blend."""
        psd = rel * abs(p) + floor
        return (1 / sd**2) / (1 / sd**2 + 1 / psd**2) if sd > 0 else 1.0

    def source(wd: float) -> str:
        return "data" if wd >= 0.8 else ("blend" if wd >= 0.2 else "prior")

    # Rows of a randomised deployment (`planned` >= 0) are its own experiment: within the customers
    # planned for action a, a and "none" were assigned at random with the recorded propensities.
    # They are kept out of the observational arms: its uncontacted customers ("none", propensity 1)
    # had no chance of a, and would join the "none" arm as customers unlike the ones contacted.
    deployed = dec.planned is not None and bool((dec.planned >= 0).any())
    observational = dec.clean if not deployed else dec.clean & (dec.planned < 0)
    cells: list[dict[str, Any]] = []
    # the last action whose contrasts read each target's cumulative openings: an (N, W + 1) int32
    # array per distinct target, dropped after it (all of them kept to the end were ~1 GB of a
    # 1M-customer book's peak)
    P = 0 if opens is None else opens.shape[2]
    last_use: dict[tuple[int, ...], int] = {}
    for a in range(1, A):
        tgt = targets[a]
        if P:
            last_use[tuple(range(P)) if tgt is None else ((products.index(tgt),) if tgt in products else ())] = a
    for a in range(1, A):
        D = int(prior.duration[a])
        # decisions whose outcome windows are fully observed before the cut-off
        full = (dec.period + D + POST_WINDOW <= W) & observational
        if deployed:
            # the experiment's rows of a: planned for a, randomised (propensity < 1: a row given its
            # planned action with certainty has no control), the effect window observed
            exp_rows = dec.clean & (dec.planned == a) & (dec.weight > 1.0) & (dec.period + D <= W)
            post = dec.period + D + POST_WINDOW <= W
        for s in range(S):
            arm_a = full & (dec.action == a) & (dec.stage == s)
            arm_0 = full & (dec.action == 0) & (dec.stage == s)
            n_obs[a, s] = int(arm_a.sum())
            obs = {}
            if arm_a.sum() >= MIN_DECISIONS and arm_0.sum() >= MIN_DECISIONS:
                obs = contrast(a, s, D, np.flatnonzero(arm_a), np.flatnonzero(arm_0))
            exp, n_t, n_c = {}, 0, 0
            if deployed:
                in_cell = exp_rows & (dec.stage == s)
                e_a, e_0 = in_cell & (dec.action == a), in_cell & (dec.action == 0)
                n_t, n_c = int(e_a.sum()), int(e_0.sum())
                if n_t >= MIN_DECISIONS and n_c >= MIN_DECISIONS:
                    exp = contrast(a, s, D, np.flatnonzero(e_a), np.flatnonzero(e_0), post)
            for k in EFFECTS:
                if k not in obs and k not in exp:
                    continue
                p = tabs[k][a, s]
                if k in exp and k in obs:
                    # two estimates of the same cell effect: the inverse-variance weighted mean
                    # (the fixed-effect combination; Borenstein, Hedges, Higgins & Rothstein,
                    # Introduction to Meta-Analysis, 2009, ch. 11), its standard error from the
                    # combined bootstrap replicates, which keeps the covariance of the two (the
                    # same customers may be in both)
                    (pe, sde, be), (po, sdo, bo) = exp[k], obs[k]
                    we = 1.0 if sde == 0 else (0.0 if sdo == 0 else (1 / sde**2) / (1 / sde**2 + 1 / sdo**2))
                    point = we * pe + (1 - we) * po
                    b = we * be + (1 - we) * bo
                    b = b[np.isfinite(b)]
                    with np.errstate(over="ignore", invalid="ignore"):
                        sd = float(np.std(b, ddof=1)) if b.size >= BOOTSTRAP // 2 else float("nan")
                    if not np.isfinite(sd):  # replicates too few to combine: the inverse-variance se
                        sd = float(np.sqrt(1 / (1 / max(sde, 1e-300) ** 2 + 1 / max(sdo, 1e-300) ** 2)))
                else:
                    point, sd, _ = exp[k] if k in exp else obs[k]
                    we = 1.0 if k in exp else 0.0
                raw[k][a, s], se[k][a, s] = point, sd
                wd = prior_weight(sd, p)
                val = wd * point + (1 - wd) * p
                if k == "dropout_reduction":
                    val = float(np.clip(val, 0.0, 0.95))
                elif k == "activity_lift" or k == "adoption_uplift":
                    val = max(val, -0.95)
                tabs[k][a, s] = val
                src[k][a][s] = source(wd)
                if k in exp:
                    pe, sde, _ = exp[k]
                    cells.append(
                        {
                            "effect": k,
                            "action": catalogue.names[a],
                            "stage": STAGES[s],
                            "treated": n_t,
                            "control": n_c,
                            "experiment": pe,
                            "experiment_se": sde,
                            "observational": obs[k][0] if k in obs else None,
                            "observational_se": obs[k][1] if k in obs else None,
                            "experiment_weight": we,
                            "estimate": point,
                            "se": sd,
                            "value": val,
                            "source": src[k][a][s],
                            # what the cell would be from the other logged decisions alone
                            "source_without_deployment": source(prior_weight(obs[k][1], p)) if k in obs else "prior",
                        }
                    )
        for key in [key for key, last in last_use.items() if last == a]:
            open_cums.pop(key, None)
    # a lift measured on logged outcomes already includes customers the contact brought back, so
    # cells whose lift comes from data get no separate reactivation (it would count them twice)
    react = np.array(prior.reactivation, float)
    react[np.isfinite(raw["activity_lift"])] = 0.0
    out = ResponseModel(
        activity_lift=tabs["activity_lift"].tolist(),
        dropout_reduction=tabs["dropout_reduction"].tolist(),
        adoption_uplift=tabs["adoption_uplift"].tolist(),
        reactivation=react.tolist(),
        duration=prior.duration,
        opt_out=prior.opt_out,
        fatigue=prior.fatigue,
        fatigue_half_life=prior.fatigue_half_life,
        min_gap=prior.min_gap,
        source={**prior.source, **src, "reactivation": "prior (0 where the lift was estimated from data)"},
        se={k: np.where(np.isnan(se[k]), None, se[k]).tolist() for k in EFFECTS},
    )
    report = {
        "raw": {k: raw[k].tolist() for k in EFFECTS},
        "se": {k: se[k].tolist() for k in EFFECTS},
        "decisions_per_cell": n_obs.tolist(),
        "bootstrap": BOOTSTRAP,
        "post_window": POST_WINDOW,
        "min_decisions": MIN_DECISIONS,
    }
    if deployed:  # only then: a world calibrated without a deployment keeps its fit report as it was
        report["deployment"] = {
            "decisions": int((dec.planned >= 0).sum()),
            "estimator": "within the customers planned for the action: the action against 'none', "
            "inverse-propensity weighted; combined with the other logged decisions' estimate by inverse variance",
            "cells": cells,
            "moved_from_prior": [
                f"{c['effect']} {c['action']} x {c['stage']}"
                for c in cells
                if c["source_without_deployment"] == "prior" and c["source"] != "prior"
            ],
        }
    return out, report


def decisions_frame_to_data(
    decisions: pd.DataFrame,
    catalogue: ActionCatalogue,
    ids: np.ndarray,
    origin: pd.Timestamp,
    period_days: float,
    stage_before: np.ndarray,
    fatigue: float,
    decay: float,
    W: int,
    durations: list[int],
    file: str = "decisions",
    upto: np.ndarray | None = None,
) -> tuple[DecisionData, np.ndarray]:
    """Place logged decisions on the panel. Returns the data and the per-customer contact state
    at the cut-off ((N, 2): recent_contacts, last contact period or -1). `file` names the
    decisions table in errors about its deployment columns. `upto` (a row mask, e.g. the
    decisions up to the cut-off): only those rows are read, as if the table held them alone (no
    copy of the table: a 1M-customer book's was ~0.5 GB)."""
    from .features import lookup, period_index

    d = decisions
    if upto is None or upto.all():
        planned_all = deployment_plan(d, catalogue, file)
    else:  # the deployment columns checked on the rows read only (a later row is not this calibration's)
        cols = [c for c in ("customer_id", "date", "action", "group", "planned_action") if c in d.columns]
        plan = deployment_plan(d.loc[upto, cols], catalogue, file) if {"group", "planned_action"} <= set(cols) else None
        planned_all = None if plan is None else np.full(len(d), -1, np.int64)
        if plan is not None:
            planned_all[upto] = plan
    cust, known = lookup(ids, d["customer_id"])
    per = period_index(d["date"].to_numpy("datetime64[ns]"), origin, period_days)
    keep = known & (per >= 0) & (per < W)
    if upto is not None:
        keep &= upto
    cust, per = cust[keep], per[keep]
    act, named = lookup(np.asarray(catalogue.names, dtype=object), d["action"])
    if not named[keep].all():
        raise ValueError("decisions name actions that are not in the catalogue")
    act = act[keep].astype(np.int16)
    weight = 1.0 / d["propensity"].to_numpy(float)[keep]
    stage = stage_before[cust, per]
    recent, state = contact_state(cust, per, act > 0, ids.shape[0], W, decay)
    order = np.lexsort((per, cust))
    gap = np.full(per.size, 10_000, np.int64)
    same = cust[order][1:] == cust[order][:-1]
    gap[order[:-1][same]] = (per[order][1:] - per[order][:-1])[same]
    # end of each contact's effect; an earlier effect still running at a decision would inflate
    # the "none" arm (a new contact replaces it in the simulator), so such decisions are set aside
    end = np.where(act > 0, per + np.asarray(durations)[act], -1).astype(np.int64)
    big = int(W) + 10_000
    co, eo = cust[order], end[order]
    run = np.maximum.accumulate(eo + co * big) - co * big
    prev_end = np.full(per.size, -1, np.int64)
    prev_end[order[1:][same]] = run[:-1][same]
    clean = prev_end <= per
    return DecisionData(
        cust=cust,
        period=per,
        action=act,
        weight=weight,
        stage=stage,
        fatigue=fatigue**recent,
        gap=gap,
        clean=clean,
        planned=None if planned_all is None else planned_all[keep],
    ), state


DEPLOYMENT_GROUPS = (
    "treatment",
    "control",
    "explore",
)  # a deployment file's groups (experiments.deployment writes them)


def _missing(values: pd.Series) -> np.ndarray:
    """Empty cells of an extra text column: NaN/None in a frame, "" from the CSV reader, and the
    "nan" / "<NA>" that a text conversion of a missing value leaves."""
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return (text == "").to_numpy() | text.str.lower().isin(("nan", "<na>")).to_numpy()


def deployment_plan(decisions: pd.DataFrame, catalogue: ActionCatalogue, file: str) -> np.ndarray | None:
    """The plan's action (catalogue index) of each row of a randomised deployment, -1 for other
    logged decisions; None when the table has no `group` and `planned_action` columns (the
    deployment file of `clv plan --control-share`, appended to the decisions history).

    A row whose deployment columns contradict the randomisation cannot be used as an experiment:
    raises HistoryError naming the column, the row's customer and date, and what to do."""
    if "group" not in decisions.columns or "planned_action" not in decisions.columns:
        return None
    from .errors import HistoryError
    from .features import lookup

    g_miss, p_miss = _missing(decisions["group"]), _missing(decisions["planned_action"])
    group = np.where(g_miss, "", decisions["group"].astype(object).astype(str).str.strip().str.lower())
    plan_name = np.where(p_miss, "", decisions["planned_action"].astype(object).astype(str).str.strip())
    action = decisions["action"].astype(str).to_numpy()
    code, named = lookup(np.asarray(catalogue.names, dtype=object), plan_name.astype(object))
    plan = np.where(named, code, -2).astype(np.int64)  # -2: a planned action the catalogue lacks
    names = ", ".join(catalogue.names[:12]) + (", ..." if len(catalogue.names) > 12 else "")
    checks = (
        (
            "group",
            ~g_miss & ~np.isin(group, DEPLOYMENT_GROUPS),
            lambda i: (
                f"group {decisions['group'].iloc[i]!r} is not treatment, control or explore "
                "(write the deployment rows as clv plan --control-share wrote them)"
            ),
        ),
        (
            "planned_action",
            ~p_miss & (plan == -2),
            lambda i: (
                f"unknown planned action {plan_name[i]!r}; actions.yaml defines: {names} (add it there or fix the row)"
            ),
        ),
        (
            "planned_action",
            g_miss != p_miss,
            lambda i: (
                "a deployment row needs both group and planned_action; "
                + ("planned_action" if p_miss[i] else "group")
                + " is empty (fill it, or empty both for a decision outside the deployment)"
            ),
        ),
        (
            "action",
            (group == "control") & (action != "none"),
            lambda i: f"a control row must have action 'none', not {action[i]!r} (the control group is not contacted)",
        ),
        (
            "action",
            (group == "treatment") & ~p_miss & (action != plan_name),
            lambda i: (
                f"a treatment row gets its planned action {plan_name[i]!r}, not {action[i]!r} "
                "(a row given another action is in group explore)"
            ),
        ),
    )
    for column, bad, say in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            day = str(np.datetime64(pd.Timestamp(decisions["date"].iloc[i]), "D"))
            who = f"the decision of customer {decisions['customer_id'].iloc[i]!r} on {day}"
            raise HistoryError(file, None, column, f"{who}: {say(i)}")
    return np.where(g_miss, -1, plan)
