"""Report sections about a calibrated world, shared by the scenario report and the run report: the
calibration fit (what the world's `fit` holds and the segments' parameters) and every assumption the
calibration took from priors, verbatim."""

from __future__ import annotations

from typing import Any

import numpy as np

from .kit import escape, number, table

HEADINGS = {"fit": "Calibration fit", "assumptions": "Assumptions, defaults and repairs"}
MODELS = {"pareto_nbd": "Pareto/NBD", "bg_nbd": "BG/NBD", "gamma_gamma": "Gamma-Gamma"}


def _fit_rows(info: dict, segments: list[str]) -> list[list[str]]:
    rows = []
    for key, v in info.items():
        if key == "model":
            continue
        who = "pooled (all customers)" if key == "pooled" else key
        if key.startswith("segment_"):
            try:
                who = f"segment {segments[int(key.split('_', 1)[1])]}"
            except (ValueError, IndexError):
                pass
        if not isinstance(v, dict):
            rows.append([escape(who), "–", "–", "–", "–", escape(v)])
            continue
        se = v.get("se") or {}
        rows.append(
            [
                escape(who),
                number(v.get("n_customers"), "{:,}"),
                number(v.get("loglik"), "{:,.2f}"),
                escape(v.get("converged")),
                number(v.get("iterations"), "{}"),
                escape(", ".join(f"{k} {number(x, '{:.4g}')}" for k, x in se.items()) or "–"),
            ]
        )
    return rows


