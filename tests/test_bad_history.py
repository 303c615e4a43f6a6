"""Bad data in a history is refused in one line or repaired and said (issue 18), through the real
`clv calibrate` (and `clv run` for the default catalogue's warning): tables of (what is wrong,
what the user is told), and the defaults a transactions-only history takes, listed in the world's
assumptions."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_runner import clv, ok_json

from experiments.cli.main import run
from sim.history import load_cdnow, validate_products

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CAL_END = "2024-06-30"


def _cells(file: str, edit):
    """An edit of one table of the example history, cell by cell (every cell read as text)."""

    def change(hist: Path) -> None:
        d = pd.read_csv(hist / file, dtype=str, keep_default_na=False)
        d = edit(d)
        d.to_csv(hist / file, index=False)

    return change


def _set(file: str, row: int, column: str, value: str):
    """Cell `column` of spreadsheet row `row` (the header is row 1) set to `value`."""

    def edit(d):
        d.loc[row - 2, column] = value
        return d

    return _cells(file, edit)


def _replace(file: str, make):
    """`file` removed and `make(path)` put in its place (a directory, a link, a FIFO)."""

    def change(hist: Path) -> None:
        (hist / file).unlink()
        make(hist / file)

    return change


def _add_bom(file: str):
    def change(hist: Path) -> None:
        (hist / file).write_bytes(b"\xef\xbb\xbf" + (hist / file).read_bytes())

    return change


def _close_before_open(d):
    """A 'wealth' product closed on 2023-06-01 and opened on 2024-01-01 by the first customer."""
    c = d.loc[0, "customer_id"]
    rows = pd.DataFrame(
        [[c, "2023-06-01", "wealth", "close"], [c, "2024-01-01", "wealth", "open"]], columns=list(d.columns)
    )
    return pd.concat([d[~((d["customer_id"] == c) & (d["product"] == "wealth"))], rows])


def _wealth_events(customer: str, events: list[tuple[str, str]]):
    """`customer`'s 'wealth' events replaced by `events` (date, event), appended at the end of
    products.csv (the example's 988 data rows are rows 2-989: the first appended one is row 990)."""

    def edit(d):
        rows = pd.DataFrame([[customer, day, "wealth", ev] for day, ev in events], columns=list(d.columns))
        return pd.concat([d[~((d["customer_id"] == customer) & (d["product"] == "wealth"))], rows])

    return _cells("products.csv", edit)


# C000000 holds no wealth product in the example: opened on 2023-02-01 and 2023-05-01 (row 991),
# closed on 2024-01-10: not held at the calibration end (counting opens minus closes said held)
OPENED_TWICE = _wealth_events("C000000", [("2023-02-01", "open"), ("2023-05-01", "open"), ("2024-01-10", "close")])
# C000001 neither: opened, closed, closed again (row 992), re-opened on 2024-02-01: held
CLOSED_TWICE = _wealth_events(
    "C000001", [("2023-02-01", "open"), ("2023-05-01", "close"), ("2023-08-01", "close"), ("2024-02-01", "open")]
)


def _alarm(seconds: int):
    """Fail (rather than hang) when a read blocks, e.g. on a FIFO."""

    def boom(signum, frame):
        raise TimeoutError(f"the command did not finish in {seconds} s")

    signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)


def _calibrate(tmp_path: Path, change, *extra: str) -> tuple[int, Path]:
    hist = tmp_path / "hist"
    shutil.copytree(EXAMPLES / "my_bank", hist)
    change(hist)
    out = tmp_path / "w" / "world.json"
    _alarm(120)
    try:
        code = run(["calibrate", str(hist), "--calibration-end", CAL_END, "--out", str(out), *extra])
    finally:
        signal.alarm(0)
    return code, out


