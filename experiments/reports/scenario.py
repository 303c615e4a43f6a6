"""The scenario report (`write_report(DIR)` -> DIR/report.html), built from the files `clv scenarios`
wrote into DIR (scenario.json, results.parquet, periods.parquet, summary.json, ope.json when the
scenario has an `ope:` section) and the world JSON the scenario names.

One self-contained HTML file: figures are inline base64 PNGs drawn with matplotlib's Agg canvas
(no pyplot state), the stylesheet is inline, and the only links are relative ones to the Parquet
and JSON files beside it. No dates or timings are written, so the same outputs give the same page.

Sections: header and provenance; budget frontier (incremental CLV per customer against the budget,
95% intervals over seeds, and the plans' optimality gaps); policy comparison (the no-budget cells);
lifecycle-stage flows (customers per stage and period, mean over seeds); calibration fit (what the
world's `fit` holds and the segments' parameters); OPE vs simulation; and every assumption the
world took from priors, verbatim.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import ConfigError

from .kit import CSS, ci_cell, escape, figure, inline_png, number, table
from .world import HEADINGS as WORLD_HEADINGS
from .world import assumptions, calibration_fit

STAGE_ORDER = ("new", "growth", "maturity", "dormancy", "churned")
STAGE_COLORS = {"new": "#8ecae6", "growth": "#219ebc", "maturity": "#126782", "dormancy": "#ffb703",
                "churned": "#bdbdbd"}
COMPARE_METRICS = (("clv", "CLV per customer", "{:,.2f}"), ("incremental_clv", "Incremental CLV", "{:,.2f}"),
                   ("retention", "Retention", "{:.3f}"), ("marketing_roi", "Marketing ROI", "{:,.2f}"),
                   ("contacts", "Contacts per customer", "{:,.2f}"))
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
HEADINGS = {"frontier": "Budget frontier", "compare": "Policy comparison", "stages": "Lifecycle-stage flows",
            "fit": WORLD_HEADINGS["fit"], "ope": "OPE vs simulation", "assumptions": WORLD_HEADINGS["assumptions"]}

def _color(policies: list[str], p: str) -> str:
    return PALETTE[policies.index(p) % len(PALETTE)] if p in policies else "#444"


def _budget_label(b: Any) -> str:
    return "no budget" if b is None or (isinstance(b, float) and math.isnan(b)) else f"{b:,.6g}"


# ---- sections ------------------------------------------------------------------------------------
def _header(out: Path, sc: dict, results: pd.DataFrame, world: Any, world_path: Path, ope: dict | None) -> str:
    seeds = sc.get("seeds", [])
    n_ok = int((results["status"] == "ok").sum())
    n_bad = int(len(results) - n_ok)
    cons = [f"{k}: {', '.join(v)}" for k, v in (sc.get("constraints") or {}).items() if v]
    world_hash = world.hash() if world is not None else "(world file not found)"
    rows = [["Scenario", escape(sc.get("name"))],
            ["World", f"<code>{escape(world_path.name)}</code>, hash <code>{escape(world_hash)}</code>"
                      + (f", calibrated up to {escape(world.calibration_end)}" if world is not None
                         and world.calibration_end else "")],
            ["Population", escape(f"{sc.get('population')} (" + ("the whole book" if sc.get("customers") is None
                                                              else f"{sc['customers']:,} customers") + " per cell)")],
            ["Horizon", escape(f"{sc.get('horizon')} periods"
                           + (f" ({world.economics.period})" if world is not None else ""))],
            ["Seeds", escape(", ".join(str(s) for s in seeds)) + f" ({len(seeds)})"],
            ["Policies", escape(", ".join(sc.get("policies", [])))],
            ["Budgets", escape(", ".join(_budget_label(b) for b in sc.get("budgets", [])))],
            ["Cells", f"{len(results)} ({n_ok} ok" + (f", {n_bad} infeasible" if n_bad else "") + ")"],
            ["Constraints", escape("; ".join(cons) if cons else "none besides the budget")],
            ["Value tables", escape(f"horizon {sc.get('values', {}).get('horizon')}, "
                                f"replications {sc.get('values', {}).get('replications')} (budget cells)")]]
    if ope is not None:
        s = ope.get("settings", {})
        rows.append(["Offline evaluation", escape(f"{Path(ope.get('history', '')).name}: {s.get('estimand')}, "
                                             f"{', '.join(s.get('estimators', []))}, {s.get('n_boot')} bootstrap "
                                             f"resamples" + (f", from {s['start']}" if s.get("start") else "")
                                             + (f" to {s['end']}" if s.get("end") else ""))])
    files = [("results.parquet", "one row per cell"), ("periods.parquet", "per cell and period"),
             ("summary.json", "mean and 95% interval over seeds"), ("scenario.json", "the resolved scenario"),
             ("timings.json", "run times")]
    if (out / "ope.json").is_file():
        files.append(("ope.json", "offline evaluation per policy"))
    links = [f'<a href="{escape(f)}">{escape(f)}</a> <span class="note">({escape(d)})</span>' for f, d in files
             if (out / f).is_file()]
    rel = os.path.relpath(world_path, out)
    links.append(f'<a href="{escape(Path(rel).as_posix())}">{escape(world_path.name)}</a> '
                 '<span class="note">(the world)</span>')
    rows.append(["Files", "<br>".join(links)])
    nav = " ".join(f'<a href="#{k}">{escape(v)}</a>' for k, v in HEADINGS.items())
    return (f"<h1>Scenario report: {escape(sc.get('name'))}</h1>"
            f'<p class="note">Every number below comes from the files listed here; intervals are 95% '
            f"Student-t intervals over the seeds unless stated otherwise.</p>"
            + table(["", ""], rows, left=2) + f"<nav>{nav}</nav>")


def _intervals(rows: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, ci_low, ci_high) arrays of a summary metric over rows; a missing value (None) is NaN."""
    return tuple(np.array([np.nan if r[metric][k] is None else r[metric][k] for r in rows], float)
                 for k in ("mean", "ci_low", "ci_high"))


