"""Running a scenario (`run_scenario`): its cells as Ray tasks (or in-process), resumable, with atomic
per-cell files, the summary over seeds, the optional offline evaluation and the report."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from policies.registry import BASELINE_NAMES
from sim.errors import ConfigError

from .cells import METRICS, PLAN_METRICS, cell_id, file_digest, fingerprints, limit_threads, run_cell, torch_one_thread
from .file import Scenario

OPE_VERSION = 1  # bump when the offline evaluation's numbers change: ope.json is recomputed


# ---- offline evaluation -----------------------------------------------------------------------------
def ope_digest(sc: Scenario, digests: dict[str, str], label: str, policy_path: str) -> str:
    """Short sha256 of everything that decides one policy's offline evaluation."""
    assert sc.ope is not None
    key = {
        "v": OPE_VERSION,
        "world": digests["world"],
        "book": digests.get("book"),
        "history": file_digest(sc.ope["history"]),
        "policy": label if policy_path in BASELINE_NAMES else digests[f"policy:{label}"],
        "settings": {k: v for k, v in sorted(sc.ope.items()) if k != "history"},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def run_ope(sc: Scenario, out: Path, digests: dict[str, str]) -> tuple[Path | None, int]:
    """Write out/ope.json: per policy, `evaluate_offline` on the scenario's history with the policy
    acting in the scenario's world (bootstrap in-process: the same numbers on any machine). A
    policy whose entry in an existing ope.json has the same inputs digest is not evaluated again.
    Returns (path or None without an `ope:` section, policies evaluated)."""
    if sc.ope is None:
        return None, 0
    from sim.atomic import atomic_write_json
    from sim.world import json_safe

    path = out / "ope.json"
    wanted = {label: ope_digest(sc, digests, label, pp) for label, pp in zip(sc.policies, sc.policy_paths)}
    overall = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            prev = json.loads(path.read_text())
            if prev.get("inputs_digest") == overall:
                return path, 0
            old = {
                k: v
                for k, v in (prev.get("policies") or {}).items()
                if isinstance(v, dict) and v.get("inputs_digest") == wanted.get(k)
            }
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            old = {}
    todo = [(label, pp) for label, pp in zip(sc.policies, sc.policy_paths) if label not in old]
    entries: dict[str, Any] = dict(old)
    if todo:
        from experiments.ope import OPESettings, evaluate_offline, logged_decisions
        from policies.registry import resolve_policy
        from sim.history import load_history
        from sim.world import WorldModel

        world = WorldModel.load(sc.world)
        book = world.read_book(sc.world)
        settings = OPESettings(
            **{k: (tuple(v) if k == "estimators" else v) for k, v in sc.ope.items() if k != "history"}
        )
        history = load_history(sc.ope["history"])
        with limit_threads():
            shared = logged_decisions(history, settings.start, settings.end, world, book)
            for label, pp in todo:
                policy = resolve_policy(pp, world)
                torch_one_thread()
                res = evaluate_offline(history, settings, policy=policy, world=world, book=book, logged=shared)
                res.pop("seconds", None)
                res["policy"] = label
                res["inputs_digest"] = wanted[label]
                entries[label] = res
    doc = {
        "scenario": sc.name,
        "history": sc.ope["history"],
        "world": sc.world,
        "settings": {k: v for k, v in sc.ope.items() if k != "history"},
        "inputs_digest": overall,
        "policies": {label: entries[label] for label in sc.policies},
    }
    atomic_write_json(path, json_safe(doc))
    return path, len(todo)


# ---- Ray ----------------------------------------------------------------------------------------
def _cell_task(world_text: str, book, scenario: dict[str, Any], cell: dict[str, Any], running_dir: str):
    """The body of the Ray task: announce the worker's pid in running/<cell_id>.pid, run the cell."""
    from sim.atomic import atomic_write_text

    pid = os.getpid()
    atomic_write_text(Path(running_dir) / f"{cell['cell_id']}.pid", f"{pid}\n")
    t0 = time.perf_counter()
    row, periods = run_cell({"world": world_text, "book": book, "scenario": scenario}, cell)
    return row, periods, {"pid": pid, "host": socket.gethostname(), "seconds": time.perf_counter() - t0}


_REMOTE = None
MAX_RETRIES = 3  # a cell whose worker dies (a kill, the OOM killer) runs again on another, this many times


def _remote():
    global _REMOTE
    if _REMOTE is None:
        import ray

        _REMOTE = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_cell_task)
    return _REMOTE


class CellFailed(RuntimeError):
    """A cell that Ray could not finish: its worker died on every try (killed, out of memory) or its
    node was lost. The message names the cell and what was kept; the cells finished before it are
    in OUT/cells, so a re-run of the same command resumes."""


