"""The run report's sections on where its numbers come from: the data, the holdout validation (its
measures in words, the tracking chart with labelled axes, the early-warning scores) and the policy
(its training curve). Used by experiments.reports.run."""

from __future__ import annotations

from pathlib import Path

from .kit import escape, figure, inline_png, number, png_file, table

VALIDATION = (  # run.json key, its name in words, format
    ("customers", "customers validated", "{:,}"),
    ("holdout_repeat_actual", "repeat transactions in the holdout, actual", "{:,.0f}"),
    ("holdout_repeat_predicted", "repeat transactions in the holdout, predicted", "{:,.0f}"),
    ("aggregate_error", "error of the predicted total (share of the actual)", "{:+.1%}"),
    ("per_customer_corr", "correlation of predicted and actual transactions per customer", "{:.3f}"),
    ("per_customer_mae", "mean absolute error per customer (transactions)", "{:.3f}"),
    ("active_auc", "AUC of who buys again in the holdout", "{:.4f}"),
    ("holdout_value_error", "error of the predicted holdout value (share of the actual)", "{:+.1%}"),
    ("top_decile_value_share", "share of the holdout value from the predicted top 10 % of customers", "{:.1%}"),
)


def _period(doc: dict) -> str:
    return escape(doc["history"].get("period", "period"))


def data_section(doc: dict, u: str, h2) -> str:
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
        ["Money", escape(u) + ("" if u != "margin units" else " (economics.yaml names no currency)")],
        ["World", f"<code>world.json</code>, hash <code>{escape(c['world_hash'])}</code>"],
    ]
    return h2("data") + table(["", ""], rows, left=2)


def _tracking_chart(out: Path, per: str) -> str:
    """Transactions per period and cumulated, actual against the model, with labelled axes
    (validation/tracking.csv; the PNG written beside it when the CSV is missing)."""
    path = out / "validation" / "tracking.csv"
    if not path.is_file():
        return png_file(out / "validation" / "tracking.png", "holdout tracking")
    import pandas as pd

    t = pd.read_csv(path, parse_dates=["period_start"])
    fig, ax = figure(10, 3.4, ncols=2)
    cut = t.loc[t["window"] != "calibration", "period_start"].min() if "window" in t.columns else None
    for a, cum, title in ((ax[0][0], False, f"transactions per {per}"), (ax[0][1], True, "cumulative transactions")):
        ya, ym = (t["actual"].cumsum(), t["model"].cumsum()) if cum else (t["actual"], t["model"])
        a.plot(t["period_start"], ya, color="black", lw=1.2, label="actual")
        a.plot(t["period_start"], ym, color="#d62728", lw=1.2, ls="--", label="model")
        if cut is not None and cut == cut:
            a.axvline(cut, color="#777", lw=0.8, ls=":", label="calibration end")
        a.set_title(title, fontsize=10)
        a.set_xlabel(f"{per} starting")
        a.set_ylabel("transactions" + (" (cumulative)" if cum else f" per {per}"))
        a.tick_params(axis="x", labelsize=8, rotation=30)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return inline_png(fig, "holdout tracking: transactions, actual against the model")


def validation_section(doc: dict, out: Path, h2) -> str:
    v = doc.get("validation")
    if not v:
        return h2("validation") + '<p class="note">No holdout_end in the config: the world was not validated.</p>'
    rows = [[escape(name), number(v.get(k), f)] for k, name, f in VALIDATION if k in v]
    return (
        h2("validation") + f'<p class="note">Calibrated up to {escape(doc["calibration"]["calibration_end"])}, '
        f"the book simulated to {escape(doc['config']['holdout_end'])} with the logged decisions replayed, compared "
        'with what happened (files in <a href="validation/">validation/</a>).</p>'
        + table(["measure", "value"], rows)
        + _early_warning(v.get("early_warning"))
        + _tracking_chart(out, _period(doc))
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
        "engine_stack": "engine stacked (logistic on the posterior + RFM; recommended)",
    }
    rows = [
        [escape(names.get(k, k)), number(m["auc"], "{:.3f}"), number(m["top_decile_lift"], "{:.2f}")]
        + [number(m[c], "{:.3f}") for c in ("top_decile_precision", "precision", "recall", "f1")]
        for k, m in ew["scores"].items()
        if m
    ]
    t = ew.get("target") or {}
    judged = ew.get("recommended_score") or "engine"
    verdict = {True: "met", False: "not met", None: "n/a"}[t.get("met")]
    return (
        f'<p class="note">Early warning: {escape(ew["population"])}; {escape(ew["label"])} '
        f"({ew['churned']:,} of {ew['customers']:,}). Thresholds maximise F1 on the calibration window "
        f"(as of {escape(ew['threshold_split']['cutoff'])}); the boosted trees learn from "
        f"{escape(ew['training_split']['features_cutoff'])} to {escape(ew['training_split']['label_end'])}. "
        f"Target (the recommended score, {escape(names.get(judged, judged))}, at least the boosted AUC and "
        f"top-decile lift, above the recency rule): {verdict}.</p>"
        + table(["score", "AUC", "top-decile lift", "top-decile precision", "precision", "recall", "F1"], rows)
    )


def policy_section(doc: dict, u: str, h2) -> str:
    p = doc["policy"]
    if not p.get("trained"):
        return h2("policy") + f"<p>The budget pays for the contacts <code>{escape(p['policy'])}</code> proposes.</p>"
    out = [
        h2("policy"),
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
        ax.set_ylabel(f"mean return per customer episode ({u})")
        ax.grid(alpha=0.3)
        out.append(inline_png(fig, "training curve"))
    return "".join(out)