# (case, change to examples/my_bank, the line's fragment): each is refused with exit 2 in one line
# naming the file (and the row and column where there is one), and nothing is written
REFUSED = [
    (
        "signup in 2100",
        _set("customers.csv", 5, "signup_date", "2100-01-01"),
        "customers.csv, row 5, column 'signup_date': signup_date 2100-01-01 is more than a year after the last "
        "transaction (2024-12-29): a placeholder, not a signup; fix it or leave it empty",
    ),
    (
        "transaction in 1900",
        _set("transactions.csv", 7, "date", "1900-01-01"),
        "transactions.csv, row 7, column 'date': date 1900-01-01 is before 1950-01-01, older than any bank's",
    ),
    (
        "signup in 1899 (a spreadsheet's day 0)",
        _set("customers.csv", 3, "signup_date", "1899-12-30"),
        "customers.csv, row 3, column 'signup_date': signup_date 1899-12-30 is before 1950-01-01",
    ),
    (
        "product event in 1900",
        _set("products.csv", 4, "date", "1900-01-01"),
        "products.csv, row 4, column 'date': date 1900-01-01 is before 1950-01-01",
    ),
    (
        "a transaction dated after today (a mis-typed year: 2204 for 2024)",
        _set("transactions.csv", 7, "date", "2204-06-03"),
        "transactions.csv, row 7, column 'date': date 2204-06-03 is more than 31 days after today (",
    ),
    (
        "a product event dated after today",
        _set("products.csv", 4, "date", "2099-01-01"),
        "products.csv, row 4, column 'date': date 2099-01-01 is more than 31 days after today (",
    ),
    (
        "a decision dated after today",
        _set("decisions.csv", 9, "date", "2099-12-31T08:00:00Z"),
        "decisions.csv, row 9, column 'date': date 2099-12-31 is more than 31 days after today (",
    ),
    (
        "NUL inside an id",
        _set("transactions.csv", 7, "customer_id", "C00\x000000"),
        "transactions.csv, row 7, column 'customer_id': customer_id 'C00\\x000000' holds the control character",
    ),
    (
        "tab inside a customers id",
        _set("customers.csv", 6, "customer_id", "C00\t0004"),
        "customers.csv, row 6, column 'customer_id': customer_id 'C00\\t0004' holds the control character '\\t'",
    ),
    (
        "a 2 MB customer id",
        _set("transactions.csv", 7, "customer_id", "x" * 2_000_000),
        "transactions.csv, row 7, column 'customer_id': customer_id is 2,000,000 characters long (it starts 'xxx",
    ),
    (
        "a 257-character id in decisions",
        _set("decisions.csv", 9, "customer_id", "é" * 257),
        "decisions.csv, row 9, column 'customer_id': customer_id is 257 characters long",
    ),
    (
        "transactions.csv is a directory",
        _replace("transactions.csv", lambda p: p.mkdir()),
        "transactions.csv: is a directory, not a file; put the transactions table there as a file, or remove it",
    ),
    pytest.param(
        "transactions.csv is a symlink loop",
        _replace("transactions.csv", lambda p: os.symlink(p.name, p)),
        "transactions.csv: is a symbolic link that loops (it leads back to itself), not a file",
    ),
    (
        "transactions.csv is a dangling symlink",
        _replace("transactions.csv", lambda p: os.symlink("nowhere.csv", p)),
        "transactions.csv: is a symbolic link to nowhere.csv, which does not exist",
    ),
    (
        "transactions.csv is a FIFO",
        _replace("transactions.csv", os.mkfifo),
        "transactions.csv: is a named pipe (FIFO), not a file",
    ),
    (
        "customers.csv is a directory",
        _replace("customers.csv", lambda p: p.mkdir()),
        "customers.csv: is a directory, not a file",
    ),
    (
        "actions.yaml is a directory (the bundled catalogue was taken)",
        _replace("actions.yaml", lambda p: p.mkdir()),
        "actions.yaml: is a directory, not a file; give actions.yaml as a file, or remove it",
    ),
    (
        "economics.yaml is a FIFO",
        _replace("economics.yaml", os.mkfifo),
        "economics.yaml: is a named pipe (FIFO), not a file",
    ),
]