def calibration_fit(world: Any, wd: dict | None) -> str:
    out = [f'<h2 id="fit">{HEADINGS["fit"]}</h2>']
    if world is None or wd is None:
        out.append('<p class="note">The world file named by the scenario was not found: no calibration details.</p>')
        return "".join(out)
    fit = wd.get("fit") or {}
    seg_names = [s.name for s in world.segments]
    seg_m = wd.get("segmentation") or {}
    out.append(
        f'<p class="note">Activity model {escape(MODELS.get(world.activity_model, world.activity_model))}, spend model Gamma-Gamma, '
        f"calibrated on the history up to {escape(world.calibration_end or '–')}; segments "
        f"{escape(seg_m.get('method', '–'))}"
        + (f" (column <code>{escape(seg_m['column'])}</code>)" if seg_m.get("column") else "")
        + (f"; calibration took {fit['seconds']} s" if isinstance(fit.get("seconds"), (int, float)) else "")
        + ".</p>"
    )
    # segments
    mult = fit.get("campaign_multiplier") or {}
    act_keys = list(dict.fromkeys(k for s in world.segments for k in s.activity if k != "model"))
    sp_keys = list(dict.fromkeys(k for s in world.segments for k in s.spend if k != "model"))
    own_act = {k for k in (fit.get("activity") or {}) if k.startswith("segment_")}
    own_sp = {k for k in (fit.get("spend") or {}) if isinstance(fit.get("spend"), dict) and k.startswith("segment_")}
    rows = []
    for g, s in enumerate(world.segments):
        rows.append(
            [escape(s.name), f"{s.n_customers:,}", f"{s.share:.3f}"]
            + [number(s.activity.get(k), "{:.4g}") for k in act_keys]
            + [number(mult.get(s.name), "{:.3f}")]
            + [number(s.spend.get(k), "{:.4g}") for k in sp_keys]
            + [
                ("own" if f"segment_{g}" in own_act else "pooled")
                + " / "
                + ("own" if f"segment_{g}" in own_sp else "pooled")
            ]
        )
    out.append("<h3>Segments: activity and spend parameters</h3>")
    out.append(
        '<p class="note">Activity parameters as simulated (the rate scale alpha is divided out of the '
        "logging policy's campaigns by the campaign multiplier); spend is Gamma-Gamma (p, q, gamma). "
        "The last column says whether the segment's activity / spend parameters come from its own fit "
        "or the pooled one.</p>"
    )
    out.append(
        table(
            ["segment", "customers", "share"]
            + [f"activity {escape(k)}" for k in act_keys]
            + ["campaign multiplier"]
            + [f"spend {escape(k)}" for k in sp_keys]
            + ["fit (activity / spend)"],
            rows,
        )
    )
    # maximum-likelihood fits
    for part, title in (("activity", "Activity fits"), ("spend", "Spend fits")):
        info = fit.get(part)
        if isinstance(info, dict) and info:
            model = info.get("model", "gamma_gamma" if part == "spend" else "")
            out.append(f"<h3>{title}{' (' + escape(MODELS.get(model, model)) + ')' if model else ''}</h3>")
            out.append(
                table(
                    ["fit", "customers", "log-likelihood", "converged", "iterations", "standard errors"],
                    _fit_rows(info, seg_names),
                )
            )
    # intervention response
    resp = fit.get("response") or {}
    dpc = resp.get("decisions_per_cell")
    src = world.response.source or {}
    if isinstance(dpc, list) and dpc:
        acts = list(world.catalogue.names)
        stages = list(world.stages)
        out.append("<h3>Intervention response: logged decisions per action and stage</h3>")
        out.append(
            '<p class="note">Each cell: logged decisions, then where the activity lift (L), dropout '
            "reduction (D) and adoption uplift (A) come from: d = data, b = blend of data and prior, "
            "p = prior"
            + (
                f"; a cell needs {escape(resp['min_decisions'])} decisions for a data estimate"
                if resp.get("min_decisions") is not None
                else ""
            )
            + (
                f"; effects measured over {escape(resp['post_window'])} periods after a decision"
                if resp.get("post_window") is not None
                else ""
            )
            + ".</p>"
        )
        abbrev = {"data": "d", "blend": "b", "prior": "p"}
        # a stage without a logged decision is a column of zeros: said in a sentence instead
        empty = [
            j
            for j in range(len(stages))
            if all(not (i < len(dpc) and j < len(dpc[i]) and dpc[i][j]) for i in range(1, len(acts)))
        ]
        shown = [j for j in range(len(stages)) if j not in empty]
        rows = []
        for i, a in enumerate(acts):
            if i == 0:
                continue
            cells = []
            for j in shown:
                n = dpc[i][j] if i < len(dpc) and j < len(dpc[i]) else None
                tags = []
                for key, letter in (("activity_lift", "L"), ("dropout_reduction", "D"), ("adoption_uplift", "A")):
                    tab = src.get(key)
                    if isinstance(tab, list) and i < len(tab) and j < len(tab[i]):
                        tags.append(f"{letter}:{abbrev.get(tab[i][j], tab[i][j])}")
                cells.append(
                    number(n, "{:,}") + (f'<br><span class="ci">{escape(" ".join(tags))}</span>' if tags else "")
                )
            rows.append([escape(a)] + cells)
        if shown:
            out.append(table(["action"] + [escape(stages[j]) for j in shown], rows))
        if empty:
            out.append(
                f'<p class="note">No logged decision in the {escape(", ".join(stages[j] for j in empty))} '
                f"stage{'s' if len(empty) > 1 else ''}: every response there comes from priors.</p>"
            )
    # products
    prods = fit.get("products") or {}
    if prods.get("adopt_events") is not None and world.products:
        try:
            ae, ar = np.asarray(prods["adopt_events"], float), np.asarray(prods["adopt_at_risk"], float)
            ce, cr = np.asarray(prods["close_events"], float), np.asarray(prods["close_at_risk"], float)
            rows = []
            for k, pname in enumerate(world.products):
                a_n, a_r = ae[..., k].sum(), ar[..., k].sum()
                c_n, c_r = ce[..., k].sum(), cr[..., k].sum()
                rows.append(
                    [
                        escape(pname),
                        f"{a_n:,.0f}",
                        f"{a_r:,.0f}",
                        number(a_n / a_r if a_r > 0 else None, "{:.5f}"),
                        f"{c_n:,.0f}",
                        f"{c_r:,.0f}",
                        number(c_n / c_r if c_r > 0 else None, "{:.5f}"),
                    ]
                )
            out.append("<h3>Products: adoption and closing hazards</h3>")
            out.append(
                '<p class="note">Events and customer-periods at risk over all segments and stages; the '
                "world holds the hazards per segment and stage.</p>"
            )
            out.append(
                table(["product", "adoptions", "at risk", "adoption rate", "closings", "at risk", "closing rate"], rows)
            )
        except (KeyError, ValueError, IndexError):
            pass
    # economics and stage rules
    eco = world.economics.to_dict()
    eco_txt = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in eco.items() if not isinstance(v, dict))
    if "currency" not in eco:
        eco_txt += " (no currency named: money is in margin units)"
    ppm = eco.get("product_margin_per_period") or {}
    sr = world.stage_rules
    out.append("<h3>Economics and stage rules</h3>")
    out.append(
        table(
            ["", ""],
            [
                ["economics", escape(eco_txt)],
                ["product margin per period", escape(", ".join(f"{k} {v}" for k, v in ppm.items()) or "–")],
                [
                    "stage rules (periods)",
                    escape(
                        f"new < {sr.new_periods} tenure, maturity ≥ {sr.mature_periods} tenure, "
                        f"dormancy ≥ {sr.dormant_after} recency, churned ≥ {sr.churned_after} "
                        "recency"
                    ),
                ],
                ["seasonality", escape("estimated (53 weekly multipliers)" if world.seasonality else "not estimated")],
            ],
            left=2,
        )
    )
    return "".join(out)


def assumptions(world: Any) -> str:
    out = [f'<h2 id="assumptions">{HEADINGS["assumptions"]}</h2>']
    if world is None:
        out.append('<p class="note">The world file was not found: its assumptions cannot be listed.</p>')
        return "".join(out)
    if not world.assumptions:
        out.append('<p class="note">The world lists no assumptions: everything was estimated from data.</p>')
        return "".join(out)
    out.append(
        f'<p class="note">The {len(world.assumptions)} assumptions the calibration recorded '
        "(<code>world.assumptions</code>), verbatim: the parts of the world taken from priors rather than "
        "from the history, the defaults taken in place of files the history does not have, and what the "
        "reader repaired in the data.</p>"
    )
    out.append('<ul class="assumptions">' + "".join(f"<li>{escape(a)}</li>" for a in world.assumptions) + "</ul>")
    return "".join(out)


# ---- the report ------------------------------------------------------------------------------------
