"""Coverage of the stratified read-out (experiments/readout_strata.py) on a known lift: the case of
tests/test_readout_strata.py (segments of 400 customers with control shares 10 % and 50 %, outcome
levels about 200 and 20, true lift 2.5 per customer), over many seeds, beside the pooled difference
in means that the stratification replaces.

Command: .venv/bin/python benchmarks/bench_readout_strata.py [--seeds 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test's case generator

from test_readout_strata import draw_case, outcomes_frame, true_lift  # noqa: E402

from experiments import readout_strata as rs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    truth = true_lift()
    keys = {"difference_in_means": "difference_in_means", "cuped": "cuped"}
    means = {k: [] for k in keys}
    covered = dict.fromkeys(keys, 0)
    widths = {k: [] for k in keys}
    pooled = []
    for seed in range(args.seeds):
        case = draw_case(seed)
        frame = outcomes_frame(case)
        est = rs.contrast(frame, case["assigned"], case["segment"])
        for k in keys:
            e = est[k]
            means[k].append(e["mean"])
            covered[k] += e["ci_low"] <= truth <= e["ci_high"]
            widths[k].append(e["ci_high"] - e["ci_low"])
        y, t = frame["outcome"].to_numpy(), case["assigned"]
        pooled.append(y[t].mean() - y[~t].mean())
    doc = {"seeds": args.seeds, "true_lift": truth, "pooled_mean_error": float(np.mean(pooled) - truth)}
    for k in keys:
        a = np.asarray(means[k])
        doc[k] = {
            "coverage": covered[k] / args.seeds,
            "mean_error": float(a.mean() - truth),
            "mean_error_se": float(a.std(ddof=1) / np.sqrt(args.seeds)),
            "median_width": float(np.median(widths[k])),
        }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    for k in keys:
        d = doc[k]
        print(
            f"stratified {k}: coverage {d['coverage']:.3f}, mean error {d['mean_error']:+.3f} "
            f"± {d['mean_error_se']:.3f}, median width {d['median_width']:.2f}"
        )
    print(f"pooled difference in means: mean error {doc['pooled_mean_error']:+.2f} (true lift {truth})")


if __name__ == "__main__":
    main()