@pytest.mark.parametrize("case, change, line", REFUSED, ids=[getattr(c, "values", c)[0] for c in REFUSED])
def test_bad_history_is_refused_in_one_line(tmp_path, capsys, case, change, line):
    code, out = _calibrate(tmp_path, change)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and line in err, err
    assert len(err) < 1200  # a 2 MB id is not quoted whole
    assert not out.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "is a directory, not a file"),
        (lambda p: os.symlink(p.name, p), "is a symbolic link that loops (it leads back to itself), not a file"),
        (lambda p: os.symlink("elsewhere/t.csv", p), "is a symbolic link to elsewhere/t.csv, which does not exist"),
        (os.mkfifo, "is a named pipe (FIFO), not a file"),  # only stat is called: the reader cannot block on it
    ],
)
def test_the_reader_says_what_is_there_instead_of_a_table(tmp_path, make, message):
    from sim.errors import HistoryError
    from sim.history import load_history

    hist = tmp_path / "hist"
    shutil.copytree(EXAMPLES / "my_bank", hist)
    _replace("transactions.csv", make)(hist)
    _alarm(60)
    try:
        with pytest.raises(HistoryError) as info:
            load_history(hist)
    finally:
        signal.alarm(0)
    assert (info.value.file, info.value.row, info.value.column) == ("transactions.csv", None, None)
    assert info.value.message.startswith(message) and "missing" not in info.value.message


# (case, change, the assumption's fragment, a check of the world document): accepted, repaired,
# and the repair listed in the world's assumptions (JSON and report)
REPAIRED = [
    (
        "a BOM inside an id (a phantom customer)",
        _set("transactions.csv", 7, "customer_id", "\ufeffC000000"),
        "transactions.csv: 1 customer_id value held a byte-order mark or zero-width character (first in row 7), "
        "removed",
        lambda doc: doc["customers"] == 500,  # not 501: "\ufeffC000000" is C000000
    ),
    (
        "a zero-width space inside a decisions id",
        _set("decisions.csv", 5, "customer_id", "C000\u200b000"),
        "decisions.csv: 1 customer_id value held a byte-order mark or zero-width character (first in row 5)",
        lambda doc: doc["customers"] == 500,
    ),
    (
        "a signup after the first transaction",
        _set("customers.csv", 2, "signup_date", "2024-01-01"),
        "customers.csv: 1 signup_date later than the customer's first transaction (e.g. customer 'C000000': "
        "signup 2024-01-01, first transaction 2023-01-05); the first transaction is taken as the customer's start",
        lambda doc: doc["customers"] == 500,
    ),
    (
        "a product closed before it was opened",
        _cells("products.csv", _close_before_open),
        "products.csv: 1 close of a product the customer did not hold (no open before; first in row ",
        lambda doc: True,
    ),
    (
        "a product opened twice",
        OPENED_TWICE,
        "products.csv: 1 open of a product the customer already held (first in row 991: customer 'C000000', "
        "'wealth' opened on 2023-05-01, held since 2023-02-01), ignored: a product is held or not",
        lambda doc: True,
    ),
    (
        "a product closed twice",
        CLOSED_TWICE,
        "products.csv: 1 close of a product the customer no longer held (first in row 992: customer 'C000001', "
        "'wealth' closed on 2023-08-01, already closed on 2023-05-01), ignored: a product is held or not",
        lambda doc: True,
    ),
    (
        "empty segment labels",
        _cells("customers.csv", lambda d: d.assign(segment=np.where(d.index < 4, "", d["segment"]))),
        "segments: 4 customers with an empty segment in customers.csv are put in segment 'unknown'",
        lambda doc: "" not in doc["segments"] and "unknown" in doc["segments"],
    ),
]


