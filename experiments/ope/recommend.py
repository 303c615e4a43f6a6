"""The estimator `clv ope` recommends for each estimand, by a fixed rule: the first of
RECOMMENDED[estimand] that ran. The order is the measured one (docs/ope.md, "Which estimator";
figures in docs/benchmarks.md), by the rule: among the estimators whose 95 % intervals covered the
generating world's truth in >= 90 % of histories on average over the candidates, the lowest mean
error; then the rest by mean error. per_decision: `dr` (benchmarks/bench_ope_truth.py). per_customer: `drl`
is the only one whose intervals covered (mean 95 %, 87-100 % each), then `mis` (lower error, 10.0 %
mean, but 73-83 % coverage far from the logging policy), then `fqe` (7.0 % mean error, 10-57 %
coverage), then the trajectory-weight estimators, which collapse
(benchmarks/bench_ope_per_customer.py)."""

from __future__ import annotations

RECOMMENDED = {
    "per_decision": ("dr", "sndr", "snips", "ips", "dm"),
    "per_customer": ("drl", "mis", "fqe", "wdr", "dr_seq", "wpdis", "pdis"),
}

_COLLAPSE = "trajectory weights collapse over long trajectories (ESS 1-9 of 2,000 customers), expect a large error"
WHY = {
    "dr": "doubly robust: the lowest error of the one-step estimators against the generating world's truth, "
    "with 95 % intervals that cover it in >= 90 % of histories (docs/benchmarks.md)",
    "sndr": "self-normalised doubly robust (dr did not run)",
    "snips": "self-normalised importance sampling, intervals cover the truth (dr and sndr did not run)",
    "ips": "importance sampling: unbiased, wider intervals (dr, sndr and snips did not run)",
    "dm": "the reward model's answer only: its intervals leave out the model's bias (no weighted estimator ran)",
    "drl": "double RL: the only per_customer estimator whose 95 % intervals covered the trajectory truth in >= 90 % "
    "of histories on average over the candidates measured (95 %; 87-100 % each); its error is 4-6 % for "
    "candidates near the logging policy and 18-20 % for ones far from it: read its interval, not only its point",
    "mis": "marginalized IS: lower error than drl (4.7-15 %) but its intervals undercover for candidates far from "
    "the logging policy (73-83 %) (drl did not run)",
    "fqe": "the fitted-Q model's answer only (error 3-15 %): its intervals leave out the model's bias and covered "
    "the truth in 10-57 % of histories (drl and mis did not run)",
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
