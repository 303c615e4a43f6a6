"""Shared fixtures: one small calibrated bank world for the env, policy and evaluation tests."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def calibrated_world(tmp_path_factory) -> tuple[Path, object]:
    """(world JSON path, WorldModel) calibrated on a small synthetic bank history (its book beside it)."""
    from sim.atomic import atomic_path
    from sim.calibrate import calibrate
    from sim.synthetic import BankConfig, generate_bank_history

    hist, _ = generate_bank_history(BankConfig(customers=800, weeks=80, seed=5))
    world, book, _ = calibrate(hist, "2023-06-30", seed=0)
    out = tmp_path_factory.mktemp("world") / "world.json"
    world.book_file = "world.book.parquet"
    with atomic_path(out.parent / world.book_file) as tmp:
        book.to_parquet(tmp, index=False)
    world.save(out)
    return out, world
