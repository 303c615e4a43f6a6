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

from .kit import CSS, PALETTE, ci_cell, color, escape, figure, inline_png, number, table
from .offline import HEADING as OPE_HEADING
from .offline import offline_section
from .world import HEADINGS as WORLD_HEADINGS
from .world import assumptions, calibration_fit

STAGE_ORDER = ("new", "growth", "maturity", "dormancy", "churned")
STAGE_COLORS = {
    "new": "#8ecae6",
    "growth": "#219ebc",
    "maturity": "#126782",
    "dormancy": "#ffb703",
    "churned": "#bdbdbd",
}
COMPARE_METRICS = (
    ("clv", "CLV per customer", "{:,.2f}"),
    ("incremental_clv", "Incremental CLV", "{:,.2f}"),
    ("retention", "Retention", "{:.3f}"),
    ("marketing_roi", "Marketing ROI", "{:,.2f}"),
    ("contacts", "Contacts per customer", "{:,.2f}"),
)
HEADINGS = {
    "frontier": "Budget frontier",
    "compare": "Policy comparison",
    "stages": "Lifecycle-stage flows",
    "fit": WORLD_HEADINGS["fit"],
    "ope": OPE_HEADING,
    "assumptions": WORLD_HEADINGS["assumptions"],
}


def _budget_label(b: Any) -> str:
    return "no budget" if b is None or (isinstance(b, float) and math.isnan(b)) else f"{b:,.6g}"


# ---- sections ------------------------------------------------------------------------------------
def _header(out: Path, sc: dict, results: pd.DataFrame, world: Any, world_path: Path, ope: dict | None) -> str:
    seeds = sc.get("seeds", [])
    n_ok = int((results["status"] == "ok").sum())
    n_bad = int(len(results) - n_ok)
    cons = [f"{k}: {', '.join(v)}" for k, v in (sc.get("constraints") or {}).items() if v]
    world_hash = world.hash() if world is not None else "(world file not found)"
    rows = [
        ["Scenario", escape(sc.get("name"))],
        [
            "World",
            f"<code>{escape(world_path.name)}</code>, hash <code>{escape(world_hash)}</code>"
            + (
                f", calibrated up to {escape(world.calibration_end)}"
                if world is not None and world.calibration_end
                else ""
            ),
        ],
        [
            "Population",
            escape(
                f"{sc.get('population')} ("
                + ("the whole book" if sc.get("customers") is None else f"{sc['customers']:,} customers")
                + " per cell)"
            ),
        ],
        [
            "Horizon",
            escape(f"{sc.get('horizon')} periods" + (f" ({world.economics.period})" if world is not None else "")),
        ],
        ["Seeds", escape(", ".join(str(s) for s in seeds)) + f" ({len(seeds)})"],
        ["Policies", escape(", ".join(sc.get("policies", [])))],
        ["Budgets", escape(", ".join(_budget_label(b) for b in sc.get("budgets", [])))],
        ["Cells", f"{len(results)} ({n_ok} ok" + (f", {n_bad} infeasible" if n_bad else "") + ")"],
        ["Constraints", escape("; ".join(cons) if cons else "none besides the budget")],
        [
            "Value tables",
            escape(
                f"horizon {sc.get('values', {}).get('horizon')}, "
                f"replications {sc.get('values', {}).get('replications')} (budget cells)"
            ),
        ],
    ]
    if ope is not None:
        s = ope.get("settings", {})
        rows.append(
            [
                "Offline evaluation",
                escape(
                    f"{Path(ope.get('history', '')).name}: {s.get('estimand')}, "
                    f"{', '.join(s.get('estimators', []))}, {s.get('n_boot')} bootstrap "
                    f"resamples"
                    + (f", from {s['start']}" if s.get("start") else "")
                    + (f" to {s['end']}" if s.get("end") else "")
                ),
            ]
        )
    files = [
        ("results.parquet", "one row per cell"),
        ("periods.parquet", "per cell and period"),
        ("summary.json", "mean and 95% interval over seeds"),
        ("scenario.json", "the resolved scenario"),
        ("timings.json", "run times"),
    ]
    if (out / "ope.json").is_file():
        files.append(("ope.json", "offline evaluation per policy"))
    links = [
        f'<a href="{escape(f)}">{escape(f)}</a> <span class="note">({escape(d)})</span>'
        for f, d in files
        if (out / f).is_file()
    ]
    rel = os.path.relpath(world_path, out)
    links.append(
        f'<a href="{escape(Path(rel).as_posix())}">{escape(world_path.name)}</a> <span class="note">(the world)</span>'
    )
    rows.append(["Files", "<br>".join(links)])
    nav = " ".join(f'<a href="#{k}">{escape(v)}</a>' for k, v in HEADINGS.items())
    return (
        f"<h1>Scenario report: {escape(sc.get('name'))}</h1>"
        f'<p class="note">Every number below comes from the files listed here; intervals are 95% '
        f"Student-t intervals over the seeds unless stated otherwise.</p>"
        + table(["", ""], rows, left=2)
        + f"<nav>{nav}</nav>"
    )


