"""The scenario report's section on offline evaluation: each policy's OPE estimates on the logged
decisions beside its simulated value (and, when the evaluation has one, the world's model-based value
on the same estimand), and whether the two rank the policies alike."""

from __future__ import annotations

import math
from pathlib import Path

from .kit import PALETTE, ci_cell, color, escape, figure, inline_png, number, table

HEADING = "OPE vs simulation"


def _rank(values: dict[str, float]) -> dict[str, int]:
    """1 = best (highest); ties share the better rank; missing values rank last."""
    ok = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    order = sorted(ok.values(), reverse=True)
    return {k: (order.index(ok[k]) + 1 if k in ok else len(values)) for k in values}


def offline_section(ope: dict | None, summary: list[dict], policies: list[str]) -> str:
    out = [f'<h2 id="ope">{HEADING}</h2>']
    if ope is None:
        out.append(
            '<p class="note">No offline evaluation in this run. To compare the simulator with off-policy '
            "estimates on logged decisions, add an <code>ope:</code> section to the scenario file, e.g. "
            "<code>ope: {history: path/to/history_dir, estimators: [dm, ips, snips, dr], bootstrap: 500, "
            "start: 2024-07-01}</code> (the path relative to the scenario file; the history needs a "
            "decisions table), and run <code>clv scenarios</code> again: the cells already done are "
            "skipped and <code>ope.json</code> is added.</p>"
        )
        return "".join(out)
    pols = [p for p in policies if p in (ope.get("policies") or {})]
    entries = {p: ope["policies"][p] for p in pols}
    est_keys = list(dict.fromkeys(k for e in entries.values() for k in (e.get("estimates") or {})))
    free = {s["policy"]: s for s in summary if s["budget"] is None}
    first = next(iter(entries.values()), {})
    estimand = first.get("estimand", ope.get("settings", {}).get("estimand"))
    window = first.get("window") or {}
    units = "mean reward after a decision" if estimand == "per_decision" else "sum of rewards per customer"
    out.append(
        f'<p class="note">Off-policy estimates (estimand <code>{escape(estimand)}</code>) on '
        f"{number(first.get('decisions'), '{:,}')} logged decisions of {number(first.get('customers'), '{:,}')} "
        f"customers from {escape(window.get('start', '–'))} to {escape(window.get('end', '–'))} in "
        f"<code>{escape(Path(ope.get('history', '')).name)}</code>, each policy acting in the scenario's world; "
        f"intervals are customer-bootstrap percentile intervals. The OPE values are in the estimand's "
        f"units ({units}), "
        "the simulated values are CLV per customer over the horizon: compare the rankings, not the "
        "levels. The logged policy's own value is the estimand's on-policy mean.</p>"
    )
    logged = first.get("logged_policy_value")
    with_model = any(e.get("model_based") for e in entries.values())
    rows = []
    for p in pols:
        e = entries[p]
        cells = []
        for k in est_keys:
            v = (e.get("estimates") or {}).get(k)
            cells.append(
                "–"
                if v is None
                else ci_cell(
                    {"mean": v.get("value"), "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high")}, "{:,.3f}"
                )
                + ("" if v is None or v.get("ess") is None else f'<br><span class="ci">ESS {v["ess"]:,.0f}</span>')
            )
        if with_model:
            mb = e.get("model_based")
            cells.append(
                "–"
                if not mb
                else ci_cell({"mean": mb["value"], "ci_low": mb["ci_low"], "ci_high": mb["ci_high"]}, "{:,.3f}")
            )
        s = free.get(p)
        rows.append(
            [escape(p)]
            + cells
            + [
                number(e.get("logged_policy_value"), "{:,.3f}"),
                ci_cell(s["clv"]) if s else "–",
                ci_cell(s["incremental_clv"]) if s else "–",
            ]
        )
    blind = [
        k
        for k in est_keys
        if any(((entries[p].get("estimates") or {}).get(k) or {}).get("ci_excludes_model_bias") for p in pols)
    ]
    out.append(
        table(
            ["policy"]
            + [f"OPE {escape(k)}{' †' if k in blind else ''}" for k in est_keys]
            + (["model-based ‡"] if with_model else [])
            + ["logged policy", "simulated CLV", "simulated incr. CLV"],
            rows,
        )
    )
    if with_model:
        gaps = [
            f"{escape(p)} {mb['logged_replay']['value']:,.3f} vs {mb['logged_replay']['actual']:,.3f}"
            for p in pols
            if (mb := entries[p].get("model_based")) and mb["logged_replay"].get("actual") is not None
        ]
        out.append(
            "<p class=\"note\">‡ model-based: the policy run in the world's simulator from the logged customers' "
            "states, on the same estimand, reward and discount as the OPE estimates. Not an OPE estimate and never "
            "the recommended one: its interval is over simulator seeds, the model's Monte-Carlo error only, and "
            "leaves the model's own error out (<code>ci_excludes_model_bias</code>). Replaying the logged actions "
            f"the simulator gives (vs what the logged policy earned): {'; '.join(gaps) or '–'}.</p>"
        )
    if blind:
        out.append(
            f"<p class=\"note\">† {escape(', '.join(blind))}: a model's answer; the interval is the data's noise "
            "around it and leaves the model's own bias out (<code>ci_excludes_model_bias</code>).</p>"
        )
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
            err = [
                [max(v["value"] - (v.get("ci_low") if v.get("ci_low") is not None else v["value"]), 0)],
                [max((v.get("ci_high") if v.get("ci_high") is not None else v["value"]) - v["value"], 0)],
            ]
            a.errorbar(
                [x],
                [v["value"]],
                yerr=err,
                fmt="o",
                capsize=3,
                color=PALETTE[j % len(PALETTE)],
                label=k if i == 0 else None,
            )
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
        b.errorbar([i], [m], yerr=[[m - lo], [hi - m]], fmt="s", capsize=4, color=color(policies, p))
    b.set_xticks(range(len(pols)), pols, rotation=20, ha="right", fontsize=8)
    b.set_xlim(-0.6, len(pols) - 0.4)
    b.set_title("Simulated CLV per customer (no budget)", fontsize=10)
    b.grid(axis="y", alpha=0.3)
    out.append(inline_png(fig, "OPE estimates with intervals next to simulated CLV"))
    # diagnostics
    drows = []
    for p in pols:
        d = entries[p].get("diagnostics") or {}
        w = d.get("trajectory_weights") or d  # the data's importance weights: whole-trajectory ones per customer
        sup = d.get("support") or {}
        drows.append(
            [
                escape(p),
                number(d.get("n"), "{:,}"),
                escape(sup.get("estimator") or "–"),
                number(d.get("ess"), "{:,.1f}"),
                number(d.get("ess_share"), "{:.3f}"),
                number(w.get("ess"), "{:,.1f}"),
                number(w.get("max_weight"), "{:,.2f}"),
                number(w.get("mean_weight"), "{:.3f}"),
                number(w.get("zero_target_share"), "{:.3f}"),
                f'<span class="warn">{escape(d["warning"])}</span>' if d.get("warning") else "–",
            ]
        )
    out.append("<h3>Importance-weight diagnostics</h3>")
    out.append(
        '<p class="note">ESS and its share: the effective sample of the recommended estimator\'s own weights '
        "(for mis and drl the state-marginal weights, median over steps), which the warning reads; the weights' "
        "columns are the data's importance weights (one-step, or per customer the whole trajectory's product "
        "of step ratios).</p>"
    )
    out.append(
        table(
            [
                "policy",
                "samples",
                "recommended",
                "ESS",
                "ESS share",
                "weights' ESS",
                "max weight",
                "mean weight",
                "zero-target share",
                "warning",
            ],
            drows,
        )
    )
    return "".join(out)
