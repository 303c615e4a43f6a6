"""Early warning among active customers (issue 16), on three histories, each with its two anchors
measured in the same run (sim/early_warning.py for every definition):

- CDNOW 39/39 (the bundled master file; calibration to 1997-09-30, holdout to 1998-06-30, as in
  bench_validate_cdnow.py's first split);
- the bundled bank (`clv make-data` defaults: 6,000 customers, 156 weeks, seed 7), calibration
  and holdout as in examples/bank_demo.yaml (2024-06-30, 2024-12-29);
- a history whose behaviour is not BTYD-generated: the hidden-Markov engagement process with
  seasonality of sim/engagement_hmm.py (`clv make-data --kind hmm` defaults: 6,000 customers,
  156 weeks, seed 11), same dates as the bank.

    python benchmarks/bench_early_warning.py             # one JSON document on stdout
    python benchmarks/bench_early_warning.py --deciles   # with every decile lift table
    python benchmarks/bench_early_warning.py --variants  # with the stack's rejected designs

Four scores: the engine's posterior P(no purchase) alone (`engine`), the two anchors
(`recency_rule`, `hgb`) and the stacked engine score the product recommends (`engine_stack`,
sim/early_warning_stack.py: a logistic regression on the engine's posterior quantities, RFM,
recent purchases and payment regularity, fitted on the training split only). The target: the
recommended engine score at least matches the boosted classifier's AUC and top-decile lift on
every history, and beats the recency rule; the posterior alone is judged too
(`target.engine_posterior`).

`--variants` refits, on the same design matrices and training split, the two designs set aside
while building the stack, and reports them on the calibration window (where they were compared)
and on the holdout: the logistic stack without recent purchases (the first design), and boosted
trees (the anchor's settings) on the stack's inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def histories():
    """(name, history, calibration_end, holdout_end) of the three benchmark histories."""
    from sim.datasets import load_dataset
    from sim.engagement_hmm import HMMConfig, write_hmm_history
    from sim.history import load_history

    yield "cdnow_39_39", load_dataset("cdnow"), "1997-09-30", "1998-06-30"
    yield "bank", load_dataset("bank"), "2024-06-30", "2024-12-29"
    with tempfile.TemporaryDirectory() as d:
        write_hmm_history(d, HMMConfig())
        yield "hmm_engagement", load_history(d), "2024-06-30", "2024-12-29"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deciles", action="store_true", help="include every score's decile lift table")
    ap.add_argument("--variants", action="store_true", help="also measure the stack's rejected designs")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from sim.early_warning import early_warning, summary_rows

    out = {"benchmark": "early warning among active customers (issue 16)", "seed": a.seed, "histories": {}}
    t_all = time.perf_counter()
    for name, hist, ce, he in histories():
        doc = early_warning(hist, ce, he, seed=a.seed, return_arrays=a.variants)
        entry = {
            "calibration_end": ce,
            "holdout_end": he,
            **{k: doc[k] for k in ("population", "label", "customers", "churned", "base_rate", "horizon_periods")},
            "threshold_split": doc["threshold_split"],
            "training_split": doc["training_split"],
            "recommended_score": doc["recommended_score"],
            "table": summary_rows(doc),
            "target": doc["target"],
            "seconds": doc["seconds"],
        }
        if a.deciles:
            entry["deciles"] = {k: m["deciles"] for k, m in doc["scores"].items() if m}
        if a.variants:
            entry["variants"] = variants(doc["arrays"], a.seed)
        out["histories"][name] = entry
    out["target_met_on_every_history"] = all(h["target"].get("met") for h in out["histories"].values())
    out["engine_posterior_target_met_on_every_history"] = all(
        (h["target"].get("engine_posterior") or h["target"]).get("met") for h in out["histories"].values()
    )
    out["seconds"] = round(time.perf_counter() - t_all, 3)
    print(json.dumps(out, indent=2))


def variants(arrays: dict, seed: int) -> dict:
    """AUC and top-decile lift, on the calibration window and the holdout, of the stack's designs
    refitted on its training split: the one kept, the first design (no recent purchases) and
    boosted trees on the same inputs."""
    from sim.early_warning import _one_thread, auc, fit_hgb, top_decile
    from sim.early_warning_stack import fit_stack, stack_scores

    X = arrays["stack_inputs"]
    y = {
        "training": arrays["training"]["churned"],
        **{k: arrays[k]["churned"] for k in ("calibration_window", "holdout")},
    }
    no_recent = [c for c in X["training"].columns if c != "log_recent_purchases"]
    out = {}
    for name, cols, kind in (
        ("logistic_stack (kept)", list(X["training"].columns), "logistic"),
        ("logistic_stack_without_recent_purchases (first design)", no_recent, "logistic"),
        ("hgb_on_stack_inputs", list(X["training"].columns), "hgb"),
    ):
        if kind == "logistic":
            m = fit_stack(X["training"][cols], y["training"])
            score = lambda k: stack_scores(m, X[k][cols])  # noqa: E731
        else:
            m = fit_hgb(X["training"][cols], y["training"], seed)

            def score(k, m=m, cols=cols):
                with _one_thread():
                    return m.predict_proba(X[k][cols].to_numpy(float))[:, 1]

        out[name] = {
            k: {"auc": auc(y[k], s), "top_decile_lift": top_decile(y[k], s)[1]}
            for k in ("calibration_window", "holdout")
            for s in [score(k)]
        }
    return out


if __name__ == "__main__":
    main()
