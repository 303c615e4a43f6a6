"""Every way out of `clv` is one line (experiments.cli.main.run): internal errors, interrupts, a
closed pipe, memory exhaustion and usage errors, as a table of (what goes wrong, exit status,
the line); and YAML a user wrote that would expand, nest or decode badly is refused in one line
(sim.user_yaml), as a table of (file, content, message)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from experiments.cli.main import MESSAGE_LIMIT, run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _raise(exc):
    def boom(*a, **k):
        raise exc

    return boom


@pytest.mark.parametrize(
    "exc, code, starts",
    [
        (RuntimeError("x" * 5000), 1, "error: internal: RuntimeError: xxx"),
        (KeyError("segment"), 1, "error: internal: KeyError: 'segment'; please report it"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (MemoryError(), 1, "error: out of memory:"),
        (BrokenPipeError(), 141, ""),
    ],
)
def test_whatever_goes_wrong_is_one_line(monkeypatch, tmp_path, capsys, exc, code, starts):
    import sim.synthetic

    monkeypatch.delenv("CLV_DEBUG", raising=False)
    monkeypatch.setattr(sim.synthetic, "write_bank_history", _raise(exc))
    got = run(["make-data", "--customers", "50", "--weeks", "30", "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err.strip()
    assert got == code
    if starts:
        assert len(err.splitlines()) == 1 and err.startswith(starts) and "Traceback" not in err
        assert len(err) < MESSAGE_LIMIT + 150  # a huge message is cut
    else:
        assert err == ""


def test_the_traceback_only_on_request(monkeypatch, tmp_path, capsys):
    import sim.synthetic

    monkeypatch.setattr(sim.synthetic, "write_bank_history", _raise(ValueError("bad")))
    monkeypatch.setenv("CLV_DEBUG", "1")
    assert run(["make-data", "--out", str(tmp_path / "h")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: internal: ValueError: bad")
    monkeypatch.delenv("CLV_DEBUG")
    assert run(["make-data", "--out", str(tmp_path / "h"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, code, line",
    [
        ([], 0, None),  # `clv` alone: the overview, exit 0
        (["calibrate"], 2, "error: Missing option '--calibration-end'. (see `clv calibrate --help`)"),
        (["no-such-command"], 2, "error: No such command 'no-such-command'. (see `clv --help`)"),
        (
            ["plan", "w.json", "--horizon", "0", "--budget", "5", "--out", "p"],
            2,
            "error: Invalid value for '--horizon'",
        ),
    ],
)
def test_usage(capsys, argv, code, line):
    assert run(argv) == code
    err = capsys.readouterr().err.strip()
    if line is None:
        assert err == ""
    else:
        assert len(err.splitlines()) == 1 and err.startswith(line)


# ---- YAML a user wrote ---------------------------------------------------------------------------
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n"
DEEP = "a: " + "[" * 60 + "]" * 60 + "\n"
# a 1 MB value where a name, number or date belongs: the error quotes it cut at 200 characters
# (experiments.cli.common.VALUE_LIMIT) and says so at once; a megabyte of it is no work to refuse
HUGE = "z" * 1_000_000
HUGE_SECONDS = 3.0  # an ordinary refusal here takes 0.6-0.9 s in-process (calibrate loads my_bank first)
HUGE_RUN = (
    f"name: t\nhistory: {{path: {EXAMPLES / 'my_bank'}}}\ncalibration_end: 2024-06-30\nbudgets: [100]\nbudget: 100\n"
)


def _huge_is_cut(err: str) -> bool:
    """Of the huge value at most 200 characters are quoted (its validator may cut it shorter, or
    say only what it is, "got a list"), and the whole line stays short."""
    return "z" * 201 not in err and len(err) < 1_200


@pytest.mark.parametrize(
    "file, content, message",
    [
        (
            "actions.yaml",
            "- {name: sms, channel: sms, cost: &c 1.0}\n- {name: push, channel: push, cost: *c}\n",
            "alias (*c)",
        ),
        ("economics.yaml", BOMB, "alias (*a) is not accepted"),
        ("economics.yaml", b"period: w\xe9ek\n", "not UTF-8 text"),
        ("stages.yaml", DEEP, "nested more than 40 levels"),
        ("stages.yaml", "new_periods: [13\n", "not valid YAML"),
        ("economics.yaml", "period: [week]\n", "column 'period': must be one of"),
        ("economics.yaml", "product_margin_per_period: {savings: .inf}\n", "must be finite, got inf"),
        ("actions.yaml", "- {name: sms, channel: sms, cost: 1, eligible_stages: 5}\n", "expected a list of stages"),
        ("actions.yaml", "- {name: sms, channel: [sms, email], cost: 1}\n", "'channel': must be one name"),
        ("actions.yaml", "- {name: sms, channel: {a: 1}, cost: 1}\n", "got a mapping"),
        ("actions.yaml", "- {name: sms, offer: [x], cost: 1}\n", "'offer': must be one name"),
        ("actions.yaml", "- {name: 5, channel: sms, cost: 1}\n", "'name': must be a name (text), got 5"),
        ("actions.yaml", "- {name: sms, channel: sms, cost: yes}\n", "'cost': not a number"),
        ("actions.yaml", "- {name: sms, channel: sms, cost: 1, eligible_stages: [new, 3]}\n", "list of stages"),
        ("stages.yaml", "new_periods: 60\nmature_periods: 52\n", "'mature_periods': 52 must be above new_periods"),
        ("stages.yaml", "dormant_after: 20\nchurned_after: 10\n", "'churned_after': 10 must be above dormant_after"),
        # huge values (issue 18: never repr a huge value into a message)
        ("actions.yaml", f"- {{name: sms, channel: sms, cost: {HUGE}}}\n", "row 1, column 'cost': not a number: 'zzz"),
        ("actions.yaml", f"- {{name: sms, channel: sms, cost: 1, eligible_stages: [{HUGE}]}}\n", "unknown stage 'zzz"),
        ("actions.yaml", f"- {{name: sms, channel: [{HUGE}], cost: 1}}\n", "'channel': must be one name"),
        # names are labels: at most 256 characters (sim.catalogue.MAX_NAME_LENGTH)
        ("actions.yaml", f"- {{name: {HUGE}, channel: sms, cost: 1}}\n", "row 1, column 'name': 'zzz"),
        ("actions.yaml", f"- {{name: sms, channel: {HUGE}, cost: 1}}\n", "row 1, column 'channel': 'zzz"),
        ("economics.yaml", f"period: {HUGE}\n", "column 'period': must be one of"),
        ("economics.yaml", f"currency: {HUGE}\n", "column 'currency': expected a short name"),
        ("stages.yaml", f"new_periods: {HUGE}\n", "'new_periods': must be a whole number of periods >= 1, got 'zzz"),
    ],
    ids=lambda v: (v[:60] + "...[1 MB]") if isinstance(v, str) and len(v) > 1000 else None,
)
def test_history_side_files_that_cannot_be_read_are_one_line(tmp_path, capsys, file, content, message):
    hist = tmp_path / "hist"
    shutil.copytree(EXAMPLES / "my_bank", hist)
    (hist / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    t0 = time.perf_counter()
    code = run(["calibrate", str(hist), "--calibration-end", "2024-06-30", "--out", str(tmp_path / "w.json")])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and file in err and message in err, err[:2000]
    assert seconds < 30 and not (tmp_path / "w.json").exists()
    if HUGE in content if isinstance(content, str) else False:
        assert _huge_is_cut(err), err[:2000]
        assert seconds < HUGE_SECONDS, f"{seconds:.1f} s to refuse a 1 MB value"


@pytest.mark.parametrize(
    "content, message",
    [
        (BOMB, "line 2: an alias (*a) is not accepted"),
        (DEEP, "nested more than 40 levels"),
        (b"name: \xff\xfe\n", "not UTF-8 text"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: t\ncalibration_end: 2024-13-45\n", "line 2: '2024-13-45' cannot be read (month must be in 1..12)"),
        # huge values: the config is otherwise good (my_bank, its dates, budgets), so the key with the
        # megabyte is the one refused
        (HUGE_RUN.replace("2024-06-30", HUGE), "calibration_end: 'zzz"),
        (HUGE_RUN.replace("budget: 100", f"budget: {HUGE}"), "budget: expected a number > 0, got 'zzz"),
        (HUGE_RUN + f"policy: {{algo: {HUGE}}}\n", "policy.algo: unknown algorithm 'zzz"),
        (HUGE_RUN + f"compare: [{HUGE}]\n", "compare[0]: unknown baseline 'zzz"),
        (HUGE_RUN + f"constraints: {{capacity: [{HUGE}]}}\n", "constraints.capacity[0]:"),
        # a 1 MB name (it names runs/NAME) and history.path: refused at their keys before the file
        # system is asked (experiments/run_config.py: NAME_MAX, PATH_MAX)
        pytest.param(
            HUGE_RUN.replace("name: t", f"name: {HUGE}"),
            "name: 'zzz",
        ),
        pytest.param(
            HUGE_RUN.replace(str(EXAMPLES / "my_bank"), "/tmp/" + HUGE[:5000]),
            "history.path:",
        ),
    ],
    ids=lambda v: (v[:40] + "...[1 MB]") if isinstance(v, str) and len(v) > 1000 else None,
)
def test_run_configs_that_cannot_be_read_are_one_line(tmp_path, capsys, monkeypatch, content, message):
    path = tmp_path / "run.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)  # the name case writes to ./runs/NAME when it gets that far
    huge = isinstance(content, str) and "z" * 1000 in content
    t0 = time.perf_counter()
    code = run(
        ["run", str(path)] if huge and "name: zzz" in content else ["run", str(path), "--out", str(tmp_path / "out")]
    )
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err and message in err, err[:2000]
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    if huge:
        assert _huge_is_cut(err), err[:2000]
        assert seconds < HUGE_SECONDS, f"{seconds:.1f} s to refuse a 1 MB value"


def test_ordinary_yaml_still_reads_as_before():
    from sim.user_yaml import load_yaml_text

    text = (EXAMPLES / "bank_demo.yaml").read_text()
    assert load_yaml_text(text) == yaml.safe_load(text)


def test_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.startswith("clv-engine ")


def test_a_calibration_end_after_the_history_is_refused(tmp_path, capsys):
    """Every customer would look gone since the last transaction (P(alive) near 0 for all, exit 0
    before): refused in one line naming the option."""
    code = run(
        ["calibrate", str(EXAMPLES / "my_bank"), "--calibration-end", "2030-01-01", "--out", str(tmp_path / "w.json")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --calibration-end 2030-01-01: is after the last transaction (")
    assert not (tmp_path / "w.json").exists()


def test_outputs_honour_the_umask(tmp_path, monkeypatch):
    """Colleagues can open what clv writes: files get the permissions any new file gets (mkstemp's
    0600 before)."""
    import sim.atomic

    atomic_write_text = sim.atomic.atomic_write_text
    for mask, mode in ((0o022, 0o644), (0o002, 0o664)):
        monkeypatch.setattr(sim.atomic, "_UMASK", mask)  # the process's umask, as read at import
        atomic_write_text(tmp_path / "report.html", "<p>x</p>")
        assert (tmp_path / "report.html").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(segments=[]), "segments: a world needs at least one segment"),
        (lambda d: d["catalogue"].append(dict(d["catalogue"][1])), "is given twice"),
        (lambda d: d["economics"].update(period="fortnight"), "bad field (period must be one of"),
        (lambda d: d.pop("stage_rules"), "world file is missing or has a bad field"),
    ],
)
def test_hand_edited_worlds_are_one_line(calibrated_world, tmp_path, capsys, change, message):
    """`segments: []` made `clv simulate` loop for ever; a damaged world must be refused in one line."""
    import json

    path, _ = calibrated_world
    d = json.loads(Path(path).read_text())
    change(d)
    bad = tmp_path / "world.json"
    bad.write_text(json.dumps(d))
    t0 = time.perf_counter()
    out = str(tmp_path / "sim.parquet")
    code = run(
        ["simulate", str(bad), "--population", "new", "--customers", "50", "--periods", "4", "--out", out, "--json"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert time.perf_counter() - t0 < 30


def test_the_world_hash_is_content_not_location(tmp_path):
    """A trained agent is reused when its card's world hash matches: moving the history (or the
    run folder) must not change the hash."""
    from sim.calibrate import calibrate
    from sim.history import load_history

    hashes = []
    for where in ("a", "b/deeper"):
        folder = tmp_path / where / "hist"
        shutil.copytree(EXAMPLES / "my_bank", folder)
        world, _, _ = calibrate(load_history(folder), "2024-06-30", seed=0)
        hashes.append(world.hash())
    assert hashes[0] == hashes[1]


def test_an_output_never_overwrites_an_input(tmp_path, calibrated_world, capsys):
    hist = tmp_path / "hist"
    shutil.copytree(EXAMPLES / "my_bank", hist)
    before = (hist / "transactions.csv").read_bytes()
    code = run(["calibrate", str(hist), "--calibration-end", "2024-06-30", "--out", str(hist / "transactions.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is an input of this command" in err and (hist / "transactions.csv").read_bytes() == before
    world, _ = calibrated_world
    book = Path(world).parent / "world.book.parquet"
    size = book.stat().st_size
    code = run(["simulate", str(world), "--periods", "2", "--out", str(book)])
    assert code == 2 and "is an input of this command" in capsys.readouterr().err and book.stat().st_size == size


@pytest.mark.parametrize(
    "setting, message",
    [
        ("learning_rate=-1", "--set: learning_rate must be in (0, 1], got -1"),
        ("gamma=0", "gamma must be in (0, 1]"),
        ("n_envs=0", "n_envs must be in [1, "),
        ("n_epochs=1.5", "n_epochs must be a whole number"),
        ("learning_rate=nan", "learning_rate must be finite"),
        ("net_arch=64", "net_arch must be a list of layer widths"),
        ("normalize_reward=3", "normalize_reward must be true or false"),
        ("reward=bogus", "reward must be expected or sampled"),
        ("warm_start=bogus", "warm_start must be a baseline"),
    ],
)
def test_hyperparameters_out_of_range_are_one_line_before_any_work(
    calibrated_world, tmp_path, capsys, setting, message
):
    out = tmp_path / "agent"
    code = run(
        ["train", str(calibrated_world[0]), "--algo", "ppo", "--steps", "1000", "--set", setting, "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def _book_edit(kind):
    import pandas as pd

    def edit(path):
        if kind == "garbage":
            path.write_bytes(b"not parquet")
            return
        b = pd.read_parquet(path)
        if kind == "no_column":
            b = b.drop(columns=["lam_shape"])
        elif kind == "segment":
            b.loc[3, "segment"] = 99
        elif kind == "p_alive":
            b.loc[2, "p_alive"] = 1.5
        elif kind == "shape":
            b.loc[4, "mu_shape"] = 0.0
        b.to_parquet(path)

    return edit


@pytest.mark.parametrize(
    "kind, message",
    [
        ("garbage", "world.book.parquet: not a readable Parquet book"),
        ("no_column", "world.book.parquet: missing column 'lam_shape'"),
        ("segment", "world.book.parquet, row 4, column 'segment'"),
        ("p_alive", "row 3, column 'p_alive'"),
        ("shape", "row 5, column 'mu_shape'"),
    ],
)
def test_a_damaged_book_is_one_line(calibrated_world, tmp_path, capsys, kind, message):
    path, _ = calibrated_world
    shutil.copy(path, tmp_path / "world.json")
    shutil.copy(Path(path).with_name("world.book.parquet"), tmp_path / "world.book.parquet")
    _book_edit(kind)(tmp_path / "world.book.parquet")
    out = tmp_path / "sim.parquet"
    code = run(["simulate", str(tmp_path / "world.json"), "--periods", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err and "recalibrate" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "card, message",
    [
        ("{bad", "not a card written by `clv train` (JSONDecodeError"),
        ("[1]", "not a JSON object"),
        ('{"algo": "ppo"}', "the card lacks actions, observation, encoder"),
        ('{"algo": "a2c"}', "unknown algo 'a2c'"),
    ],
)
def test_a_damaged_policy_card_is_one_line(calibrated_world, tmp_path, capsys, card, message):
    path, _ = calibrated_world
    folder = tmp_path / "agent"
    folder.mkdir()
    (folder / "card.json").write_text(card)
    (folder / "model.zip").write_bytes(b"PK")
    out = tmp_path / "sim.parquet"
    code = run(["simulate", str(path), "--policy", str(folder), "--periods", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err and "retrain" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "file, column, value, message",
    [
        ("decisions.csv", "propensity", "1e-320", "below the floor 1e-09"),
        ("transactions.csv", "amount", "1e308", "above 1e+12: not one transaction's amount"),
    ],
)
def test_values_no_real_data_holds_are_one_line(tmp_path, capsys, file, column, value, message):
    import pandas as pd

    hist = tmp_path / "hist"
    shutil.copytree(EXAMPLES / "my_bank", hist)
    path = hist / file
    if not path.exists():
        pytest.skip(f"examples/my_bank has no {file}")
    d = pd.read_csv(path, dtype=str)
    d.loc[2, column] = value
    d.to_csv(path, index=False)
    code = run(["calibrate", str(hist), "--calibration-end", "2024-06-30", "--out", str(tmp_path / "w.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{file}, row 4, column '{column}'" in err and message in err, (
        err
    )
    assert not (tmp_path / "w.json").exists()


def test_a_negative_product_margin_is_said(tmp_path):
    from sim.calibrate import calibrate
    from sim.history import load_history

    hist = tmp_path / "hist"
    shutil.copytree(EXAMPLES / "my_bank", hist)
    econ = yaml.safe_load((hist / "economics.yaml").read_text()) or {}
    products = sorted(set(__import__("pandas").read_csv(hist / "products.csv")["product"]))
    econ["product_margin_per_period"] = {products[0]: -2.0}
    (hist / "economics.yaml").write_text(yaml.safe_dump(econ))
    world, _, _ = calibrate(load_history(hist), "2024-06-30")
    assert any(f"product_margin_per_period.{products[0]} is negative" in a for a in world.assumptions)


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["score", "missing.json", "--out", "x.parquet", "--json"], 2, "missing.json: world file not found"),
        (["bogus", "--json"], 2, "No such command 'bogus'"),
        (["calibrate", "--dataset", "bank", "--calibration-end", "someday", "--out", "w.json", "--json"], 2, "someday"),
    ],
)
def test_under_json_an_error_is_also_a_json_document_on_stdout(tmp_path, monkeypatch, capsys, argv, code, words):
    import json

    monkeypatch.chdir(tmp_path)
    assert run(argv) == code
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert doc["exit_code"] == code and words in doc["error"] and doc["error"] in cap.err
    assert run([a for a in argv if a != "--json"]) == code and capsys.readouterr().out == ""  # without --json: none


def test_under_json_an_internal_error_is_a_json_document_too(monkeypatch, capsys):
    import json

    import experiments.cli.world as world_cli

    monkeypatch.setattr(world_cli, "_check_world", _raise(RuntimeError("boom")))
    assert run(["simulate", "w.json", "--out", "s.parquet", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"error": doc["error"], "exit_code": 1} and doc["error"].startswith("internal: RuntimeError: boom")


@pytest.mark.parametrize("command", [["--help"], ["score", "--help"], ["readout", "--help"]])
def test_help_into_a_pipe_closed_early_is_exit_141_and_silent(command):
    """`clv score --help | head -1`: click ends the write into the closed pipe as a bare exit 1; the
    status says what happened (141, as for SIGPIPE), and nothing reaches stderr."""
    import subprocess
    import sys

    p = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
        env={**__import__("os").environ, "COLUMNS": "80"},
    )
    p.stdout.close()  # before the help is written (the interpreter is still starting): the write always fails
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == b"", err
