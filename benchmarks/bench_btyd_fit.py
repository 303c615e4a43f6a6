"""Median wall time of the BG/NBD, Pareto/NBD and Gamma-Gamma fits on the full CDNOW master file.

Usage: python benchmarks/bench_btyd_fit.py [--runs 5]

Calibration summary: same-day purchases merged, first purchase = birth, repeat purchases up to
1997-09-30, times in weeks (23,570 customers). Each timed call includes input validation and
`compress` (the fits run on the unique (x, t_x, T) rows) and the standard errors.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.btyd import compress, fit_bg_nbd, fit_pareto_nbd  # noqa: E402
from sim.spend import fit_gamma_gamma  # noqa: E402


def cdnow_calibration(end: str = "1997-09-30"):
    """(x, t_x, T, monetary) per customer of the bundled CDNOW master file, through the project's
    own loader and summary (same-day purchases merged; times in weeks = days / 7)."""
    from sim.features import summarise
    from sim.history import load_cdnow, merge_same_day

    tx, _ = merge_same_day(load_cdnow().transactions)
    s = summarise(tx, end, 7.0)
    return s.x, s.t_x, s.T, s.spend_mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    x, t_x, T, monetary = cdnow_calibration()
    n_unique = compress(x, t_x, T)[0].size
    print(f"CDNOW calibration: {x.size} customers, {n_unique} unique (x, t_x, T) rows; median of {args.runs} runs")
    jobs = [
        ("BG/NBD", lambda: fit_bg_nbd(x, t_x, T)),
        ("Pareto/NBD", lambda: fit_pareto_nbd(x, t_x, T)),
        ("Gamma-Gamma", lambda: fit_gamma_gamma(x, monetary)),
    ]
    for name, job in jobs:
        job()  # warm-up (imports, first-call overheads)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            model, info = job()
            times.append(time.perf_counter() - t0)
        params = ", ".join(f"{k}={v:.6g}" for k, v in model.to_dict().items() if k != "model")
        print(
            f"{name:12s} median {statistics.median(times):.3f} s  (min {min(times):.3f}, max {max(times):.3f}); "
            f"{info.iterations} iterations, LL {info.loglik:.4f}; {params}"
        )


if __name__ == "__main__":
    main()
