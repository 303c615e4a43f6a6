"""Memory with long customer ids: the peak RSS of `clv calibrate` on a history of 100,000 customers
whose ids are 200 characters long, beside its twin with 7-character ids (the same rows otherwise:
200,000 transactions 2023-01-02 to 2024-12-29, customers.csv with signup_date and segment, 20,000
decisions, 5,000 product opens, examples/my_bank's actions.yaml and economics.yaml).

    python benchmarks/bench_long_ids.py --out /tmp/long_ids [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
CUSTOMERS, TRANSACTIONS, DECISIONS, OPENS = 100_000, 200_000, 20_000, 5_000


def write_history(folder: Path, id_format: str) -> None:
    """The benchmark history with ids `id_format % i` (seeded: both twins get the same rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("actions.yaml", "economics.yaml"):
        shutil.copy(ROOT / "examples" / "my_bank" / f, folder / f)
    rng = np.random.default_rng(0)
    ids = np.array([id_format % i for i in range(CUSTOMERS)], dtype=object)
    who = np.r_[np.arange(CUSTOMERS), rng.integers(0, CUSTOMERS, TRANSACTIONS - CUSTOMERS)]
    day = pd.Timestamp("2023-01-02") + pd.to_timedelta(rng.integers(0, 728, TRANSACTIONS), unit="D")
    tx = pd.DataFrame(
        {
            "customer_id": ids[who],
            "date": day.strftime("%Y-%m-%d"),
            "amount": np.round(rng.gamma(2, 30, TRANSACTIONS), 2),
        }
    )
    tx.to_csv(folder / "transactions.csv", index=False)
    first = tx.groupby("customer_id")["date"].min()
    segment = rng.choice(["mass", "affluent", "young_digital"], CUSTOMERS)
    pd.DataFrame({"customer_id": ids, "signup_date": first.reindex(ids).to_numpy(), "segment": segment}).to_csv(
        folder / "customers.csv", index=False
    )
    actions = [a["name"] for a in yaml.safe_load((folder / "actions.yaml").read_text())["actions"]]
    who = rng.choice(CUSTOMERS, DECISIONS, replace=False)
    day = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 150, DECISIONS), unit="D")
    pd.DataFrame(
        {
            "customer_id": ids[who],
            "date": day.strftime("%Y-%m-%d"),
            "action": rng.choice(actions, DECISIONS),
            "propensity": 0.2,
        }
    ).to_csv(folder / "decisions.csv", index=False)
    who = rng.choice(CUSTOMERS, OPENS, replace=False)
    day = pd.Timestamp("2023-06-01") + pd.to_timedelta(rng.integers(0, 300, OPENS), unit="D")
    pd.DataFrame(
        {"customer_id": ids[who], "date": day.strftime("%Y-%m-%d"), "product": "credit_card", "event": "open"}
    ).to_csv(folder / "products.csv", index=False)


def peak_rss_mb(history: Path, out: Path) -> float:
    """Peak resident memory of `clv calibrate HISTORY` (GNU time's maximum resident set size)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "experiments.cli", "calibrate", str(history)]
    cmd += ["--calibration-end", "2024-06-30", "--out", str(out / "world.json"), "--json"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"clv calibrate {history} failed: {r.stderr.strip().splitlines()[-1:]}")
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return int(kb.group(1)) / 1024 if kb else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    doc = {}
    for name, fmt in (("ids_200_characters", "C%0199d"), ("ids_7_characters", "C%06d")):
        write_history(a.out / name / "history", fmt)
        doc[name] = [
            round(peak_rss_mb(a.out / name / "history", a.out / name / f"world{k}"), 1) for k in range(a.repeats)
        ]
    print(json.dumps({"peak_rss_mb": doc}, indent=2) if a.json else "\n".join(f"{k}: {v} MB" for k, v in doc.items()))


if __name__ == "__main__":
    main()
