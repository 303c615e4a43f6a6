"""Every `clv` command has --help with an example, and the example parses as written.

The commands are read from the app, so a new command fails here until it has an example."""

from __future__ import annotations

import shlex

import pytest
import typer
from cli_runner import clv

from experiments.cli import app

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)


def _example(name: str) -> str:
    """The command line after 'Example: ' in the command's docstring."""
    lines = [ln.strip() for ln in (GROUP.commands[name].help or "").splitlines() if ln.strip().startswith("Example:")]
    assert len(lines) == 1, f"clv {name}: expected one 'Example:' line in its docstring, found {len(lines)}"
    return lines[0][len("Example:") :].strip()


def test_commands_are_found():
    assert {"make-data", "calibrate", "simulate", "allocate", "scenarios"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_an_example(name):
    r = clv(name, "--help")
    assert r.exit_code == 0, (r.exit_code, r.stderr)
    assert f"Example: clv {name}" in r.stdout, r.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_example_parses(name):
    """The example's options exist, its values have the right types and ranges, and every
    required option is given: click parses it without running the command."""
    argv = shlex.split(_example(name))
    assert argv[:2] == ["clv", name], argv
    cmd = GROUP.commands[name]
    try:
        ctx = cmd.make_context(f"clv {name}", argv[2:])
    except Exception as e:  # a usage error (typer vendors its own click, so not click.UsageError)
        pytest.fail(f"clv {name} example does not parse: {getattr(e, 'format_message', e.__str__)()}")
    assert ctx.params, argv


@pytest.mark.parametrize(
    "args, message",
    [
        (["simulat"], "error: No such command 'simulat'. Did you mean 'simulate'?"),
        (["simulate", "w.json"], "error: Missing option '--out'."),
        (["simulate", "w.json", "--out", "x.parquet", "--periods", "0"], "error: Invalid value for '--periods'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, message):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "experiments.cli", *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(message)
    assert r.stderr.strip().endswith(" --help`)")  # and where to read more


def test_the_clis_name_copies_equal_their_owners():
    """The CLI keeps copies of a few name lists so that --help imports nothing heavy; they must not drift."""
    from experiments.cli.common import BASELINE_NAMES, DATASETS
    from policies.registry import BASELINE_NAMES as OWNER_BASELINES
    from sim.datasets import NAMES

    assert DATASETS == NAMES
    assert BASELINE_NAMES == OWNER_BASELINES


def test_the_clis_option_defaults_and_help_name_their_owners_values():
    """Option defaults and the choices a help text lists are the owners' (a renamed estimator,
    model or algorithm fails here rather than in a user's script)."""
    from experiments.ope import DEFAULT_ESTIMATORS, ONE_STEP, SEQUENTIAL
    from experiments.ope.models import REWARD_MODELS
    from policies.rl import ALGOS
    from sim.world import ACTIVITY_MODELS

    def option(command: str, name: str):
        return next(p for p in GROUP.commands[command].params if name in getattr(p, "opts", ()))

    for cmd in ("ope", "backtest"):
        est = option(cmd, "--estimators")
        assert est.default == ",".join(DEFAULT_ESTIMATORS)
        assert all(e in est.help for e in ONE_STEP)
        rm = option(cmd, "--reward-model")
        assert rm.default in REWARD_MODELS and all(m in rm.help for m in REWARD_MODELS)
    assert all(e in option("ope", "--estimators").help for e in SEQUENTIAL)
    for cmd in ("calibrate", "validate"):
        am = option(cmd, "--activity-model")
        assert am.default == ACTIVITY_MODELS[0] and all(m in am.help for m in ACTIVITY_MODELS)
    algo = option("train", "--algo")
    assert algo.default in ALGOS and all(a in algo.help for a in ALGOS)
