"""What the `clv` commands share: error rendering and exit codes, the --json document, progress
bars, the cheap checks on inputs and outputs made before anything heavy is imported, and the
options several commands take. Light to import: typer and the standard library only."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="clv-engine: calibrate customer worlds from history, simulate them, and plan "
    "interventions. Run `clv COMMAND --help` for each command.",
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("clv-engine")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
            v = "unknown (not installed)"
        typer.echo(f"clv-engine {v}")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_show_version, help="Show clv-engine's version and exit."
    ),
) -> None:
    """clv-engine: calibrate customer worlds from history, simulate them, and plan interventions.
    Run `clv COMMAND --help` for each command."""
    STARTED[0] = time.perf_counter()


STARTED = [time.perf_counter()]  # when the command started: the clock of the progress lines (reset per command)


def stamp() -> str:
    """`[  12.3 s]`: the seconds since the command started, in front of a progress or log line."""
    return f"[{time.perf_counter() - STARTED[0]:7.1f} s]"


EXIT_INPUT = 2
EXIT_INFEASIBLE = 3
# copies of their owners' names, so that --help and the first checks import nothing heavy
# (tests/test_cli_help.py checks that they equal sim.datasets.NAMES and policies.registry.BASELINE_NAMES)
DATASETS = ("cdnow", "bank")
BASELINE_NAMES = ("none", "random", "bau", "churn_threshold", "greedy_uplift")


# settings whose command-line option is not the setting's name with "-" for "_"
OPTION_NAMES = {"n_boot": "--bootstrap"}


def option_name(key: str) -> str:
    """How the command line calls the setting `key` (ConfigError.key): `reward_model` -> `--reward-model`."""
    return OPTION_NAMES.get(key) or "--" + key.replace("_", "-")


ERROR_LIMIT = 1000  # characters of an error line: a 2 MB value quoted in a message is cut, not printed
# characters of any one word of an error line: a value quoted from a user's file (a 1 MB
# `channel:` in actions.yaml) is one word of no spaces; prose and paths are far shorter
VALUE_LIMIT = 200


# what this process has said: the last error line, and whether a --json document reached stdout
# (main.run then gives an error its JSON document too, so a scheduler parsing stdout sees it)
OUTPUT_STATE: dict[str, Any] = {"error": None, "emitted": False}


def error_line(text: str) -> None:
    """Say one error line on stderr ("error: TEXT") and remember it for the --json error document."""
    OUTPUT_STATE["error"] = text
    typer.echo(f"error: {text}", err=True)


def _err(msg: str, code: int = EXIT_INPUT) -> None:
    import re

    msg = " ".join(str(msg).split())
    msg = re.sub(r"\S{%d,}" % (VALUE_LIMIT + 1), lambda m: m.group()[:VALUE_LIMIT] + "…", msg)
    if len(msg) > ERROR_LIMIT:
        msg = msg[:ERROR_LIMIT] + "… (cut)"
    error_line(msg)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn known input errors into one line on stderr and exit status 2."""
    from sim.errors import ClvError, ConfigError

    try:
        yield
    except ConfigError as e:
        _err(e.about(option_name))
    except ClvError as e:
        _err(str(e))
    except BrokenPipeError:  # the reader of stdout went away: not the user's input (main.run ends it)
        raise
    except FileNotFoundError as e:
        _err(f"{e.filename}: not found")
    except OSError as e:  # e.g. --out under an existing file, or a folder without write permission
        _err(f"{e.filename}: {e.strerror}" if e.filename else str(e))


@contextmanager
def _infeasible(as_json: bool) -> Iterator[None]:
    """An infeasible problem: the diagnosis on stderr (one line), as JSON on stdout with --json, exit 3."""
    from optimizer.diagnose import InfeasibleError

    try:
        yield
    except InfeasibleError as e:
        if as_json:
            _emit({"status": "infeasible", **e.diagnosis.to_dict()}, True, "")
        _err(str(e), EXIT_INFEASIBLE)


def _emit(doc: dict[str, Any], as_json: bool, human: str) -> None:
    if as_json:
        from sim.world import json_safe  # NaN/inf become null: the document stays valid JSON

        sys.stdout.write(json.dumps(json_safe(doc), indent=2, default=_json_default, allow_nan=False) + "\n")
        OUTPUT_STATE["emitted"] = True
    else:
        typer.echo(human)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


class _ProgressLines:
    """Progress as lines on stderr, for a stderr that is not a terminal (cron, CI, a log file):
    `[  12.3 s] DESCRIPTION: 3/8 (37 %)` when another tenth of the work is done and
    `DESCRIPTION: done` when all is; when the work is named by steps (`clv run`), the same per step
    (`[  40.1 s] calibration: done`), a step being done at the latest when the next one starts."""

    def __init__(self, description: str, total: int):
        self.description, self.total = description, total
        self.step: str | None = None
        self.tenth = -1
        self.finished = False  # the current step (or the whole, without steps) said "done"

    def say(self, text: str) -> None:
        sys.stderr.write(f"{stamp()} {text}\n")
        sys.stderr.flush()

    def update(self, done: int, tot: int | None = None, step: str | None = None) -> None:
        total = tot or self.total
        if step is not None and step != self.step:
            if self.step is not None and not self.finished:
                self.say(f"{self.step}: done")
            self.step, self.tenth, self.finished = step, -1, False
        label = self.step or self.description
        if done >= total:
            if not self.finished:
                self.finished = True
                self.say(f"{label}: done")
            return
        tenth = int(10 * done / total) if total > 0 else 0
        if tenth > self.tenth:
            self.tenth = tenth
            self.say(f"{label}: {done:,}/{total:,} ({100 * done // total} %)")

    def close(self) -> None:
        if self.step is not None:
            if not self.finished:
                self.say(f"{self.step}: done")
            self.say(f"{self.description}: done")
        elif not self.finished:
            self.say(f"{self.description}: done")


