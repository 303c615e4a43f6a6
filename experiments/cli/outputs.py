"""The one check every command makes before any work that what it writes never lands on one of its
inputs: a history folder's tables, a world and its book, a value table, a deployment file, a trained
policy's model and card, a config or scenario file (`common._check_out` calls it for every output
option); and a generator never writes over a history the user made. Light to import."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional

HISTORY_FILES = tuple(
    f"{t}.{ext}" for t in ("transactions", "customers", "products", "decisions") for ext in ("csv", "parquet")
) + ("actions.yaml", "economics.yaml", "stages.yaml", "README.json")
POLICY_FILES = ("model.zip", "card.json")  # what `clv train` writes, read by every --policy FOLDER
# a folder given as an input holds these inputs (a history folder, or a `clv train` folder)
FOLDER_INPUTS = HISTORY_FILES + POLICY_FILES
# what the commands with an output folder write into it
VALIDATION_FILES = (
    "validation.json",
    "tracking.png",
    "tracking.csv",
    "conditional_expectation.csv",
    "predictions.parquet",
    "early_warning_deciles.csv",
    "world.json",
    "world.book.parquet",
)
PLAN_FILES = ("contacts.parquet", "schedule.parquet", "plan.json", "deployment.csv", "frontier.json", "frontier.png")
SCENARIO_FILES = (
    "results.parquet",
    "periods.parquet",
    "summary.json",
    "timings.json",
    "scenario.json",
    "ope.json",
    "report.html",
)


def world_files(world_path: Optional[Path]) -> tuple[Path, ...]:
    """A world JSON and the book it names (read from the JSON's `book_file`; without loading the
    world, so that the check stays cheap)."""
    if world_path is None:
        return ()
    p = Path(world_path)
    try:
        book = json.loads(p.read_text()).get("book_file")
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        book = None
    return (p, p.parent / book) if isinstance(book, str) and book else (p,)


def _same(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():  # through symbolic links
            return True
    except (OSError, RuntimeError):  # a symbolic link that loops: not our output; the reader names it
        return False
    try:  # a hard link, or another spelling of the same file
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _input_files(inputs: Iterable) -> list[Path]:
    files: list[Path] = []
    for given in inputs:
        if given is None or str(given) == "":
            continue
        src = Path(given)
        if src.is_dir():
            files += [src / n for n in FOLDER_INPUTS]  # even one not there yet: written, it would be read
        elif src.exists():
            files += world_files(src) if src.suffix.lower() == ".json" else [src]  # a world brings its book
    return files


def output_over_input(outputs: Iterable[Path], inputs: Iterable) -> Optional[Path]:
    """The first of `outputs` (paths a command writes) that is one of `inputs` (files, a world JSON
    with its book, or folders: their FOLDER_INPUTS), or None. Inputs that do not exist (a baseline's name) are no files."""
    files = _input_files(inputs)
    for out in outputs:
        if any(_same(Path(out), f) for f in files):
            return Path(out)
    return None


def outputs_of(path: Path, folder: bool, writes: Iterable[str]) -> list[Path]:
    """Every path written for an output option: `path` itself, and `writes` (names) inside it when
    it is a folder, beside it when it is a file."""
    p = Path(path)
    base = p if folder else p.parent
    return [p, *(base / n for n in writes)]


def check_not_users_history(folder: Path, option: str = "--out") -> None:
    """A generator never writes into a folder holding history tables that clv did not generate
    (its README.json names the generator): they are the user's."""
    from sim.errors import ConfigError

    p = Path(folder)
    mine = [n for n in HISTORY_FILES if n != "README.json" and (p / n).exists()] if p.is_dir() else []
    try:  # sim.synthetic and sim.engagement_hmm name themselves in README.json
        generated = bool(json.loads((p / "README.json").read_text()).get("generator"))
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        generated = False
    if mine and not generated:
        raise ConfigError(
            f"{option} {p}: holds {mine[0]}, which clv did not generate; it would be overwritten. Give another "
            "folder, or move it"
        )


__all__ = [
    "check_not_users_history",
    "FOLDER_INPUTS",
    "HISTORY_FILES",
    "PLAN_FILES",
    "POLICY_FILES",
    "SCENARIO_FILES",
    "VALIDATION_FILES",
    "output_over_input",
    "outputs_of",
    "world_files",
]
