"""The run report's sections about customers: the scores by stage and by segment, the planned
experiment (the plan's control group and its power) and, once `clv readout --run` has written
READOUT_FILE into the run folder, the predicted-vs-measured lift of the deployment."""

from __future__ import annotations

import json
from pathlib import Path

from .kit import PALETTE, escape, figure, inline_png, number, table, table_of_nonzero

READOUT_FILE = "readout.json"  # `clv readout --run RUN` writes it; the run report shows it when present
VERDICT_CLASS = {"confirmed": "", "not detected": "doubt", "contradicted": "no"}


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


def _readout_rows(r: dict) -> list[tuple[str, dict, float | None]]:
    """(label, measured CUPED interval, predicted) of the whole scope, then of each segment."""
    pred = (r.get("predicted") or {}).get("per_customer_in_scope")
    kind = "stratified" if r.get("estimator") == "stratified" else "intent to treat"
    rows = [(f"all customers in scope ({kind})", r["lift"]["cuped"], pred)]
    rows += [(str(x["segment"]), x["cuped"], x.get("predicted")) for x in r.get("by_segment") or []]
    return rows


def _readout_chart(rows: list[tuple[str, dict, float | None]], verdict: str, unit: str, periods) -> str:
    fig, ax = figure(7.5, 1.4 + 0.42 * len(rows))
    ax = ax[0][0]
    y = list(range(len(rows)))[::-1]  # the whole scope on top
    for k, (label, iv, pred) in zip(y, rows):
        m = iv.get("mean")
        if m is None:
            continue
        lo, hi = iv.get("ci_low"), iv.get("ci_high")
        err = None if lo is None or hi is None else [[m - lo], [hi - m]]
        ax.errorbar([m], [k], xerr=err, fmt="o", capsize=4, color=PALETTE[0], label="_nolegend_")
        if pred is not None:
            ax.plot([pred], [k], "D", color=PALETTE[1], label="_nolegend_")
    ax.plot([], [], "o", color=PALETTE[0], label="measured (CUPED, 95 % interval)")  # legend entries, drawn once
    if any(p is not None for _, _, p in rows):
        ax.plot([], [], "D", color=PALETTE[1], label="predicted")
    ax.axvline(0, color="#777", lw=0.8)
    ax.set_yticks(y, [label for label, _, _ in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"lift per customer over the read-out window ({number(periods, '{:g}')} periods, {unit})")
    ax.set_title(f"verdict: {verdict}", fontsize=10, loc="left")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="best")
    return inline_png(fig, "predicted vs measured lift per customer, overall and per segment, 95 % intervals")


def readout_section(out: Path, unit: str = "margin units") -> str:
    """The read-out of the deployment (OUT/readout.json from `clv readout --run OUT`): the predicted vs
    measured lift per segment with 95 % intervals, and the verdict. Empty without the file."""
    path = Path(out) / READOUT_FILE
    if not path.is_file():
        return ""
    head = "<h3>The read-out: predicted vs measured lift</h3>"
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
        rows, v = _readout_rows(r), r["verdict"]
        w = r["window"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return (
            head + f'<p class="note warn">{escape(READOUT_FILE)} could not be read ({escape(type(e).__name__)}); '
            "write it again with <code>clv readout HISTORY --run OUT</code>.</p>"
        )
    eu = escape(unit)
    strat = r.get("estimator") == "stratified"
    pooled = ((r.get("lift_pooled") or {}).get("difference_in_means") or {}).get("mean")
    note = (
        f'<p class="note">Measured on what happened from {escape(w["start"])} to {escape(w["end"])} '
        f'(<a href="{escape(READOUT_FILE)}">{escape(READOUT_FILE)}</a>, <code>clv readout</code>, docs/readout.md): '
        "the treatment arm minus the randomised control group per customer, on the contract reward (margin minus "
        f"cost) in {eu}, CUPED-adjusted on the same earnings before the deployment, 95 % intervals. The whole scope "
        "is intent to treat (explore customers count as assigned); the segments compare treatment with control. "
        + (
            f"The control share differs between strata, so the whole scope is the stratified estimate (segments "
            f"weighted by size); the pooled difference in means, {number(pooled, '{:+,.3f}')} {eu}, mixes the "
            "segments' levels and is not the lift. "
            if strat
            else ""
        )
        + "Predicted: the plan's lift for the experiment (plan.json), undiscounted read-out against a discounted "
        "prediction.</p>"
    )
    verdict = (
        f'<div class="decision {VERDICT_CLASS.get(v["verdict"], "doubt")}"><p><b>Verdict: {escape(v["verdict"])}</b> '
        f"({escape(v.get('reason', ''))}).</p></div>"
    )
    shares = {x["stratum"]: x.get("control_share") for x in (r.get("strata") or {}).get("rows", [])}
    cells = []
    for label, iv, pred in rows:
        seg = next((x for x in r.get("by_segment") or [] if x["segment"] == label), None)
        dm = (seg or r["lift"])["difference_in_means"]
        cells.append(
            [
                escape(label),
                number(shares.get(label), "{:.0%}"),
                number(iv.get("n_treatment"), "{:,}"),
                number(iv.get("n_control"), "{:,}"),
                _interval(iv),
                _interval(dm),
                number(pred, "{:+,.3f}"),
            ]
        )
    return (
        head
        + note
        + _readout_chart(rows, v["verdict"], unit, w.get("periods"))
        + verdict
        + table(
            [
                "customers",
                "control share",
                "treatment",
                "control",
                f"measured lift, CUPED ({eu})",
                f"measured lift, difference in means ({eu})",
                f"predicted lift ({eu})",
            ],
            cells,
        )
        + "".join(f'<p class="note warn">{escape(x)}</p>' for x in r.get("warnings") or [])
    )


def _interval(iv: dict | None) -> str:
    if not iv or iv.get("mean") is None:
        return "–"
    ci = (
        ""
        if iv.get("ci_low") is None
        else (f'<br><span class="ci">[{number(iv["ci_low"], "{:+,.3f}")}, {number(iv["ci_high"], "{:+,.3f}")}]</span>')
    )
    return number(iv["mean"], "{:+,.3f}") + ci