def _frontier(summary: list[dict], policies: list[str]) -> str:
    out = [f'<h2 id="frontier">{HEADINGS["frontier"]}</h2>']
    budgeted = [s for s in summary if s["budget"] is not None]
    if not budgeted:
        out.append('<p class="note">The scenario has no budget cells (its <code>budgets</code> are all null): '
                   "add budget levels, e.g. <code>budgets: [null, 1000, 2000]</code>, for a frontier.</p>")
        return "".join(out)
    out.append('<p class="note">Incremental CLV per customer (CLV minus CLV under no contact, same customers and '
               "seed) when the first period follows the best plan under the budget and the policy decides "
               "afterwards; bands are 95% intervals over seeds. The dashed line is the policy without a budget. "
               "Plan gap: relative gap between the plan's objective and the solver's bound.</p>")
    fig, ax = figure(10, 4, ncols=2)
    a, g = ax[0][0], ax[0][1]
    top = 0.0
    for p in policies:
        rows = sorted((s for s in budgeted if s["policy"] == p), key=lambda s: s["budget"])
        if not rows:
            continue
        c = _color(policies, p)
        x = np.array([s["budget"] for s in rows])
        m, lo, hi = _intervals(rows, "incremental_clv")
        a.plot(x, m, "-", color=c, label=p)
        a.errorbar(x, m, yerr=[np.nan_to_num(m - lo), np.nan_to_num(hi - m)], fmt="o", color=c, capsize=4)
        a.fill_between(x, lo, hi, color=c, alpha=0.18, linewidth=0)
        free = [s for s in summary if s["policy"] == p and s["budget"] is None]
        if free and free[0]["incremental_clv"]["mean"] is not None:
            a.axhline(free[0]["incremental_clv"]["mean"], color=c, ls="--", lw=1, label=f"{p} (no budget)")
        gap = np.array([np.nan if s.get("plan_gap", {}).get("mean") is None else 100 * s["plan_gap"]["mean"]
                        for s in rows], float)
        g.plot(x, gap, "o-", color=c, label=p)
        top = max(top, float(np.nanmax(gap)) if np.isfinite(gap).any() else 0.0)
    a.set_xlabel("budget")
    a.set_ylabel("incremental CLV per customer")
    a.set_title("Budget frontier")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    g.set_xlabel("budget")
    g.set_ylabel("plan gap (%)")
    g.set_title("Optimality gap of the plans")
    g.set_ylim(0, max(1.2 * top, 0.01))
    g.ticklabel_format(axis="y", useOffset=False, style="plain")
    g.grid(alpha=0.3)
    out.append(inline_png(fig, "budget frontier: incremental CLV per customer against budget, with 95% bands"))
    rows = []
    for s in sorted(budgeted, key=lambda s: (policies.index(s["policy"]) if s["policy"] in policies else 0,
                                             s["budget"])):
        gap = s.get("plan_gap", {})
        rows.append([escape(s["policy"]), number(s["budget"], "{:,.6g}"), ci_cell(s["incremental_clv"]),
                     ci_cell(s["clv"]), ci_cell(s.get("plan_objective")), ci_cell(s.get("plan_bound")),
                     ci_cell({k: (None if v is None else 100 * v) for k, v in gap.items()}, "{:.3f}"),
                     ci_cell(s.get("plan_spend")), ci_cell(s.get("plan_assigned"), "{:,.1f}"),
                     ci_cell(s["contacts"]), f"{s['seeds'] - s['infeasible']} / {s['seeds']}"])
    out.append(table(["policy", "budget", "incremental CLV", "CLV", "plan objective", "plan bound", "plan gap %",
                       "plan spend", "customers planned", "contacts", "feasible seeds"], rows))
    return "".join(out)


