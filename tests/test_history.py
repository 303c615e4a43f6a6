"""Tests for sim.history: the history-folder data contract, its error messages and CDNOW."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.catalogue import Economics
from sim.errors import HistoryError
from sim.history import (
    History,
    load_cdnow,
    load_history,
    merge_same_day,
    read_table,
    validate_customers,
    validate_decisions,
    validate_transactions,
)

TX_OK = "customer_id,date,amount\nc1,2024-01-01,10\nc2,2024-01-02,5.5\n"
ACTIONS_YAML = """\
actions:
  - {name: sms_offer, channel: sms, offer: cashback, cost: 1.0, capacity_group: sms}
  - {name: email_offer, channel: email, offer: fee_waiver, cost: 0.1}
"""
ECONOMICS_YAML = """\
period: week
margin_rate: 0.015
product_margin_per_period: {credit_card: 2.0}
annual_discount_rate: 0.08
"""
TX_HEAD = "customer_id,date,amount\n"
DEC_HEAD = "customer_id,date,action,propensity\n"


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# (file, content, row, column, message substring, description)
# every case is loaded on top of a valid transactions.csv (customers c1, c2) and actions.yaml
invalid_input_of_load_history = [
    # ---- transactions
    (
        "transactions.csv",
        "customer_id,date\nc1,2024-01-01\n",
        None,
        "amount",
        "missing required column 'amount'",
        "transactions without amount",
    ),
    (
        "transactions.csv",
        "customer_id,amount\nc1,1\n",
        None,
        "date",
        "missing required column 'date'",
        "transactions without date",
    ),
    (
        "transactions.csv",
        "Customer_ID,date,amount\nc1,2024-01-01,1\n",
        None,
        "customer_id",
        "column names are case-sensitive",
        "transactions with a mis-cased column",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\nc1,2024-13-01,2\n",
        3,
        "date",
        "not a calendar date",
        "impossible date",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\nc1,01/02/2024,2\n",
        3,
        "date",
        "cannot read date '01/02/2024'",
        "unsupported date format",
    ),
    ("transactions.csv", TX_HEAD + "c1,2024-01-01,1\nc1,,2\n", 3, "date", "date is empty", "empty date"),
    ("transactions.csv", TX_HEAD + "c1,2024-01-01,nan\n", 2, "amount", "amount is NaN", "NaN amount"),
    ("transactions.csv", TX_HEAD + "c1,2024-01-01,1\nc1,2024-01-02,\n", 3, "amount", "amount is empty", "empty amount"),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\nc2,2024-01-02,-3.5\n",
        3,
        "amount",
        "amount is negative (-3.5); amounts must be >= 0 — net refunds into the purchase or drop them",
        "negative amount",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\nc1,2024-01-03,inf\n",
        3,
        "amount",
        "amount is infinite",
        "infinite amount",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,€12\n",
        2,
        "amount",
        "amount is not a number ('€12')",
        "non-numeric amount",
    ),
    (
        "transactions.csv",
        TX_HEAD + 'c1,2024-01-01,"1,200.50"\n',
        2,
        "amount",
        "without currency symbols or thousands separators",
        "amount with a thousands separator",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\n ,2024-01-01,1\n",
        3,
        "customer_id",
        "customer_id is empty",
        "empty customer id",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\nc1,2024-01-01,1,9\n",
        3,
        None,
        "found 4 fields where the header has 3",
        "row with an extra field",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\nc1,2024-01-01\n",
        3,
        None,
        "found 2 fields where the header has 3",
        "row with a missing field",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\nc1,2024-01-01,-1\nc1,2024-99-01,1\n",
        3,
        "amount",
        "negative",
        "first offending row wins across columns",
    ),
    (
        "transactions.csv",
        TX_HEAD + "c1,2024-01-01,1\nc1,garbage,-1\n",
        3,
        "date",
        "cannot read date",
        "same row: columns in contract order",
    ),
    ("transactions.csv", TX_HEAD, None, None, "no data rows", "header only"),
    ("transactions.csv", "", None, None, "file is empty", "empty file"),
    (
        "transactions.csv",
        "customer_id,date,amount,amount\nc1,2024-01-01,1,1\n",
        1,
        "amount",
        "names this column twice",
        "duplicate column name",
    ),
    (
        "transactions.csv",
        "customer_id;date;amount\nc1;2024-01-01;1\n",
        None,
        "customer_id",
        "another separator",
        "semicolon-separated file",
    ),
    # ---- customers
    (
        "customers.csv",
        "id,segment\nc1,gold\n",
        None,
        "customer_id",
        "missing required column 'customer_id'",
        "customers without customer_id",
    ),
    (
        "customers.csv",
        "customer_id,segment\nc1,gold\nc2,silver\nc1,bronze\n",
        4,
        "customer_id",
        "duplicate customer_id 'c1' (first in row 2)",
        "duplicate customer ids",
    ),
    (
        "customers.csv",
        "customer_id,signup_date\nc1,2023-05-01\nc2,May 2023\n",
        3,
        "signup_date",
        "cannot read signup_date 'May 2023'",
        "bad signup date",
    ),
    ("customers.csv", "customer_id\n", None, None, "no data rows", "customers header only"),
    # ---- products
    (
        "products.csv",
        "customer_id,date,product\nc1,2024-01-01,savings\n",
        None,
        "event",
        "missing required column 'event'",
        "products without event",
    ),
    (
        "products.csv",
        "customer_id,date,product,event\nc1,2024-01-01,savings,open\nc1,2024-02-01,savings,closed\n",
        3,
        "event",
        "event is 'closed'; expected 'open' or 'close'",
        "bad product event",
    ),
    (
        "products.csv",
        "customer_id,date,product,event\nc1,2024-01-01,savings,open\nc2,2024-01-01,loan,open\n"
        "c1,2024-01-01,savings,open\n",
        4,
        None,
        "duplicate of row 2",
        "duplicate product row",
    ),
    (
        "products.csv",
        "customer_id,date,product,event\nc1,2024-01-01,,open\n",
        2,
        "product",
        "product is empty",
        "empty product",
    ),
    # ---- decisions
    (
        "decisions.csv",
        "customer_id,date,action\nc1,2024-01-01,none\n",
        None,
        "propensity",
        "missing required column 'propensity'",
        "decisions without propensity",
    ),
    (
        "decisions.csv",
        DEC_HEAD + "c1,2024-01-01,none,0.5\nc2,2024-01-01,push_bonus,0.5\n",
        3,
        "action",
        "unknown action 'push_bonus'; actions.yaml defines: none, sms_offer, email_offer",
        "unknown action",
    ),
    ("decisions.csv", DEC_HEAD + "c1,2024-01-01,,0.5\n", 2, "action", "action is empty", "empty action"),
    (
        "decisions.csv",
        DEC_HEAD + "c1,2024-01-01,none,0.5\nc2,2024-01-01,sms_offer,0\n",
        3,
        "propensity",
        "propensity is 0; propensity must be in (0, 1]",
        "propensity 0",
    ),
    (
        "decisions.csv",
        DEC_HEAD + "c1,2024-01-01,sms_offer,1.5\n",
        2,
        "propensity",
        "propensity is 1.5; propensity must be in (0, 1]",
        "propensity 1.5",
    ),
    (
        "decisions.csv",
        DEC_HEAD + "c1,2024-01-01,sms_offer,NaN\n",
        2,
        "propensity",
        "propensity must be in (0, 1]",
        "propensity NaN",
    ),
    (
        "decisions.csv",
        DEC_HEAD + "c1,2024-01-01,sms_offer,-0.2\n",
        2,
        "propensity",
        "propensity must be in (0, 1]",
        "negative propensity",
    ),
    (
        "decisions.csv",
        DEC_HEAD + "c1,2024-01-01,sms_offer,\n",
        2,
        "propensity",
        "propensity is empty; propensity must be in (0, 1]",
        "empty propensity",
    ),
    (
        "decisions.csv",
        DEC_HEAD + "c1,2024-01-01,none,0.5\nc2,2024-01-01,none,0.5\nc1,20240101,sms_offer,0.2\n",
        4,
        "date",
        "second decision for customer 'c1' on 2024-01-01 (first in row 2)",
        "duplicate decision",
    ),
    (
        "decisions.csv",
        DEC_HEAD + "c1,2024-01-01,none,0.5\nc9,2024-01-01,none,0.5\n",
        3,
        "customer_id",
        "unknown customer 'c9'",
        "decision for an unknown customer",
    ),
    (
        "decisions.csv",
        "customer_id,date,action,propensity,cost\nc1,2024-01-01,sms_offer,0.5,1\nc2,2024-01-01,sms_offer,0.5,-1\n",
        3,
        "cost",
        "cost is negative (-1); costs must be >= 0",
        "negative cost",
    ),
    (
        "decisions.csv",
        "customer_id,date,action,propensity,cost\nc1,2024-01-01,sms_offer,0.5,nan\n",
        2,
        "cost",
        "cost is NaN",
        "NaN cost",
    ),
]


@pytest.mark.parametrize(
    "file, content, row, column, match, description",
    invalid_input_of_load_history,
    ids=[case[-1] for case in invalid_input_of_load_history],
)
def test_load_history_rejects_bad_input(tmp_path, file, content, row, column, match, description):
    folder = write_folder(tmp_path / "h", {"transactions.csv": TX_OK, "actions.yaml": ACTIONS_YAML})
    (folder / file).write_text(content, encoding="utf-8")
    with pytest.raises(HistoryError) as info:
        load_history(folder)
    err = info.value
    assert (err.file, err.row, err.column) == (file, row, column), str(err)
    assert match in err.message, str(err)
    assert "\n" not in str(err)
    assert str(err).startswith(file)


def test_missing_folder_and_missing_transactions(tmp_path):
    with pytest.raises(HistoryError, match="history folder not found"):
        load_history(tmp_path / "nope")
    folder = write_folder(tmp_path / "h", {"customers.csv": "customer_id\nc1\n", "Transactions.CSV": TX_OK})
    with pytest.raises(HistoryError) as info:
        load_history(folder)
    assert info.value.file == "transactions.csv"
    assert "transactions.csv or transactions.parquet" in info.value.message
    assert "Transactions.CSV" in info.value.message  # points at the near miss


def test_csv_and_parquet_of_the_same_table_is_an_error(tmp_path):
    folder = write_folder(tmp_path / "h", {"transactions.csv": TX_OK})
    pd.DataFrame({"customer_id": ["c1"], "date": ["2024-01-01"], "amount": [1.0]}).to_parquet(
        folder / "transactions.parquet", index=False
    )
    with pytest.raises(HistoryError, match="keep only one"):
        load_history(folder)


def test_not_utf8_names_the_line(tmp_path):
    folder = tmp_path / "h"
    folder.mkdir()
    (folder / "transactions.csv").write_bytes(b"customer_id,date,amount\nc1,2024-01-01,1\nJos\xe9,2024-01-01,1\n")
    with pytest.raises(HistoryError) as info:
        load_history(folder)
    assert (info.value.file, info.value.row) == ("transactions.csv", 3)
    assert "UTF-8" in info.value.message


def test_rows_count_blank_and_multiline_records_like_a_spreadsheet(tmp_path):
    # blank lines are skipped but still counted; a quoted value spanning lines is one row
    folder = write_folder(
        tmp_path / "h",
        {
            "transactions.csv": TX_HEAD + "c1,2024-01-01,1\n\n   \nc2,2024-01-02,2\n,,\nc1,2024-01-03,-2\n\n",
            "customers.csv": 'customer_id,address\nc1,"1 Main St\nSpringfield"\nc2,x\nc1,y\n',
        },
    )
    with pytest.raises(HistoryError) as info:
        load_history(folder)
    assert (info.value.row, info.value.column) == (7, "amount")
    (folder / "transactions.csv").write_text(TX_HEAD + "c1,2024-01-01,1\n\n   \nc2,2024-01-02,2\n,,\n\n")
    with pytest.raises(HistoryError) as info:
        load_history(folder)
    assert info.value.file == "customers.csv"
    assert info.value.row == 4
    assert "first in row 2" in info.value.message
    (folder / "customers.csv").write_text('customer_id,address\nc1,"1 Main St\nSpringfield"\nc2,x\n')
    h = load_history(folder)
    assert h.report["transactions_rows"] == 2
    assert h.report["blank_rows_skipped"] == 1  # the ",," row
    assert h.customers["address"].tolist() == ["1 Main St\nSpringfield", "x"]


def test_happy_path_all_tables(tmp_path):
    folder = write_folder(
        tmp_path / "h",
        {
            "transactions.csv": (
                "customer_id , date,amount,channel,product,store\n"
                "00002,2024-01-03,5.5,app,card,s1\n"
                " 00001 ,20240102,3,web,card,s2\n"
                "00001,2024-01-02T10:15:00+02:00,3,web,card,s2\n"
                "00001,2024-01-01 23:59,10,branch,savings,s1\n"
                "00001,2024-01-02,4,app,card,s2\n"
                "00003,2024-01-05,0,app,card,s1\n"
            ),
            "customers.csv": "customer_id,signup_date,segment\n00001,2023-12-01,gold\n00002,20231215,silver\n"
            "00004,2024-01-01,new\n",
            "products.csv": "customer_id,date,product,event\n00001,2023-12-01,savings,open\n"
            "00001,2024-01-02,credit_card,OPEN\n00001,2024-01-20,savings,close\n",
            "decisions.csv": "customer_id,date,action,propensity,cost\n00002,2024-01-07,sms_offer,0.25,0.9\n"
            "00001,2024-01-07,none,0.75,0\n00004,2024-01-07,email_offer,1,0.1\n",
            "actions.yaml": ACTIONS_YAML,
            "economics.yaml": ECONOMICS_YAML,
        },
    )
    h = load_history(folder)
    assert isinstance(h, History) and h.folder == str(folder)
    tx = h.transactions
    assert list(tx.columns) == ["customer_id", "date", "amount", "product", "channel", "store"]
    assert tx["date"].dtype == np.dtype("datetime64[ns]")
    assert tx["amount"].dtype == np.float64
    assert pd.api.types.is_string_dtype(tx["customer_id"]) and isinstance(tx["customer_id"].iloc[0], str)
    assert tx["customer_id"].tolist() == ["00001"] * 4 + ["00002", "00003"]  # leading zeros kept, stripped
    assert tx["date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2024-01-01",
        "2024-01-02",
        "2024-01-02",
        "2024-01-02",
        "2024-01-03",
        "2024-01-05",
    ]
    assert (tx["date"] == tx["date"].dt.normalize()).all()
    assert tx["amount"].tolist() == [10.0, 3.0, 3.0, 4.0, 5.5, 0.0]  # stable within a day
    assert tx["store"].tolist()[:2] == ["s1", "s2"]
    assert tx.index.equals(pd.RangeIndex(6))

    assert h.customers["customer_id"].tolist() == ["00001", "00002", "00004"]
    assert h.customers["signup_date"].dtype == np.dtype("datetime64[ns]")
    assert h.customers["segment"].tolist() == ["gold", "silver", "new"]
    assert h.products["event"].tolist() == ["open", "open", "close"]
    assert h.products["product"].tolist() == ["savings", "credit_card", "savings"]
    d = h.decisions
    assert list(d.columns) == ["customer_id", "date", "action", "propensity", "cost"]
    assert d["customer_id"].tolist() == ["00001", "00002", "00004"]  # 00004 known from customers only
    assert d["propensity"].dtype == np.float64 and d["cost"].dtype == np.float64
    assert h.actions is not None and h.actions.names == ["none", "sms_offer", "email_offer"]
    assert h.economics == Economics(
        period="week", margin_rate=0.015, product_margin_per_period={"credit_card": 2.0}, annual_discount_rate=0.08
    )
    assert h.report == {
        "customer_id_type": "text",  # 00001: leading zeros are text, kept as the user wrote them
        "transactions_rows": 6,
        "customers_rows": 3,
        "products_rows": 3,
        "decisions_rows": 3,
        "duplicate_transaction_rows": 1,
        "same_day_merged": 2,
        "transaction_customers": 3,
        "blank_rows_skipped": 0,
    }

    merged, n_merged = merge_same_day(tx)
    assert n_merged == 2 and len(merged) == 4
    assert list(merged.columns) == ["customer_id", "date", "amount"]  # text columns dropped
    assert merged["amount"].tolist() == [10.0, 10.0, 5.5, 0.0]
    assert merged["date"].dtype == np.dtype("datetime64[ns]")


def test_optional_tables_and_free_action_names(tmp_path):
    folder = write_folder(
        tmp_path / "h",
        {
            "transactions.csv": TX_OK,
            "decisions.csv": DEC_HEAD + "c1,2024-01-01,whatever_we_sent,0.3\n",
        },
    )
    h = load_history(folder)
    assert h.customers is None and h.products is None and h.actions is None
    assert h.economics == Economics()
    assert h.decisions["action"].tolist() == ["whatever_we_sent"]
    assert h.report["decisions_rows"] == 1 and h.report["customers_rows"] == 0


def test_merge_same_day_counts_and_sums_numeric_columns():
    tx = pd.DataFrame(
        {
            "customer_id": ["b", "a", "a", "b", "a", "a"],
            "date": pd.to_datetime(
                ["2024-01-01", "2024-01-02", "2024-01-02 13:00", "2024-01-01", "2024-01-01", "2024-01-03"],
                format="ISO8601",
            ),
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "n_items": [1, 1, 2, 3, 1, 1],
            "channel": ["x"] * 6,
        }
    )
    merged, n = merge_same_day(tx)
    assert n == 2
    assert merged["customer_id"].tolist() == ["a", "a", "a", "b"]
    assert merged["amount"].tolist() == [5.0, 5.0, 6.0, 5.0]
    assert merged["n_items"].tolist() == [1, 3, 1, 4]
    again, n2 = merge_same_day(merged)
    assert n2 == 0 and again.equals(merged)


def test_parquet_history(tmp_path):
    folder = tmp_path / "h"
    folder.mkdir()
    tx = pd.DataFrame(
        {
            "customer_id": [2, 1, 1],  # integer ids become strings
            "date": pd.to_datetime(["2024-01-02", "2024-01-01 10:00", "2024-01-03"], format="ISO8601"),
            "amount": [1.5, 2.0, 0.0],
        }
    )
    tx.to_parquet(folder / "transactions.parquet", index=False)
    pd.DataFrame(
        {"customer_id": ["1", "2"], "date": [20240105, 20240105], "action": ["none", "sms"], "propensity": [0.5, 0.5]}
    ).to_parquet(folder / "decisions.parquet", index=False)
    h = load_history(folder)
    assert h.transactions["customer_id"].tolist() == ["1", "1", "2"]
    assert h.transactions["date"].dtype == np.dtype("datetime64[ns]")
    assert h.transactions["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-01", "2024-01-03", "2024-01-02"]
    assert h.transactions["amount"].sum() == pytest.approx(3.5)
    assert h.decisions["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-05", "2024-01-05"]

    # Parquet rows are 1-based data rows
    bad = tx.assign(amount=[1.0, np.nan, 2.0])
    bad.to_parquet(folder / "transactions.parquet", index=False)
    with pytest.raises(HistoryError) as info:
        load_history(folder)
    assert (info.value.file, info.value.row, info.value.column) == ("transactions.parquet", 2, "amount")
    assert "NaN" in info.value.message
    tx.drop(columns="amount").to_parquet(folder / "transactions.parquet", index=False)
    with pytest.raises(HistoryError) as info:
        load_history(folder)
    assert (info.value.row, info.value.column) == (None, "amount")


def test_read_table_and_validators_directly(tmp_path):
    folder = write_folder(tmp_path / "h", {"transactions.csv": TX_OK})
    raw, name = read_table(folder, "transactions", required=True)
    assert name == "transactions.csv" and raw.shape == (2, 3)
    assert raw["amount"].tolist() == ["10", "5.5"]  # raw text, parsed by the validators
    assert read_table(folder, "customers", required=False) == (None, "customers.csv")
    tx = validate_transactions(raw, name)
    assert tx["amount"].tolist() == [10.0, 5.5]
    df = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "date": ["2024-01-01", "2024-01-01"],
            "action": ["x", "y"],
            "propensity": ["0.5", "0.5"],
        }
    )
    with pytest.raises(HistoryError) as info:
        validate_decisions(df, "decisions.csv", None, {"a"})
    assert (info.value.row, info.value.column) == (3, "customer_id")
    assert len(validate_decisions(df, "decisions.csv", None, None)) == 2
    with pytest.raises(HistoryError) as info:
        validate_customers(pd.DataFrame({"customer_id": ["a", "a"]}), "customers.parquet")
    assert info.value.row == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-03-31", "2024-03-31"),
        ("20240331", "2024-03-31"),
        ("2024-03-31T14:05:00", "2024-03-31"),
        ("2024-03-31 23:59:59.999", "2024-03-31"),
        ("2024-03-31T23:30:00-05:00", "2024-03-31"),  # the date as written, offset dropped
        ("2024-03-31T00:30:00Z", "2024-03-31"),
    ],
)
def test_accepted_date_formats(tmp_path, text, expected):
    folder = write_folder(tmp_path / "h", {"transactions.csv": TX_HEAD + f"c1,{text},1\n"})
    h = load_history(folder)
    assert str(h.transactions["date"].iloc[0].date()) == expected


def test_load_cdnow():
    load_cdnow()  # warm caches (imports, package data)
    t0 = time.perf_counter()
    h = load_cdnow()
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0
    tx = h.transactions
    assert h.folder == "<dataset:cdnow>"
    assert h.customers is None and h.products is None and h.decisions is None and h.actions is None
    assert h.economics == Economics(period="week", margin_rate=1.0)
    assert len(tx) == 69_659
    assert tx["customer_id"].nunique() == 23_570
    assert list(tx.columns) == ["customer_id", "date", "amount", "n_items"]
    assert tx["date"].min() == pd.Timestamp("1997-01-01") and tx["date"].max() == pd.Timestamp("1998-06-30")
    assert tx["customer_id"].iloc[0] == "00001"
    assert (tx["amount"] >= 0).all() and (tx["amount"] == 0).any()
    assert tx["amount"].sum() == pytest.approx(2_500_315.63, abs=0.01)
    assert tx["n_items"].sum() == 167_881
    merged, n_merged = merge_same_day(tx)
    assert len(merged) == 67_591 and n_merged == 2_068
    assert h.report["same_day_merged"] == 2_068
    assert h.report["duplicate_transaction_rows"] == 255
    # first purchases all in Q1 1997 (the cohort's definition)
    first = tx.groupby("customer_id")["date"].min()
    assert first.max() <= pd.Timestamp("1997-03-31")


rows_strategy = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 500), st.integers(0, 10**7), st.booleans()),
    min_size=1,
    max_size=60,
)


def _tx_csv(rows: list[tuple[int, int, int, bool]], corrupt: int | None = None) -> str:
    base = np.datetime64("2023-01-01")
    lines = [TX_HEAD.strip()]
    for i, (c, d, cents, compact) in enumerate(rows):
        day = str(base + np.timedelta64(d, "D"))
        day = day.replace("-", "") if compact else day
        amount = f"{cents / 100:.2f}" if i != corrupt else f"-{(cents + 1) / 100:.2f}"
        lines.append(f"{c:05d},{day},{amount}")
    return "\n".join(lines) + "\n"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy)
def test_property_round_trip(rows):
    with tempfile.TemporaryDirectory() as d:
        folder = write_folder(Path(d), {"transactions.csv": _tx_csv(rows)})
        h = load_history(folder)
    tx = h.transactions
    assert len(tx) == len(rows)
    assert tx["amount"].sum() == pytest.approx(sum(r[2] for r in rows) / 100, abs=1e-6)
    assert set(tx["customer_id"]) == {f"{r[0]:05d}" for r in rows}
    keys = list(zip(tx["customer_id"], tx["date"]))
    assert keys == sorted(keys)
    merged, n = merge_same_day(tx)
    assert len(merged) == len({(r[0], r[1]) for r in rows}) and n == len(rows) - len(merged)
    assert merged["amount"].sum() == pytest.approx(tx["amount"].sum())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, data=st.data())
def test_property_corrupt_cell_is_named(rows, data):
    k = data.draw(st.integers(0, len(rows) - 1))
    with tempfile.TemporaryDirectory() as d:
        folder = write_folder(Path(d), {"transactions.csv": _tx_csv(rows, corrupt=k)})
        with pytest.raises(HistoryError) as info:
            load_history(folder)
    assert (info.value.file, info.value.row, info.value.column) == ("transactions.csv", k + 2, "amount")
    assert "negative" in info.value.message


@pytest.mark.slow
def test_large_file_loads_in_seconds(tmp_path):
    n, rng = 2_000_000, np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "customer_id": np.char.zfill(rng.integers(0, 100_000, n).astype(str), 6),
            "date": (np.datetime64("2022-01-01") + rng.integers(0, 730, n)).astype(str),
            "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
        }
    )
    folder = tmp_path / "h"
    folder.mkdir()
    df.to_csv(folder / "transactions.csv", index=False)
    t0 = time.perf_counter()
    h = load_history(folder)
    assert time.perf_counter() - t0 < 20.0
    assert len(h.transactions) == n
    assert h.transactions["amount"].sum() == pytest.approx(df["amount"].sum())


@pytest.mark.parametrize(
    "raw, expected",
    [
        (pd.Series([3, 1, 2], dtype="int64"), "integer"),
        (pd.Series(["3", "10", "-2", "0"]), "integer"),
        (pd.Series(["007", "10"]), "text"),  # leading zeros would be lost as integers
        (pd.Series(["C1", "2"]), "text"),
        (pd.Series(["12345678901234567890"]), "text"),  # beyond int64
        (pd.Series([1.0, 2.0]), "text"),
        (pd.Series([True, False]), "text"),
    ],
)
def test_customer_id_type_is_what_the_user_wrote(raw, expected):
    from sim.history import customer_id_type, restore_customer_ids

    ids = raw.astype(str)
    got = customer_id_type(raw, ids)
    assert got == expected
    back = restore_customer_ids(ids.to_numpy(), got)
    if got == "integer":
        assert back.dtype == np.int64 and back.astype(str).tolist() == ids.tolist()


@pytest.mark.parametrize(
    "rows, fast",
    [
        ("customer_id,date,amount\nc1,2024-01-01,5\nc1,2024-01-03,2\nc2,2024-01-02,1\n", True),
        ("customer_id,date,amount\nc1,2024-01-01,5\nc1,2024-01-01,2\nc2,2024-01-02,1\n", False),  # same day
    ],
)
def test_merge_same_day_gives_the_same_frame_with_or_without_its_no_copy_path(tmp_path, monkeypatch, rows, fast):
    """A validated history without same-day rows is returned as its columns (no copy of the book);
    the result equals the general path's, row for row and dtype for dtype."""
    import sim.history as history

    tx = load_history(write_folder(tmp_path / "h", {"transactions.csv": rows})).transactions
    assert history._already_merged(tx, history._day_numbers(tx["date"].to_numpy())) is fast
    quick, merged = history.merge_same_day(tx)
    monkeypatch.setattr(history, "_already_merged", lambda *a: False)
    general, merged_general = history.merge_same_day(tx)
    assert merged == merged_general == (0 if fast else 1)
    pd.testing.assert_frame_equal(quick, general, check_exact=True)