@pytest.mark.parametrize("case, change, assumption, check", REPAIRED, ids=[c[0] for c in REPAIRED])
def test_bad_history_is_repaired_and_said(tmp_path, capsys, case, change, assumption, check):
    code, out = _calibrate(tmp_path, change, "--json")
    cap = capsys.readouterr()
    assert code == 0, cap.err
    doc = json.loads(cap.out)
    said = [a for a in doc["assumptions"] if assumption in a]
    assert len(said) == 1, doc["assumptions"]
    assert said[0] in json.loads(out.read_text())["assumptions"]  # in the world file too
    assert check(doc), doc


@pytest.mark.parametrize("file", ["transactions.csv", "customers.csv", "products.csv"])
def test_a_bom_at_the_start_of_a_csv_file_just_works(tmp_path, capsys, file):
    """Excel's "CSV UTF-8" starts the file with a BOM: the header is recognised, nothing to say."""
    code, out = _calibrate(tmp_path, _add_bom(file), "--json")
    cap = capsys.readouterr()
    assert code == 0, cap.err
    doc = json.loads(cap.out)
    assert doc["customers"] == 500 and not any("byte-order" in a for a in doc["assumptions"])


def test_a_product_closed_before_it_was_opened_is_held_since_before_the_history():
    """The reader's repair: a close before any open of the product gets an open on the history's
    first day, so the close and a later re-opening both count (the re-opening was lost before:
    the running count of holdings went to -1, and the open only brought it back to 0). A close
    after an earlier close is not that: it is ignored (tests/test_history_events.py)."""
    d = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b", "c", "c"],
            "date": ["2023-01-05", "2023-02-01", "2023-03-01", "2023-04-01", "2023-05-01", "2023-06-01", "2023-06-01"],
            "product": ["card"] * 7,
            # a: opened, closed, closed again, re-opened; b: closed, never opened; c: closed and
            # opened on one day while not held (read as opened and closed that day)
            "event": ["open", "close", "close", "open", "close", "close", "open"],
        }
    )
    notes: list[str] = []
    got = validate_products(d, "products.csv", notes, first_day="2023-01-01")
    assert notes == [
        "products.csv: 1 close of a product the customer did not hold (no open before; first in row 6: 'card' "
        "closed on 2023-05-01), taken as held since before the history: 1 open added on 2023-01-01",
        "products.csv: 1 close of a product the customer no longer held (first in row 4: customer 'a', 'card' "
        "closed on 2023-03-01, already closed on 2023-02-01), ignored: a product is held or not",
    ]
    added = got[(got["date"] == pd.Timestamp("2023-01-01"))]
    assert list(added["customer_id"]) == ["b"] and set(added["event"]) == {"open"}
    assert len(got) == len(d) - 1 + 1
    assert list(zip(got["customer_id"], got["date"])) == sorted(zip(got["customer_id"], got["date"]))
    assert list(got.loc[got["customer_id"] == "c", "event"]) == ["open", "close"]
    notes.clear()
    validate_products(d[d["customer_id"] == "c"], "products.csv", notes)
    assert notes == []


@pytest.mark.parametrize(
    "change, customer, held",
    [(OPENED_TWICE, "C000000", False), (CLOSED_TWICE, "C000001", True)],
    ids=["opened twice: not held after its one close", "closed twice: held after the re-opening"],
)
def test_products_opened_or_closed_twice_hold_what_the_events_say(tmp_path, capsys, change, customer, held):
    """The holdings calibration writes into the book (prod_* at the calibration end) follow the
    events with the redundant one ignored; counting opens minus closes held C000000's wealth
    product after its close (2 - 1)."""
    books = []
    for name, edit in (("edited", change), ("example", lambda hist: None)):
        code, out = _calibrate(tmp_path / name, edit, "--json")
        assert code == 0, capsys.readouterr().err
        books.append(pd.read_parquet(out.with_name("world.book.parquet")).set_index("customer_id")["prod_wealth"])
    edited, example = books
    assert bool(edited[customer]) is held and not example[customer]
    assert edited.drop(customer).equals(example.drop(customer))  # nobody else's holdings moved


