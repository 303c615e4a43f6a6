"""The read-out of a deployed plan: its lift measured from what happened (`clv readout`).

A deployment file (what `clv plan --control-share` exports) lists every customer in the plan's
scope on the deployment date, in the decisions table's format: customer_id, date, action,
propensity, group (treatment / control / explore) [, cost]. Treatment customers got their
action, control customers were held out at random (not contacted), explore customers got an
action drawn for exploration.

Per customer the outcome is the data contract's reward over the read-out window [start, end)
(experiments.ope.data.window_margins: margin_rate x the amounts of the transactions in the window
+ the margins of the products held at each period end in (start, end]) minus the deployment's
cost of the customer's row (its `cost` column, else the catalogue's cost of the action; a control
customer was not contacted and costs 0). The pre-period covariate is the same earnings (no cost)
over an equally long window ending on the deployment date.

The lift per customer in scope is the treatment mean minus the control mean, with Welch's 95 %
interval, and its CUPED adjustment (Deng, Xu, Kohavi & Walker 2013): Y - theta (X - mean X) with
theta = cov(Y, X) / var(X) over treatment and control pooled, whose interval is narrower by
sqrt(1 - rho^2) when pre and post correlate. The overall contrast is intent-to-treat: every
customer not held out (treatment and explore) against the control group, drawn at random before
the plan's actions and the explore draws, so it estimates the effect of deploying the plan (with
its exploration) over the customers in scope. When the control share differs between segments
the overall and per-action contrasts are stratified by segment (experiments.readout_strata: the
within-segment differences weighted by segment size; `estimator` says which was used). The
per-segment and per-action contrasts leave explore customers out (their actions were not the plan's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.readout_estimators import LEVEL, cuped, roi_document, welch
from sim.errors import ConfigError, HistoryError
from sim.response import DEPLOYMENT_GROUPS

GROUPS = DEPLOYMENT_GROUPS  # treatment, control, explore: the one list, which calibration checks too
VERDICTS = ("confirmed", "not detected", "contradicted")
OUTCOME_DEFINITION = (
    "the contract reward over [start, end): margin_rate x transaction amounts + margins of the products held at "
    "each period end - the deployment's cost of the customer's row (control: 0)"
)


# --------------------------------------------------------------------------------------------
# the deployment file


def read_deployment(path: str | Path, history) -> pd.DataFrame:
    """The deployment file, validated against the history: customer_id (text, as the history
    holds it), date, action, propensity, group, cost (float: the row's cost column, else the
    catalogue's cost of the action; 0 for control rows), row (the row a user sees). Bad input
    raises HistoryError naming the file, row and column."""
    from sim.history import _Checks, _text, read_table_file, validate_decisions

    path = Path(path)
    raw = read_table_file(path, "deployment file", "give the deployment file `clv plan` exported")
    file = path.name
    raw = raw.set_axis([str(c).strip() for c in raw.columns], axis=1)
    if "group" not in raw.columns and len(raw.columns) == len(set(raw.columns)):
        raise HistoryError(
            file,
            None,
            "group",
            "missing required column 'group'; a deployment file needs customer_id, date, action, propensity, group "
            f"(treatment, control or explore); found: {', '.join(raw.columns)}",
        )
    known = [history.transactions["customer_id"].to_numpy(dtype=object)]
    if history.customers is not None:
        known.append(history.customers["customer_id"].to_numpy(dtype=object))
    from experiments.readout_strata import file_columns

    strata = [c for c in ("segment", "control_share") if c in raw.columns]
    dec = validate_decisions(
        raw.drop(columns=["group", *strata]), file, history.actions, np.unique(np.concatenate(known).astype(str))
    )
    # validate_decisions sorts by customer and date; the row each came from is its index + offset
    ck = _Checks(raw, file)
    group = _text(ck, raw["group"], "group", "give treatment, control or explore")
    ck.raise_first()
    g = group.str.lower()
    bad = ~g.isin(GROUPS).to_numpy(dtype=bool)
    ck.add(
        "group", bad, lambda pos: f"unknown group {group.iloc[pos]!r}; a deployment's groups are {', '.join(GROUPS)}"
    )
    ck.raise_first()
    rows = np.arange(len(raw)) + ck.offset if ck.labels is None else ck.labels.astype(np.int64) + ck.offset
    from sim.history import _ids

    ids = _ids(_Checks(raw, file), raw["customer_id"], "customer_id").to_numpy(dtype=object).astype(str)
    first = pd.Series(ids).duplicated(keep="first").to_numpy()
    if first.any():  # validate_decisions catches same-day duplicates; any other date is caught below
        pos = int(np.argmax(first))
        prev = int(np.flatnonzero(ids == ids[pos])[0])
        raise HistoryError(
            file,
            int(rows[pos]),
            "customer_id",
            f"customer {ids[pos]!r} is listed twice (first in row {int(rows[prev])}); a deployment lists each "
            "customer once",
        )
    info = pd.DataFrame({"customer_id": ids, "group": g.to_numpy(dtype=object), "row": rows, **file_columns(raw, file)})
    dep = dec.merge(info, on="customer_id", how="left", validate="one_to_one")
    dep = dep.sort_values("row", kind="stable").reset_index(drop=True)
    day = dep["date"].to_numpy()
    if (day != day[0]).any():
        pos = int(np.argmax(day != day[0]))
        raise HistoryError(
            file,
            int(dep["row"].iloc[pos]),
            "date",
            f"{str(day[pos])[:10]} is not the deployment date {str(day[0])[:10]} (row {int(dep['row'].iloc[0])}); "
            "a deployment file holds one date",
        )
    for need in ("control", "treatment"):
        if not (dep["group"] == need).any():
            raise HistoryError(
                file,
                None,
                "group",
                f"no {need} customers; the read-out contrasts treatment with a randomised control group "
                "(export the plan with `clv plan --control-share`)",
            )
    control = (dep["group"] == "control").to_numpy()
    if "cost" in dep.columns:
        cost = dep["cost"].to_numpy(dtype=np.float64).copy()
    elif history.actions is not None:
        table = dict(zip(history.actions.names, history.actions.costs))
        cost = np.array([float(table.get(a, 0.0)) for a in dep["action"].to_numpy(dtype=object)], np.float64)
    else:
        raise HistoryError(
            file,
            None,
            "cost",
            "no cost column and the history has no actions.yaml to price the actions; add either",
        )
    cost[control] = 0.0
    dep["cost"] = cost
    keep = ["customer_id", "date", "action", "propensity", "group", "cost", "row"]
    if "planned_action" in dep.columns:  # `clv plan --control-share`: the action a control customer was held out of
        dep["planned_action"] = dep["planned_action"].astype(str).str.strip()
        keep.append("planned_action")
    return dep[keep + strata]  # segment, control_share: the randomisation's strata (experiments.deployment)


# --------------------------------------------------------------------------------------------
# outcomes


def _day(text: str | pd.Timestamp) -> int:
    return int(np.datetime64(pd.Timestamp(text).normalize().to_datetime64(), "D").astype(np.int64))


def customer_outcomes(history, deployment: pd.DataFrame, start, end) -> pd.DataFrame:
    """Per deployment row: customer_id, group, action, propensity, cost, margin, product_margin,
    outcome (margin + product_margin - cost over [start, end)) and pre (margin + product_margin
    over the equally long window ending on the deployment date)."""
    from experiments.ope.data import period_grid, window_margins

    a, b = _day(start), _day(end)
    d = _day(deployment["date"].iloc[0])
    grid = period_grid(history)
    ids = deployment["customer_id"].to_numpy(dtype=object)
    margin, product = window_margins(history, ids, float(a), float(b), grid)
    pre_m, pre_p = window_margins(history, ids, float(d - (b - a)), float(d), grid)
    cost = deployment["cost"].to_numpy(np.float64)
    cols = ["customer_id", "group", "action", "propensity", "cost"]
    cols += [c for c in ("planned_action", "segment", "control_share") if c in deployment.columns]
    out = deployment[cols].copy()
    out["margin"] = margin
    out["product_margin"] = product
    out["outcome"] = margin + product - cost
    out["pre"] = pre_m + pre_p
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# verdict


def verdict(ci_low: float | None, ci_high: float | None, predicted: float | None) -> dict[str, str]:
    """ "confirmed": the interval excludes 0 on the prediction's side and covers the prediction;
    "not detected": it covers 0; "contradicted": it excludes 0 with the other sign, or excludes 0 on
    the predicted side but not the prediction itself (the lift is real but not the one predicted).
    Without a prediction the plan is taken to predict a gain, and a gain is "confirmed" when the
    interval lies above 0."""
    if ci_low is None or ci_high is None or not np.isfinite([ci_low, ci_high]).all():
        return {"verdict": "not detected", "reason": "no interval (fewer than 2 customers in a group)"}
    if ci_low <= 0.0 <= ci_high:
        return {"verdict": "not detected", "reason": "the interval covers 0"}
    sign = 1.0 if predicted is None or predicted >= 0 else -1.0
    if (ci_low > 0) != (sign > 0):
        return {"verdict": "contradicted", "reason": "the interval excludes 0 with the sign opposite to the prediction"}
    if predicted is None:
        return {"verdict": "confirmed", "reason": "the interval lies above 0 (no prediction given to compare with)"}
    if ci_low <= predicted <= ci_high:
        return {"verdict": "confirmed", "reason": "the interval excludes 0 and covers the prediction"}
    side = "below" if ci_high < predicted else "above"
    return {"verdict": "contradicted", "reason": f"the interval excludes 0 but lies {side} the prediction"}


# --------------------------------------------------------------------------------------------
# the read-out


def _contrast(frame: pd.DataFrame, treated: np.ndarray) -> dict[str, Any]:
    y, x = frame["outcome"].to_numpy(np.float64), frame["pre"].to_numpy(np.float64)
    return {"difference_in_means": welch(y[treated], y[~treated]), "cuped": cuped(y, x, treated)}


def _roi(frame: pd.DataFrame, treated: np.ndarray) -> dict[str, Any]:
    """Incremental earnings (margin + product margins, CUPED-adjusted) / incremental cost; the cost
    is fixed by the assignment, so the ratio's interval is the earnings' interval over it."""
    gross = (frame["margin"] + frame["product_margin"]).to_numpy(np.float64)
    est = cuped(gross, frame["pre"].to_numpy(np.float64), treated)
    cost = frame["cost"].to_numpy(np.float64)
    inc_cost = float(cost[treated].mean() - cost[~treated].mean()) if treated.any() and (~treated).any() else 0.0
    return roi_document(est, inc_cost)


def _segments(history, frame: pd.DataFrame, world_path) -> tuple[np.ndarray | None, str | None]:
    """Every row's segment: --world's book, else the deployment file's segment column, else customers.csv's."""
    ids = frame["customer_id"].to_numpy(dtype=object)
    if world_path is None and "segment" in frame.columns:
        return frame["segment"].astype(str).to_numpy(dtype=object), "the deployment file's segment column"
    if world_path is not None:
        from sim.world import WorldModel

        world = WorldModel.load(world_path)
        book = world.read_book(world_path)
        if book is None:
            raise ConfigError(f"{world_path}: the world has no book to take the customers' segments from")
        names = np.array([s.name for s in world.segments], dtype=object)
        seg = pd.Series(names[book["segment"].to_numpy().astype(np.int64)], index=book["customer_id"].astype(str))
        return pd.Series(ids).map(seg).fillna("(not in the book)").to_numpy(dtype=object), f"{world_path} (book)"
    cust = history.customers
    if cust is not None and "segment" in cust.columns:
        seg = pd.Series(cust["segment"].astype(str).to_numpy(), index=cust["customer_id"].astype(str).to_numpy())
        return pd.Series(ids).map(seg).fillna("(none)").to_numpy(dtype=object), "customers.csv"
    return None, None


def _prediction(plan_path: str | Path | None, predicted: float | None, in_scope: int, periods: float):
    """(the predicted lift per customer in scope, its document, {segment: predicted lift} or None)."""
    if predicted is not None:
        return float(predicted), {"source": "--predicted", "per_customer_in_scope": float(predicted)}, None
    if plan_path is None:
        return None, None, None
    path = Path(plan_path)
    try:
        doc = json.loads(path.read_text())
        pred = doc["predicted_lift"]
        mean = float(pred["mean"] if isinstance(pred, dict) else pred)
        customers = int(doc.get("customers", in_scope))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            "plan", value=str(path), message=f"not a `clv plan` plan.json with a predicted_lift ({type(e).__name__})"
        ) from None
    x = doc.get("experiment") or {}
    if x.get("predicted_lift_per_customer") is not None:  # `clv plan --control-share`: the deployment's own power
        per, h = float(x["predicted_lift_per_customer"]), x.get("horizon_periods")
        return (
            per,
            {
                "source": f"{path} (experiment)",
                "per_customer_in_scope": per,
                "horizon_periods": h,
                "by_segment": x.get("predicted_lift_by_segment"),
                "comparable": bool(h is not None and abs(float(h) - periods) < 1e-9),
                "note": "the experiment's predicted lift per customer in the deployment's scope over its horizon "
                "(discounted contract reward, cost included, the whole treatment arm following the plan); comparable "
                "when the read-out window is that horizon",
            },
            x.get("predicted_lift_by_segment"),
        )
    per = mean * customers / max(in_scope, 1)
    horizon = doc.get("horizon")
    return (
        per,
        {
            "source": str(path),
            "predicted_lift": pred,
            "plan_customers": customers,
            "plan_horizon": horizon,
            "per_customer_in_scope": per,
            "comparable": bool(horizon is not None and abs(float(horizon) - periods) < 1e-9),
            "note": "the plan's predicted_lift is per book customer over its horizon (discounted); rescaled here to "
            "per customer in the deployment's scope (x plan customers / customers in scope). It compares with the "
            "read-out only when the read-out window is the plan's horizon and the deployment is the whole plan.",
        },
        None,
    )


def read_out(
    history,
    deployment_path: str | Path,
    start: str,
    end: str,
    plan: str | Path | None = None,
    predicted: float | None = None,
    world: str | Path | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """(the read-out document, the per-customer outcomes table) of the deployment file over [start, end)."""
    dep = read_deployment(deployment_path, history)
    d = pd.Timestamp(dep["date"].iloc[0])
    try:
        s, e = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    except (ValueError, TypeError):
        raise ConfigError("start", value=f"{start} / {end}", message="dates must look like 2024-03-31") from None
    if s < d:
        raise ConfigError(
            "start", value=str(s.date()), message=f"the read-out window starts before the deployment date {d.date()}"
        )
    if e <= s:
        raise ConfigError("end", value=str(e.date()), message=f"the read-out window [{s.date()}, {e.date()}) is empty")
    period_days = float(history.economics.period_days)
    periods = (e - s).days / period_days
    out = customer_outcomes(history, dep, s, e)
    warnings: list[str] = []
    last = history.transactions["date"].max()
    if e > last + pd.Timedelta(days=period_days):  # past the period holding the last transaction
        warnings.append(
            f"the window ends on {e.date()}, after the history's last transaction ({pd.Timestamp(last).date()})"
        )
    # the overall lift is intent-to-treat: everyone not held out (treatment and explore) against the
    # control group, which was drawn at random before the plan's actions and the explore draws; leaving
    # explore customers out would bias it, as only the plan's contacts can be drawn into explore
    itt = out.reset_index(drop=True)
    assigned = (itt["group"] != "control").to_numpy()
    from experiments import readout_strata as rs

    segments_all, seg_source = _segments(history, itt, world)
    design = rs.design(itt, segments_all)
    warnings += [design.warning] if design.warning else []
    strata = None
    if design.stratified:  # the control share differs between strata: weight the within-stratum contrasts
        strat = rs.contrast(itt, assigned, design.labels)
        main, roi_all = {k: strat[k] for k in ("difference_in_means", "cuped")}, rs.roi(itt, assigned, design.labels)
        strata = {"by": seg_source or "control share", "control_shares_from": design.source, "rule": rs.STRATA_RULE}
        strata.update({"left_out": strat["left_out"], "rows": rs.strata_rows(itt, assigned, design, strat)})
        if strat["left_out"]:
            warnings.append(
                f"strata without 2 customers in each arm are left out of the lift: {', '.join(strat['left_out'])}"
            )
    else:
        main, roi_all = _contrast(itt, assigned), _roi(itt, assigned)
    keep = (out["group"] != "explore").to_numpy()
    tc = out[keep].reset_index(drop=True)
    treated = (tc["group"] == "treatment").to_numpy()
    labels = design.labels[keep] if design.stratified else None
    pred, pred_doc, pred_seg = _prediction(plan, predicted, int(len(itt)), periods)
    v = main["cuped"]
    by_segment = []
    segments = None if segments_all is None else segments_all[keep]
    if segments is not None:
        for name in sorted(pd.unique(segments)):
            m = segments == name
            row = {"segment": str(name), "treatment": int((m & treated).sum()), "control": int((m & ~treated).sum())}
            row.update(_contrast(tc[m].reset_index(drop=True), treated[m]))
            row["predicted"] = None if pred_seg is None else pred_seg.get(str(name))
            by_segment.append(row)
    by_action = []
    # the action each customer was planned for: the file's planned_action when it has one (control rows
    # then name the action they were held out of), else the row's action
    key = tc["planned_action" if "planned_action" in tc.columns else "action"].to_numpy(dtype=object)
    ctrl_actions = key[~treated]
    key_all = itt["planned_action" if "planned_action" in itt.columns else "action"].to_numpy(dtype=object)
    for a in sorted(pd.unique(key[treated])):
        same = ~treated & (key == a)
        use_same = int(same.sum()) >= 2 and bool((ctrl_actions != "none").any())
        m = (treated & (key == a)) | (same if use_same else ~treated)
        sub, t = tc[m].reset_index(drop=True), treated[m]
        row = {
            "action": str(a),
            "treatment": int(t.sum()),
            "control": int((~t).sum()),
            "control_kind": "the control customers planned for this action" if use_same else "all control customers",
        }
        if design.stratified:
            lab = labels[m]
            if use_same:  # the strata's customers planned for the action (explore ones too): counted
                planned = key_all == a
                sizes = dict(pd.Series(design.labels[planned]).value_counts())
            else:  # estimated from the treated counts and the strata's control shares
                sizes = rs.action_sizes(lab, t, design, design.labels, ~assigned)
            row.update({k: w for k, w in rs.contrast(sub, t, lab, sizes).items() if k != "weights"})
            row["roi"] = rs.roi(sub, t, lab, sizes)
        else:
            row.update(_contrast(sub, t))
            row["roi"] = _roi(sub, t)
        by_action.append(row)
    groups = {g: int((out["group"] == g).sum()) for g in GROUPS}
    doc: dict[str, Any] = {
        "history": str(history.folder),
        "deployment": str(deployment_path),
        "deployment_date": str(d.date()),
        "window": {"start": str(s.date()), "end": str(e.date()), "periods": periods, "rule": "[start, end)"},
        "pre_window": {
            "start": str((d - (e - s)).date()),
            "end": str(d.date()),
            "rule": "the same earnings (no cost) over an equally long window ending on the deployment date",
        },
        "customers": {"in_file": int(len(out)), **groups},
        "outcome": OUTCOME_DEFINITION,
        "means": {g: (float(out.loc[out["group"] == g, "outcome"].mean()) if groups[g] else None) for g in GROUPS},
        "estimator": design.estimator,
        "lift": main,
        "lift_pooled": _contrast(itt, assigned) if design.stratified else None,
        "strata": strata,
        "roi": roi_all,
        "predicted": pred_doc,
        "verdict": {**verdict(v["ci_low"], v["ci_high"], pred), "interval": "cuped"},
        "verdict_difference_in_means": verdict(
            main["difference_in_means"]["ci_low"], main["difference_in_means"]["ci_high"], pred
        ),
        "segment_source": seg_source,
        "by_segment": by_segment,
        "by_action": by_action,
        "explore": {
            "customers": groups["explore"],
            "rule": "in the overall (intent-to-treat) contrast beside the treatment customers; left out of the "
            "per-segment and per-action contrasts (their actions were exploration draws, not the plan's); feed "
            "them back as logged decisions with their propensities for offline evaluation",
        },
        "warnings": warnings,
        "level": LEVEL,
        "units": "per customer in scope (treatment and control) over the read-out window, undiscounted",
        "money_unit": history.economics.money_unit,
    }
    return doc, out


__all__ = [
    "GROUPS",
    "VERDICTS",
    "read_deployment",
    "customer_outcomes",
    "welch",
    "cuped",
    "verdict",
    "read_out",
]
