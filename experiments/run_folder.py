"""The run's output folder (`clv run --out OUT`): what a run writes there, the marker of a run in
progress, and clearing an earlier run's outputs before a new one writes."""

from __future__ import annotations

import time
from pathlib import Path

IN_PROGRESS = "RUN_IN_PROGRESS"  # in OUT while a run works; left behind by a run that stopped early
# what a run writes into OUT (this version's and earlier versions'): a new run removes them first,
# so a run that stops early never leaves its outputs beside an older run's; policy/ is kept (an
# agent is reused when its card matches) and history/ is regenerated
RUN_OUTPUTS = (
    "run.json",
    "report.html",
    "evaluation.json",
    "ope.json",
    "frontier.json",
    "frontier.png",
    "contacts.parquet",
    "schedule.parquet",
    "scores.parquet",
    "deployment.csv",
    "plan.json",
    "plan.parquet",
    "values.parquet",
    "validation",
    "world.json",
    "world.book.parquet",
)


def start_run(out: Path, cfg) -> list[str]:
    """Mark OUT as holding a run in progress and remove an earlier run's outputs; returns their names."""
    import shutil

    from sim.atomic import atomic_write_text

    removed: list[str] = []
    earlier = any((out / n).exists() for n in ("run.json", IN_PROGRESS, "world.json"))
    for name in RUN_OUTPUTS if earlier else ():  # a folder that never held a run is left as it is
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(name + "/")
        elif path.exists() or path.is_symlink():
            path.unlink()
            removed.append(name)
    atomic_write_text(
        out / IN_PROGRESS,
        f"clv run {cfg.file} started {time.strftime('%Y-%m-%d %H:%M:%S')}; this file stays if the run stops "
        "early, and the folder then holds an unfinished run\n",
    )
    return removed
