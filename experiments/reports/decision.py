"""The run report's lead and its return on spend: the decision in plain words (what to do, what it
buys, how sure we are), and the return per unit of cash by segment, channel, action and stage.

Money is in the economics.yaml currency, else "margin units" (kit.unit_of). The certainty comes from
paired differences (the plan against contacting no one and against the policy alone on the same
fresh seeds, common random numbers; offline, paired bootstrap over customers), never from
comparing two absolute intervals."""

from __future__ import annotations

from pathlib import Path

from .kit import escape, number, table_of_nonzero

ESTIMATORS = {
    "dm": "direct method (reward model)",
    "ips": "inverse propensity weighting",
    "snips": "self-normalised inverse propensity weighting",
    "dr": "doubly robust",
}


def money(v, unit: str, fmt: str = "{:,.0f}") -> str:
    return f"{number(v, fmt)} {escape(unit)}"


def one(unit: str) -> str:
    """The unit in the singular ("per margin unit", "per EUR")."""
    return "margin unit" if unit == "margin units" else unit


def interval_words(d: dict, unit: str, fmt: str = "{:+,.3f}") -> str:
    return f"between {number(d['ci_low'], fmt)} and {number(d['ci_high'], fmt)} {escape(unit)}"


def verdict(lift: dict) -> str:
    """ "yes" (the whole 95 % interval of the paired lift is above 0), "no" (its mean is not above 0)
    or "doubt" (above 0 on average, but 0 is inside the interval)."""
    if lift.get("mean") is None or lift["mean"] <= 0:
        return "no"
    return "yes" if (lift.get("ci_low") or 0) > 0 else "doubt"


def decision_html(doc: dict, unit: str) -> str:
    """Three short paragraphs in a box, first on the page: do this, it buys that, this sure."""
    p, ope = doc["plan"], doc.get("ope")
    period = doc["history"].get("period", "period")
    lift, alone = p["lift_vs_none"], p["lift_vs_policy_alone"]
    n = p["customers"]
    v = verdict(lift)
    spend, alone_spend = p["spend"]["mean"], p["policy_alone_spend"]["mean"]
    what = {
        "yes": f"<b>Decision: adopt the plan.</b> Spend at most {money(p['budget'], unit)} on contacts over the next "
        f"{p['horizon']} {escape(period)}s, starting with the {p['first_period_contacts']:,} contacts of the first "
        f'{escape(period)} in <a href="contacts.parquet">contacts.parquet</a>.',
        "doubt": f"<b>Decision: try the plan as an experiment before adopting it.</b> Spending at most "
        f"{money(p['budget'], unit)} over the next {p['horizon']} {escape(period)}s probably adds value, but the "
        "gain cannot yet be told apart from zero: ship the first "
        f'{escape(period)}\'s {p["first_period_contacts"]:,} contacts (<a href="contacts.parquet">contacts.parquet</a>) '
        "with the control group and read the result out.",
        "no": f"<b>Decision: do not adopt the plan.</b> Spending {money(p['budget'], unit)} over the next "
        f"{p['horizon']} {escape(period)}s on these contacts does not add value over contacting no one.",
    }[v]
    buys = (
        f"<b>What it buys:</b> {money(lift['mean'] * n, unit)} of discounted customer value over contacting no one "
        f"({number(lift['mean'], '{:+,.2f}')} {escape(unit)} per customer, {n:,} customers), for "
        f"{money(spend, unit)} of cash spent on contacts: {number(p['roi']['mean'], '{:,.2f}')} {escape(unit)} back "
        f"per {escape(one(unit))} spent. "
        f"The {escape(p['policy'])} alone would spend {money(alone_spend, unit)}; against it the plan gives "
        f"{number(alone['mean'], '{:+,.2f}')} {escape(unit)} per customer for "
        f"{money(alone_spend - spend, unit)} less cash."
    )
    fpts = (doc.get("frontier") or {}).get("points", [])
    pairs = [(a, b) for a, b in zip(fpts, fpts[1:]) if b.get("marginal_value") is not None]
    if pairs:  # the last step of the frontier: does one more unit of cash still add value?
        before, last = pairs[-1]
        mv = last["marginal_value"]
        buys += (
            f" {'More budget still pays' if mv > 0 else 'More budget does not pay'}: between the budgets of "
            f"{money(before['budget'], unit)} and {money(last['budget'], unit)} each extra {escape(one(unit))} of cash "
            f"{'adds' if mv > 0 else 'changes customer value by'} {number(mv, '{:,.2f}')} {escape(unit)} of customer "
            "value after the contacts' cost (the budget frontier below)."
        )
    sure = (
        f"<b>How sure:</b> on {len(p['seeds']['fresh'])} fresh simulations of the calibrated world (never used to set "
        f"the plan) the gain per customer over contacting no one is {interval_words(lift, unit)} (95 % interval of "
        "the paired difference)"
        + {
            "yes": ", clear of zero",
            "doubt": ", which includes zero",
            "no": "",
        }[v]
        + "; the gain predicted when the plan was set is "
        + ("inside" if p["check"]["predicted_inside_fresh_ci"] else "<b>outside</b>")
        + " that range."
    )
    if ope:
        main = "dr" if "dr" in ope["estimates"] else next(iter(ope["estimates"]))
        d = ope["estimates"][main]["plan_minus_logged"]
        sure += (
            f" On the holdout's real decisions ({ESTIMATORS.get(main, main)}), the first {escape(period)}'s contacts "
            f"earn {number(d['value'], '{:+,.2f}')} {escape(unit)} per decision against what the bank did "
            f"({interval_words(d, unit)})"
            + (
                ", clear of zero."
                if d["ci_low"] > 0
                else ", clearly worse."
                if d["ci_high"] < 0
                else ": the real data cannot tell them apart."
            )
        )
    x = p.get("experiment")
    if x and x.get("mde") is not None:
        sure += (
            f" The planned experiment ({number(x['control_share'], '{:.0%}')} control group, "
            f"{x['horizon_periods']} {escape(period)}s) "
            + ("can detect the predicted gain" if x.get("detectable") else "<b>cannot detect</b> the predicted gain")
            + f" ({number(x.get('predicted_lift_per_customer'), '{:+,.3f}')} {escape(unit)} per customer against a "
            f"smallest detectable effect of {number(x['mde'], '{:,.3f}')} {escape(unit)})."
        )
    return (
        f'<div class="decision {"" if v == "yes" else v}" id="decision"><p>{what}</p><p>{buys}</p><p>{sure}</p></div>'
    )


