"""Ray for clv-engine's parallel work (scenario cells, bootstrap resamples): one place that starts a
local Ray or joins the user's cluster, keeps stdout clean for `--json`, and stops what it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from sim.errors import ConfigError

CONNECT_TIMEOUT = 60.0  # seconds a cluster named by an address has to answer (clv's --connect-timeout)
_SETTINGS = {"connect_timeout": CONNECT_TIMEOUT}


def set_connect_timeout(seconds: float) -> None:
    """The connect timeout of the sessions started from now on without one of their own."""
    _SETTINGS["connect_timeout"] = float(seconds)


def _unreachable(address: str, timeout: float, why: str | None = None) -> ConfigError:
    return ConfigError(
        "address",
        (why or f"no Ray cluster answered within {timeout:g} s")
        + "; start one with `ray start --head` or drop {key:address}",
        value=address,
    )


def _host_port(address: str) -> tuple[str, int] | None:
    """Where a cluster address (`host:port`, `ray://host:port`, `[v6]:port`; `auto` through
    RAY_ADDRESS) listens, when it says so."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if address in ("", "auto", "local"):
            return None
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _wait_for_port(address: str, timeout: float, deadline: float) -> None:
    """Wait until the cluster's port takes a TCP connection, retrying until `deadline`: a cluster
    that is not up never reaches ray.init, whose own retries last minutes and log every attempt."""
    target = _host_port(address)
    if target is None:
        return
    while True:
        try:
            socket.getaddrinfo(target[0], target[1])
        except socket.gaierror:
            raise _unreachable(address, timeout, f"the host {target[0]} is not known") from None
        try:
            with socket.create_connection(target, timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return
        except OSError:
            if time.monotonic() + 0.5 >= deadline:
                raise _unreachable(address, timeout) from None
            time.sleep(0.5)


def check_address(address: str | None, connect_timeout: float | None = None) -> None:
    """Fail early, in one line, when a cluster named by `address` does not take a connection
    within the connect timeout: for commands whose Ray session starts only late in their work
    (`clv ope` starts it for the bootstrap). A TCP probe; Ray is not started."""
    if not address or address == "local":
        return
    timeout = _SETTINGS["connect_timeout"] if connect_timeout is None else float(connect_timeout)
    _wait_for_port(address, timeout, time.monotonic() + timeout)


def _join(address: str, timeout: float, kw: dict[str, Any]) -> None:
    """ray.init(address) within `timeout` seconds, or a ConfigError naming the address. ray.init
    runs in a thread that is left behind when it does not return in time (its retries cannot be
    stopped from outside); the command then ends with the error."""
    import ray

    deadline = time.monotonic() + timeout
    _wait_for_port(address, timeout, deadline)
    box: dict[str, BaseException] = {}

    def connect() -> None:
        try:
            ray.init(address=address, **kw)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=connect, name="ray-connect", daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if t.is_alive():
        if _host_port(address) is None:
            raise _unreachable(address, timeout)
        raise ConfigError(
            "address",
            f"the port answers but Ray did not connect within {timeout:g} s (see Ray's lines above; a cluster "
            "with token authentication needs RAY_AUTH_MODE=token and its token here)",
            value=address,
        )
    if "error" in box:
        e = box["error"]
        if isinstance(e, ConnectionError):  # e.g. `auto` with no cluster on this machine
            raise _unreachable(address, timeout, "no running Ray cluster was found") from None
        raise e


def _start_watchdog() -> subprocess.Popen | None:
    """experiments/ray_watchdog.py watching this process (Linux): it kills the local Ray's
    processes when this process dies without stopping them (SIGKILL). None where there is no /proc."""
    if not Path("/proc/self/stat").exists():
        return None
    script = Path(__file__).with_name("ray_watchdog.py")
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", str(script), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError:  # no watchdog: Ray's own fate-sharing still stops the gcs_server and the raylet
        return None


def _stop_watchdog(watchdog: subprocess.Popen | None) -> None:
    """Close the watchdog's pipe: it kills what is left of this session's Ray (normally nothing) and ends."""
    if watchdog is None:
        return
    try:
        watchdog.stdin.close()
        watchdog.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        watchdog.kill()


_SIGNALLED = {"terminated": False}


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM while Ray runs: unwind as an interrupt, which ray_session turns into SystemExit(143)
    once out of Ray. (Ray turns a SystemExit raised inside its waits into a bare exit status 1, and
    hands an interrupt on as a plain KeyboardInterrupt: hence the flag.)"""
    _SIGNALLED["terminated"] = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def ray_session(
    workers: int | None = None,
    address: str | None = None,
    timings: dict[str, float] | None = None,
    connect_timeout: float | None = None,
) -> Iterator[int]:
    """Yield the number of CPUs tasks can use while Ray runs.

    Joins the cluster at `address` when given, waiting at most `connect_timeout` seconds (default:
    `set_connect_timeout`, 60) for it to answer, else a ConfigError naming the address. Otherwise
    starts a NEW local Ray with `workers` CPUs (all cores when None): `address="local"`, so a cluster
    file left by an earlier `ray start` is never joined by accident; it is stopped on every way out
    of the block (an error, SIGINT, SIGTERM: then SystemExit(143)), and a watchdog process
    (experiments/ray_watchdog.py) kills its processes at once if this process is SIGKILLed.
    When Ray already runs in this process it is used as it is and left running. Ray's own messages
    (e.g. "a worker died") go to stderr, so stdout keeps the one JSON document of a `--json`
    command. `timings` receives ray_init_seconds and ray_shutdown_seconds."""
    import ray

    join = bool(address) and address != "local"
    timeout = _SETTINGS["connect_timeout"] if connect_timeout is None else float(connect_timeout)
    with contextlib.redirect_stdout(sys.stderr):
        started = False
        watchdog = None
        main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        old_term = signal.getsignal(signal.SIGTERM) if main else None
        t0 = time.perf_counter()
        try:
            if not ray.is_initialized():
                kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
                if join:
                    _join(address, timeout, kw)
                else:
                    watchdog = _start_watchdog()
                    ray.init(address="local", num_cpus=workers, **kw)
                started = True
                if main:  # after ray.init, which sets a handler of its own (exit status 15)
                    signal.signal(signal.SIGTERM, _terminated)
            if timings is not None:
                timings["ray_init_seconds"] = time.perf_counter() - t0
            cpus = workers if workers and not join else int(ray.cluster_resources().get("CPU", workers or 1))
            _SIGNALLED["terminated"] = False
            try:
                yield cpus
            except KeyboardInterrupt:
                if _SIGNALLED["terminated"]:
                    raise SystemExit(128 + signal.SIGTERM) from None
                raise
        finally:
            try:
                if started:
                    t1 = time.perf_counter()
                    ray.shutdown()
                    if timings is not None:
                        timings["ray_shutdown_seconds"] = time.perf_counter() - t1
            finally:
                if main:  # ray.init's handler, or ours, no longer applies
                    signal.signal(signal.SIGTERM, old_term if old_term is not None else signal.SIG_DFL)
                _stop_watchdog(watchdog)


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
                    # a second at most inside Ray: SIGINT and SIGTERM are handled in Python, between waits
                    done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                    if not done:
                        continue
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
