"""The run's output folder (`clv run --out OUT`): what a run writes there, the marker of a run in
progress, clearing an earlier run's outputs before a new one writes, a generated history staged
beside OUT/history until the run's checks pass, and removing what a run wrote when it fails on a
user error (`RunWrites.undo`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
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


def _remove(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return True
    if path.exists() or path.is_symlink():
        path.unlink()
        return True
    return False


def start_run(out: Path, cfg) -> list[str]:
    """Mark OUT as holding a run in progress and remove an earlier run's outputs; returns their names."""
    from sim.atomic import atomic_write_text

    removed: list[str] = []
    earlier = any((out / n).exists() for n in ("run.json", IN_PROGRESS, "world.json"))
    for name in RUN_OUTPUTS if earlier else ():  # a folder that never held a run is left as it is
        is_dir = (out / name).is_dir() and not (out / name).is_symlink()
        if _remove(out / name):
            removed.append(name + ("/" if is_dir else ""))
    atomic_write_text(
        out / IN_PROGRESS,
        f"clv run {cfg.file} started {time.strftime('%Y-%m-%d %H:%M:%S')}; this file stays if the run stops "
        "early, and the folder then holds an unfinished run\n",
    )
    return removed


def generated(folder: Path) -> bool:
    """Whether `folder` is a history clv-engine generated (its README.json names the generator)."""
    try:
        return json.loads((folder / "README.json").read_text()).get("generator", "").startswith("clv-engine")
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class RunWrites:
    """What one `clv run` has written into OUT, so that a run failing on a user error (exit 2)
    leaves nothing new behind. Before `started` only the generated history's staging folder
    exists; after it, every RUN_OUTPUTS entry in OUT is this run's (start_run removed the earlier
    run's)."""

    out: Path
    new_dirs: list[Path] = field(default_factory=list)  # OUT and the parents this run creates, OUT first
    started: bool = False
    staging: Path | None = None  # a generated history waiting to become OUT/history
    new_history: bool = False  # OUT/history did not exist before this run
    new_policy: bool = False  # OUT/policy did not exist before this run

    @classmethod
    def begin(cls, out: Path) -> "RunWrites":
        missing = []
        d = out
        while not d.exists() and d != d.parent:
            missing.append(d)
            d = d.parent
        return cls(out, missing, new_history=not (out / "history").exists(), new_policy=not (out / "policy").exists())

    def stage_history(self) -> Path:
        """A new temp folder beside OUT/history to generate the history into (named for this
        process, so a killed run's is removed by the next: sim.atomic.clean_stale_temp)."""
        from sim.atomic import temp_prefix

        self.out.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=temp_prefix("history"), suffix=".tmp", dir=self.out))
        return self.staging

    def commit_history(self) -> None:
        """Move the staged history to OUT/history (an earlier generated one is replaced: a kill in
        between leaves no history, which the next run generates again)."""
        if self.staging is None:
            return
        from sim.atomic import _umask

        final = self.out / "history"
        os.chmod(self.staging, 0o777 & ~_umask())  # mkdtemp makes it 0700
        _remove(final)
        os.replace(self.staging, final)
        self.staging = None

    def undo(self) -> list[str]:
        """Remove what this run wrote (and OUT itself when this run created it and it is empty);
        returns the names removed."""
        removed: list[str] = []
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if self.started:
            names = list(RUN_OUTPUTS) + [IN_PROGRESS]
            names += ["policy"] if self.new_policy else []
            names += ["history"] if self.new_history else []
            removed = [n for n in names if _remove(self.out / n)]
        for d in self.new_dirs:  # innermost first; only folders left empty
            try:
                d.rmdir()
            except OSError:
                break
        return removed
