"""The estimator `clv ope` recommends for each estimand, by a fixed rule: the first of
RECOMMENDED[estimand] that ran. The order is the measured one (docs/ope.md, "Which estimator";
figures in docs/benchmarks.md): against the generating world's truth, `dr` has the lowest error of
the one-step estimators with covering intervals (benchmarks/bench_ope_truth.py), and on whole
trajectories the marginalized estimators do not collapse as trajectory weights do
(benchmarks/bench_ope_per_customer.py)."""

from __future__ import annotations

RECOMMENDED = {
    "per_decision": ("dr", "sndr", "snips", "ips", "dm"),
    "per_customer": ("drl", "mis", "fqe", "wdr", "dr_seq", "wpdis", "pdis"),
}

_COLLAPSE = "trajectory weights collapse over long trajectories (ESS 1-9 of 2,000 customers), expect a large error"
WHY = {
    "dr": "doubly robust: the lowest error of the one-step estimators against the generating world's truth, "
    "with 92-95 % interval coverage",
    "sndr": "self-normalised doubly robust (dr did not run)",
    "snips": "self-normalised importance sampling, intervals cover the truth (dr and sndr did not run)",
    "ips": "importance sampling: unbiased, wider intervals (dr, sndr and snips did not run)",
    "dm": "the reward model's answer only: its intervals leave out the model's bias (no weighted estimator ran)",
    "drl": "double RL: state-distribution ratios do not collapse over ~26 decisions as trajectory weights do, "
    "and the fitted-Q term corrects what the coarse cells miss",
    "mis": "marginalized importance sampling: state-distribution ratios do not collapse over long trajectories "
    "as trajectory weights do (drl did not run)",
    "fqe": "the fitted-Q model's answer only: its intervals leave out the model's bias (mis and drl did not run)",
    "wdr": _COLLAPSE,
    "dr_seq": _COLLAPSE,
    "wpdis": _COLLAPSE,
    "pdis": _COLLAPSE,
}


def recommend(estimand: str, estimates: dict[str, dict]) -> dict[str, str] | None:
    """{"estimator": the requested key, "ran": the estimator that ran under it, "why": ...} of the
    first of RECOMMENDED[estimand] among `estimates` (matched by the name that ran), or None."""
    ran = {e["estimator"]: key for key, e in estimates.items()}
    for name in RECOMMENDED.get(estimand, ()):
        if name in ran:
            return {"estimator": ran[name], "ran": name, "why": WHY[name]}
    return None


__all__ = ["RECOMMENDED", "WHY", "recommend"]
