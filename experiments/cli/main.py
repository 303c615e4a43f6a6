"""The `clv` command line: every command has --help with an example and --json for scripts.

Heavy libraries (pandas, scipy, torch, ray, ortools) are imported inside the commands, so
`clv --help` and input validation answer fast. With --json, stdout carries exactly one JSON
document; progress and logs go to stderr. Bad input exits with status 2 and one line naming
the file, row and column; nothing is written.

This module is the entry point; the commands live by group in the modules beside it (each
registers its commands on `common.app` when imported; the import order is the order of
`clv --help`), the app and the helpers they share in `common`.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import typer

from .common import OUTPUT_STATE, app, error_line

# the command groups register on `app` when imported; their order is the order of `clv --help`
# isort: off
from . import world, score, agents, plan, budget, offline, readout, jobs  # noqa: F401
# isort: on


DEBUG_ENV = "CLV_DEBUG"  # CLV_DEBUG=1 (or --debug anywhere on the line) prints an internal error's traceback
MESSAGE_LIMIT = 200  # characters of an unexpected error's own message shown


def _usage_or_click(e: Exception) -> int:
    """A usage error or one of click's own (typer's click: reached through typer's public base class
    and the attributes click's exceptions carry), as one line; returns its exit status."""
    code = int(getattr(e, "exit_code", 2))
    if type(e).__name__ == "NoArgsIsHelpError":  # `clv` alone: typer has printed the overview
        return 0
    if hasattr(e, "ctx") and hasattr(e, "format_message"):  # a missing or malformed option
        ctx = e.ctx
        where = ctx.command_path if ctx is not None else "clv"
        error_line(f"{e.format_message()} (see `{where} --help`)")
    elif hasattr(e, "format_message"):
        error_line(e.format_message())
    else:
        error_line(str(e))
    return code


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


# what an allocation that failed asked for, as its library words it: numpy's
# "Unable to allocate 7.45 GiB for an array with shape (1000000000,) and data type int64" and
# Arrow's "malloc of size 8000000000 failed" (its MemoryError subclass); read from the message
# only, the one public thing both carry
_NUMPY_SIZE = re.compile(r"Unable to allocate (\d+(?:\.\d+)? [KMGTPE]?i?B)(?: for an array with shape (\([^)]*\)))?")
_BYTES_SIZE = re.compile(r"(?:malloc|realloc|allocation|allocate) of (?:size )?(\d+)(?: bytes)?", re.IGNORECASE)


def _memory_needed(e: BaseException) -> str:
    """' (one allocation of 7.45 GiB, an array of shape (1000000000,))' when the error says how much
    was asked for, else '' (a bare MemoryError says nothing)."""
    text = str(e)
    m = _NUMPY_SIZE.search(text)
    if m:
        shape = f", an array of shape {_short(m.group(2))}" if m.group(2) else ""
        return f" (one allocation of {m.group(1)}{shape})"
    m = _BYTES_SIZE.search(text)
    if m:
        size = float(m.group(1))
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if size < 1024 or unit == "TiB":
                break
            size /= 1024
        return f" (one allocation of {size:.2f} {unit})" if unit != "B" else f" (one allocation of {int(size)} B)"
    return ""


def run(argv: list[str] | None = None) -> int:
    """Run `clv ARGV` and return its exit status; every way out is one line on stderr at most:
    0 done, 1 an internal error (its type and message, and a request to report it; the traceback
    with --debug or CLV_DEBUG=1), 2 bad input or usage, 3 infeasible, 130 interrupted, 141 the
    reader of stdout went away (e.g. `clv ... --help | head -1`). Arrow objects still referenced by an
    error's traceback are freed here, while Arrow is alive: left to the interpreter's final
    teardown, its reader threads can abort the process (exit 134; apache/arrow#34314)."""
    import gc
    import os

    try:  # typer >= 0.20 carries its own click; its exceptions derive from this public class
        from typer.exceptions import TyperException
    except ImportError:  # pragma: no cover - older typer runs on the public click
        from click import ClickException as TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    json_mode = "--json" in args
    OUTPUT_STATE.update(error=None, emitted=False)
    code: Any = 0
    try:
        code = app(args=args, prog_name="clv", standalone_mode=False) or 0  # click's Exit comes back as its code
        if code == 130:  # typer turns an interrupt inside a command into 130 without a word
            typer.echo("interrupted", err=True)
    except TyperException as e:  # usage errors and click's own exceptions
        code = _usage_or_click(e)
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 1
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 1 and isinstance(e.__context__, BrokenPipeError):
            code = 141  # click ends a write into a closed pipe (e.g. `--help | head -1`) as a silent exit 1
        elif code == 143:  # SIGTERM (experiments.ray_session turns it into SystemExit(143) once out of Ray)
            typer.echo("terminated", err=True)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        code = 130
    except BrokenPipeError:
        try:  # nothing more can reach the reader; keep Python from complaining at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        code = 141
    except MemoryError as e:
        if debug:
            import traceback

            traceback.print_exc()
        error_line(
            f"out of memory{_memory_needed(e)}: the job needs more memory than this machine has free; run it on "
            "fewer customers (--customers where the command has it) or free memory"
        )
        code = 1
    except Exception as e:  # a bug: one line, the traceback only on request
        if debug:
            import traceback

            traceback.print_exc()
        error_line(
            f"internal: {type(e).__name__}: {_short(e)}; please report it"
            + ("" if debug else f" ({DEBUG_ENV}=1 shows the traceback)")
        )
        code = 1
    gc.collect()
    code = int(code)
    if json_mode and code not in (0, 141) and not OUTPUT_STATE["emitted"]:
        # under --json stdout carries one document: a failure's too, for a scheduler that parses it
        message = OUTPUT_STATE["error"] or {130: "interrupted", 143: "terminated"}.get(code, "aborted")
        try:
            sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass
    return code


def main() -> None:  # pragma: no cover - the console script; `run` is what the tests call
    """The `clv` entry point."""
    sys.exit(run())
