"""The report of `clv run` (`write_run_report(OUT, doc, world)` -> OUT/report.html), from the run.json
document of `experiments.pipeline` and the world it calibrated; `rewrite_run_report(OUT)` renders it
again from a finished run's folder (run.json and world.json).

One self-contained HTML page (inline PNGs and stylesheet, relative links to the files beside it),
built with the reports' kit (experiments.reports.kit). It opens with the decision in plain words
(experiments.reports.decision: what to do, what it buys, how sure we are), then: the answer in
detail; the budget frontier by simulation with the baselines' points; the plan by period, what one
more unit of each constraint is worth, the first period's contact list, the experiment and, when
`clv readout --run OUT` has written OUT/readout.json, its predicted-vs-measured lift; the
return on cash by segment, channel, action and stage; the runs on the fresh seeds; the customers;
the offline evaluation; data; holdout validation; the policy; the calibration fit; the assumptions
taken from priors. Money is in the economics.yaml currency, else "margin units"; comparisons are
paired differences; a table whose numbers are all zero is one sentence instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .customers import READOUT_FILE, customers_section, experiment_section, readout_section
from .decision import ESTIMATORS, decision_html, money, one, roi_section
from .kit import CSS, PALETTE, escape, figure, inline_png, is_zero, number, table, table_of_nonzero, unit_of
from .run_checks import data_section, policy_section, validation_section
from .world import assumptions, calibration_fit

SECTIONS = (
    ("answer", "The answer"),
    ("frontier", "Budget frontier"),
    ("plan", "The plan"),
    ("roi", "Return on spend"),
    ("simulation", "Simulation"),
    ("customers", "Customers"),
    ("ope", "Offline evaluation"),
    ("data", "Data"),
    ("validation", "Holdout validation"),
    ("policy", "Policy"),
    ("fit", "Calibration fit"),
    ("assumptions", "Assumptions, defaults and repairs"),
)
PACING = {
    "horizon": "one price for the whole horizon",
    "even": "the budget left spread evenly over the periods left",
    "front": "the whole budget left available every period",
}
VALUE_KEYS = ("value", "ci_low", "ci_high")


def _iv(d: dict | None, fmt: str = "{:,.2f}", keys=("mean", "ci_low", "ci_high")) -> str:
    if not d or d.get(keys[0]) is None:
        return "–"
    return (
        f'{number(d[keys[0]], fmt)}<br><span class="ci">[{number(d.get(keys[1]), fmt)}, '
        f"{number(d.get(keys[2]), fmt)}]</span>"
    )


def _ivv(d: dict | None, fmt: str = "{:,.3f}") -> str:
    return _iv(d, fmt, VALUE_KEYS)


def _h2(key: str) -> str:
    return f'<h2 id="{key}">{dict(SECTIONS)[key]}</h2>'


def _iv_inline(d: dict | None, fmt: str = "{:+,.3f}", keys=("mean", "ci_low", "ci_high")) -> str:
    """An interval on one line (`keys=VALUE_KEYS` for the OPE documents' point estimates)."""
    return _iv(d, fmt, keys).replace("<br>", " ")


def _period(doc: dict) -> str:
    return escape(doc["history"].get("period", "period"))


def _references(fr: dict) -> list[dict]:
    """The policies beside the frontier, the policy itself once ("P alone" and a baseline P are one run)."""
    alone = f"{fr['policy']} alone"
    names = {r["policy"] for r in fr["references"]}
    return [r for r in fr["references"] if not (r["policy"] == fr["policy"] and alone in names)]


def _answer(doc: dict, u: str) -> str:
    p, ope = doc["plan"], doc.get("ope")
    chk, per = p["check"], _period(doc)
    lines = [
        f"Budget: <b>{money(p['budget'], u)}</b> of cash for every contact over the next {p['horizon']} {per}s "
        f"({escape(PACING.get(p['pacing'], p['pacing']))}); the plan spends <b>{_iv_inline(p['spend'], '{:,.0f}')} "
        f"{escape(u)}</b>, the {escape(p['policy'])} alone would spend {money(p['policy_alone_spend']['mean'], u)}. "
        "Spend is cash: the catalogue cost of every contact made, the policy's own included.",
        f"Gain per customer over contacting no one, on fresh seeds: <b>{_iv_inline(p['lift_vs_none'])} {escape(u)}</b> "
        f"(discounted customer value over the horizon, paired on the same simulated futures; predicted when the plan "
        f"was set: {number(p['predicted_lift']['mean'], '{:+,.3f}')} {escape(u)}, "
        + ("inside" if chk["predicted_inside_fresh_ci"] else "<b>outside</b>")
        + " the fresh interval).",
        f"Against the {escape(p['policy'])} alone (what the plan replaces): {_iv_inline(p['lift_vs_policy_alone'])} "
        f"{escape(u)} per customer (paired), for "
        f"{money(p['policy_alone_spend']['mean'] - p['spend']['mean'], u)} less cash.",
        f"Return: {_iv_inline(p['roi'], '{:,.2f}')} {escape(u)} of discounted customer value per {escape(one(u))} of "
        f"cash. One more {escape(one(u))} of budget is worth "
        f"{number(p['shadow_prices'][0]['shadow_price'], '{:,.3f}')} {escape(u)} at the margin.",
        f"First {per}: <b>{p['first_period_contacts']:,}</b> contacts in "
        '<a href="contacts.parquet">contacts.parquet</a> (customer, action, channel, segment, value, cost, reason), '
        "ready for the CRM.",
    ]
    if ope:
        main = "dr" if "dr" in ope["estimates"] else next(iter(ope["estimates"]))
        e = ope["estimates"][main]
        txt = (
            f"Offline ({ESTIMATORS.get(main, main)}, the first logged decision of {ope['customers']:,} customers in "
            f"the holdout): the first {per}'s contacts earn {_iv_inline(e['plan_minus_logged'], keys=VALUE_KEYS)} "
            f"{escape(u)} per decision more than what the bank did (paired)"
        )
        if "plan_minus_reference" in e:
            txt += (
                f" and {_iv_inline(e['plan_minus_reference'], keys=VALUE_KEYS)} {escape(u)} more than the "
                f"{escape(ope.get('reference_name', 'policy alone'))}"
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


def _frontier_chart(fr: dict, u: str, per: str) -> str:
    pts = fr["points"]
    fig, ax = figure(7.5, 3.9)
    ax = ax[0][0]
    x = [q["spend"]["mean"] for q in pts]
    lift = [q["lift_vs_none"] for q in pts]
    ax.fill_between(x, [d["ci_low"] for d in lift], [d["ci_high"] for d in lift], color=PALETTE[0], alpha=0.2)
    ax.plot(x, [d["mean"] for d in lift], "o-", color=PALETTE[0], label=f"budgeted {fr['policy']} (95 % interval)")
    for i, r in enumerate(_references(fr)):
        m, lo, hi = r["lift_vs_none"]["mean"], r["lift_vs_none"]["ci_low"], r["lift_vs_none"]["ci_high"]
        ax.errorbar(
            [r["spend"]["mean"]], [m], yerr=[[m - lo], [hi - m]], fmt="s", capsize=4, color=PALETTE[(i + 1) % 10]
        )
        ax.annotate(r["policy"], (r["spend"]["mean"], m), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.axhline(0, color="#777", lw=0.8)
    spends = [v for v in x + [r["spend"]["mean"] for r in _references(fr)] if v > 0]
    wide = bool(spends) and max(spends) > 20 * min(spends)  # a baseline far out squashes the frontier
    if wide:
        ax.set_xscale("log")
    ax.set_xlabel(f"cash spent on contacts over {fr['horizon']} {per}s ({u}{', log scale' if wide else ''})")
    ax.set_ylabel(f"gain per customer vs no contact ({u})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return inline_png(fig, "budget frontier: gain per customer against cash spent")


def _frontier(doc: dict, u: str) -> str:
    fr, per, eu = doc["frontier"], _period(doc), escape(u)
    rows = []
    for q in fr["points"]:
        sp = "<br>".join(
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
                sp or "none binds",
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
        for r in _references(fr)
    ]
    flags = (
        f"Increasing within the intervals: {'yes' if fr['increasing_within_ci'] else '<b>no</b>'}; concave: "
        f"{'yes' if fr['concave'] else '<b>no</b>'}; every prediction inside its fresh interval: "
        f"{'yes' if fr['honest'] else '<b>no</b> (✗ marks the budgets where it is not)'}."
    )
    return (
        _h2("frontier")
        + f'<p class="note">Each point is the budgeted {escape(fr["policy"])} simulated over {fr["horizon"]} {per}s '
        f"for {fr['customers']:,} customers on fresh seeds (never used to set the plan's price), 95 % intervals over "
        "seeds; the squares are the policies run unbudgeted on the same seeds. Gain: discounted customer value per "
        f"customer over contacting no one, in {eu}, a paired difference on the same simulated futures; marginal "
        f"value: {eu} of total customer value per {escape(one(u))} of cash between budgets.</p>"
        + _frontier_chart(fr, u, per)
        + table(
            [
                f"budget ({eu})",
                f"cash spend ({eu})",
                f"gain per customer vs none ({eu})",
                f"predicted gain ({eu})",
                f"vs {escape(fr['policy'])} alone ({eu}, paired)",
                f"marginal value ({eu} per {escape(one(u))})",
                "shadow prices",
            ],
            rows,
        )
        + f"<p>{flags}</p><h3>Policies beside the frontier</h3>"
        + table(
            [
                "policy",
                f"cash spend ({eu})",
                f"gain per customer vs none ({eu})",
                f"frontier at its spend ({eu})",
                "frontier at least as good",
            ],
            refs,
        )
    )


def _by_period_chart(plan: dict, u: str, per: str) -> str:
    rows = plan.get("by_period") or []
    if not rows or all(is_zero(r["spend"]) for r in rows):
        return f'<p class="note">The plan spends nothing in any {per}.</p>'
    fig, ax = figure(6.5, 2.8)
    ax = ax[0][0]
    ax.bar([r["period"] for r in rows], [r["spend"] for r in rows], color="#1f77b4")
    ax.set_xlabel(f"{per} of the plan (0 = the first)")
    ax.set_ylabel(f"cash spend ({u})")
    ax.grid(alpha=0.3, axis="y")
    return inline_png(fig, f"cash spend per {per}, mean over fresh seeds")


def _plan(doc: dict, out: Path, u: str) -> str:
    p, per, eu = doc["plan"], _period(doc), escape(u)
    shadow = table_of_nonzero(
        ["constraint", f"shadow price ({eu})", "meaning"],
        [
            (
                x["constraint"],
                [x["shadow_price"]],
                [escape(x["constraint"]), number(x["shadow_price"], "{:,.4g}"), escape(x["meaning"])],
            )
            for x in p["shadow_prices"]
        ],
        "No constraint binds: one more unit of the budget or of any constraint is worth nothing at the margin.",
        left=3,
        some_zero="Not binding (worth 0 at the margin): {names}.",
    )
    first = ""
    path = out / "contacts.parquet"
    if path.is_file():
        import pandas as pd

        c = pd.read_parquet(path)
        top = c.head(15)
        first = (
            f'<h3>First {per}\'s contact list</h3><p class="note">{len(c):,} contacts, best value first; the '
            'whole list in <a href="contacts.parquet">contacts.parquet</a>. Value: the contact\'s predicted net '
            f"gain in discounted customer value; cost: its catalogue cost in cash; both in {eu}.</p>"
            + table(
                ["customer", "action", "channel", "segment", "why", f"value ({eu})", f"cost ({eu})"],
                [
                    [
                        escape(r.customer_id),
                        escape(r.action),
                        escape(r.channel),
                        escape(r.segment),
                        escape(r.reason),
                        number(r.value, "{:,.2f}"),
                        number(r.cost, "{:,.2f}"),
                    ]
                    for r in top.itertuples()
                ],
                left=5,
            )
            if len(c)
            else f'<h3>First {per}\'s contact list</h3><p class="note">The plan contacts no one in the first {per}.</p>'
        )
    return (
        _h2("plan")
        + f'<p class="note">Over {p["horizon"]} {per}s on the fresh seeds (mean and 95 % interval over seeds): '
        'the schedule per period x segment x channel is in <a href="schedule.parquet">schedule.parquet</a>. '
        f"The contact values come from rollouts of the policy on twins of their own (held-out R² "
        f"{number((p.get('value_model') or {}).get('heldout_r2'), '{:.2f}')}).</p>"
        f"<h3>Cash spend per {per}</h3>"
        + _by_period_chart(p, u, per)
        + "<h3>What one more unit of each constraint is worth</h3>"
        + shadow
        + first
        + experiment_section(p.get("experiment"), u)
        + readout_section(out, u)
    )


def _simulation(doc: dict, u: str) -> str:
    ev, eu = doc["evaluation"], escape(u)
    names = {r["policy"] for r in doc["frontier"]["references"]}
    rows = []
    for name, r in ev["runs"].items():
        if f"{name} alone" in names or f"{name} alone" in ev["runs"]:  # the policy alone, listed once
            continue
        rows.append(
            [
                escape(name),
                _iv(r["spend"], "{:,.0f}"),
                _iv(r.get("contacts"), "{:,.2f}") if r.get("contacts") else "–",
                number(r["clv"]["mean"], "{:,.2f}"),
                _iv(r.get("lift_vs_none"), "{:+,.3f}") if r.get("lift_vs_none") else "–",
            ]
        )
    c = ev["check"]
    return (
        _h2("simulation") + f'<p class="note">{ev["customers"]:,} customers (the book) x {ev["periods"]} periods on '
        f"fresh seeds {escape(', '.join(str(x) for x in ev['seeds_used']))}, common random numbers; the plan's price "
        f"was set on seeds {escape(', '.join(str(x) for x in ev['planning_seeds']))}. Customer value is discounted "
        f"margin of transactions and products held minus contact cost, per customer, in {eu}. Compare the runs by "
        "their gain over contacting no one, a paired difference on the same futures: the runs' absolute values "
        "move together from seed to seed, so their own intervals overlap and say little.</p>"
        + table(
            [
                "run",
                f"cash spend, whole book ({eu})",
                "contacts per customer",
                f"customer value per customer ({eu})",
                f"gain vs no contact ({eu}, paired)",
            ],
            rows,
        )
        + f"<p><b>Plan check.</b> Predicted gain {_iv_inline(c['predicted_lift'])} {eu}, on fresh seeds "
        f"{_iv_inline(c['fresh_lift'])} {eu}: the prediction is "
        + ("inside" if c["predicted_inside_fresh_ci"] else "<b>outside</b>")
        + f" the fresh interval ({escape(c['note'])}). Against the policy alone (paired): "
        f"{_iv_inline(ev['plan_vs_policy_alone'])} {eu} per customer.</p>"
    )


def _ope(doc: dict, u: str) -> str:
    o, eu = doc.get("ope"), escape(u)
    if not o:
        return (
            _h2("ope")
            + '<p class="note">'
            + escape("; ".join(doc.get("notes", [])) or "No offline evaluation in this run.")
            + "</p>"
        )
    ref = o.get("reference_name", "policy alone")
    with_ref = any("plan_minus_reference" in e for e in o["estimates"].values())
    rows = [
        [
            escape(ESTIMATORS.get(k, k)) + (" †" if e.get("ci_excludes_model_bias") else ""),
            number(e["plan"]["value"], "{:,.3f}"),
            number(e["none"]["value"], "{:,.3f}"),
            _ivv(e["plan_minus_none"], "{:+,.3f}"),
            _ivv(e["plan_minus_logged"], "{:+,.3f}"),
        ]
        + ([_ivv(e.get("plan_minus_reference"), "{:+,.3f}")] if with_ref else [])
        for k, e in o["estimates"].items()
    ]
    header = [
        "estimator",
        f"plan ({eu})",
        f"no contact ({eu})",
        f"plan − no contact ({eu}, paired)",
        f"plan − bank ({eu}, paired)",
    ] + ([f"plan − {escape(ref)} ({eu}, paired)"] if with_ref else [])
    d = o["diagnostics"]
    warn = f'<p class="note warn">{escape(d["warning"])}</p>' if d.get("warning") else ""
    return (
        _h2("ope") + f'<p class="note">Reward per decision, in {eu}: the contract reward (transaction margin '
        f"+ margins of the products held at each period end - its cost) from the decision to the customer's next "
        f"one, on the first logged decision of each of {o['customers']:,} book customers between "
        f"{escape(o['window']['start'])} and {escape(o['window']['end'])}. The plan's first period contacts "
        f"{o['plan_contacts']:,} of them "
        f"({o['not_allowed']:,} planned contacts were no longer allowed at that decision and count as none); the bank "
        f"contacted {o['logged_contacts']:,}; they agree on {number(100 * o['agreement'], '{:.1f}')} % of decisions. "
        f"What the bank actually earned: {_iv_inline(o['logged'], '{:,.3f}', VALUE_KEYS)} {eu} per decision. The "
        f"differences are paired (bootstrap over customers, {o['bootstrap']['resamples']} resamples, 95 % "
        f"intervals); read them, not the levels. Effective sample size of the plan's "
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
    u = unit_of(world)
    nav = "<nav>" + "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t in SECTIONS) + "</nav>"
    body = "".join(
        [
            f"<h1>Run report: {escape(doc['name'])}</h1>",
            decision_html(doc, u),
            nav,
            _answer(doc, u),
            _frontier(doc, u),
            _plan(doc, out, u),
            roi_section(doc, out, u, _h2),
            _simulation(doc, u),
            customers_section(doc, _h2, u),
            _ope(doc, u),
            data_section(doc, u, _h2),
            validation_section(doc, out, _h2),
            policy_section(doc, u, _h2),
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


def rewrite_run_report(out: str | Path) -> Path:
    """Render OUT/report.html again from a finished run's folder (OUT/run.json and OUT/world.json)."""
    import json

    from sim.errors import ConfigError
    from sim.world import WorldModel

    out = Path(out)
    if not (out / "run.json").is_file():
        raise ConfigError(f"{out}: no run.json; give the folder of a finished `clv run`")
    doc = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return write_run_report(out, doc, WorldModel.load(out / "world.json"))


__all__ = ["write_run_report", "build_run_report_html", "rewrite_run_report", "READOUT_FILE"]
