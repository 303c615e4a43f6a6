"""Median wall time of the BG/NBD, Pareto/NBD and Gamma-Gamma fits on the full CDNOW master file.

Usage: python benchmarks/bench_btyd_fit.py [--runs 5]

Calibration summary: same-day purchases merged, first purchase = birth, repeat purchases up to
1997-09-30, times in weeks (23,570 customers). Each timed call includes input validation and
`compress` (the fits run on the unique (x, t_x, T) rows) and the standard errors.
"""
from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.btyd import compress, fit_bg_nbd, fit_pareto_nbd  # noqa: E402
from sim.spend import fit_gamma_gamma  # noqa: E402


def cdnow_calibration(end: str = "1997-09-30"):
    """(x, t_x, T, monetary) per customer; t_x, T in weeks (days/7)."""
    with gzip.open(ROOT / "sim" / "data" / "CDNOW_master.txt.gz", "rt") as fh:
        df = pd.read_csv(fh, sep=r"\s+", dtype={"customer_id": np.int64, "date": str})
    day = pd.to_datetime(df["date"], format="%Y%m%d").to_numpy().astype("datetime64[D]").astype(np.int64)
    ukey, inv = np.unique(df["customer_id"].to_numpy() * (1 << 20) + day, return_inverse=True)
    value = np.bincount(inv, weights=df["dollar_value"].to_numpy())
    c, d = ukey >> 20, ukey & ((1 << 20) - 1)
    _, first_idx, ci = np.unique(c, return_index=True, return_inverse=True)
    first = d[first_idx]
    end_day = np.datetime64(end, "D").astype(np.int64)
    cal = d <= end_day
    n = first.size
    x = np.bincount(ci[cal], minlength=n) - 1.0
    last = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last, ci[cal], d[cal])
    rep = cal & (d > first[ci])
    monetary = np.where(x > 0, np.bincount(ci[rep], weights=value[rep], minlength=n) / np.maximum(x, 1.0), 0.0)
    return x, (last - first) / 7.0, (end_day - first) / 7.0, monetary


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
        print(f"{name:12s} median {statistics.median(times):.3f} s  (min {min(times):.3f}, max {max(times):.3f}); "
              f"{info.iterations} iterations, LL {info.loglik:.4f}; {params}")


if __name__ == "__main__":
    main()
