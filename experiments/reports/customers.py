"""The run report's sections about customers: the scores by stage and by segment, and the planned
experiment (the plan's control group and its power)."""

from __future__ import annotations

from .kit import escape, number, table, table_of_nonzero


def customers_section(doc: dict, h2, unit: str = "margin units") -> str:
    """The scores (OUT/scores.parquet) by stage and by segment."""
    sc = doc.get("scores")
    if not sc:
        return ""
    horizon = sc.get("settings", {}).get("horizon")
    per = escape((doc.get("history") or {}).get("period", "period"))
    head = [
        "customers",
        f"expected CLV over {horizon} {per}s ({escape(unit)})",
        "P(alive)",
        f"churn by 26 {per}s",
        f"a contact next {per}",
    ]

    def rows(view: list[dict], key: str) -> list[list[str]]:
        return [
            [
                escape(r[key]),
                number(r["customers"], "{:,}"),
                number(r["expected_clv_h"], "{:,.2f}"),
                number(r["p_alive"], "{:.2f}"),
                number(100 * r["churn_prob_26"], "{:.0f} %"),
                number(100 * r["contact_share"], "{:.0f} %"),
            ]
            for r in view
        ]

    return (
        h2("customers")
        + f'<p class="note">One row per customer in <code>{escape(sc.get("file", "scores.parquet"))}</code> '
        f"({number(sc['customers'], '{:,}')} customers): value, stage now and next, churn probabilities, RFM, "
        "products, payment regularity, the next best action under the run's policy with its value and reason, "
        "and tags. Expected CLV is the mean over digital twins of the discounted contract reward under the policy; "
        "churn is the posterior probability of having left within 26 periods if nothing is done.</p>"
        + "<h3>By stage</h3>"
        + table(["stage"] + head, rows(sc["by_stage"], "stage"))
        + "<h3>By segment</h3>"
        + table(["segment"] + head, rows(sc["by_segment"], "segment"))
    )


def experiment_section(x: dict | None, unit: str = "margin units") -> str:
    """The planned experiment: groups, sizes, the power before launch (experiments.deployment)."""
    if not x:
        return ""

    def fmt(v, spec):
        return "–" if v is None else number(v, spec)

    groups = [
        ("treatment", x["treatment_customers"]),
        ("explore", x["explore_customers"]),
        ("control (held out, no contact)", x["control_customers"]),
    ]
    rows = [(name, [n], [escape(name), number(n, "{:,}")]) for name, n in groups]
    verdict = "detectable" if x.get("detectable") else "<strong>not detectable</strong> at this control share"
    return (
        "<h3>The planned experiment</h3>"
        + f'<p class="note">The first period ships with a randomised control group (share '
        f"{number(x['control_share'], '{:.0%}')}{', explore ' + number(x['explore_share'], '{:.0%}') if x.get('explore_share') else ''}); "
        '<a href="deployment.csv">deployment.csv</a> holds every customer\'s action, group and exact propensity, '
        "in the decisions format, to append to the decisions history. Over "
        f"{x['horizon_periods']} periods the plan's predicted lift is {fmt(x.get('predicted_lift_per_customer'), '{:+,.3f}')} "
        f"{escape(unit)} per customer; the minimal detectable effect (5 % level, 80 % power) is "
        f"{fmt(x.get('mde'), '{:,.3f}')} {escape(unit)}: "
        f"{verdict}; "
        + (
            f"the control share needed is {number(x['control_share_needed'], '{:.0%}')}. "
            if x.get("control_share_needed") is not None
            else "no control share would detect it with this many customers. "
        )
        + "Read the lift out with <code>clv readout</code> (docs/readout.md).</p>"
        + (f'<p class="note warn">{escape(x["warning"])}</p>' if x.get("warning") else "")
        + table_of_nonzero(["group", "customers"], rows, "No customer in any group.", some_zero="Empty: {names}.")
    )