def _why_lost(e: Exception) -> str:
    """Why Ray gave a cell up (not the cell's own error), in words."""
    import ray

    tries = MAX_RETRIES + 1
    if isinstance(e, ray.exceptions.OutOfMemoryError):
        return f"Ray's memory monitor killed its worker {tries} times: give the cells more memory or fewer workers"
    if isinstance(e, ray.exceptions.WorkerCrashedError):
        return f"its Ray worker died {tries} times (killed, or out of memory?)"
    first = " ".join(str(e).split())[:200]
    return f"Ray could not finish it ({type(e).__name__}: {first})"


def _cell_name(c: dict[str, Any]) -> str:
    budget = "none" if c["budget"] is None else f"{c['budget']:g}"
    return f"cell {c['policy']}/budget {budget}/seed {c['seed']} ({c['cell_id']})"


def _cell_paths(out: Path, cid: str) -> tuple[Path, Path]:
    return out / "cells" / f"{cid}.parquet", out / "cells" / f"{cid}.periods.parquet"


def summarise(results) -> list[dict[str, Any]]:
    """Per policy x budget (in scenario order): mean and 95% interval over seeds of every metric."""
    import numpy as np

    from experiments.evaluate import mean_ci

    out = []
    keys = list(dict.fromkeys(zip(results["policy"], results["budget"].fillna(-1.0))))
    for pol, b in keys:
        bud = results["budget"].isna() if b == -1.0 else results["budget"] == b
        g = results[(results["policy"] == pol) & bud]
        ok = g[g["status"] == "ok"]
        entry: dict[str, Any] = {
            "policy": pol,
            "budget": None if b == -1.0 else float(b),
            "seeds": int(len(g)),
            "infeasible": int((g["status"] != "ok").sum()),
        }
        for m in (*METRICS, *PLAN_METRICS):
            if b == -1.0 and m in PLAN_METRICS:
                continue
            # a column the cells of an earlier version did not write (plan_cash_spend) is unknown
            entry[m] = mean_ci(ok[m].to_numpy(float) if len(ok) and m in ok else np.array([])).to_dict()
        out.append(entry)
    return out


def _run_on_ray(
    sc: Scenario,
    todo: list[dict[str, Any]],
    out: Path,
    address: str | None,
    n_workers: int,
    timings: dict[str, Any],
    timings_ray: dict[str, float],
    progress: Callable[[int], None],
    skipped: int = 0,
    total: int | None = None,
) -> int:
    """Run the cells `todo` as Ray tasks, writing each as it finishes; returns the cluster's CPUs
    (or `n_workers` for a local Ray). Ray is started here unless already running, and then shut down.
    A cell Ray cannot finish (its worker died MAX_RETRIES + 1 times) is a CellFailed naming it, of
    `total` cells (`skipped` done before this run)."""
    import pandas as pd
    import ray

    from sim.atomic import atomic_write_parquet

    from ..ray_session import ray_session

    running = out / "running"
    with ray_session(n_workers, address, timings_ray) as n_workers:
        world_ref = ray.put(Path(sc.world).read_text())
        book_ref = ray.put(pd.read_parquet(sc.book) if sc.book else None)
        scen = sc.to_dict()
        task = _remote()
        # longest first (a budget cell also builds and solves a value table), so that no worker is
        # left with a long cell at the end while the others wait (LPT scheduling); results do
        # not depend on the order
        order = sorted(todo, key=lambda c: c["budget"] is None)
        pending = {task.remote(world_ref, book_ref, scen, c, str(running)): c for c in order}
        finished = 0
        while pending:
            # a second at most inside Ray: SIGINT and SIGTERM are handled in Python, between waits
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                c = pending.pop(ref)
                try:
                    row, periods, timing = ray.get(ref)
                except ray.exceptions.RayError as e:
                    for r in pending:
                        ray.cancel(r, force=True)
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, ConfigError):
                        raise ConfigError(
                            f"cell {c['policy']}/budget {c['budget']}/seed {c['seed']}: {cause}"
                        ) from None
                    if isinstance(e, ray.exceptions.RayTaskError):  # the cell's own error: a bug, as raised
                        raise
                    raise CellFailed(
                        f"{_cell_name(c)}: {_why_lost(e)}; {skipped + finished} of {total or len(todo)} cells "
                        f"are done and kept in {out / 'cells'}: run the same command again to resume"
                    ) from None
                cpath, ppath = _cell_paths(out, c["cell_id"])
                atomic_write_parquet(ppath, periods)
                atomic_write_parquet(cpath, pd.DataFrame([row]))  # the cell file last: it marks done
                (running / f"{c['cell_id']}.pid").unlink(missing_ok=True)
                timings[c["cell_id"]] = timing
                finished += 1
                progress(finished)
    return n_workers


