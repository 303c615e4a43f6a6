"""Bootstrap intervals of several OPE estimators on the same data, chunked with spawned seeds so
the numbers are the same in-process or on any executor with any number of workers."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .estimators import bootstrap_replicates, make_estimator

BOOT_CHUNK = 100  # resamples per bootstrap task


def _boot_chunk(data, groups, name: str, kw: dict, n_boot: int, seed: int) -> np.ndarray:
    return bootstrap_replicates(make_estimator(name, **kw), data, n_boot, seed, groups)


def bootstrap_intervals(
    jobs: list[tuple[str, dict]],
    data,
    n_boot: int,
    alpha: float,
    seed: int,
    groups: np.ndarray | None,
    executor=None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of several estimators on the same data. Each estimator's resamples are
    split into chunks of BOOT_CHUNK with seeds spawned from `seed`. The chunks run in-process, or
    on `executor`, the caller's: `executor.map(fn, shared, calls, progress)` returns
    `[fn(*shared, *call) for call in calls]` in order (e.g. experiments.ray_session.RayExecutor).
    Same numbers either way."""
    n_chunks = -(-n_boot // BOOT_CHUNK)
    sizes = [min(BOOT_CHUNK, n_boot - k * BOOT_CHUNK) for k in range(n_chunks)]
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_chunks)]
    calls = [(name, kw, b, s) for name, kw in jobs for b, s in zip(sizes, seeds)]
    if executor is None:
        chunks = []
        for call in calls:
            chunks.append(_boot_chunk(data, groups, *call))
            if progress:
                progress(1)
    else:
        chunks = executor.map(_boot_chunk, (data, groups), calls, progress)
    out = {}
    for k, (name, _) in enumerate(jobs):
        reps = np.concatenate(chunks[k * n_chunks : (k + 1) * n_chunks])
        lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
        out[name] = (float(lo), float(hi))
    return out
