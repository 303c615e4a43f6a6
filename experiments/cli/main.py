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

import sys
from typing import Any

import typer

from .common import app

# the command groups register on `app` when imported; their order is the order of `clv --help`
# isort: off
from . import world, agents, plan, offline, jobs  # noqa: F401
# isort: on


def main() -> None:  # pragma: no cover
    """The `clv` entry point. Arrow objects still referenced by an error's traceback are freed here,
    while Arrow is alive: left to the interpreter's final teardown, its reader threads can abort
    the process (exit 134 instead of the error's exit status; apache/arrow#34314)."""
    import gc

    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as cx
    code: Any = 0
    try:
        code = app(standalone_mode=False) or 0  # click's Exit (typer.Exit, --help) comes back as its code
    except cx.NoArgsIsHelpError as e:  # `clv` alone: typer has printed the overview while raising this
        code = e.exit_code
    except cx.UsageError as e:  # a missing or malformed option: one line, like every other error
        where = e.ctx.command_path if e.ctx is not None else "clv"
        typer.echo(f"error: {e.format_message()} (see `{where} --help`)", err=True)
        code = e.exit_code
    except cx.ClickException as e:
        e.show()
        code = e.exit_code
    except typer.Abort:  # public: typer's click copy has no Abort of its own
        typer.echo("aborted", err=True)
        code = 1
    except SystemExit as e:
        code = e.code
    gc.collect()
    sys.exit(code)