def _run_in_process(
    sc: Scenario, todo: list[dict[str, Any]], out: Path, timings: dict[str, Any], progress: Callable[[int], None]
) -> None:
    """Run the cells `todo` one after the other in this process (no Ray): the same numbers."""
    import pandas as pd

    from sim.atomic import atomic_write_parquet

    spec = {
        "world": Path(sc.world).read_text(),
        "book": pd.read_parquet(sc.book) if sc.book else None,
        "scenario": sc.to_dict(),
    }
    for k, c in enumerate(todo, 1):
        t0 = time.perf_counter()
        row, periods = run_cell(spec, c)
        cpath, ppath = _cell_paths(out, c["cell_id"])
        atomic_write_parquet(ppath, periods)
        atomic_write_parquet(cpath, pd.DataFrame([row]))
        timings[c["cell_id"]] = {"pid": os.getpid(), "host": socket.gethostname(), "seconds": time.perf_counter() - t0}
        progress(k)


def _clear_running(running: Path) -> None:
    """Remove running/ (and the pid files of cells that will not finish: a run that stopped)."""
    for f in running.glob("*.pid"):
        f.unlink(missing_ok=True)
    try:
        running.rmdir()
    except OSError:
        pass


def run_scenario(
    sc: Scenario,
    out: str | Path,
    address: str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every cell of the scenario on Ray and write the outputs into `out`
    (`workers=0`: in this process, one cell after the other, without Ray; same numbers).
    Then the offline evaluation of the `ope:` section (ope.json) and report.html.
    Returns the document `clv scenarios --json` prints."""
    import pandas as pd

    from sim.atomic import atomic_write_json, atomic_write_parquet
    from sim.world import json_safe

    t0 = time.perf_counter()
    out = Path(out).resolve()
    (out / "cells").mkdir(parents=True, exist_ok=True)
    running = out / "running"
    running.mkdir(exist_ok=True)
    digests = fingerprints(sc)
    cells = sc.cells()
    for c in cells:
        c["cell_id"] = cell_id(sc, c, digests)
    todo = [c for c in cells if not all(p.exists() for p in _cell_paths(out, c["cell_id"]))]
    skipped = len(cells) - len(todo)
    timings: dict[str, Any] = {}
    timings_ray: dict[str, float] = {}
    n_workers = workers if workers is not None else os.cpu_count() or 1
    if progress:
        progress(skipped, len(cells))
    try:
        if todo and workers == 0 and address is None:
            _run_in_process(sc, todo, out, timings, lambda k: progress(skipped + k, len(cells)) if progress else None)
        elif todo:
            n_workers = _run_on_ray(
                sc,
                todo,
                out,
                address,
                n_workers,
                timings,
                timings_ray,
                lambda k: progress(skipped + k, len(cells)) if progress else None,
                skipped,
                len(cells),
            )
    finally:  # also when the run stops: no cell runs any more
        _clear_running(running)

    def load(c: dict[str, Any], k: int):
        # a cell done under another scenario (same numbers, another place in the grid or another
        # label for the same policy) takes this scenario's index and label
        return pd.read_parquet(_cell_paths(out, c["cell_id"])[k]).assign(cell_index=c["index"], policy=c["policy"])

    rows = pd.concat([load(c, 0) for c in cells], ignore_index=True)
    periods = pd.concat([load(c, 1) for c in cells], ignore_index=True)
    rows.insert(0, "scenario", sc.name)
    atomic_write_parquet(out / "results.parquet", rows)
    atomic_write_parquet(out / "periods.parquet", periods)
    summary = summarise(rows)
    atomic_write_json(
        out / "summary.json", json_safe({"scenario": sc.name, "cells": len(cells), "by_policy_budget": summary})
    )
    atomic_write_json(out / "scenario.json", json_safe({**sc.to_dict(), "fingerprints": digests}))
    t_ope = time.perf_counter()
    ope_path, ope_run = run_ope(sc, out, digests)
    ope_seconds = time.perf_counter() - t_ope
    seconds = time.perf_counter() - t0
    atomic_write_json(
        out / "timings.json",
        json_safe(
            {
                "seconds": seconds,
                "workers": n_workers,
                "run": len(todo),
                "skipped": skipped,
                **timings_ray,
                "ope_seconds": ope_seconds,
                "ope_policies_run": ope_run,
                "cells": timings,
            }
        ),
    )
    from experiments.reports import write_report

    report = write_report(out)  # last: it links every file above
    seconds = time.perf_counter() - t0
    doc = {
        "scenario": sc.name,
        "out": str(out),
        "cells": len(cells),
        "run": len(todo),
        "skipped": skipped,
        "workers": n_workers,
        "results": str(out / "results.parquet"),
        "periods": str(out / "periods.parquet"),
        "summary": summary,
    }
    if ope_path is not None:
        doc["ope"] = str(ope_path)
        doc["ope_run"] = ope_run
    doc["report"] = str(report)
    doc["seconds"] = round(seconds, 3)
    return doc