def _compare(summary: list[dict], policies: list[str]) -> str:
    out = [f'<h2 id="compare">{HEADINGS["compare"]}</h2>']
    free = [s for s in summary if s["budget"] is None]
    if not free:
        out.append('<p class="note">The scenario has no cells without a budget (add <code>null</code> to '
                   "<code>budgets</code>); the budget cells are in the frontier above.</p>")
        return "".join(out)
    out.append('<p class="note">The cells without a budget: each policy simulated alone, per customer over the '
               "horizon; incremental CLV and marketing ROI against no contact on the same customers and "
               "seeds.</p>")
    rows = [[escape(s["policy"])] + [ci_cell(s[m], f) for m, _, f in COMPARE_METRICS] for s in free]
    out.append(table(["policy"] + [lab for _, lab, _ in COMPARE_METRICS], rows))
    fig, ax = figure(11, 3.2, ncols=len(COMPARE_METRICS))
    names = [s["policy"] for s in free]
    for j, (m, lab, _) in enumerate(COMPARE_METRICS):
        a = ax[0][j]
        mean, lo, hi = _intervals(free, m)
        err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
        a.bar(range(len(free)), np.nan_to_num(mean), yerr=err, capsize=4,
              color=[_color(policies, p) for p in names])
        a.set_xticks(range(len(free)), names, rotation=30, ha="right", fontsize=8)
        a.set_title(lab, fontsize=10)
        a.grid(axis="y", alpha=0.3)
    out.append(inline_png(fig, "policy comparison: bars with 95% intervals over seeds"))
    return "".join(out)


