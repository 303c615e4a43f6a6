"""Early warning among active customers (issue 16), on three histories, each with its two anchors
measured in the same run (sim/early_warning.py for every definition):

- CDNOW 39/39 (the bundled master file; calibration to 1997-09-30, holdout to 1998-06-30, as in
  bench_validate_cdnow.py's first split);
- the bundled bank (`clv make-data` defaults: 6,000 customers, 156 weeks, seed 7), calibration
  and holdout as in examples/bank_demo.yaml (2024-06-30, 2024-12-29);
- a history whose behaviour is not BTYD-generated: the hidden-Markov engagement process with
  seasonality of sim/engagement_hmm.py (`clv make-data --kind hmm` defaults: 6,000 customers,
  156 weeks, seed 11), same dates as the bank.

    python benchmarks/bench_early_warning.py            # one JSON document on stdout
    python benchmarks/bench_early_warning.py --deciles  # with every decile lift table

The target: the engine's churn score at least matches the boosted classifier's AUC and top-decile
lift on every history, and beats the recency rule.
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
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from sim.early_warning import early_warning, summary_rows

    out = {"benchmark": "early warning among active customers (issue 16)", "seed": a.seed, "histories": {}}
    t_all = time.perf_counter()
    for name, hist, ce, he in histories():
        doc = early_warning(hist, ce, he, seed=a.seed)
        entry = {
            "calibration_end": ce,
            "holdout_end": he,
            **{k: doc[k] for k in ("population", "label", "customers", "churned", "base_rate", "horizon_periods")},
            "threshold_split": doc["threshold_split"],
            "training_split": doc["training_split"],
            "table": summary_rows(doc),
            "target": doc["target"],
            "seconds": doc["seconds"],
        }
        if a.deciles:
            entry["deciles"] = {k: m["deciles"] for k, m in doc["scores"].items() if m}
        out["histories"][name] = entry
    out["target_met_on_every_history"] = all(h["target"].get("met") for h in out["histories"].values())
    out["seconds"] = round(time.perf_counter() - t_all, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
