"""A history's events in time (issue 18): dates after the day a history is loaded are refused in
one line naming the file, row, column and date (unless clv generated the history), and a
products table's events are read as one yes/no holding per customer and product: a close before
any open is a holding from before the history, a second open or a second close is ignored, and
every repair is counted and said."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv

from sim.errors import HistoryError
from sim.history import (
    FUTURE_SLACK_DAYS,
    load_history,
    validate_customers,
    validate_decisions,
    validate_products,
    validate_transactions,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TODAY = "2024-06-30"  # the day of loading, passed to the validators as load_history passes today


# ---- dates after the day of loading -------------------------------------------------------------
def _tx(day: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["a", "b", "c"], "date": ["2024-01-02", day, "2024-03-01"], "amount": "1"})


def _products(day: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": ["a", "b"], "date": ["2024-01-02", day], "product": "card", "event": ["open", "open"]}
    )


def _decisions(day: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["a", "b"], "date": ["2024-01-02", day], "action": "none", "propensity": "0.5"})


def _customers(day: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["a", "b"], "signup_date": ["2024-01-02", day]})


VALIDATORS = {
    "transactions.csv": lambda df, today: validate_transactions(df, "transactions.csv", today=today),
    "products.csv": lambda df, today: validate_products(df, "products.csv", today=today),
    "decisions.csv": lambda df, today: validate_decisions(df, "decisions.csv", None, None, today=today),
    "customers.csv": lambda df, today: validate_customers(df, "customers.csv", today=today),
}

# (table, a frame whose row 3 holds the date, date, column, the end of the message): refused
FUTURE = [
    ("transactions.csv", _tx, "2042-03-05", "date", "fix it or drop the row"),  # 2042 for 2024
    ("transactions.csv", _tx, "2024-08-01", "date", "fix it or drop the row"),  # the first day refused
    ("transactions.csv", _tx, "2024-08-01T09:30:00+02:00", "date", "fix it or drop the row"),
    ("products.csv", _products, "2204-06-03", "date", "fix it or drop the row"),
    ("decisions.csv", _decisions, "20990101", "date", "fix it or drop the row"),
    ("customers.csv", _customers, "2030-01-01", "signup_date", "fix it or leave it empty"),
]


@pytest.mark.parametrize("file, make, day, column, fix", FUTURE, ids=[f"{c[0]} {c[2]}" for c in FUTURE])
def test_a_date_after_today_is_refused_naming_file_row_column_and_date(file, make, day, column, fix):
    with pytest.raises(HistoryError) as info:
        VALIDATORS[file](make(day), TODAY)
    e = info.value
    assert (e.file, e.row, e.column) == (file, 3, column)
    assert str(e) == (
        f"{file}, row 3, column '{column}': {column} {day[:10] if '-' in day else '2099-01-01'} is more than "
        f"{FUTURE_SLACK_DAYS} days after today ({TODAY}): a history holds what has happened (a mis-typed year?); {fix}"
    )


@pytest.mark.parametrize("file", sorted(VALIDATORS))
@pytest.mark.parametrize("day, today", [("2024-07-31", TODAY), ("2042-03-05", None)])
def test_dates_up_to_the_slack_or_without_a_today_are_accepted(file, day, today):
    """31 days after today are accepted (an export ahead of the reader's time zone, value-dated
    postings); without `today` (a deployment file of planned contacts) nothing is checked."""
    make = {"transactions.csv": _tx, "products.csv": _products, "decisions.csv": _decisions}.get(file, _customers)
    got = VALIDATORS[file](make(day), today)
    column = "signup_date" if file == "customers.csv" else "date"
    assert got[column].max() == pd.Timestamp(day)


def _bank(out: Path, start: str, weeks: int = 20) -> Path:
    res = clv("make-data", "--out", out, "--customers", 30, "--weeks", weeks, "--start", start, "--seed", 3)
    assert res.exit_code == 0, res.stderr
    return out


def test_a_history_clv_generated_may_run_past_today_and_the_same_tables_copied_may_not(tmp_path):
    """`clv make-data --start 2099-01-05` is a simulated book of the future: it loads (README.json
    names the generator). Its tables copied into a folder of the user's own are a history like any
    other: refused in one line naming the file, row, column and date."""
    gen = _bank(tmp_path / "gen", "2099-01-05")
    h = load_history(gen)
    assert h.transactions["date"].min() >= pd.Timestamp("2099-01-05")
    assert json.loads((gen / "README.json").read_text())["generator"]
    mine = tmp_path / "mine"
    shutil.copytree(gen, mine)
    (mine / "README.json").unlink()
    with pytest.raises(HistoryError) as info:
        load_history(mine)
    e = info.value
    raw = pd.read_csv(mine / "transactions.csv", dtype=str)
    first = int(np.flatnonzero(pd.to_datetime(raw["date"]) > pd.Timestamp.today() + pd.Timedelta(days=31))[0])
    assert (e.file, e.row, e.column) == ("transactions.csv", first + 2, "date")
    assert f"date {raw['date'].iloc[first]} is more than {FUTURE_SLACK_DAYS} days after today (" in e.message
    # a README.json that names no generator is the user's own file: still checked
    (mine / "README.json").write_text(json.dumps({"note": "our warehouse export"}))
    with pytest.raises(HistoryError):
        load_history(mine)


def test_the_example_and_a_default_generated_history_are_not_in_the_future(tmp_path):
    """What ships and what `clv make-data` writes by default (2022-01-03 plus 156 weeks) loads
    with the check on: nothing legitimate is refused."""
    load_history(EXAMPLES / "my_bank")
    gen = _bank(tmp_path / "gen", "2022-01-03", weeks=156)
    (gen / "README.json").unlink()  # checked like a user's history
    assert load_history(gen).transactions["date"].max() <= pd.Timestamp("2024-12-29")


# ---- products: one holding per customer and product ---------------------------------------------
# (case, one customer's events of one product in file order (date, event), the events kept in
# the order written (date, event), held at the end?, (held since before, opened twice, closed
# twice)): the history's first day is 2023-01-01
HOLDINGS = [
    ("opened and closed", [("2023-02-01", "open"), ("2023-05-01", "close")], None, False, (0, 0, 0)),
    (
        "opened twice",
        [("2023-02-01", "open"), ("2023-03-01", "open"), ("2023-05-01", "close")],
        [("2023-02-01", "open"), ("2023-05-01", "close")],
        False,  # counting opens minus closes said held: 2 - 1
        (0, 1, 0),
    ),
    (
        "opened three times, never closed",
        [("2023-02-01", "open"), ("2023-03-01", "open"), ("2023-04-01", "open")],
        [("2023-02-01", "open")],
        True,
        (0, 2, 0),
    ),
    (
        "closed twice, then re-opened",
        [("2023-02-01", "open"), ("2023-03-01", "close"), ("2023-04-01", "close"), ("2023-06-01", "open")],
        [("2023-02-01", "open"), ("2023-03-01", "close"), ("2023-06-01", "open")],
        True,
        (0, 0, 1),
    ),
    (
        "closed twice (the second in the file first)",
        [("2023-04-01", "close"), ("2023-02-01", "open"), ("2023-03-01", "close")],
        [("2023-02-01", "open"), ("2023-03-01", "close")],
        False,
        (0, 0, 1),
    ),
    (
        "closed before it was opened",
        [("2023-03-01", "close"), ("2023-06-01", "open")],
        [("2023-01-01", "open"), ("2023-03-01", "close"), ("2023-06-01", "open")],
        True,
        (1, 0, 0),
    ),
    (
        "closed before it was opened, then closed again",
        [("2023-03-01", "close"), ("2023-04-01", "close")],
        [("2023-01-01", "open"), ("2023-03-01", "close")],
        False,
        (1, 0, 1),
    ),
    (
        "closed on the history's first day, never opened",
        [("2023-01-01", "close")],
        [("2023-01-01", "open"), ("2023-01-01", "close")],
        False,
        (1, 0, 0),
    ),
    (
        "opened and closed on one day",
        [("2023-02-01", "close"), ("2023-02-01", "open")],
        [("2023-02-01", "open"), ("2023-02-01", "close")],
        False,
        (0, 0, 0),
    ),
    (
        "held, then closed and re-opened on one day",
        [("2023-02-01", "open"), ("2023-04-01", "open"), ("2023-04-01", "close")],
        [("2023-02-01", "open"), ("2023-04-01", "close"), ("2023-04-01", "open")],
        True,
        (0, 0, 0),
    ),
    (
        "opened and closed on one day, then closed again",
        [("2023-02-01", "open"), ("2023-02-01", "close"), ("2023-03-01", "close")],
        [("2023-02-01", "open"), ("2023-02-01", "close")],
        False,
        (0, 0, 1),
    ),
]


def _events(rows: list[tuple[str, str]], customer: str = "a", product: str = "card") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": customer,
            "date": [d for d, _ in rows],
            "product": product,
            "event": [e for _, e in rows],
        }
    )


def _counts(notes: list[str]) -> tuple[int, int, int]:
    """(closes taken as held since before, opens ignored, closes ignored) as the notes say them."""

    def n(fragment: str) -> int:
        said = [s for s in notes if fragment in s]
        assert len(said) <= 1, notes
        return int(said[0].split(": ", 1)[1].split(" ")[0]) if said else 0

    return (
        n("of a product the customer did not hold"),
        n("of a product the customer already held"),
        n("of a product the customer no longer held"),
    )


def _running(frame: pd.DataFrame) -> np.ndarray:
    """Holdings after each event as calibration counts them (opens minus closes, in order)."""
    return np.cumsum(np.where(frame["event"] == "open", 1, -1))


@pytest.mark.parametrize("case, events, kept, held_end, counts", HOLDINGS, ids=[c[0] for c in HOLDINGS])
def test_product_events_are_one_holding(case, events, kept, held_end, counts):
    notes: list[str] = []
    got = validate_products(_events(events), "products.csv", notes, first_day="2023-01-01")
    kept = events if kept is None else kept
    assert list(zip(got["date"].dt.strftime("%Y-%m-%d"), got["event"])) == kept
    run = _running(got)
    # every consumer reads one holding: the running count stays 0 or 1 and agrees with the last
    # event (the observations' and rewards' reading) after every event
    assert set(run) <= {0, 1} and list(run) == [int(e == "open") for e in got["event"]]
    assert bool(run[-1]) is held_end
    assert _counts(notes) == counts


def test_product_repairs_are_counted_per_table_and_name_the_first_row():
    """Several customers and products in one table: each kind of repair is one note with its
    count and the first row (spreadsheet rows: header row 1) in the file's order."""
    d = pd.concat(
        [
            _events([("2023-02-01", "open"), ("2023-03-01", "open")], "a", "card"),  # rows 2-3
            _events([("2023-02-01", "open"), ("2023-03-01", "close"), ("2023-04-01", "close")], "b", "card"),
            _events([("2023-05-01", "open"), ("2023-06-01", "open"), ("2023-07-01", "open")], "b", "loan"),
            _events([("2023-03-01", "close")], "c", "card"),  # row 10: b's rows are 4-9
        ],
        ignore_index=True,
    )
    d["branch"] = [f"b{i}" for i in range(len(d))]  # an extra column, kept with its rows
    notes: list[str] = []
    got = validate_products(d, "products.csv", notes, first_day="2023-01-01")
    assert notes == [
        "products.csv: 1 close of a product the customer did not hold (no open before; first in row 10: 'card' "
        "closed on 2023-03-01), taken as held since before the history: 1 open added on 2023-01-01",
        "products.csv: 3 opens of a product the customer already held (first in row 3: customer 'a', 'card' "
        "opened on 2023-03-01, held since 2023-02-01), ignored: a product is held or not",
        "products.csv: 1 close of a product the customer no longer held (first in row 6: customer 'b', 'card' "
        "closed on 2023-04-01, already closed on 2023-03-01), ignored: a product is held or not",
    ]
    assert len(got) == len(d) - 4 + 1
    assert sorted(got["branch"].dropna()) == ["b0", "b2", "b3", "b5", "b8"]  # the added open has none
    assert list(zip(got["customer_id"], got["date"])) == sorted(zip(got["customer_id"], got["date"]))
    for _, pair in got.groupby(["customer_id", "product"]):
        assert set(_running(pair)) <= {0, 1}