def _stages(periods: pd.DataFrame, policies: list[str], budgets: list) -> str:
    out = [f'<h2 id="stages">{HEADINGS["stages"]}</h2>']
    cols = [f"stage_{s}" for s in STAGE_ORDER if f"stage_{s}" in periods.columns]
    cols += [c for c in periods.columns if c.startswith("stage_") and c not in cols]
    if not cols:
        out.append('<p class="note">periods.parquet has no stage counts.</p>')
        return "".join(out)
    out.append('<p class="note">Customers per lifecycle stage at each period (mean over seeds), one panel per '
               "policy and budget; customers who have left count as churned once the stage rules say so.</p>")
    combos = []
    for p in policies:
        for b in budgets:
            sel = (periods["policy"] == p) & (periods["budget"].isna() if b is None else periods["budget"] == b)
            g = periods[sel]
            if len(g) and g[cols].notna().any().any():
                combos.append((p, b, g.groupby("period")[cols].mean()))
    if not combos:
        out.append('<p class="note">No cell has stage counts (every cell infeasible).</p>')
        return "".join(out)
    if len(combos) > 12:     # keep the page readable: each policy without a budget and at its largest budget
        numeric = [b for b in budgets if b is not None]
        keep = {None, max(numeric)} if numeric else {None}
        combos = [c for c in combos if c[1] in keep]
        out.append('<p class="note">Shown: each policy without a budget and at the largest budget '
                   "(periods.parquet has every cell).</p>")
    ncols = min(3, len(combos))
    nrows = -(-len(combos) // ncols)
    fig, ax = figure(3.8 * ncols, 2.9 * nrows + 0.4, ncols=ncols, nrows=nrows)
    labels = [c[len("stage_"):] for c in cols]
    colors = [STAGE_COLORS.get(lab, PALETTE[i % len(PALETTE)]) for i, lab in enumerate(labels)]
    for k, (p, b, m) in enumerate(combos):
        a = ax[k // ncols][k % ncols]
        a.stackplot(m.index.to_numpy(), *[m[c].to_numpy() for c in cols], labels=labels, colors=colors)
        a.set_title(f"{p} · {_budget_label(b)}", fontsize=10)
        a.set_xlabel("period", fontsize=8)
        a.set_ylabel("customers", fontsize=8)
        a.margins(x=0)
    for k in range(len(combos), nrows * ncols):
        ax[k // ncols][k % ncols].axis("off")
    handles, labs = ax[0][0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="outside lower center", ncols=len(labels), fontsize=8)
    out.append(inline_png(fig, "lifecycle-stage flows: stacked customers per stage and period"))
    rows = []
    for p, b, m in combos:
        first, last = m.iloc[0], m.iloc[-1]
        rows.append([escape(p), escape(_budget_label(b))]
                    + [f"{first[c]:,.1f} → {last[c]:,.1f}" for c in cols])
    out.append("<h3>First and last period</h3>")
    out.append(table(["policy", "budget"] + [escape(lab) for lab in labels], rows, left=2))
    return "".join(out)


def _rank(values: dict[str, float]) -> dict[str, int]:
    """1 = best (highest); ties share the better rank; missing values rank last."""
    ok = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    order = sorted(ok.values(), reverse=True)
    return {k: (order.index(ok[k]) + 1 if k in ok else len(values)) for k in values}


def _ope(ope: dict | None, summary: list[dict], policies: list[str]) -> str:
    out = [f'<h2 id="ope">{HEADINGS["ope"]}</h2>']
    if ope is None:
        out.append('<p class="note">No offline evaluation in this run. To compare the simulator with off-policy '
                   "estimates on logged decisions, add an <code>ope:</code> section to the scenario file, e.g. "
                   "<code>ope: {history: path/to/history_dir, estimators: [dm, ips, snips, dr], bootstrap: 500, "
                   "start: 2024-07-01}</code> (the path relative to the scenario file; the history needs a "
                   "decisions table), and run <code>clv scenarios</code> again: the cells already done are "
                   "skipped and <code>ope.json</code> is added.</p>")
        return "".join(out)
    pols = [p for p in policies if p in (ope.get("policies") or {})]
    entries = {p: ope["policies"][p] for p in pols}
    est_keys = list(dict.fromkeys(k for e in entries.values() for k in (e.get("estimates") or {})))
    free = {s["policy"]: s for s in summary if s["budget"] is None}
    first = next(iter(entries.values()), {})
    estimand = first.get("estimand", ope.get("settings", {}).get("estimand"))
    window = first.get("window") or {}
    units = "mean reward after a decision" if estimand == "per_decision" else "sum of rewards per customer"
    out.append(f'<p class="note">Off-policy estimates (estimand <code>{escape(estimand)}</code>) on '
               f"{number(first.get('decisions'), '{:,}')} logged decisions of {number(first.get('customers'), '{:,}')} "
               f"customers from {escape(window.get('start', '–'))} to {escape(window.get('end', '–'))} in "
               f"<code>{escape(Path(ope.get('history', '')).name)}</code>, each policy acting in the scenario's world; "
               f"intervals are customer-bootstrap percentile intervals. The OPE values are in the estimand's "
               f"units ({units}), "
               "the simulated values are CLV per customer over the horizon: compare the rankings, not the "
               "levels. The logged policy's own value is the estimand's on-policy mean.</p>")
    logged = first.get("logged_policy_value")
    rows = []
    for p in pols:
        e = entries[p]
        cells = []
        for k in est_keys:
            v = (e.get("estimates") or {}).get(k)
            cells.append("–" if v is None else ci_cell({"mean": v.get("value"), "ci_low": v.get("ci_low"),
                                                       "ci_high": v.get("ci_high")}, "{:,.3f}")
                         + ("" if v is None or v.get("ess") is None
                            else f'<br><span class="ci">ESS {v["ess"]:,.0f}</span>'))
        s = free.get(p)
        rows.append([escape(p)] + cells + [number(e.get("logged_policy_value"), "{:,.3f}"),
                                       ci_cell(s["clv"]) if s else "–",
                                       ci_cell(s["incremental_clv"]) if s else "–"])
    out.append(table(["policy"] + [f"OPE {escape(k)}" for k in est_keys]
                      + ["logged policy", "simulated CLV", "simulated incr. CLV"], rows))
    # rankings
    sim_vals = {p: (free[p]["clv"]["mean"] if p in free else None) for p in pols}
    ranks = {"simulation (CLV)": _rank(sim_vals)}
    for k in est_keys:
        ranks[f"OPE {k}"] = _rank({p: (entries[p].get("estimates") or {}).get(k, {}).get("value") for p in pols})
    rrows = [[escape(p)] + [str(r[p]) for r in ranks.values()] for p in pols]
    out.append("<h3>Rankings (1 = best)</h3>")
    out.append(table(["policy"] + [escape(k) for k in ranks], rrows))
    if len(pols) >= 2 and any(v is not None for v in sim_vals.values()):
        agree = []
        sim_order = [p for p, _ in sorted(ranks["simulation (CLV)"].items(), key=lambda kv: kv[1])]
        for k in est_keys:
            o = [p for p, _ in sorted(ranks[f"OPE {k}"].items(), key=lambda kv: kv[1])]
            agree.append(f"{k}: {'same order' if o == sim_order else 'different order'}")
        out.append(f'<p class="note">Agreement with the simulator\'s ranking: {escape("; ".join(agree))}.</p>')
    # figure
    fig, ax = figure(10, 3.8, ncols=2)
    a, b = ax[0][0], ax[0][1]
    width = 0.8 / max(len(est_keys), 1)
    for j, k in enumerate(est_keys):
        for i, p in enumerate(pols):
            v = (entries[p].get("estimates") or {}).get(k)
            if not v or v.get("value") is None:
                continue
            x = i + (j - (len(est_keys) - 1) / 2) * width
            err = [[max(v["value"] - (v.get("ci_low") if v.get("ci_low") is not None else v["value"]), 0)],
                   [max((v.get("ci_high") if v.get("ci_high") is not None else v["value"]) - v["value"], 0)]]
            a.errorbar([x], [v["value"]], yerr=err, fmt="o", capsize=3, color=PALETTE[j % len(PALETTE)],
                       label=k if i == 0 else None)
    if logged is not None:
        a.axhline(logged, color="#444", ls="--", lw=1, label="logged policy")
    a.set_xticks(range(len(pols)), pols, rotation=20, ha="right", fontsize=8)
    a.set_title(f"OPE estimates ({estimand})", fontsize=10)
    a.grid(axis="y", alpha=0.3)
    a.legend(fontsize=8)
    for i, p in enumerate(pols):
        s = free.get(p)
        if not s or s["clv"]["mean"] is None:
            continue
        m, lo, hi = s["clv"]["mean"], s["clv"]["ci_low"], s["clv"]["ci_high"]
        b.errorbar([i], [m], yerr=[[m - lo], [hi - m]], fmt="s", capsize=4, color=_color(policies, p))
    b.set_xticks(range(len(pols)), pols, rotation=20, ha="right", fontsize=8)
    b.set_xlim(-0.6, len(pols) - 0.4)
    b.set_title("Simulated CLV per customer (no budget)", fontsize=10)
    b.grid(axis="y", alpha=0.3)
    out.append(inline_png(fig, "OPE estimates with intervals next to simulated CLV"))
    # diagnostics
    drows = []
    for p in pols:
        d = entries[p].get("diagnostics") or {}
        drows.append([escape(p), number(d.get("n"), "{:,}"), number(d.get("ess"), "{:,.1f}"),
                      number(d.get("ess_share"), "{:.3f}"),
                      number(d.get("max_weight"), "{:,.2f}"), number(d.get("mean_weight"), "{:.3f}"),
                      number(d.get("zero_target_share"), "{:.3f}"),
                      f'<span class="warn">{escape(d["warning"])}</span>' if d.get("warning") else "–"])
    out.append("<h3>Importance-weight diagnostics</h3>")
    out.append(table(["policy", "decisions", "ESS", "ESS share", "max weight", "mean weight",
                       "zero-target share", "warning"], drows))
    return "".join(out)


def build_report_html(out_dir: str | Path) -> str:
    """The report's HTML text, from the files of a `clv scenarios` output folder."""
    out = Path(out_dir).resolve()
    for f in ("scenario.json", "results.parquet", "periods.parquet", "summary.json"):
        if not (out / f).is_file():
            raise ConfigError(f"{out}: no {f}; run `clv scenarios FILE --out {out}` first")
    sc = json.loads((out / "scenario.json").read_text())
    results = pd.read_parquet(out / "results.parquet")
    periods = pd.read_parquet(out / "periods.parquet")
    summary = json.loads((out / "summary.json").read_text())["by_policy_budget"]
    ope = json.loads((out / "ope.json").read_text()) if (out / "ope.json").is_file() else None
    world_path = Path(sc["world"])
    world = wd = None
    if world_path.is_file():
        from sim.world import WorldModel
        wd = json.loads(world_path.read_text())
        world = WorldModel.from_dict(wd)
    policies = list(sc.get("policies", []))
    budgets = list(sc.get("budgets", []))
    body = "".join([_header(out, sc, results, world, world_path, ope), _frontier(summary, policies),
                    _compare(summary, policies), _stages(periods, policies, budgets), calibration_fit(world, wd),
                    _ope(ope, summary, policies), assumptions(world)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Scenario report: {escape(sc.get('name'))}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def write_report(out_dir: str | Path) -> Path:
    """Write DIR/report.html (atomically) from the outputs of `clv scenarios`; returns its path."""
    from sim.atomic import atomic_write_text
    out = Path(out_dir).resolve()
    text = build_report_html(out)
    path = out / "report.html"
    atomic_write_text(path, text)
    return path


__all__ = ["write_report", "build_report_html", "HEADINGS"]