# ---- defaults taken in place of a user file ------------------------------------------------------
def _cdnow_transactions_only(folder: Path, customers: int = 300) -> Path:
    """A history of CDNOW's first `customers` customers: transactions.csv and nothing else."""
    tx = load_cdnow().transactions
    keep = tx["customer_id"].isin(sorted(tx["customer_id"].unique())[:customers])
    folder.mkdir(parents=True)
    t = tx.loc[keep, ["customer_id", "date", "amount"]]
    t.assign(date=t["date"].dt.strftime("%Y-%m-%d")).to_csv(folder / "transactions.csv", index=False)
    return folder


DEFAULTS = [
    "catalogue: no actions.yaml in the history; the bundled bank's 8 actions and costs are used "
    "(push_login_reminder 0.02, sms_activation_bonus 2,",
    "economics: no economics.yaml in the history; period week, margin_rate 1 (the whole transaction amount is "
    "margin), no discounting, no product margins",
    "customers: no customers table in the history; each customer starts at their first transaction",
    "products: none in the history; product adoption not modelled",
    "intervention response: all effects taken from priors (no logged decisions)",
]
WARNING = "warning: the history has no actions.yaml: the bundled bank's actions and costs are used, not yours"


def test_a_transactions_only_history_lists_every_default_it_takes(tmp_path):
    hist = _cdnow_transactions_only(tmp_path / "cdnow")
    res = clv("calibrate", hist, "--calibration-end", "1997-09-30", "--out", tmp_path / "world.json", "--json")
    doc = ok_json(res)
    for d in DEFAULTS:
        assert sum(a.startswith(d) for a in doc["assumptions"]) == 1, (d, doc["assumptions"])
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and res.stderr.startswith(WARNING)
    # the bundled dataset says the same of itself
    res = clv("calibrate", "--dataset", "cdnow", "--calibration-end", "1997-09-30", "--out", tmp_path / "c.json")
    assert res.exit_code == 0 and WARNING in res.stderr
    assert "assumed: economics: the bundled CDNOW dataset has no economics.yaml; period week, margin_rate 1" in (
        res.stdout
    )
    assert "assumed: catalogue: no actions.yaml in the history" in res.stdout


def test_a_history_with_its_own_files_takes_no_default(tmp_path):
    res = clv("calibrate", EXAMPLES / "my_bank", "--calibration-end", CAL_END, "--out", tmp_path / "w.json", "--json")
    doc = ok_json(res)
    assert not any(a.split(":")[0] in ("catalogue", "economics", "customers") for a in doc["assumptions"])
    assert "warning" not in res.stderr


def test_clv_run_warns_when_the_catalogue_is_the_bundled_one(tmp_path):
    """The plan of a transactions-only history contacts its customers with the bundled bank's
    actions: `clv run` says so on stderr in one line, and the report lists every default."""
    _cdnow_transactions_only(tmp_path / "cdnow")
    config = {
        "name": "cdnow_only",
        "history": {"path": "cdnow"},
        "calibration_end": "1997-09-30",
        "holdout_end": None,
        "policy": "greedy_uplift",
        "compare": [],
        "plan": {"horizon": 4},
        "budgets": [5],
        "budget": 5,
        "evaluation": {"seeds": 2},
        "ope": None,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    res = clv("run", tmp_path / "run.yaml", "--out", out, "--workers", "0", "--json")
    doc = ok_json(res)
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [WARNING + "; add an actions.yaml to the history folder (see the world's assumptions)"]
    assumptions = doc["calibration"]["assumptions"]
    for d in DEFAULTS:
        assert any(a.startswith(d) for a in assumptions), (d, assumptions)
    html = (out / "report.html").read_text()
    assert "no actions.yaml in the history; the bundled bank&#x27;s 8 actions" in html
    assert "no economics.yaml in the history" in html
