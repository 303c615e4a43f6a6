"""The report of `clv run` (`write_run_report(OUT, doc, world)` -> OUT/report.html), from the run.json
document of `experiments.pipeline` and the world it calibrated.

One self-contained HTML page (inline PNGs and stylesheet, relative links to the files beside it),
built with the reports' kit (experiments.reports.kit). Sections: the answer (the plan, its predicted and
simulated lift, its offline value); data; calibration and holdout validation; the policy; the
value table; the budget frontier; the plan by segment, channel and action with every constraint's
use and shadow price; the simulation; the offline evaluation; the assumptions taken from priors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .kit import CSS, escape, figure, inline_png, number, png_file, table
from .world import assumptions, calibration_fit

SECTIONS = (
    ("answer", "The answer"),
    ("data", "Data"),
    ("validation", "Holdout validation"),
    ("policy", "Policy"),
    ("values", "Value table"),
    ("frontier", "Budget frontier"),
    ("plan", "The plan"),
    ("simulation", "Simulation"),
    ("ope", "Offline evaluation"),
    ("fit", "Calibration fit"),
    ("assumptions", "Assumptions taken from priors"),
)


def _iv(d: dict | None, fmt: str = "{:,.2f}", keys=("mean", "ci_low", "ci_high")) -> str:
    if not d or d.get(keys[0]) is None:
        return "–"
    return (
        f'{number(d[keys[0]], fmt)}<br><span class="ci">[{number(d.get(keys[1]), fmt)}, '
        f"{number(d.get(keys[2]), fmt)}]</span>"
    )


def _ivv(d: dict | None, fmt: str = "{:,.3f}") -> str:
    return _iv(d, fmt, ("value", "ci_low", "ci_high"))


def _h2(key: str) -> str:
    return f'<h2 id="{key}">{dict(SECTIONS)[key]}</h2>'


def _answer(doc: dict) -> str:
    plan, ev, ope = doc["plan"], doc["evaluation"], doc.get("ope")
    chk = ev["plan_check"]
    n = doc["calibration"]["customers"]
    lines = [
        f"Spend <b>{number(plan['spend'])}</b> of a budget of {number(plan['budget'])} on "
        f"<b>{plan['assigned_customers']:,}</b> of {n:,} customers "
        f"(optimality gap certified at {number(100 * plan['gap'], '{:.4f}')} %).",
        f"Predicted lift (value table): <b>{number(plan['objective'])}</b> in total, "
        f"{number(chk['predicted_lift_per_customer'], '{:,.3f}')} per customer.",
        f"Simulated lift on fresh seeds: {number(chk['simulated_lift_per_customer']['mean'], '{:,.3f}')} per customer "
        f"(95 % CI {number(chk['simulated_lift_per_customer']['ci_low'], '{:,.3f}')} to "
        f"{number(chk['simulated_lift_per_customer']['ci_high'], '{:,.3f}')}); the prediction is "
        + ("inside" if chk["predicted_inside_interval"] else "<b>outside</b>")
        + " the interval.",
    ]
    if ope:
        main = "dr" if "dr" in ope["estimates"] else next(iter(ope["estimates"]))
        e = ope["estimates"][main]
        lines.append(
            f"Offline ({main.upper()}, first logged decision of {ope['customers']:,} customers in the holdout): "
            f"plan {number(e['plan']['value'], '{:,.3f}')} per customer against "
            f"{number(doc['ope']['logged']['value'], '{:,.3f}')} for what the bank did "
            f"(difference {number(e['plan_minus_logged']['value'], '{:+,.3f}')}, 95 % CI "
            f"{number(e['plan_minus_logged']['ci_low'], '{:+,.3f}')} to "
            f"{number(e['plan_minus_logged']['ci_high'], '{:+,.3f}')}) and "
            f"{number(e['none']['value'], '{:,.3f}')} for contacting no one."
        )
    notes = "".join(f'<p class="note warn">{escape(x)}</p>' for x in doc.get("notes", []))
    files = ", ".join(
        f'<a href="{escape(f)}">{escape(f)}</a>'
        for f in ("plan.parquet", "plan.json", "frontier.json", "evaluation.json", "run.json", "world.json")
        + (("ope.json",) if ope else ())
    )
    return (
        _h2("answer")
        + "<ul>"
        + "".join(f"<li>{x}</li>" for x in lines)
        + "</ul>"
        + notes
        + f'<p class="note">Files: {files}.</p>'
    )


def _data(doc: dict) -> str:
    h, c = doc["history"], doc["calibration"]
    rows = [
        ["History", escape(h["source"])],
        ["Days", f"{escape(h['first_day'])} to {escape(h['last_day'])} ({escape(h['period'])} periods)"],
        ["Customers", f"{h['customers']:,}"],
        ["Transactions", f"{h['transactions']:,}"],
        ["Logged decisions", f"{h['decisions']:,}"],
        ["Calibrated up to", escape(c["calibration_end"])],
        ["Book (customers as of then)", f"{c['customers']:,}"],
        ["Segments", escape(", ".join(c["segments"]))],
        ["World", f"<code>world.json</code>, hash <code>{escape(c['world_hash'])}</code>"],
    ]
    return _h2("data") + table(["", ""], rows)


def _validation(doc: dict, out: Path) -> str:
    v = doc.get("validation")
    if not v:
        return _h2("validation") + '<p class="note">No holdout_end in the config: the world was not validated.</p>'
    keys = (
        ("customers", "{:,}"),
        ("holdout_repeat_actual", "{:,.0f}"),
        ("holdout_repeat_predicted", "{:,.0f}"),
        ("aggregate_error", "{:+.3f}"),
        ("per_customer_corr", "{:.3f}"),
        ("per_customer_mae", "{:.3f}"),
        ("active_auc", "{:.4f}"),
        ("holdout_value_error", "{:+.3f}"),
        ("top_decile_value_share", "{:.3f}"),
    )
    rows = [[escape(k), number(v.get(k), f)] for k, f in keys if k in v]
    return (
        _h2("validation") + f'<p class="note">Calibrated up to {escape(doc["calibration"]["calibration_end"])}, '
        f"the book simulated to {escape(doc['config']['holdout_end'])} with the logged decisions replayed, compared "
        'with what happened (files in <a href="validation/">validation/</a>).</p>'
        + table(["metric", "value"], rows)
        + png_file(out / "validation" / "tracking.png", "holdout tracking")
    )


def _policy(doc: dict) -> str:
    p = doc["policy"]
    if not p.get("trained"):
        return (
            _h2("policy") + f"<p>After the plan's first period customers follow <code>{escape(p['policy'])}</code>.</p>"
        )
    out = [
        _h2("policy"),
        f"<p>{escape(p['algo'])} trained for {p['steps']:,} customer-periods (seed {p['seed']}"
        + (", reused from an earlier run" if p.get("reused") else f", {number(p.get('seconds'), '{:,.0f}')} s")
        + ") in the calibrated world; it decides after the plan's first period. Model: "
        '<a href="policy/model.zip">policy/model.zip</a>, card: <a href="policy/card.json">policy/card.json</a>.</p>',
    ]
    curve = p.get("training_curve") or []
    if curve:
        fig, ax = figure(6.5, 3.0)
        ax = ax[0][0]
        ax.plot([c["timesteps"] for c in curve], [c["mean_episode_return"] for c in curve], color="#1f77b4")
        ax.set_xlabel("customer-periods of experience")
        ax.set_ylabel("mean episode return")
        ax.grid(alpha=0.3)
        out.append(inline_png(fig, "training curve"))
    return "".join(out)


def _values(doc: dict) -> str:
    v = doc["values"]
    rows = [
        [
            escape(a),
            number(v["mean_value_by_action"].get(a), "{:,.3f}"),
            number(v["mean_standard_error_by_action"].get(a), "{:,.3f}"),
            number(v["mean_cost_by_action"].get(a), "{:,.3f}"),
        ]
        for a in v["mean_value_by_action"]
    ]
    return (
        _h2("values") + f'<p class="note">{v["rows"]:,} rows: {v["customers_with_options"]:,} of {v["customers"]:,} '
        f"customers have an allowed contact. Value: simulated incremental CLV of the action now over no contact "
        f"now, {v['continuation']} afterwards, over {v['horizon']} periods, {v['replications']} replications "
        "(common random numbers), net of the contact's cost.</p>"
        + table(["action", "mean value", "mean std. error", "mean cost"], rows)
    )


def _frontier(doc: dict, out: Path) -> str:
    fr = doc["frontier"]
    rows = []
    for p in fr["points"]:
        if p["objective"] is None:
            rows.append([number(p["budget"]), "infeasible", "–", "–", "–", escape(p.get("message", ""))])
            continue
        sp = "; ".join(
            f"{escape(s['constraint'])} {number(s['shadow_price'], '{:.4g}')}"
            for s in p.get("shadow_prices") or []
            if s.get("shadow_price")
        )
        rows.append(
            [
                number(p["budget"]),
                number(p["objective"]),
                number(100 * p["gap"], "{:.4f}"),
                number(p["spend"]),
                number(p.get("marginal_value"), "{:.4f}"),
                sp or "–",
            ]
        )
    return (
        _h2("frontier")
        + png_file(out / "frontier.png", "budget frontier")
        + table(["budget", "value", "gap %", "spend", "marginal value", "shadow prices"], rows)
    )


def _plan(doc: dict) -> str:
    p = doc["plan"]
    t = p["totals"]
    seg = [
        [
            escape(r["segment"]),
            f"{r['customers']:,}",
            f"{r['assigned']:,}",
            number(r["coverage"], "{:.3f}"),
            number(r["spend"]),
            number(r["value"]),
        ]
        for r in t["segment"]
    ]
    act = [
        [escape(r["action"]), escape(r["channel"]), f"{r['assigned']:,}", number(r["spend"]), number(r["value"])]
        for r in t["action"]
        if r["assigned"]
    ]
    use = [
        [
            escape(u["constraint"]),
            number(u["used"], "{:,.4g}"),
            number(u["limit"], "{:,.4g}"),
            number(s["shadow_price"], "{:,.4g}"),
            escape(s["per"]),
        ]
        for u, s in zip(p["usage"], p["shadow_prices"])
    ]
    return (
        _h2("plan") + f"<p>{escape(p['method'])} ({escape(p['solver'])}): value {number(p['objective'])}, upper bound "
        f"{number(p['bound'])}, certified gap {number(100 * p['gap'], '{:.4f}')} %. One row per customer with its "
        'explanation in <a href="plan.parquet">plan.parquet</a>.</p>'
        "<h3>By segment</h3>"
        + table(["segment", "customers", "contacted", "coverage", "spend", "value"], seg)
        + "<h3>By action</h3>"
        + table(["action", "channel", "customers", "spend", "value"], act, left=2)
        + "<h3>Constraints</h3>"
        + table(["constraint", "used", "limit", "shadow price", "per"], use)
    )


def _simulation(doc: dict) -> str:
    ev = doc["evaluation"]
    names = list(ev["policies"])
    rows = []
    for n in names:
        m = ev["policies"][n]
        vs = ev["vs_none"].get(n)
        rows.append(
            [
                escape(n),
                _iv(m["clv"]),
                _iv(vs) if vs else "–",
                _iv(m["retention"], "{:.3f}"),
                _iv(m["marketing_roi"]),
                _iv(m["contacts"]),
                _iv(m["cross_sell_rate"], "{:.3f}"),
            ]
        )
    chk = ev["plan_check"]
    return (
        _h2("simulation") + f'<p class="note">{ev["customers"]:,} customers (the book) x {ev["periods"]} periods, '
        f"seeds {escape(', '.join(str(s) for s in ev['seeds_used']))} (not the value table's), common random numbers; "
        "mean and 95 % interval over seeds. CLV is discounted margin minus contact cost per customer.</p>"
        + table(["run", "CLV", "CLV vs none", "retention", "marketing ROI", "contacts", "cross-sell"], rows)
        + f"<p><b>Plan check.</b> {escape(chk['note'])}: predicted "
        f"{number(chk['predicted_lift_per_customer'], '{:,.3f}')}, simulated "
        f"{_iv(chk['simulated_lift_per_customer'], '{:,.3f}').replace('<br>', ' ')} per customer.</p>"
    )


def _ope(doc: dict) -> str:
    o = doc.get("ope")
    if not o:
        return (
            _h2("ope")
            + '<p class="note">'
            + escape("; ".join(doc.get("notes", [])) or "No offline evaluation in this run.")
            + "</p>"
        )
    rows = [
        [
            escape(k),
            _ivv(e["plan"]),
            _ivv(e["none"]),
            _ivv(e["plan_minus_none"], "{:+,.3f}"),
            _ivv(e["plan_minus_logged"], "{:+,.3f}"),
        ]
        for k, e in o["estimates"].items()
    ]
    d = o["diagnostics"]
    warn = f'<p class="note warn">{escape(d["warning"])}</p>' if d.get("warning") else ""
    return (
        _h2("ope") + f'<p class="note">Reward per decision: margin from the decision to the customer\'s next one '
        f"minus its cost, on the first logged decision of each of {o['customers']:,} book customers between "
        f"{escape(o['window']['start'])} and {escape(o['window']['end'])}. The plan contacts {o['plan_contacts']:,} of them "
        f"({o['not_allowed']:,} planned contacts were no longer allowed at that decision and count as none); the bank "
        f"contacted {o['logged_contacts']:,}; they agree on {number(100 * o['agreement'], '{:.1f}')} % of decisions. "
        f"What the bank actually earned: {_ivv(o['logged']).replace('<br>', ' ')} per decision. Intervals: paired "
        f"bootstrap over customers ({o['bootstrap']['resamples']} resamples). Effective sample size of the plan's "
        f"weights {number(d['ess'], '{:,.0f}')} of {d['n']:,}.</p>"
        + table(["estimator", "plan", "no contact", "plan − no contact", "plan − bank"], rows)
        + warn
    )


def build_run_report_html(out: Path, doc: dict, world: Any) -> str:
    nav = "<nav>" + "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t in SECTIONS) + "</nav>"
    body = "".join(
        [
            f"<h1>Run report: {escape(doc['name'])}</h1>",
            nav,
            _answer(doc),
            _data(doc),
            _validation(doc, out),
            _policy(doc),
            _values(doc),
            _frontier(doc, out),
            _plan(doc),
            _simulation(doc),
            _ope(doc),
            calibration_fit(world, world.to_dict()),
            assumptions(world),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Run report: {escape(doc['name'])}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def write_run_report(out: str | Path, doc: dict, world: Any) -> Path:
    """Write OUT/report.html atomically; returns its path."""
    from sim.atomic import atomic_write_text

    out = Path(out)
    path = out / "report.html"
    atomic_write_text(path, build_run_report_html(out, doc, world))
    return path


__all__ = ["write_run_report", "build_run_report_html"]
