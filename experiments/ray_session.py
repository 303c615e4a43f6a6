"""Ray for clv-engine's parallel work (scenario cells, bootstrap resamples): one place that starts a
local Ray or joins the user's cluster, keeps stdout clean for `--json`, and stops what it started.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def ray_session(
    workers: int | None = None, address: str | None = None, timings: dict[str, float] | None = None
) -> Iterator[int]:
    """Yield the number of CPUs tasks can use while Ray runs.

    Joins the cluster at `address` when given; otherwise starts a NEW local Ray with `workers`
    CPUs (all cores when None): `address="local"`, so a cluster file left by an earlier
    `ray start` is never joined by accident. When Ray already runs in this process it is used as
    it is and left running. Ray's own messages (e.g. "a worker died") go to stderr, so stdout
    keeps the one JSON document of a `--json` command. `timings` receives ray_init_seconds and
    ray_shutdown_seconds."""
    import ray

    with contextlib.redirect_stdout(sys.stderr):
        started = False
        t0 = time.perf_counter()
        try:
            if not ray.is_initialized():
                kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
                if address:
                    ray.init(address=address, **kw)
                else:
                    ray.init(address="local", num_cpus=workers, **kw)
                started = True
            if timings is not None:
                timings["ray_init_seconds"] = time.perf_counter() - t0
            cpus = workers if workers and not address else int(ray.cluster_resources().get("CPU", workers or 1))
            yield cpus
        finally:
            if started:
                t1 = time.perf_counter()
                ray.shutdown()
                if timings is not None:
                    timings["ray_shutdown_seconds"] = time.perf_counter() - t1


class RayExecutor:
    """Runs a library's independent calls as Ray tasks: `map(fn, shared, calls, progress)` returns
    `[fn(*shared, *call) for call in calls]` in the order of `calls`. `shared` (large arrays used by
    every call) goes to the object store once. Each map runs in its own `ray_session` (a local Ray
    with `workers` CPUs, or the cluster at `address`). Libraries such as experiments.ope take it
    as their `executor` and know nothing of Ray."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, max_retries: int = 3):
        self.workers, self.address, self.max_retries = workers, address, max_retries

    def map(
        self, fn: Callable[..., Any], shared: tuple, calls: list[tuple], progress: Callable[[int], None] | None = None
    ) -> list[Any]:
        import ray

        with ray_session(self.workers, self.address):
            task = ray.remote(num_cpus=1, max_retries=self.max_retries)(fn)
            shared_refs = [ray.put(x) for x in shared]
            refs = [task.remote(*shared_refs, *call) for call in calls]
            position = {ref: i for i, ref in enumerate(refs)}
            results: list[Any] = [None] * len(refs)
            pending = list(refs)
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref, value in zip(done, ray.get(done)):  # a task's error surfaces as soon as it is known
                        results[position[ref]] = value
                    if progress:
                        progress(len(done))
                return results
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, Exception):  # the task's own error (e.g. an infeasible period), as raised
                    raise cause from None
                raise


def executor_for(workers: int | None, address: str | None = None) -> RayExecutor | None:
    """The executor a command's `--workers N --address A` ask for: None (in-process) for 0 workers."""
    return None if workers == 0 else RayExecutor(workers, address)


@contextlib.contextmanager
def executor_session(workers: int | None, address: str | None = None) -> Iterator[RayExecutor | None]:
    """`executor_for(workers, address)` with its Ray running for the block (one session for every
    map inside it); None, and no Ray, for 0 workers."""
    executor = executor_for(workers, address)
    if executor is None:
        yield None
        return
    with ray_session(workers, address):
        yield executor