def _ratio(value: float, cash: float) -> str:
    return number(value / cash if cash > 1e-12 else None, "{:,.2f}")


def _cash(v: float) -> str:
    """Cash to the unit when it is large, to the cent when small (a 0.08 push is not 0)."""
    return number(v, "{:,.0f}" if abs(v) >= 100 else "{:,.2f}")


def roi_section(doc: dict, out: Path, unit: str, h2) -> str:
    """Return on cash by segment and channel (the plan over the horizon, schedule.parquet) and by action
    and stage (the first period's contacts, contacts.parquet, their stage from scores.parquet)."""
    import pandas as pd

    p = doc["plan"]
    u = escape(unit)
    parts = [
        h2("roi"),
        f'<p class="note">Predicted net value (discounted customer value after the contact\'s cost, the value '
        f"model's estimate when each contact is made) per {escape(one(unit))} of cash, where the plan spends. The value model is "
        f"a guide to where the money works best; the measured return of the whole plan on fresh seeds is "
        f"{number(p['roi']['mean'], '{:,.2f}')} {u} per {escape(one(unit))} spent.</p>",
    ]
    head = ["contacts", f"cash spend ({u})", f"predicted net value ({u})", f"value per {escape(one(unit))} of cash"]

    def rows_of(frame: pd.DataFrame, col: str, count_fmt: str) -> list:
        g = frame.groupby(col, observed=True)[["contacts", "spend", "value"]].sum().reset_index()
        return [
            (
                str(r[col]),
                [r["contacts"], r["spend"], r["value"]],
                [
                    escape(r[col]),
                    number(r["contacts"], count_fmt),
                    _cash(r["spend"]),
                    _cash(r["value"]),
                    _ratio(r["value"], r["spend"]),
                ],
            )
            for _, r in g.iterrows()
        ]

    sched_path = out / "schedule.parquet"
    if sched_path.is_file():
        sched = pd.read_parquet(sched_path)
        predicted, measured = float(sched["value"].sum()), p["lift_vs_none"]["mean"] * p["customers"]
        parts.append(
            f'<p class="note">By segment and channel: over the {p["horizon"]} periods, mean over the fresh seeds. '
            f"The value model's total, {_cash(predicted)} {u}, is "
            + (
                f"{number(predicted / measured, '{:,.1f}')} times the gain measured on the fresh seeds "
                f"({_cash(measured)} {u}): read the ranking of the rows, not the level."
                if measured > 1e-12
                else f"against a measured gain of {_cash(measured)} {u}: read the ranking of the rows, not the level."
            )
            + "</p>"
        )
        for col, title in (("segment", "By segment"), ("channel", "By channel")):
            parts.append(f"<h3>{title}</h3>")
            parts.append(
                table_of_nonzero(
                    [col] + head,
                    rows_of(sched, col, "{:,.1f}"),
                    f"The plan makes no contact in any {col}.",
                    some_zero="No contact, left out of the table: {names}.",
                )
            )
    contacts_path = out / "contacts.parquet"
    if contacts_path.is_file():
        c = pd.read_parquet(contacts_path)
        c = c.assign(contacts=1.0, spend=c["cost"])
        scores_path = out / (doc.get("scores") or {}).get("file", "scores.parquet")
        if scores_path.is_file() and len(c):
            s = pd.read_parquet(scores_path, columns=["customer_id", "stage"])
            c = c.merge(s.astype({"customer_id": c["customer_id"].dtype}), on="customer_id", how="left")
        parts.append(
            f'<p class="note">By action and stage: the first period\'s {len(c):,} contacts (contacts.parquet), '
            "the stage each customer is in now (scores.parquet).</p>"
        )
        groups = [("action", "By action")] + ([("stage", "By stage")] if "stage" in c.columns else [])
        for col, title in groups:
            parts.append(f"<h3>{title}</h3>")
            parts.append(
                table_of_nonzero(
                    [col] + head,
                    rows_of(c, col, "{:,.0f}") if len(c) else [],
                    f"The first period has no contact, so no {col} to show.",
                )
            )
    return "".join(parts)