def test_a_clean_products_table_is_returned_as_it_was_read():
    """No repair, nothing said: the example's table comes back in the file's order by customer
    and date, every row kept."""
    raw = pd.read_csv(EXAMPLES / "my_bank" / "products.csv", dtype=str)
    notes: list[str] = []
    got = validate_products(raw, "products.csv", notes)
    assert notes == [] and len(got) == len(raw)
    want = raw.assign(date=pd.to_datetime(raw["date"])).sort_values(["customer_id", "date"], kind="stable")
    assert got[["customer_id", "date", "product", "event"]].astype(str).values.tolist() == (
        want[["customer_id", "date", "product", "event"]].astype(str).values.tolist()
    )


# ---- memory with long ids -----------------------------------------------------------------------
def _one_long_id_history(n: int = 50_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n customers with 7-character ids but one of 256 characters (the longest the reader takes),
    two transactions each, and a customers table with signup dates."""
    ids = np.array([f"C{i:06d}" for i in range(n)], dtype=object)
    ids[n // 2] = "L" * 256
    day = pd.Timestamp("2023-01-02") + pd.to_timedelta(np.arange(2 * n) % 500, unit="D")
    tx = validate_transactions(
        pd.DataFrame({"customer_id": np.repeat(ids, 2), "date": day.strftime("%Y-%m-%d"), "amount": "10"}),
        "transactions.csv",
    )
    customers = validate_customers(pd.DataFrame({"customer_id": ids, "signup_date": "2023-01-01"}), "customers.csv")
    return tx, customers


def test_summaries_cost_no_fixed_width_copy_of_the_longest_id():
    """One 256-character id among 50,000 short ones: a fixed-width numpy copy of the customer ids
    costs 50,000 x 256 x 4 bytes = 51 MB (and the summaries made four of them); as objects and
    Arrow strings the summaries' peak stays a few MB."""
    import tracemalloc

    from sim.features import CustomerRows, summarise

    tx, customers = _one_long_id_history()
    tracemalloc.start()
    try:
        rows = CustomerRows.from_frame(tx)
        s = summarise(tx, pd.Timestamp("2024-06-30"), 7.0, customers, rows=rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.customer_id.dtype == object and rows.ids.dtype == object
    assert peak < 40e6, f"{peak / 1e6:.1f} MB"  # one fixed-width copy: 51 MB
    # the same customers, in the same (code-point) order as numpy sorts str
    assert list(s.customer_id) == sorted(customers["customer_id"])
    assert s.x.sum() == len(tx) and (s.n_tx == 2).all()


@pytest.mark.parametrize(
    "a, b",
    [
        (["b", "a", "é", "z"], ["a", "ü", "Z", "€", "b"]),
        (["C10", "C2", "C1"], []),
        ([], ["x"]),
        (["日本", "a" * 256, "😀", "ab", "a"], ["a\u0301", "á", "😀"]),
    ],
)
def test_sorted_union_is_numpys_union(a, b):
    """sim.features.sorted_union sorts in Arrow (UTF-8 bytes): the order numpy and Python give
    str (code points), non-ASCII and astral characters included."""
    from sim.features import lookup, sorted_union

    got = sorted_union(np.array(a, dtype=object), pd.Index(b, dtype="str"))
    assert got.dtype == object and list(got) == list(np.union1d(np.array(a, dtype=str), np.array(b, dtype=str)))
    pos, found = lookup(got, np.array(a + b, dtype=object))
    assert found.all() and list(got[pos]) == a + b