@contextmanager
def _progress(description: str, total: int, enabled: bool = True):
    """Progress on stderr; yields `update(done, total=None, step=None)` (`step`: the name of the
    part of the work `done` and `total` count). A rich bar when stderr is a terminal; otherwise
    (cron, CI, a log file) a line per tenth and per step with the seconds since the command started,
    never a bar's carriage returns."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not enabled:
        yield lambda done, tot=None, step=None: None
        return
    if not console.is_terminal:
        lines = _ProgressLines(description, total)
        yield lines.update
        lines.close()  # not after an error: its one line is the last word
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=total)

        def update(done: int, tot: int | None = None, step: str | None = None) -> None:
            prog.update(
                task,
                completed=done,
                total=tot or total,
                description=description if step is None else f"{description}: {step}",
            )

        yield update


def _set_connect_timeout(value: float) -> float:
    from experiments.ray_session import set_connect_timeout

    set_connect_timeout(value)
    return value


def _check_out(
    path: Optional[Path], option: str = "--out", folder: bool = False, inputs: tuple = (), writes: tuple = ()
) -> None:
    """Fail before any work when an output path cannot be written (a parent is a file, or the
    nearest existing folder is not writable) or would write over an input: one of `inputs` (files,
    or history and policy folders, whose data files are then inputs; outputs.py). `writes`: the
    names of the files written inside the folder `path` (or beside the file `path`)."""
    import os

    from sim.errors import ConfigError

    from .outputs import output_over_input, outputs_of

    if path is None:
        return
    p = Path(path)
    hit = output_over_input(outputs_of(p, folder, writes), inputs)
    if hit is not None:
        what = "is an input of this command" if hit == p else f"would write {hit}, an input of this command"
        raise ConfigError(f"{option} {p}: {what}; write the output somewhere else")
    if folder and p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {p}: exists and is not a folder")
    if not folder and p.is_dir():
        raise ConfigError(f"{option} {p}: is a folder; give a file name")
    parent = p if folder else p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {p}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{option} {p}: {parent} is not writable")


def _check_source(history_dir: Optional[Path], dataset: Optional[str]) -> None:
    """The cheap checks on where the history comes from, before anything heavy is imported."""
    from sim.errors import ConfigError, HistoryError

    if (history_dir is None) == (dataset is None):
        _err("give exactly one of HISTORY_DIR or --dataset NAME (" + ", ".join(DATASETS) + ")")
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; bundled: {', '.join(DATASETS)}")
    if history_dir is not None and not Path(history_dir).is_dir():
        raise HistoryError(
            str(history_dir),
            None,
            None,
            "history folder not found; give the folder that holds transactions.csv, or --dataset " + "|".join(DATASETS),
        )


def _load(history_dir: Optional[Path], dataset: Optional[str]):
    _check_source(history_dir, dataset)
    from sim.datasets import load_dataset
    from sim.history import load_history

    if dataset is not None:
        return load_dataset(dataset)
    return load_history(history_dir)


def _check_world(world_path: Path) -> None:
    from sim.errors import ConfigError

    if not Path(world_path).is_file():
        raise ConfigError(
            f"{world_path}: world file not found; create one with `clv calibrate`"
            if not Path(world_path).exists()
            else f"{world_path}: is a folder, not a world JSON file; pass the .json that `clv calibrate` wrote"
        )


def _load_world(world_path: Path, population: str, world=None):
    """(world, book or None) for --population book|new; `world`: the one at `world_path`, when
    already loaded."""
    from sim.errors import ConfigError
    from sim.world import WorldModel

    world = WorldModel.load(world_path) if world is None else world
    if population == "new":
        return world, None
    bp = world.book_path(world_path)
    if bp is None or not bp.exists():
        raise ConfigError(f"{world_path}: its book ({bp}) is missing; use --population new or recalibrate")
    return world, world.read_book(world_path)


def _date(text: str, option: str) -> str:
    """A calendar date as YYYY-MM-DD (experiments.config.read_date: YYYY-MM-DD, YYYYMMDD or an ISO
    date-time); checked without pandas so that bad options are answered at once."""
    from experiments.config import read_date

    d = read_date(text or "")
    if d is None:
        _err(f"{option}: {text!r} is not a date (use YYYY-MM-DD)")
    return d


def _names(text: str) -> tuple[str, ...]:
    """The names of a comma-separated option, e.g. --estimators dm,ips."""
    return tuple(e.strip() for e in text.split(",") if e.strip())


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write a result document (NaN/inf as null) atomically: the --out of ope, backtest, evaluate."""
    from sim.atomic import atomic_write_json
    from sim.world import json_safe

    atomic_write_json(path, json_safe(doc))


HistoryArg = typer.Argument(
    None,
    help="History folder holding transactions.csv or .parquet (optionally "
    "customers, products, decisions, actions.yaml, economics.yaml, stages.yaml).",
    show_default=False,
)
DatasetOpt = typer.Option(None, "--dataset", help="Bundled dataset instead of a folder: cdnow or bank.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout (logs go to stderr).")
ConnectTimeoutOpt = typer.Option(
    60.0,  # experiments.ray_session.CONNECT_TIMEOUT
    "--connect-timeout",
    min=1.0,
    metavar="SECONDS",
    callback=_set_connect_timeout,
    help="With --address: how long the cluster has to answer; then one line and exit status 2.",
)
