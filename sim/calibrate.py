"""Calibration: from a validated History to a WorldModel plus the book of digital twins.

Steps (each a function below, so a newcomer can find the one to change):
  summarise -> segments -> activity/dropout fit (Pareto/NBD, or BG/NBD) -> spend fit (Gamma-Gamma)
  -> stage rules -> activity panel (if products or decisions) -> response (decisions or priors)
  -> product hazards -> seasonality (if the history covers a year) -> book.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from .btyd import fit_bg_nbd, fit_pareto_nbd
from .catalogue import STAGES, ActionCatalogue, default_bank_catalogue
from .errors import ConfigError
from .features import CustomerRows, CustomerSummary, Panel, build_panel, lookup, period_index, sorted_union, summarise
from .history import History, merge_same_day
from .regularity import regularity_columns
from .response import decisions_frame_to_data, estimate_response, load_priors, prior_response
from .spend import GammaGamma, fit_gamma_gamma
from .world import ACTIVITY_MODELS, SegmentModel, StageRules, WorldModel

MIN_SEGMENT_FIT = 500  # customers needed to fit a segment's own activity model
MAX_FIT_CUSTOMERS = 200_000  # larger books are fitted on a seeded random sample of this size
KMEANS_SAMPLE = 20_000
SEASON_MIN_DAYS = 364
ALIVE_PANEL_CELLS = 2_000_000  # customer x period cells valued together by alive_panel


def calibrate(
    history: History,
    calibration_end: str | pd.Timestamp,
    *,
    segment_by: str | None = None,
    n_segments: int = 4,
    activity_model: str = "pareto_nbd",
    priors_path: str | None = None,
    seed: int = 0,
) -> tuple[WorldModel, pd.DataFrame, dict[str, Any]]:
    """Fit a world on history up to `calibration_end` (inclusive). Returns (world, book, report)."""
    t0 = time.perf_counter()
    ce = pd.Timestamp(calibration_end)
    econ = history.economics
    pdays = econ.period_days
    tx, merged = merge_same_day(history.transactions)
    last = tx["date"].max()
    if ce > last:  # every customer would look silent since the last transaction: P(alive) near 0 for all
        raise ConfigError(
            "calibration_end",
            value=str(ce.date()),
            message=f"is after the last transaction ({last.date()}): every customer would look gone since then; "
            f"choose a day up to {last.date()}",
        )
    if (tx["date"] <= ce).sum() == 0:
        raise ConfigError(
            f"no transactions on or before the calibration end {ce.date()}; "
            f"the history starts on {tx['date'].min().date()}; choose a later date"
        )
    upto = (tx["date"] <= ce).to_numpy()
    # a copy of the rows only when some come after the cut-off (a whole book's copy is GBs)
    rows = CustomerRows.from_frame(tx if upto.all() else tx.loc[upto, ["customer_id", "date", "amount"]])
    summary = summarise(tx, ce, pdays, history.customers, rows=rows)
    # the amounts are read by the summaries only (an amount per transaction, 0.25 GB at 31.7M rows)
    rows.amount = None
    used = int(upto.sum())
    # distinct ids of the transactions and the customers table, counted in Arrow (not a Python
    # str per customer: about 250 bytes each at 200 characters)
    others = history.customers["customer_id"] if history.customers is not None else np.zeros(0, dtype=object)
    n_all_customers = len(sorted_union(tx["customer_id"], others))
    report: dict[str, Any] = {
        "same_day_merged": int(merged),
        "customers": len(summary),
        "transactions_used": used,
        "transactions_after_calibration_end": int(len(tx) - used),
        "customers_born_after_calibration_end": int(n_all_customers - len(summary)),
    }
    catalogue = history.actions or _catalogue_for(history)
    priors = load_priors(priors_path)
    # what the reader repaired or took by default, then every default taken in place of a user file
    assumptions: list[str] = list(history.notes)
    if history.actions is None:
        assumptions.append(default_catalogue_assumption(catalogue))
    if history.customers is None:
        assumptions.append(
            "customers: no customers table in the history; each customer starts at their first transaction, "
            "and segments are K-means clusters of recency, frequency and spend"
        )

    seg, seg_names, segmentation, exogenous = assign_segments(summary, history.customers, segment_by, n_segments, seed)
    unlabelled = segmentation.get("unlabelled") or {}
    if unlabelled:
        assumptions.append(
            f"segments: {' and '.join(f'{n:,} customers {why}' for why, n in unlabelled.items())} "
            f"are put in segment 'unknown'"
        )
    G = len(seg_names)
    # activity / dropout
    fits = fit_activity(summary, seg, G, exogenous, activity_model, seed)
    # spend
    spend = fit_spend(summary, seg, G, exogenous, seed)
    rules = stage_rules_from(rows, pdays)
    if history.stage_rules:  # thresholds the user fixed in stages.yaml
        rules = StageRules(**{**asdict(rules), **history.stage_rules})
        report["stage_rules_fixed"] = sorted(history.stage_rules)

    products = sorted(history.products["product"].unique().tolist()) if history.products is not None else []
    need_panel = bool(products) or history.decisions is not None
    prior_resp = prior_response(catalogue, priors)
    response, resp_report = prior_resp, None
    P = len(products)
    adopt = np.zeros((G, len(STAGES), P))
    close = np.zeros((G, len(STAGES), P))
    init_products = np.zeros((G, P))
    held_end = np.zeros((len(summary), P), bool)
    contact_end = None
    dec = None
    product_counts = None
    effect_mult = np.zeros(len(summary))
    if need_panel:
        panel = build_panel(summary, tx, ce, pdays, rules, rows=rows)
        opens = closes = held_before = None
        if products:
            opens, closes, held_before, held_end, initial = product_panels(
                history.products, summary, panel, products, pdays, ce
            )
        under_effect = np.zeros(panel.counts.shape, bool)
        if history.decisions is not None:
            decay = prior_resp.contact_decay
            dec, contact_end = decisions_frame_to_data(
                history.decisions,
                catalogue,
                summary.customer_id,
                panel.origin,
                pdays,
                panel.stage_before,
                prior_resp.fatigue,
                decay,
                panel.n_periods,
                prior_resp.duration,
                file=_decisions_file(history),
                upto=(history.decisions["date"] <= ce).to_numpy(dtype=bool),
            )
            mu_stage = mean_hazard_by_stage(fits, seg, summary, panel, activity_model)
            response, resp_report = estimate_response(
                prior_resp,
                catalogue,
                dec,
                panel.counts,
                opens,
                mu_stage,
                panel.n_periods,
                products,
                seed=seed,
                priors=priors,
            )
            under_effect, effect_mult = effect_exposure(dec, response, panel, catalogue)
        if products:
            alive = alive_panel(summary, seg, fits, panel, pdays)
            adopt, close, init_products, product_counts = product_hazards(
                opens, closes, held_before, initial, panel, seg, G, under_effect, alive
            )
            del opens, closes, held_before, initial, alive
        # the (N, W) and (N, W, P) panels end here: freed before the book (its regularity pass has
        # its own temporaries, and the panels were ~1 GB of a 1M-customer book's peak there)
        del panel, under_effect
    if history.decisions is None:
        assumptions.append("intervention response: all effects taken from priors (no logged decisions)")
    assumptions += [
        f"intervention response: {k} taken from priors"
        for k in ("reactivation", "duration", "opt_out", "fatigue", "min_gap")
    ]
    if resp_report is not None:
        eligible = [(i, STAGES.index(st)) for i, a in enumerate(catalogue.actions) if i for st in a.eligible_stages]
        for k in ("activity_lift", "dropout_reduction", "adoption_uplift"):
            n_prior = sum(response.source[k][i][j] == "prior" for i, j in eligible)
            if n_prior:
                assumptions.append(
                    f"intervention response: {k} of {n_prior} of {len(eligible)} eligible action x "
                    f"stage cells taken from priors (too few logged decisions)"
                )
        if "deployment" in resp_report:
            assumptions.append(deployment_assumption(resp_report["deployment"]))
    if not products:
        assumptions.append("products: none in the history; product adoption not modelled")
    for name, m in sorted(econ.product_margin_per_period.items()):
        if m < 0:  # accepted (a product may cost the bank to hold), but said: a sign error is common
            assumptions.append(
                f"economics: product_margin_per_period.{name} is negative ({m:g}): holding {name} costs the bank "
                "each period, and policies will steer customers away from it"
            )

    seasonality = estimate_seasonality(summary, rows, ce, pdays, fits, seg)
    if seasonality is None:
        span = (ce - pd.Timestamp(summary.birth.min())).days
        assumptions.append(f"seasonality: not estimated (calibration covers {span} days < {SEASON_MIN_DAYS})")

    # the rates were fitted under the logging policy's campaigns: express them without campaigns
    segments = []
    campaign_multiplier = {}
    for g in range(G):
        m = seg == g
        act = dict(fits["by_segment"][g].to_dict())
        act.pop("name", None)
        if m.any():
            campaign_multiplier[seg_names[g]] = 1.0 + float(effect_mult[m].mean())
            act["alpha"] = float(act["alpha"] * campaign_multiplier[seg_names[g]])
        segments.append(
            SegmentModel(
                name=seg_names[g],
                n_customers=int(m.sum()),
                share=float(m.mean()),
                activity=act,
                spend=spend["by_segment"][g].to_dict(),
                product_adoption=adopt[g].tolist(),
                product_close=close[g].tolist(),
                initial_products=init_products[g].tolist(),
            )
        )

    world = WorldModel(
        catalogue=catalogue,
        economics=econ,
        products=products,
        segments=segments,
        segmentation=segmentation,
        stage_rules=rules,
        response=response,
        activity_model=activity_model,
        calibration_end=str(ce.date()),
        seasonality=None if seasonality is None else seasonality.tolist(),
        assumptions=assumptions,
        fit={
            "activity": fits["info"],
            "spend": spend["info"],
            "response": resp_report,
            "products": product_counts,
            "campaign_multiplier": campaign_multiplier,
            "seconds": None,
        },
        source={"history": history.folder, "report": history.report, **report},
    )
    book = build_book(
        world, summary, seg, fits, spend, ce, held_end, contact_end, effect_mult, activity_model, dec, rows=rows
    )
    world.fit["seconds"] = round(time.perf_counter() - t0, 3)
    report["seconds"] = world.fit["seconds"]
    return world, book, report


def calibrate_like(world: WorldModel, history: History, calibration_end: str | pd.Timestamp):
    """`calibrate` with the settings `world` was calibrated with (its segmentation: the attribute
    column, or K-means' k and seed; its activity model), on `history` up to another date: the
    same kind of world as of that day (e.g. to score the book as of a later date)."""
    seg = world.segmentation or {}
    return calibrate(
        history,
        calibration_end,
        segment_by=seg.get("column") if seg.get("method") == "attribute" else None,
        n_segments=int(seg.get("k", len(world.segments))),
        activity_model=world.activity_model,
        seed=int(seg.get("seed", 0)),
    )


def _decisions_file(history: History) -> str:
    """The decisions table's path, as errors name it (the loader's name for it in the folder)."""
    from pathlib import Path

    return str(Path(history.folder) / history.decisions_file) if history.decisions_file else "decisions"


def deployment_assumption(dep: dict[str, Any]) -> str:
    """One sentence for the world's assumptions: the effect cells a randomised deployment in the
    decisions history informed, and those it moved from priors to data (fit.response.deployment
    holds each cell's experimental and observational estimate and the weight of each)."""
    cells = dep["cells"]
    if not cells:
        return (
            f"intervention response: the {dep['decisions']:,} decisions of a randomised deployment informed no "
            "effect cell (too few treated or control customers of an action and stage, or their outcome "
            "windows not yet observed)"
        )
    moved = dep["moved_from_prior"]
    return (
        f"intervention response: the {dep['decisions']:,} decisions of a randomised deployment informed "
        f"{len(cells)} effect cell{'s' if len(cells) > 1 else ''} by its treatment-control contrast ("
        + ", ".join(f"{c['effect']} {c['action']} x {c['stage']}" for c in cells)
        + "); "
        + (
            f"moved from priors to data by it: {', '.join(moved)}"
            if moved
            else "none of them moved from priors to data"
        )
    )


DEFAULT_CATALOGUE_TOPIC = "catalogue: no actions.yaml"  # how the assumption begins (`clv run` warns on it)


def default_catalogue_assumption(catalogue: ActionCatalogue) -> str:
    """The assumption a world lists when the bundled bank's catalogue stands in for actions.yaml."""
    costs = ", ".join(f"{a.name} {a.cost:g}" for a in catalogue.actions[1:])
    return (
        f"{DEFAULT_CATALOGUE_TOPIC} in the history; the bundled bank's {len(catalogue) - 1} actions and costs are "
        f"used ({costs}): add an actions.yaml with your own contacts and their costs"
    )


def default_catalogue_warning(assumptions: list[str]) -> str | None:
    """The one line `clv run` and `clv calibrate` print on stderr when a world's catalogue is the
    bundled bank's (the plan would send its push reminders and RM calls to the user's customers)."""
    if not any(a.startswith(DEFAULT_CATALOGUE_TOPIC) for a in assumptions):
        return None
    return (
        "warning: the history has no actions.yaml: the bundled bank's actions and costs are used, not yours; "
        "add an actions.yaml to the history folder (see the world's assumptions)"
    )


def _catalogue_for(history: History) -> ActionCatalogue:
    """Default catalogue; a history whose decisions name other actions needs an actions.yaml."""
    cat = default_bank_catalogue()
    if history.decisions is not None:
        unknown = sorted(set(history.decisions["action"].astype(str)) - set(cat.names))
        if unknown:
            raise ConfigError(
                f"decisions.csv names actions {unknown[:3]} that the default catalogue lacks; "
                f"add an actions.yaml to the history folder"
            )
    return cat


# ---- segments --------------------------------------------------------------------------------
def assign_segments(
    summary: CustomerSummary, customers: pd.DataFrame | None, segment_by: str | None, n_segments: int, seed: int
) -> tuple[np.ndarray, list[str], dict[str, Any], bool]:
    """Segments from a customer attribute (exogenous) or K-means on RFM features."""
    col = segment_by or ("segment" if customers is not None and "segment" in customers.columns else None)
    if col is not None:
        if customers is None or col not in customers.columns:
            raise ConfigError(
                "segment_by",
                value=repr(col),
                message=(
                    "the history has no customers table (customers.csv)"
                    if customers is None
                    else "customers.csv has no such column; its columns: " + ", ".join(map(str, customers.columns))
                ),
            )
        lab = customers.set_index("customer_id")[col].astype(str).str.strip().reindex(summary.customer_id)
        no_row = lab.isna().to_numpy(dtype=bool)
        # an empty label (or a Parquet null) is no label: a segment named "" was fitted before
        empty = ~no_row & lab.isin(["", "nan", "None", "<NA>"]).to_numpy(dtype=bool)
        lab = lab.where(~(no_row | empty), "unknown")
        # np.unique's sorted names and codes, without a fixed-width copy (customers x the longest label x 4 bytes)
        seg, names = pd.factorize(lab.to_numpy(dtype=object), sort=True)
        segmentation: dict[str, Any] = {"method": "attribute", "column": col}
        unlabelled = {
            f"with an empty {col} in customers.csv": int(empty.sum()),
            "in transactions without a row in customers.csv": int(no_row.sum()),
        }
        if any(unlabelled.values()):
            segmentation["unlabelled"] = {k: v for k, v in unlabelled.items() if v}
        return seg.astype(np.int16), [str(n) for n in names], segmentation, True
    from sklearn.cluster import KMeans

    feats = rfm_features(summary)
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-12
    z = (feats - mean) / std
    rng = np.random.default_rng(seed)
    k = int(min(n_segments, max(1, len(summary) // 50)))
    sample = z if len(z) <= KMEANS_SAMPLE else z[rng.choice(len(z), KMEANS_SAMPLE, replace=False)]
    km = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(sample)
    lab = km.predict(z)
    # order segments by value (frequency rate x monetary), highest first
    value = np.array(
        [
            np.mean(np.expm1(feats[lab == j, 0]) * np.expm1(feats[lab == j, 2])) if np.any(lab == j) else -1
            for j in range(k)
        ]
    )
    order = np.argsort(-value)
    rank = np.empty(k, int)
    rank[order] = np.arange(k)
    seg = rank[lab].astype(np.int16)
    names = [f"rfm_{i + 1}" for i in range(k)]
    centers = (km.cluster_centers_ * std + mean)[order]
    return (
        seg,
        names,
        {
            "method": "kmeans_rfm",
            "k": k,
            "features": ["log1p_rate", "recency", "log1p_monetary"],
            "centers": centers.tolist(),
            "seed": seed,
        },
        False,
    )


def rfm_features(summary: CustomerSummary) -> np.ndarray:
    rate = summary.x / np.maximum(summary.T, 1.0)
    recency = summary.T - summary.t_x
    monetary = np.where(summary.n_tx > 0, summary.total_amount / np.maximum(summary.n_tx, 1), 0.0)
    return np.column_stack([np.log1p(rate), recency, np.log1p(monetary)])


# ---- activity and spend ----------------------------------------------------------------------
def fit_sample(mask: np.ndarray, seed: int) -> np.ndarray:
    """Indices of the customers a fit uses: all of `mask`, or a seeded random sample of
    MAX_FIT_CUSTOMERS of them (the MLE's standard errors then reflect the sample; every customer
    still gets their own posterior from the fitted prior)."""
    idx = np.flatnonzero(mask)
    if idx.size <= MAX_FIT_CUSTOMERS:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, MAX_FIT_CUSTOMERS, replace=False))


def fit_activity(
    summary: CustomerSummary, seg: np.ndarray, G: int, exogenous: bool, model: str, seed: int = 0
) -> dict[str, Any]:
    """Pooled fit, plus a fit per segment when segments are exogenous and large enough (segments
    cut on RFM are not: fitting a BTYD prior on customers selected by their own x and t_x
    would bias it, so they share the pooled prior and differ through their posteriors)."""
    if model not in ACTIVITY_MODELS:
        raise ConfigError("activity_model", value=repr(model), message=f"choose {' or '.join(ACTIVITY_MODELS)}")
    fitter = fit_pareto_nbd if model == "pareto_nbd" else fit_bg_nbd
    rows = fit_sample(np.ones(len(summary), bool), seed)
    pooled, info = fitter(summary.x[rows], summary.t_x[rows], summary.T[rows])
    by_seg, infos = [], {"pooled": asdict(info), "model": model}
    for g in range(G):
        m = seg == g
        if exogenous and m.sum() >= MIN_SEGMENT_FIT and G > 1:
            r = fit_sample(m, seed + 1 + g)
            p, i = fitter(summary.x[r], summary.t_x[r], summary.T[r], init=pooled)
            by_seg.append(p)
            infos[f"segment_{g}"] = asdict(i)
        else:
            by_seg.append(pooled)
    return {"pooled": pooled, "by_segment": by_seg, "info": infos}


def fit_spend(summary: CustomerSummary, seg: np.ndarray, G: int, exogenous: bool, seed: int = 0) -> dict[str, Any]:
    ok = (summary.spend_x > 0) & (summary.spend_mean > 0)
    if ok.sum() < 10:
        pooled = GammaGamma(
            p=1.0, q=2.0, gamma=float(max(summary.total_amount.sum(), 1.0) / max(summary.n_tx.sum(), 1))
        )
        return {
            "pooled": pooled,
            "by_segment": [pooled] * G,
            "info": {"pooled": "too few repeat transactions with a value; spend prior assumed"},
        }
    r = fit_sample(ok, seed)
    pooled, info = fit_gamma_gamma(summary.spend_x[r], summary.spend_mean[r])
    by_seg, infos = [], {"pooled": asdict(info)}
    for g in range(G):
        m = ok & (seg == g)
        if exogenous and m.sum() >= MIN_SEGMENT_FIT and G > 1:
            r = fit_sample(m, seed + 1 + g)
            p, i = fit_gamma_gamma(summary.spend_x[r], summary.spend_mean[r])
            by_seg.append(p)
            infos[f"segment_{g}"] = asdict(i)
        else:
            by_seg.append(pooled)
    return {"pooled": pooled, "by_segment": by_seg, "info": infos}


def mean_hazard_by_stage(fits, seg, summary, panel: Panel, model: str) -> np.ndarray:
    """Average posterior dropout hazard per period of customers still alive, by their stage at
    the cut-off (used to turn a retention difference into a hazard reduction)."""
    S = len(STAGES)
    out = np.zeros(S)
    stage_end = panel.stage_before[:, -1]
    for s in range(S):
        m = stage_end == s
        if not m.any():
            continue
        vals = []
        for g in np.unique(seg[m]):
            mm = m & (seg == g)
            p = fits["by_segment"][g]
            post = p.posterior_if_alive(summary.x[mm], summary.t_x[mm], summary.T[mm])
            if model == "pareto_nbd":
                vals.append(post["mu_shape"] / post["mu_rate"])
            else:  # BG/NBD: hazard per period ~ p * expected transactions per period
                vals.append(post["p_a"] / (post["p_a"] + post["p_b"]) * post["lam_shape"] / post["lam_rate"])
        out[s] = float(np.mean(np.concatenate(vals)))
    return out


# ---- stages ------------------------------------------------------------------------------------
def stage_rules_from(rows: CustomerRows, period_days: float) -> StageRules:
    """Dormant after the 90th percentile of observed gaps between transactions (at least 4 periods),
    churned after twice that or the 99th percentile, whichever is longer."""
    gaps = rows.gaps_days() / period_days
    if gaps.size < 20:
        q90, q99 = 8.0, 26.0
    else:
        q90, q99 = np.quantile(gaps, [0.9, 0.99])
    dormant = int(np.clip(np.ceil(q90), 4, 52))
    churned = int(np.clip(max(2 * dormant, np.ceil(q99)), dormant + 1, 104))
    return StageRules(
        new_periods=int(round(90 / period_days)) or 1,
        mature_periods=int(round(365 / period_days)) or 1,
        dormant_after=dormant,
        churned_after=churned,
    )


# ---- products ----------------------------------------------------------------------------------
def product_panels(
    products_df: pd.DataFrame,
    summary: CustomerSummary,
    panel: Panel,
    products: list[str],
    period_days: float,
    ce: pd.Timestamp,
):
    """Adoptions and closings (N, W, P) int8, holdings at the start of each period and at the end,
    and the products each customer started with (opened on or before their birth date: those
    are the starting holdings, not adoptions)."""
    ids = summary.customer_id
    N, W, P = panel.counts.shape[0], panel.n_periods, len(products)
    df = products_df.loc[products_df["date"] <= ce]
    cust, ok = lookup(ids, df["customer_id"])
    known = ok.copy()  # a product opened before the panel's first period is still a starting holding
    dates = df["date"].to_numpy("datetime64[ns]")
    w = period_index(dates, panel.origin, period_days)
    ok &= (w >= 0) & (w < W)
    pidx = df["product"].map({p: i for i, p in enumerate(products)}).to_numpy()
    is_open = (df["event"] == "open").to_numpy()
    at_birth = is_open & (dates <= summary.birth[cust])
    adopt = ok & is_open & ~at_birth
    opens = np.zeros((N, W, P), np.int8)
    closes = np.zeros((N, W, P), np.int8)
    initial = np.zeros((N, P), bool)
    np.add.at(opens, (cust[adopt], w[adopt], pidx[adopt]), 1)
    np.add.at(closes, (cust[ok & ~is_open], w[ok & ~is_open], pidx[ok & ~is_open]), 1)
    initial[cust[known & at_birth], pidx[known & at_birth]] = True
    held_before = np.empty((N, W, P), bool)
    held_end = np.empty((N, P), bool)
    block = max(1, ALIVE_PANEL_CELLS // max(W * P, 1))  # customers at a time: int16 temporaries per cell
    for lo in range(0, N, block):
        hi = min(lo + block, N)
        born = np.arange(W)[None, :] >= panel.birth_period[lo:hi, None]
        net = np.cumsum(opens[lo:hi].astype(np.int16) - closes[lo:hi], axis=1) + (
            initial[lo:hi, None, :] & born[:, :, None]
        )
        held_after = net > 0
        held_before[lo:hi, 0] = False
        held_before[lo:hi, 1:] = held_after[:, :-1]
        held_before[lo:hi] |= (
            initial[lo:hi, None, :] & (np.arange(W)[None, :] == panel.birth_period[lo:hi, None])[:, :, None]
        )
        held_end[lo:hi] = held_after[:, -1, :]
    np.minimum(opens, 1, out=opens)
    np.minimum(closes, 1, out=closes)
    return opens, closes, held_before, held_end, initial


def alive_panel(summary: CustomerSummary, seg: np.ndarray, fits, panel: Panel, period_days: float) -> np.ndarray:
    """(N, W) probability that each customer was alive in the middle of each period, given their
    whole calibration history (1 up to their last transaction, then the activity model's
    posterior); 0 before birth."""
    N, W = panel.counts.shape
    bfrac = ((summary.birth - np.datetime64(panel.origin, "ns")) / np.timedelta64(1, "D")) / period_days
    out = np.empty((N, W), np.float32)
    # in blocks of customers: the posterior's temporaries are a few float64 arrays per cell, GBs for
    # a whole large book at once (each customer's row depends on that customer alone)
    block = max(1, ALIVE_PANEL_CELLS // max(W, 1))
    for lo in range(0, N, block):
        hi = min(lo + block, N)
        tau = np.arange(W)[None, :] + 0.5 - bfrac[lo:hi, None]
        part = (tau >= 0).astype(np.float32)
        after = tau > summary.t_x[lo:hi, None]
        for g in np.unique(seg[lo:hi]):
            rows, cols = np.nonzero(after & (seg[lo:hi] == g)[:, None])
            if rows.size:
                r = rows + lo
                part[rows, cols] = fits["by_segment"][g].p_alive_at(
                    np.minimum(tau[rows, cols], summary.T[r]), summary.x[r], summary.t_x[r], summary.T[r]
                )
        out[lo:hi] = part
    return out


def product_hazards(
    opens,
    closes,
    held_before,
    initial,
    panel: Panel,
    seg: np.ndarray,
    G: int,
    under_effect: np.ndarray,
    alive: np.ndarray,
    shrink: float = 50.0,
):
    """Per segment x stage x product hazards per period, from periods with no campaign effect in
    force, shrunk towards the stage's pooled rate (`shrink` pseudo-periods). Only a living
    customer opens a product (as in the simulator), so adoption's periods at risk are weighted
    by the probability that the customer was alive then; closing is by stage alone."""
    S = len(STAGES)
    P = opens.shape[2]
    born = panel.stage_before >= 0
    base = born & ~under_effect
    st = np.where(born, panel.stage_before, 0)
    adopt = np.zeros((G, S, P))
    close = np.zeros((G, S, P))
    counts = {k: np.zeros((G, S, P)) for k in ("adopt_events", "adopt_at_risk", "close_events", "close_at_risk")}
    # int32 (the cells number G x S): an int64 (N, W) array was 0.4 GB at 1M customers
    cell = seg[:, None].astype(np.int32) * S + st
    for p in range(P):
        risk_o = base & ~held_before[:, :, p]
        risk_c = base & held_before[:, :, p]
        n_o = np.bincount(cell[risk_o], weights=alive[risk_o], minlength=G * S).reshape(G, S)
        e_o = np.bincount(cell[risk_o], weights=opens[:, :, p][risk_o], minlength=G * S).reshape(G, S)
        n_c = np.bincount(cell[risk_c], minlength=G * S).reshape(G, S)
        e_c = np.bincount(cell[risk_c], weights=closes[:, :, p][risk_c], minlength=G * S).reshape(G, S)
        pool_o = e_o.sum(0) / np.maximum(n_o.sum(0), 1)
        pool_c = e_c.sum(0) / np.maximum(n_c.sum(0), 1)
        adopt[:, :, p] = (e_o + shrink * pool_o) / (n_o + shrink)
        close[:, :, p] = (e_c + shrink * pool_c) / (n_c + shrink)
        for k, v in zip(counts, (e_o, n_o, e_c, n_c)):
            counts[k][:, :, p] = v
    # what a customer starts with
    init = np.zeros((G, P))
    for g in range(G):
        m = seg == g
        init[g] = initial[m].mean(axis=0) if m.any() else 0.0
    return adopt, close, init, {k: v.tolist() for k, v in counts.items()}


def effect_exposure(dec, response, panel: Panel, catalogue: ActionCatalogue):
    """Cells under a logged campaign's effect, and each customer's mean activity multiplier
    minus one over their observed life (to express fitted rates without the logging campaigns)."""
    N, W = panel.counts.shape
    S = len(STAGES)
    lift = np.asarray(response.activity_lift, float)
    dur = np.asarray(response.duration, int)
    c = dec.action > 0
    under = np.zeros((N, W + 1), np.int16)
    extra = np.zeros((N, W + 1))
    cust, per, act = dec.cust[c], dec.period[c], dec.action[c]
    end = np.minimum(per + dur[act], W)
    np.add.at(under, (cust, per), 1)
    np.add.at(under, (cust, end), -1)
    gain = lift[act, np.clip(dec.stage[c], 0, S - 1)] * dec.fatigue[c]
    np.add.at(extra, (cust, per), gain)
    np.add.at(extra, (cust, end), -gain)
    # the running sums in blocks of customers (each row is its own): whole, an int64 and a float64
    # (N, W + 1) temporary were ~0.85 GB at 1M customers (the peak of a 250k-customer book's calibration)
    under_effect = np.empty((N, W), bool)
    total = np.empty(N)
    block = max(1, ALIVE_PANEL_CELLS // max(W + 1, 1))
    for lo in range(0, N, block):
        hi = min(lo + block, N)
        under_effect[lo:hi] = np.cumsum(under[lo:hi], axis=1)[:, :W] > 0
        total[lo:hi] = np.cumsum(extra[lo:hi], axis=1)[:, :W].sum(axis=1)
    alive_periods = np.maximum(W - np.maximum(panel.birth_period, 0), 1)
    return under_effect, total / alive_periods


# ---- seasonality --------------------------------------------------------------------------------
def estimate_seasonality(
    summary: CustomerSummary, rows: CustomerRows, ce: pd.Timestamp, period_days: float, fits, seg: np.ndarray
) -> np.ndarray | None:
    """Week-of-year multipliers (53), from the ratio of actual to model-expected transactions per
    period, detrended, averaged by ISO week, smoothed, shrunk by the number of years seen and
    normalised to a geometric mean of 1. None when the history covers less than a year."""
    start = pd.Timestamp(summary.birth.min()).normalize()
    if (ce - start).days < SEASON_MIN_DAYS or period_days > 7:
        return None
    W = int((ce - start).days // period_days)
    if W < 52:
        return None
    expected = expected_by_period(summary, seg, fits["by_segment"], start, W, period_days)
    actual = actual_by_period(rows, summary.birth_is_signup, start, W, period_days)
    ok = (expected > 5) & (actual > 0)
    if ok.sum() < 52:
        return None
    lr = np.where(ok, np.log(np.maximum(actual, 1e-9) / np.maximum(expected, 1e-9)), np.nan)
    # detrend with a centred 52-period moving average where available
    s = pd.Series(lr)
    trend = s.rolling(52, center=True, min_periods=26).mean().bfill().ffill()
    resid = (s - trend).to_numpy()
    dates = start + pd.to_timedelta(np.arange(W) * period_days + period_days / 2, unit="D")
    woy = np.asarray(dates.isocalendar().week, int) - 1
    good = np.isfinite(resid)
    sums = np.bincount(woy[good], weights=resid[good], minlength=53)
    cnt = np.bincount(woy[good], minlength=53).astype(float)
    mean = np.divide(sums, cnt, out=np.zeros(53), where=cnt > 0)
    # circular 3-week smoothing, then shrink by years of evidence
    sm = (np.roll(mean, 1) + 2 * mean + np.roll(mean, -1)) / 4
    shrunk = sm * cnt / (cnt + 1.0)
    shrunk -= shrunk[:52].mean()
    return np.exp(shrunk)


def actual_by_period(
    rows: CustomerRows, birth_is_signup: bool, start: pd.Timestamp, n_periods: int, period_days: float
) -> np.ndarray:
    """Transactions per period from `start` (repeat transactions only for first-purchase births)."""
    keep = np.ones(rows.codes.size, bool)
    if not birth_is_signup:
        keep[rows.starts] = False
    w = period_index(rows.day_ns[keep].astype("datetime64[ns]"), start, period_days)
    return np.bincount(w[(w >= 0) & (w < n_periods)], minlength=n_periods).astype(float)


def effect_in_force(dec, world: WorldModel, n: int, W: int) -> dict[str, np.ndarray]:
    """Per customer, the effect of their last logged contact still running at the start of the
    first simulated period W (code a*S + s, periods left, fatigue factor it was applied with)."""
    S = len(STAGES)
    code = np.zeros(n, np.int16)
    left = np.zeros(n, np.int16)
    scale = np.zeros(n)
    c = np.flatnonzero(dec.action > 0)
    if c.size:
        order = c[np.lexsort((dec.period[c], dec.cust[c]))]
        last = order[np.r_[dec.cust[order][1:] != dec.cust[order][:-1], True]]  # last contact per customer
        rem = dec.period[last] + np.asarray(world.response.duration)[dec.action[last]] - W
        run = rem > 0
        who = dec.cust[last][run]
        code[who] = dec.action[last][run] * S + np.clip(dec.stage[last][run], 0, S - 1)
        left[who] = rem[run]
        scale[who] = dec.fatigue[last][run]
    return {"eff_code": code, "eff_left": left, "eff_scale": scale}


def expected_by_period(
    summary: CustomerSummary, seg: np.ndarray, by_segment: list, start: pd.Timestamp, n_periods: int, period_days: float
) -> np.ndarray:
    """Model-expected (unconditional) transactions after birth in each period from `start`, summed
    over customers; customers are grouped by birth time so the cost is cohorts x periods."""
    bfrac = ((summary.birth - np.datetime64(pd.Timestamp(start), "ns")) / np.timedelta64(1, "D")) / period_days
    edges = np.arange(n_periods + 1, dtype=float)
    expected = np.zeros(n_periods)
    for g in np.unique(seg):
        m = seg == g
        cohorts, inv = np.unique(np.round(bfrac[m], 3), return_inverse=True)
        weight = np.bincount(inv)
        t = np.clip(edges[None, :] - cohorts[:, None], 0.0, None)
        ex = by_segment[g].expected_unconditional(t.ravel()).reshape(t.shape)
        expected += (weight[:, None] * np.diff(ex, axis=1)).sum(axis=0)
    return expected


# ---- the book of digital twins ------------------------------------------------------------------
def build_book(
    world: WorldModel,
    summary: CustomerSummary,
    seg: np.ndarray,
    fits,
    spend,
    ce: pd.Timestamp,
    held_end: np.ndarray,
    contact_end,
    effect_mult: np.ndarray,
    model: str,
    dec=None,
    rows: CustomerRows | None = None,
) -> pd.DataFrame:
    """One row per customer: observables at the cut-off and the parameters of the posterior of
    their latent state (alive probability, rate, hazard, spend), per segment's fitted model."""
    n = len(summary)
    pdays = world.economics.period_days
    cols: dict[str, Any] = {"customer_id": summary.customer_id, "segment": seg.astype(np.int16)}
    post = {k: np.zeros(n) for k in ("p_alive", "lam_shape", "lam_rate", "mu_shape", "mu_rate", "nu_shape", "nu_rate")}
    for g in range(len(world.segments)):
        m = seg == g
        if not m.any():
            continue
        act = fits["by_segment"][g]
        x, tx_, T = summary.x[m], summary.t_x[m], summary.T[m]
        pa = act.p_alive(x, tx_, T)
        pp = act.posterior_if_alive(x, tx_, T)
        post["p_alive"][m] = pa
        post["lam_shape"][m] = pp["lam_shape"]
        # rates fitted under the logging campaigns, in campaign-free units: the prior's alpha is
        # deflated by the segment's mean multiplier (as in the world) and the exposure by the
        # customer's own, so lam | alive ~ Gamma(r + x, alpha (1 + e_seg) + T (1 + e_i))
        e_seg = float(effect_mult[m].mean())
        post["lam_rate"][m] = pp["lam_rate"] + act.params[1] * e_seg + T * effect_mult[m]
        if model == "pareto_nbd":
            post["mu_shape"][m], post["mu_rate"][m] = pp["mu_shape"], pp["mu_rate"]
        else:
            post["mu_shape"][m], post["mu_rate"][m] = pp["p_a"], pp["p_b"]
        gg: GammaGamma = spend["by_segment"][g]
        sh, rt = gg.posterior_nu(summary.spend_x[m], summary.spend_mean[m])
        post["nu_shape"][m], post["nu_rate"][m] = sh, rt
    cols.update(post)
    last = summary.last_date
    has = ~np.isnat(last)
    rec_days = np.where(has, (np.datetime64(ce, "ns") - last) / np.timedelta64(1, "D"), summary.T * pdays)
    cols["tenure"] = np.floor(summary.T).astype(np.int32)
    cols["recency"] = np.floor(rec_days / pdays).astype(np.int32)
    cols["frequency"] = summary.n_tx.astype(np.int32)
    cols["monetary"] = summary.total_amount
    if rows is not None:  # payment regularity (sim/regularity.py): payment_period, payment_strength, turned_irregular
        cols.update(regularity_columns(rows, summary, ce, pdays))
    for j, p in enumerate(world.products):
        cols[f"prod_{p}"] = held_end[:, j] if held_end.size else np.zeros(n, bool)
    if contact_end is not None:
        recent, last_p = contact_end[:, 0], contact_end[:, 1]
        # periods since the last contact at the start of the first simulated period
        origin_offset = np.floor((np.datetime64(ce, "ns") - summary.birth.min()) / np.timedelta64(1, "D") / pdays)
        cols["last_contact"] = np.where(last_p >= 0, origin_offset - last_p, 10_000).astype(np.int32)
        cols["recent_contacts"] = recent.astype(float)
    if dec is not None:
        cols.update(effect_in_force(dec, world, n, int(origin_offset) + 1))
    book = pd.DataFrame(cols)
    return book
