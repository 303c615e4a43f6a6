"""The synthetic bank at a large bank's scale: the book generated in customer blocks, each block
written as one part of a partitioned Parquet history (`clv make-data --format parquet`).

Customers of the generating world are independent (the logging policy has no capacity shared
between customers), so a book of N customers is generated as blocks of `BLOCK` customers, block
k a `sim.synthetic` run of its own with a seed drawn from `SeedSequence(seed, spawn_key=(k,))`
and ids numbered after the blocks before it. The blocks are fixed by N and the seed alone, so
the files are the same whichever way the blocks are run (in-process or as Ray tasks on any
number of workers). Memory is one block's (about 2-3 GB a block of 250,000 customers over a
year), whatever N.

Layout (what `sim.history.load_history` reads as a history folder; a warehouse export of the
same tables has the same shape):

    OUT/transactions/part-00000.parquet ...    customer_id, date, amount, channel
    OUT/customers/part-00000.parquet ...       customer_id, signup_date, segment, age_band, region
    OUT/products/part-00000.parquet ...        customer_id, date, product, event
    OUT/decisions/part-00000.parquet ...       customer_id, date, action, propensity, cost
    OUT/truth_customers/part-*.parquet, OUT/truth_decisions/part-*.parquet   (the truth, as for CSV)
    OUT/actions.yaml, economics.yaml, stages.yaml, truth.json, README.json (written last)

Every part is written atomically; README.json, written after every part, marks the history
complete.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from .atomic import atomic_path, atomic_write_json, atomic_write_text

BLOCK = 250_000  # customers per block: one block's run fits in a few GB
TABLES = ("transactions", "customers", "products", "decisions")
TRUTH_TABLES = ("truth_customers", "truth_decisions")


def blocks(customers: int, block: int = BLOCK) -> list[tuple[int, int, int]]:
    """(block index, first customer, customers) of every block of a book of `customers`."""
    return [(k, lo, min(block, customers - lo)) for k, lo in enumerate(range(0, customers, block))]


def block_config(cfg, k: int, first: int, n: int):
    """The BankConfig of block k: its own customers, ids after the blocks before it, a seed of its own."""
    seed = int(np.random.SeedSequence(cfg.seed, spawn_key=(k,)).generate_state(1, np.uint32)[0])
    digits = max(6, len(str(max(cfg.customers - 1, 0))))
    return replace(cfg, customers=n, seed=seed, id_offset=first, id_digits=digits)


def _part(name: str, k: int) -> str:
    return f"{name}/part-{k:05d}.parquet"


def write_block(cfg_dict: dict, out: str, k: int, first: int, n: int) -> dict[str, int]:
    """Generate block k and write its parts; returns its row counts. A Ray task (plain arguments)."""
    import pandas as pd

    from .synthetic import BankConfig, generate_bank_history

    cfg = block_config(BankConfig(**cfg_dict), k, first, n)
    hist, truth = generate_bank_history(cfg)
    frames = {
        "transactions": hist.transactions,
        "customers": hist.customers,
        "products": hist.products,
        "decisions": hist.decisions,
        "truth_customers": truth["customers"],
        "truth_decisions": truth["decision_rewards"],
    }
    counts = {}
    for name, df in frames.items():
        df = df.copy()
        for col in ("date", "signup_date"):
            if col in df and pd.api.types.is_datetime64_any_dtype(df[col]):
                df[col] = df[col].dt.date  # a calendar date (Parquet date32), as a warehouse exports it
        with atomic_path(Path(out) / _part(name, k)) as tmp:
            df.to_parquet(tmp, index=False)
        counts[name] = len(df)
    return counts


def write_bank_parts(
    out: str | Path,
    cfg,
    block: int = BLOCK,
    executor=None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write the synthetic bank of `cfg.customers` customers as a partitioned Parquet history in
    `out` (the module docstring's layout), the blocks in-process or on `executor` (anything with
    experiments.ray_session.RayExecutor's `map`). Returns the summary `clv make-data` prints."""
    from .synthetic import TRUE_STAGE_RULES, truth_world

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = blocks(cfg.customers, block)
    shared = (asdict(cfg), str(out))
    calls = [(k, lo, n) for k, lo, n in parts]
    if executor is None:
        counts = []
        for call in calls:
            counts.append(write_block(*shared, *call))
            if progress:
                progress(1)
    else:
        counts = executor.map(write_block, shared, calls, progress)
    world = truth_world(cfg)  # the generating world does not depend on the customers
    atomic_write_text(out / "actions.yaml", yaml.safe_dump({"actions": world.catalogue.to_list()}, sort_keys=False))
    atomic_write_text(out / "economics.yaml", yaml.safe_dump(world.economics.to_dict(), sort_keys=False))
    atomic_write_text(out / "stages.yaml", yaml.safe_dump(asdict(TRUE_STAGE_RULES), sort_keys=False))
    world.save(out / "truth.json")
    total = {name: int(sum(c[name] for c in counts)) for name in (*TABLES, *TRUTH_TABLES)}
    atomic_write_json(
        out / "README.json",
        {
            "generator": "clv-engine sim.bank_parts",
            "config": asdict(cfg),
            "format": "parquet",
            "block": int(block),
            "blocks": len(parts),
            "rows": total,
            "files": [f"{name}/part-*.parquet" for name in (*TABLES, *TRUTH_TABLES)]
            + ["actions.yaml", "economics.yaml", "stages.yaml", "truth.json"],
            "note": "A partitioned history: each table is a folder of Parquet parts, one per block of "
            f"{block:,} customers (block k generated with its own seed from SeedSequence(seed, spawn_key=(k,))). "
            "truth.json is the world that generated it; truth_customers/ and truth_decisions/ as for a CSV "
            "history (sim.synthetic.write_bank_history).",
        },
    )
    import pandas as pd

    return {
        "out": str(out),
        "format": "parquet",
        "customers": int(cfg.customers),
        "weeks": cfg.weeks,
        "transactions": total["transactions"],
        "products_events": total["products"],
        "decisions": total["decisions"],
        "start": cfg.start,
        "end": str((pd.Timestamp(cfg.start) + pd.Timedelta(days=7 * cfg.weeks - 1)).date()),
        "seed": cfg.seed,
        "blocks": len(parts),
        "block": int(block),
    }
