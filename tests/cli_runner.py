"""Run `clv` in-process for the CLI tests: stdout and stderr captured apart."""

from __future__ import annotations

import inspect
import json

from typer.testing import CliRunner

from experiments.cli import app

# click >= 8.2 always keeps stderr apart from stdout and dropped `mix_stderr`; older clicks need it.
if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:  # pragma: no cover - old click
    runner = CliRunner(mix_stderr=False)
else:
    runner = CliRunner()


def clv(*args: object):
    """Run `clv ARGS` in-process; returns the click Result (exit_code, stdout, stderr)."""
    return runner.invoke(app, [str(a) for a in args])


def ok_json(result) -> dict:
    """Assert a --json run succeeded and its stdout is exactly one JSON document; return it."""
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)
    doc = json.loads(result.stdout)  # raises on anything before or after the document
    assert isinstance(doc, dict)
    return doc