def _intervals(rows: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, ci_low, ci_high) arrays of a summary metric over rows; a missing value (None) is NaN."""
    return tuple(
        np.array([np.nan if r[metric][k] is None else r[metric][k] for r in rows], float)
        for k in ("mean", "ci_low", "ci_high")
    )


def _frontier(summary: list[dict], policies: list[str]) -> str:
    out = [f'<h2 id="frontier">{HEADINGS["frontier"]}</h2>']
    budgeted = [s for s in summary if s["budget"] is not None]
    if not budgeted:
        out.append(
            '<p class="note">The scenario has no budget cells (its <code>budgets</code> are all null): '
            "add budget levels, e.g. <code>budgets: [null, 1000, 2000]</code>, for a frontier.</p>"
        )
        return "".join(out)
    out.append(
        '<p class="note">Incremental CLV per customer (CLV minus CLV under no contact, same customers and '
        "seed) when the first period follows the best plan under the budget and the policy decides "
        "afterwards; bands are 95% intervals over seeds. The dashed line is the policy without a budget. "
        "Plan gap: relative gap between the plan's objective and the solver's bound.</p>"
    )
    fig, ax = figure(10, 4, ncols=2)
    a, g = ax[0][0], ax[0][1]
    top = 0.0
    for p in policies:
        rows = sorted((s for s in budgeted if s["policy"] == p), key=lambda s: s["budget"])
        if not rows:
            continue
        c = color(policies, p)
        x = np.array([s["budget"] for s in rows])
        m, lo, hi = _intervals(rows, "incremental_clv")
        a.plot(x, m, "-", color=c, label=p)
        a.errorbar(x, m, yerr=[np.nan_to_num(m - lo), np.nan_to_num(hi - m)], fmt="o", color=c, capsize=4)
        a.fill_between(x, lo, hi, color=c, alpha=0.18, linewidth=0)
        free = [s for s in summary if s["policy"] == p and s["budget"] is None]
        if free and free[0]["incremental_clv"]["mean"] is not None:
            a.axhline(free[0]["incremental_clv"]["mean"], color=c, ls="--", lw=1, label=f"{p} (no budget)")
        gap = np.array(
            [np.nan if s.get("plan_gap", {}).get("mean") is None else 100 * s["plan_gap"]["mean"] for s in rows], float
        )
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
    for s in sorted(
        budgeted, key=lambda s: (policies.index(s["policy"]) if s["policy"] in policies else 0, s["budget"])
    ):
        gap = s.get("plan_gap", {})
        rows.append(
            [
                escape(s["policy"]),
                number(s["budget"], "{:,.6g}"),
                ci_cell(s["incremental_clv"]),
                ci_cell(s["clv"]),
                ci_cell(s.get("plan_objective")),
                ci_cell(s.get("plan_bound")),
                ci_cell({k: (None if v is None else 100 * v) for k, v in gap.items()}, "{:.3f}"),
                ci_cell(s.get("plan_spend")),
                ci_cell(s.get("plan_cash_spend")),
                ci_cell(s.get("plan_assigned"), "{:,.1f}"),
                ci_cell(s["contacts"]),
                f"{s['seeds'] - s['infeasible']} / {s['seeds']}",
            ]
        )
    out.append(
        table(
            [
                "policy",
                "budget",
                "incremental CLV",
                "CLV",
                "plan objective",
                "plan bound",
                "plan gap %",
                "plan incremental cost (not cash)",
                "plan cash spend",
                "customers planned",
                "contacts",
                "feasible seeds",
            ],
            rows,
        )
    )
    return "".join(out)


def _compare(summary: list[dict], policies: list[str]) -> str:
    out = [f'<h2 id="compare">{HEADINGS["compare"]}</h2>']
    free = [s for s in summary if s["budget"] is None]
    if not free:
        out.append(
            '<p class="note">The scenario has no cells without a budget (add <code>null</code> to '
            "<code>budgets</code>); the budget cells are in the frontier above.</p>"
        )
        return "".join(out)
    out.append(
        '<p class="note">The cells without a budget: each policy simulated alone, per customer over the '
        "horizon; incremental CLV and marketing ROI against no contact on the same customers and "
        "seeds.</p>"
    )
    rows = [[escape(s["policy"])] + [ci_cell(s[m], f) for m, _, f in COMPARE_METRICS] for s in free]
    out.append(table(["policy"] + [lab for _, lab, _ in COMPARE_METRICS], rows))
    fig, ax = figure(11, 3.2, ncols=len(COMPARE_METRICS))
    names = [s["policy"] for s in free]
    for j, (m, lab, _) in enumerate(COMPARE_METRICS):
        a = ax[0][j]
        mean, lo, hi = _intervals(free, m)
        err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
        a.bar(range(len(free)), np.nan_to_num(mean), yerr=err, capsize=4, color=[color(policies, p) for p in names])
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
    out.append(
        '<p class="note">Customers per lifecycle stage at each period (mean over seeds), one panel per '
        "policy and budget; customers who have left count as churned once the stage rules say so.</p>"
    )
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
    if len(combos) > 12:  # keep the page readable: each policy without a budget and at its largest budget
        numeric = [b for b in budgets if b is not None]
        keep = {None, max(numeric)} if numeric else {None}
        combos = [c for c in combos if c[1] in keep]
        out.append(
            '<p class="note">Shown: each policy without a budget and at the largest budget '
            "(periods.parquet has every cell).</p>"
        )
    ncols = min(3, len(combos))
    nrows = -(-len(combos) // ncols)
    fig, ax = figure(3.8 * ncols, 2.9 * nrows + 0.4, ncols=ncols, nrows=nrows)
    labels = [c[len("stage_") :] for c in cols]
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
        rows.append([escape(p), escape(_budget_label(b))] + [f"{first[c]:,.1f} → {last[c]:,.1f}" for c in cols])
    out.append("<h3>First and last period</h3>")
    out.append(table(["policy", "budget"] + [escape(lab) for lab in labels], rows, left=2))
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
    body = "".join(
        [
            _header(out, sc, results, world, world_path, ope),
            _frontier(summary, policies),
            _compare(summary, policies),
            _stages(periods, policies, budgets),
            calibration_fit(world, wd),
            offline_section(ope, summary, policies),
            assumptions(world),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Scenario report: {escape(sc.get('name'))}</title><style>{CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write_report(out_dir: str | Path) -> Path:
    """Write DIR/report.html (atomically) from the outputs of `clv scenarios`; returns its path."""
    from sim.atomic import atomic_write_text

    out = Path(out_dir).resolve()
    text = build_report_html(out)
    path = out / "report.html"
    atomic_write_text(path, text)
    return path


__all__ = ["write_report", "build_report_html", "HEADINGS"]
