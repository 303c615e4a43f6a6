"""Benchmark: calibration time on CDNOW beside lifetimes (same run), and a 1M-customer /
20M-transaction book end to end (`clv calibrate` in a subprocess: load + calibrate, peak RSS).

    python benchmarks/bench_calibration.py --anchor-python /tmp/anchors/bin/python --json

The lifetimes anchor (../shared/anchors/cdnow_lifetimes.py) needs its own throwaway venv:
python -m venv /tmp/anchors && /tmp/anchors/bin/pip install lifetimes scikit-learn
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cdnow_times(repeats: int) -> dict:
    from sim.btyd import fit_pareto_nbd
    from sim.calibrate import calibrate
    from sim.features import summarise
    from sim.history import load_cdnow, merge_same_day

    hist = load_cdnow()
    ce = "1997-09-30"
    prep_fit, full = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tx, _ = merge_same_day(hist.transactions)
        s = summarise(tx, ce, 7.0)
        fit_pareto_nbd(s.x, s.t_x, s.T)
        prep_fit.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        calibrate(hist, ce)
        full.append(time.perf_counter() - t0)
    return {"clv_prep_fit_seconds": statistics.median(prep_fit), "clv_full_calibrate_seconds": statistics.median(full)}


def anchor_times(python: str, anchor: str, repeats: int) -> float | None:
    if not (python and os.path.exists(python) and os.path.exists(anchor)):
        return None
    out = []
    for _ in range(repeats):
        doc = json.loads(subprocess.run([python, anchor, "--json"], capture_output=True, text=True, check=True).stdout)
        out.append(doc["fit_seconds"])
    return statistics.median(out)


def make_big_history(folder: Path, customers: int, transactions: int, seed: int = 0) -> None:
    """A synthetic book in Parquet: Pareto/NBD-like customers, two years of daily transactions."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.8, 1.0, customers)
    n = rng.multinomial(transactions - customers, lam / lam.sum()) + 1
    cid = np.repeat(np.arange(customers), n)
    birth = rng.integers(0, 365, customers)
    day = birth[cid] + (rng.random(cid.size) * (730 - birth[cid])).astype(np.int64)
    dates = np.datetime64("2022-01-01") + day.astype("timedelta64[D]")
    df = pd.DataFrame(
        {
            "customer_id": np.char.add("C", cid.astype(str)),
            "date": dates,
            "amount": np.round(rng.gamma(2.0, 30.0, cid.size), 2),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    df.to_parquet(folder / "transactions.parquet", index=False)


def _run_child(cmd: list[str]) -> tuple[str, str, int, float]:
    """Run a child process; return (stdout, stderr, peak RSS in KiB of that child alone, wall s).
    os.wait4 gives the child's own rusage (RUSAGE_CHILDREN would report the largest child ever)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        o, e = out.read(), err.read()
    if p.returncode != 0:
        raise RuntimeError(e[-2000:])
    return o, e, usage.ru_maxrss, wall


def big_book(customers: int, transactions: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "big"
        # generated in a child so this process stays small: a fork copies the parent's resident
        # pages into the child's peak RSS before it execs
        _run_child(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
                f"from bench_calibration import make_big_history as m; from pathlib import Path; "
                f"m(Path({str(folder)!r}), {customers}, {transactions})",
            ]
        )
        out, _, rss_kb, wall = _run_child(
            [
                sys.executable,
                "-m",
                "experiments.cli",
                "calibrate",
                str(folder),
                "--calibration-end",
                "2023-12-31",
                "--out",
                str(Path(tmp) / "world.json"),
                "--json",
            ]
        )
        doc = json.loads(out)
        return {
            "customers": customers,
            "transactions": transactions,
            "wall_seconds_load_and_calibrate": wall,
            "calibrate_seconds": doc["seconds"],
            "peak_rss_gb": rss_kb / 1024**2,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchor-python", default="/tmp/anchors/bin/python")
    ap.add_argument("--anchor", default=str(ROOT.parent / "shared" / "anchors" / "cdnow_lifetimes.py"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--big-customers", type=int, default=1_000_000)
    ap.add_argument("--big-transactions", type=int, default=20_000_000)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    doc = {"cdnow": cdnow_times(a.repeats)}
    anc = anchor_times(a.anchor_python, a.anchor, a.repeats)
    if anc is not None:
        doc["cdnow"]["lifetimes_prep_fit_seconds"] = anc
        doc["cdnow"]["ratio_prep_fit_vs_lifetimes"] = doc["cdnow"]["clv_prep_fit_seconds"] / anc
        doc["cdnow"]["ratio_full_vs_lifetimes"] = doc["cdnow"]["clv_full_calibrate_seconds"] / anc
    if not a.skip_big:
        doc["big"] = big_book(a.big_customers, a.big_transactions)
    print(json.dumps(doc, indent=2) if a.json else doc)


if __name__ == "__main__":
    main()
