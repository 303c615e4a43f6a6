"""Holdout validation on CDNOW for several calibration/holdout splits, beside lifetimes' BG/NBD
anchor on the same split in the same run.

    python benchmarks/bench_validate_cdnow.py --anchor-python /tmp/anchors/bin/python --json

The anchor (../shared/anchors/cdnow_lifetimes.py) counts holdout "transactions" as calendar
weeks with a purchase (lifetimes' weekly summary); clv-engine counts purchase days (same-day
purchases merged). AUC is on the same event (any purchase in the holdout); clv-engine's
correlation is reported against both counts (per_customer_corr, per_customer_corr_active_weeks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPLITS = [
    ("1997-09-30", "1998-06-30"),
    ("1997-06-30", "1998-06-30"),
    ("1997-12-31", "1998-06-30"),
    ("1997-04-30", "1997-12-31"),
    ("1997-07-31", "1998-03-31"),
]
# lifetimes on clv-engine's own day-level summary, so that both models are judged on the same counts
SAME_COUNTS = r"""
import json, sys, numpy as np, pandas as pd
from lifetimes import BetaGeoFitter, ParetoNBDFitter
from sklearn.metrics import roc_auc_score
d = pd.read_csv(sys.argv[1]); h = float(sys.argv[2]); out = {}
for name, F in (("bg_nbd", BetaGeoFitter), ("pareto_nbd", ParetoNBDFitter)):
    m = F().fit(d["x"], d["t_x"], d["T"])
    p = np.asarray(m.conditional_expected_number_of_purchases_up_to_time(h, d["x"], d["t_x"], d["T"]))
    a = d["actual"].to_numpy()
    out[name] = {"aggregate_error": float((p.sum() - a.sum()) / a.sum()),
                 "per_customer_corr": float(np.corrcoef(p, a)[0, 1]), "active_auc": float(roc_auc_score(a > 0, p))}
print(json.dumps(out))
"""

KEYS = (
    "customers",
    "holdout_repeat_actual",
    "holdout_repeat_predicted",
    "aggregate_error",
    "per_customer_corr",
    "per_customer_mae",
    "active_auc",
    "holdout_value_error",
    "top_decile_value_share",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchor-python", default="/tmp/anchors/bin/python")
    ap.add_argument("--anchor", default=str(ROOT.parent / "shared" / "anchors" / "cdnow_lifetimes.py"))
    ap.add_argument("--replications", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    import tempfile

    import pandas as pd

    from sim.features import summarise
    from sim.history import load_cdnow, merge_same_day
    from sim.validate import validate

    hist = load_cdnow()
    tx, _ = merge_same_day(hist.transactions)
    rows = []
    for ce, he in SPLITS:
        m, art = validate(hist, ce, he, replications=a.replications)
        row = {
            "calibration_end": ce,
            "holdout_end": he,
            "clv": {k: m[k] for k in KEYS}
            | {
                "per_customer_corr_active_weeks": m["per_customer_corr_active_weeks"],
                "calibration_seconds": m["calibration_seconds"],
            },
        }
        if os.path.exists(a.anchor_python) and os.path.exists(a.anchor):
            out = subprocess.run(
                [a.anchor_python, a.anchor, "--calibration-end", ce, "--holdout-end", he, "--json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            row["lifetimes_bgnbd"] = {k: v for k, v in json.loads(out).items() if k in KEYS or k == "fit_seconds"}
            s = summarise(tx, ce, 7.0)
            with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
                pd.DataFrame(
                    {"x": s.x, "t_x": s.t_x, "T": s.T, "actual": art["predictions"]["actual"].to_numpy()}
                ).to_csv(f, index=False)
            out = subprocess.run(
                [a.anchor_python, "-c", SAME_COUNTS, f.name, str(m["holdout_periods"])],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            os.unlink(f.name)
            row["lifetimes_on_clv_day_counts"] = json.loads(out)
        rows.append(row)
        if not a.json:
            print(json.dumps(row))
    if a.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
