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

    for a in range(1, A):
        D = int(prior.duration[a])
        # decisions whose outcome windows are fully observed before the cut-off
        full = (dec.period + D + POST_WINDOW <= W) & dec.clean
        for s in range(S):
            arm_a = full & (dec.action == a) & (dec.stage == s)
            arm_0 = full & (dec.action == 0) & (dec.stage == s)
            n_obs[a, s] = int(arm_a.sum())
            if arm_a.sum() < MIN_DECISIONS or arm_0.sum() < MIN_DECISIONS:
                continue
            ia, i0 = np.flatnonzero(arm_a), np.flatnonzero(arm_0)
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
            pre = (
                cum[dec.cust[ia], dec.period[ia]] - cum[dec.cust[ia], np.maximum(dec.period[ia] - PRE_WINDOW, 0)] + 0.5
            )
            oa = o0 = None
            if opens is not None and opens.shape[2]:
                tgt = targets[a]
                plist = (
                    list(range(opens.shape[2])) if tgt is None else ([products.index(tgt)] if tgt in products else [])
                )
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
            if oa is not None:
                cols_a["o"], cols_0["o"] = wa * oa, w0 * o0
            Sa, S0 = boot_sums(dec.cust[ia], cols_a), boot_sums(dec.cust[i0], cols_0)

            def ratio(key: str) -> tuple[float, np.ndarray]:
                point = (np.sum(cols_a[key]) / np.sum(wa)) / max(np.sum(cols_0[key]) / np.sum(w0), 1e-300)
                bm_a = Sa[key] / np.maximum(Sa["w"], 1e-300)
                bm_0 = S0[key] / np.maximum(S0["w"], 1e-300)
                return float(point), bm_a / np.maximum(bm_0, 1e-300)

            F = float(np.sum(cols_a["fat"]) / np.sum(cols_a["pre"]))
            Fb = Sa["fat"] / np.maximum(Sa["pre"], 1e-300)
            est: dict[str, tuple[float, np.ndarray]] = {}
            r, rb = ratio("y")
            est["activity_lift"] = ((r - 1) / F, (rb - 1) / Fb)
            if mu_stage[s] > 0:
                r2, rb2 = ratio("z")
                denom, denom_b = F * mu_stage[s] * D, Fb * mu_stage[s] * D
                est["dropout_reduction"] = (np.log(max(r2, 1e-12)) / denom, np.log(np.maximum(rb2, 1e-12)) / denom_b)
            if oa is not None:
                r3, rb3 = ratio("o")
                est["adoption_uplift"] = ((r3 - 1) / F, (rb3 - 1) / Fb)
            for k, (point, boots) in est.items():
                b = boots[np.isfinite(boots)]
                if b.size < BOOTSTRAP // 2 or not np.isfinite(point):
                    continue
                with np.errstate(over="ignore", invalid="ignore"):  # ratios of near-empty arms
                    sd = float(np.std(b, ddof=1))
                if not np.isfinite(sd):
                    continue
                raw[k][a, s], se[k][a, s] = point, sd
                p = tabs[k][a, s]
                psd = rel * abs(p) + floor
                wd = (1 / sd**2) / (1 / sd**2 + 1 / psd**2) if sd > 0 else 1.0
                val = wd * point + (1 - wd) * p
                if k == "dropout_reduction":
                    val = float(np.clip(val, 0.0, 0.95))
                elif k == "activity_lift" or k == "adoption_uplift":
                    val = max(val, -0.95)
                tabs[k][a, s] = val
                src[k][a][s] = "data" if wd >= 0.8 else ("blend" if wd >= 0.2 else "prior")
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
) -> tuple[DecisionData, np.ndarray]:
    """Place logged decisions on the panel. Returns the data and the per-customer contact state
    at the cut-off ((N, 2): recent_contacts, last contact period or -1)."""
    from .features import lookup, period_index

    d = decisions
    cust, known = lookup(ids, d["customer_id"])
    per = period_index(d["date"].to_numpy("datetime64[ns]"), origin, period_days)
    keep = known & (per >= 0) & (per < W)
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
        cust=cust, period=per, action=act, weight=weight, stage=stage, fatigue=fatigue**recent, gap=gap, clean=clean
    ), state
