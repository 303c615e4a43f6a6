"""The report of `clv run` (`write_run_report(OUT, doc, world)` -> OUT/report.html), from the run.json
document of `experiments.pipeline` and the world it calibrated.

One self-contained HTML page (inline PNGs and stylesheet, relative links to the files beside it),
built with the reports' kit (experiments.reports.kit). Sections: the answer (what the chosen horizon
budget buys, against contacting no one and against the policy alone, on fresh seeds and offline);
the budget frontier by simulation with the baselines' points; the plan by segment, channel and
period, the first period's contact list and what one more unit of each constraint is worth; the
runs on the fresh seeds; the offline evaluation; data; holdout validation; the policy; the
calibration fit; the assumptions taken from priors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .customers import customers_section, experiment_section
from .kit import CSS, escape, figure, inline_png, number, png_file, table
from .world import assumptions, calibration_fit

SECTIONS = (
    ("answer", "The answer"),
    ("frontier", "Budget frontier"),
    ("plan", "The plan"),
    ("simulation", "Simulation"),
    ("customers", "Customers"),
    ("ope", "Offline evaluation"),
    ("data", "Data"),
    ("validation", "Holdout validation"),
    ("policy", "Policy"),
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


def _iv_inline(d: dict | None, fmt: str = "{:+,.3f}", keys=("mean", "ci_low", "ci_high")) -> str:
    """An interval on one line (`keys=VALUE_KEYS` for the OPE documents' point estimates)."""
    return _iv(d, fmt, keys).replace("<br>", " ")


VALUE_KEYS = ("value", "ci_low", "ci_high")


def _answer(doc: dict) -> str:
    p, ope = doc["plan"], doc.get("ope")
    chk = p["check"]
    lines = [
        f"A budget of <b>{number(p['budget'])}</b> for every contact over the next {p['horizon']} periods "
        f"(pacing {escape(p['pacing'])}) spends <b>{_iv_inline(p['spend'], '{:,.0f}')}</b>; "
        f"the {escape(p['policy'])} alone would spend {number(p['policy_alone_spend']['mean'], '{:,.0f}')}.",
        f"Lift per customer over contacting no one, on fresh seeds: <b>{_iv_inline(p['lift_vs_none'])}</b> "
        f"(discounted CLV over the horizon; predicted on the planning seeds "
        f"{number(p['predicted_lift']['mean'], '{:+,.3f}')}, "
        + ("inside" if chk["predicted_inside_fresh_ci"] else "<b>outside</b>")
        + " the fresh interval).",
        f"Against the {escape(p['policy'])} alone (what the plan replaces): "
        f"{_iv_inline(p['lift_vs_policy_alone'])} per customer, for "
        f"{number(p['policy_alone_spend']['mean'] - p['spend']['mean'], '{:,.0f}')} less spend.",
        f"Return: {_iv_inline(p['roi'], '{:,.2f}')} of discounted CLV per unit of cash spent. One more unit of "
        f"budget is worth {number(p['shadow_prices'][0]['shadow_price'], '{:,.3f}')} at the margin.",
        f"First period: <b>{p['first_period_contacts']:,}</b> contacts in "
        '<a href="contacts.parquet">contacts.parquet</a> (customer_id, action, channel, segment, value, cost, '
        "reason), ready for the CRM.",
    ]
    if ope:
        main = "dr" if "dr" in ope["estimates"] else next(iter(ope["estimates"]))
        e = ope["estimates"][main]
        txt = (
            f"Offline ({main.upper()}, first logged decision of {ope['customers']:,} customers in the holdout): "
            f"the first period's contacts {number(e['plan']['value'], '{:,.3f}')} per decision against "
            f"{number(ope['logged']['value'], '{:,.3f}')} for what the bank did (difference "
            f"{_iv_inline(e['plan_minus_logged'], keys=VALUE_KEYS)}) and {number(e['none']['value'], '{:,.3f}')} for contacting "
            "no one"
        )
        if "plan_minus_reference" in e:
            txt += f"; minus the {escape(ope.get('reference_name', 'policy alone'))}: " + _iv_inline(
                e["plan_minus_reference"], keys=VALUE_KEYS
            )
        lines.append(txt + ".")
    notes = "".join(f'<p class="note warn">{escape(x)}</p>' for x in doc.get("notes", []))
    files = ", ".join(
        f'<a href="{escape(f)}">{escape(f)}</a>'
        for f in (
            "contacts.parquet",
            "schedule.parquet",
            "plan.json",
            "frontier.json",
            "evaluation.json",
            "run.json",
            "world.json",
        )
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
        + _early_warning(v.get("early_warning"))
        + png_file(out / "validation" / "tracking.png", "holdout tracking")
    )


def _early_warning(ew: dict | None) -> str:
    """The churn score among the customers active at the cut-off beside its two anchors
    (sim.early_warning): a short table, one row per score."""
    if not ew or not ew.get("scores"):
        return ""
    names = {
        "engine": "engine (posterior P(no purchase))",
        "recency_rule": "recency rule",
        "hgb": "boosted trees (HGB)",
    }
    rows = [
        [escape(names.get(k, k)), number(m["auc"], "{:.3f}"), number(m["top_decile_lift"], "{:.2f}")]
        + [number(m[c], "{:.3f}") for c in ("top_decile_precision", "precision", "recall", "f1")]
        for k, m in ew["scores"].items()
        if m
    ]
    t = ew.get("target") or {}
    verdict = {True: "met", False: "not met", None: "n/a"}[t.get("met")]
    return (
        f'<p class="note">Early warning: {escape(ew["population"])}; {escape(ew["label"])} '
        f"({ew['churned']:,} of {ew['customers']:,}). Thresholds maximise F1 on the calibration window "
        f"(as of {escape(ew['threshold_split']['cutoff'])}); the boosted trees learn from "
        f"{escape(ew['training_split']['features_cutoff'])} to {escape(ew['training_split']['label_end'])}. "
        f"Target (engine at least the boosted AUC and top-decile lift, above the recency rule): {verdict}.</p>"
        + table(["score", "AUC", "top-decile lift", "top-decile precision", "precision", "recall", "F1"], rows)
    )


def _policy(doc: dict) -> str:
    p = doc["policy"]
    if not p.get("trained"):
        return _h2("policy") + f"<p>The budget pays for the contacts <code>{escape(p['policy'])}</code> proposes.</p>"
    out = [
        _h2("policy"),
        f"<p>{escape(p['algo'])} trained for {p['steps']:,} customer-periods (seed {p['seed']}"
        + (", reused from an earlier run" if p.get("reused") else f", {number(p.get('seconds'), '{:,.0f}')} s")
        + ") in the calibrated world; the budget pays for the contacts it proposes. Model: "
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


def _frontier(doc: dict, out: Path) -> str:
    fr = doc["frontier"]
    rows = []
    for q in fr["points"]:
        sp = "; ".join(
            f"{escape(x['constraint'])} {number(x['shadow_price'], '{:.4g}')}"
            for x in q.get("shadow_prices") or []
            if x.get("shadow_price")
        )
        rows.append(
            [
                number(q["budget"], "{:,.0f}"),
                _iv(q["spend"], "{:,.0f}"),
                _iv(q["lift_vs_none"], "{:+,.3f}"),
                number(q["predicted_lift"]["mean"], "{:+,.3f}")
                + ("" if q["check"]["predicted_inside_fresh_ci"] else " ✗"),
                _iv(q["lift_vs_policy_alone"], "{:+,.3f}"),
                number(q.get("marginal_value"), "{:,.2f}"),
                sp or "–",
            ]
        )
    refs = [
        [
            escape(r["policy"]),
            _iv(r["spend"], "{:,.0f}"),
            _iv(r["lift_vs_none"], "{:+,.3f}"),
            number(r["frontier_lift_at_its_spend"], "{:+,.3f}"),
            "yes" if r["frontier_at_least_as_good"] else "<b>no</b>",
        ]
        for r in fr["references"]
    ]
    flags = (
        f"Increasing within the intervals: {'yes' if fr['increasing_within_ci'] else '<b>no</b>'}; concave: "
        f"{'yes' if fr['concave'] else '<b>no</b>'}; every prediction inside its fresh interval: "
        f"{'yes' if fr['honest'] else '<b>no</b> (✗ marks the budgets where it is not)'}."
    )
    return (
        _h2("frontier")
        + f'<p class="note">Each point is the budgeted {escape(fr["policy"])} simulated over {fr["horizon"]} periods '
        f"for {fr['customers']:,} customers on fresh seeds (never used to set the plan's price), 95 % intervals over "
        "seeds; the squares are the policies run unbudgeted on the same seeds. Lift: discounted CLV per customer "
        "over contacting no one; marginal value: total CLV per unit of cash between budgets.</p>"
        + png_file(out / "frontier.png", "budget frontier")
        + table(
            [
                "budget",
                "spend",
                "lift vs none",
                "predicted",
                f"vs {escape(fr['policy'])} alone",
                "marginal value",
                "shadow prices",
            ],
            rows,
        )
        + f"<p>{flags}</p><h3>Policies beside the frontier</h3>"
        + table(["policy", "spend", "lift vs none", "frontier at its spend", "frontier at least as good"], refs)
    )


def _by_period_chart(plan: dict) -> str:
    per = plan.get("by_period") or []
    if not per:
        return ""
    fig, ax = figure(6.5, 2.8)
    ax = ax[0][0]
    ax.bar([r["period"] for r in per], [r["spend"] for r in per], color="#1f77b4")
    ax.set_xlabel("period")
    ax.set_ylabel("spend (mean over fresh seeds)")
    ax.grid(alpha=0.3, axis="y")
    return inline_png(fig, "spend per period")


def _plan(doc: dict, out: Path) -> str:
    p = doc["plan"]
    seg = [[escape(r["segment"]), _iv(r["contacts"], "{:,.0f}"), _iv(r["spend"], "{:,.0f}")] for r in p["by_segment"]]
    ch = [[escape(r["channel"]), _iv(r["contacts"], "{:,.0f}"), _iv(r["spend"], "{:,.0f}")] for r in p["by_channel"]]
    shadow = [
        [escape(x["constraint"]), number(x["shadow_price"], "{:,.4g}"), escape(x["meaning"])]
        for x in p["shadow_prices"]
    ]
    first = ""
    path = out / "contacts.parquet"
    if path.is_file():
        import pandas as pd

        c = pd.read_parquet(path)
        top = c.head(15)
        first = (
            f'<h3>First period\'s contact list</h3><p class="note">{len(c):,} contacts, best value first; the '
            'whole list in <a href="contacts.parquet">contacts.parquet</a>.</p>'
            + table(
                ["customer_id", "action", "channel", "segment", "value", "cost", "reason"],
                [
                    [
                        escape(r.customer_id),
                        escape(r.action),
                        escape(r.channel),
                        escape(r.segment),
                        number(r.value, "{:,.2f}"),
                        number(r.cost, "{:,.2f}"),
                        escape(r.reason),
                    ]
                    for r in top.itertuples()
                ],
                left=4,
            )
        )
    return (
        _h2("plan")
        + f'<p class="note">Over {p["horizon"]} periods on the fresh seeds (mean and 95 % interval over seeds): '
        'the schedule per period x segment x channel is in <a href="schedule.parquet">schedule.parquet</a>. '
        f"The contact values come from rollouts of the policy on twins of their own (held-out R² "
        f"{number((p.get('value_model') or {}).get('heldout_r2'), '{:.2f}')}).</p>"
        "<h3>By segment</h3>"
        + table(["segment", "contacts", "spend"], seg)
        + "<h3>By channel</h3>"
        + table(["channel", "contacts", "spend"], ch)
        + "<h3>By period</h3>"
        + _by_period_chart(p)
        + "<h3>What one more unit of each constraint is worth</h3>"
        + table(["constraint", "shadow price", "meaning"], shadow, left=1)
        + first
        + experiment_section(p.get("experiment"))
    )


def _simulation(doc: dict) -> str:
    ev = doc["evaluation"]
    rows = []
    for name, r in ev["runs"].items():
        rows.append(
            [
                escape(name),
                _iv(r["clv"]),
                _iv(r.get("lift_vs_none"), "{:+,.3f}") if r.get("lift_vs_none") else "–",
                _iv(r["spend"], "{:,.0f}"),
                _iv(r.get("contacts"), "{:,.2f}") if r.get("contacts") else "–",
            ]
        )
    c = ev["check"]
    return (
        _h2("simulation") + f'<p class="note">{ev["customers"]:,} customers (the book) x {ev["periods"]} periods on '
        f"fresh seeds {escape(', '.join(str(x) for x in ev['seeds_used']))}, common random numbers; the plan's price "
        f"was set on seeds {escape(', '.join(str(x) for x in ev['planning_seeds']))}. CLV is discounted margin of "
        "transactions and products held minus contact cost, per customer.</p>"
        + table(["run", "CLV", "CLV vs none", "spend (whole book)", "contacts per customer"], rows)
        + f"<p><b>Plan check.</b> Predicted lift {_iv_inline(c['predicted_lift'])}, on fresh seeds "
        f"{_iv_inline(c['fresh_lift'])}: the prediction is "
        + ("inside" if c["predicted_inside_fresh_ci"] else "<b>outside</b>")
        + f" the fresh interval ({escape(c['note'])}). Against the policy alone: "
        f"{_iv_inline(ev['plan_vs_policy_alone'])}.</p>"
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
    ref = o.get("reference_name", "policy alone")
    rows = [
        [
            escape(k) + (" †" if e.get("ci_excludes_model_bias") else ""),
            _ivv(e["plan"]),
            _ivv(e["none"]),
            _ivv(e["plan_minus_none"], "{:+,.3f}"),
            _ivv(e["plan_minus_logged"], "{:+,.3f}"),
        ]
        + ([_ivv(e["plan_minus_reference"], "{:+,.3f}")] if "plan_minus_reference" in e else [])
        for k, e in o["estimates"].items()
    ]
    header = ["estimator", "plan", "no contact", "plan − no contact", "plan − bank"] + (
        [f"plan − {escape(ref)}"] if any("plan_minus_reference" in e for e in o["estimates"].values()) else []
    )
    d = o["diagnostics"]
    warn = f'<p class="note warn">{escape(d["warning"])}</p>' if d.get("warning") else ""
    return (
        _h2("ope") + f'<p class="note">Reward per decision: the contract reward (transaction margin '
        f"+ margins of the products held at each period end - its cost) from the decision to the customer's next "
        f"one, on the first logged decision of each of {o['customers']:,} book customers between "
        f"{escape(o['window']['start'])} and {escape(o['window']['end'])}. The plan's first period contacts "
        f"{o['plan_contacts']:,} of them "
        f"({o['not_allowed']:,} planned contacts were no longer allowed at that decision and count as none); the bank "
        f"contacted {o['logged_contacts']:,}; they agree on {number(100 * o['agreement'], '{:.1f}')} % of decisions. "
        f"What the bank actually earned: {_iv_inline(o['logged'], '{:,.3f}', VALUE_KEYS)} per decision. Intervals: paired "
        f"bootstrap over customers ({o['bootstrap']['resamples']} resamples). Effective sample size of the plan's "
        f"weights {number(d['ess'], '{:,.0f}')} of {d['n']:,}.</p>"
        + table(header, rows)
        + (
            "<p class=\"note\">† a model's answer: its interval is the data's noise around the model and leaves "
            "the model's own bias out.</p>"
            if any(e.get("ci_excludes_model_bias") for e in o["estimates"].values())
            else ""
        )
        + warn
    )


def build_run_report_html(out: Path, doc: dict, world: Any) -> str:
    nav = "<nav>" + "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t in SECTIONS) + "</nav>"
    body = "".join(
        [
            f"<h1>Run report: {escape(doc['name'])}</h1>",
            nav,
            _answer(doc),
            _frontier(doc, out),
            _plan(doc, out),
            _simulation(doc),
            customers_section(doc, _h2),
            _ope(doc),
            _data(doc),
            _validation(doc, out),
            _policy(doc),
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
