"""The synthetic bank at scale (issue 19): a book generated in customer blocks and written as a
partitioned Parquet history; the same files however the blocks are run."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.dataset as ds
import pytest

from sim.bank_parts import TABLES, TRUTH_TABLES, block_config, blocks, write_bank_parts
from sim.synthetic import BankConfig


def _table(folder, name) -> pd.DataFrame:
    return ds.dataset(folder / name, format="parquet").to_table().to_pandas()


def test_blocks_cover_the_book_once():
    assert blocks(10, 4) == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert blocks(8, 4) == [(0, 0, 4), (1, 4, 4)]


def test_each_block_has_a_seed_and_ids_of_its_own():
    cfg = BankConfig(customers=12_000_000, seed=7)
    a, b = block_config(cfg, 0, 0, 10), block_config(cfg, 1, 10, 10)
    assert a.seed != b.seed and (a.id_offset, b.id_offset) == (0, 10)
    assert a.id_digits == b.id_digits == 8  # ids up to C11999999
    assert block_config(cfg, 1, 10, 10) == b  # the seed depends on (seed, block) alone


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts") / "bank"
    summary = write_bank_parts(out, BankConfig(customers=1500, weeks=40, seed=3), block=600)
    return out, summary


def test_a_partitioned_history_has_one_part_per_block_and_the_truth(parts):
    out, summary = parts
    assert summary["blocks"] == 3 and summary["format"] == "parquet"
    for name in (*TABLES, *TRUTH_TABLES):
        assert sorted(p.name for p in (out / name).iterdir()) == [f"part-0000{k}.parquet" for k in range(3)]
    customers = _table(out, "customers")
    assert len(customers) == 1500 and customers["customer_id"].is_unique
    assert customers["customer_id"].iloc[0] == "C000000" and customers["customer_id"].iloc[-1] == "C001499"
    tx = _table(out, "transactions")
    assert len(tx) == summary["transactions"] > 0
    assert set(tx["customer_id"]) <= set(customers["customer_id"])
    assert str(ds.dataset(out / "transactions").schema.field("date").type) == "date32[day]"
    readme = json.loads((out / "README.json").read_text())
    assert readme["rows"]["decisions"] == summary["decisions"] == len(_table(out, "decisions"))
    assert (out / "truth.json").is_file() and (out / "actions.yaml").is_file()


def test_the_files_are_the_same_on_ray_workers_as_in_process(parts, tmp_path):
    from experiments.ray_session import executor_session

    out, summary = parts
    with executor_session(2) as ex:
        again = write_bank_parts(
            tmp_path / "bank", BankConfig(customers=1500, weeks=40, seed=3), block=600, executor=ex
        )
    assert again == {**summary, "out": str(tmp_path / "bank")}
    for name in (*TABLES, *TRUTH_TABLES):
        pd.testing.assert_frame_equal(_table(out, name), _table(tmp_path / "bank", name))


def test_clv_make_data_writes_parquet_parts_on_request(tmp_path):
    from cli_runner import clv, ok_json

    doc = ok_json(
        clv("make-data", "--out", tmp_path / "h", "--customers", 300, "--weeks", 30, "--format", "parquet", "--json")
    )
    assert doc["format"] == "parquet" and doc["blocks"] == 1
    assert len(_table(tmp_path / "h", "customers")) == 300
    bad = clv("make-data", "--out", tmp_path / "x", "--format", "feather")
    assert bad.exit_code != 0 and "--format must be auto, csv or parquet" in bad.stderr
    old = clv("make-data", "--out", tmp_path / "y", "--start", "1940-01-01")  # the reader refuses dates before 1950
    assert old.exit_code == 2 and "--start 1940-01-01: is before 1950" in old.stderr and not (tmp_path / "y").exists()


# ---- reading a folder of Parquet parts as a history table -------------------------------------------
def test_a_partitioned_history_reads_as_the_same_tables_in_one_file(parts, tmp_path):
    from sim.history import load_history

    out, _ = parts
    single = tmp_path / "single"
    single.mkdir()
    for name in TABLES:
        _table(out, name).to_parquet(single / f"{name}.parquet", index=False)
    for f in ("actions.yaml", "economics.yaml", "stages.yaml"):
        (single / f).write_bytes((out / f).read_bytes())
    a, b = load_history(out), load_history(single)
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def _tx(ids, amounts, day="2024-01-0{}"):
    return pd.DataFrame(
        {
            "customer_id": ids,
            "date": [pd.Timestamp(day.format(i % 9 + 1)).date() for i in range(len(ids))],
            "amount": amounts,
        }
    )


def test_hive_partitions_read_as_one_table(tmp_path):
    from sim.history import load_history

    for year, ids in ((2023, ["a", "b"]), (2024, ["a", "c", "d"])):
        part = tmp_path / "h" / "transactions" / f"year={year}"
        part.mkdir(parents=True)
        _tx(ids, [10.0] * len(ids), f"{year}-01-0{{}}").to_parquet(part / "part-0.parquet", index=False)
    (tmp_path / "h" / "transactions" / "year=2024" / ".part-1.parquet.tmp").write_bytes(b"half written")
    (tmp_path / "h" / "transactions" / "_SUCCESS").write_bytes(b"")
    h = load_history(tmp_path / "h")
    assert len(h.transactions) == 5 and sorted(h.transactions["customer_id"].unique()) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "layout, message",
    [
        ("bad_amount_in_second_part", "transactions/part-1.parquet, row 2, column 'amount'"),
        ("empty_folder", "transactions/: holds no Parquet parts"),
        ("folder_and_csv", "transactions/: both transactions/ and transactions.csv are in"),
        ("damaged_part", "transactions/part-1.parquet: cannot read this Parquet part"),
    ],
)
def test_errors_in_a_partitioned_table_name_the_part_and_its_row(tmp_path, layout, message):
    from cli_runner import clv

    h = tmp_path / "h"
    (h / "transactions").mkdir(parents=True)
    if layout != "empty_folder":
        _tx(["a", "b"], [1.0, 2.0]).to_parquet(h / "transactions" / "part-0.parquet", index=False)
        second = h / "transactions" / "part-1.parquet"
        if layout == "damaged_part":
            second.write_bytes(b"PAR1 not really")
        else:
            amounts = [3.0, float("nan") if layout == "bad_amount_in_second_part" else 4.0]
            _tx(["c", "d"], amounts).to_parquet(second, index=False)
    if layout == "folder_and_csv":
        (h / "transactions.csv").write_text("customer_id,date,amount\na,2024-01-01,1\n")
    r = clv("calibrate", h, "--calibration-end", "2024-01-05", "--out", tmp_path / "w.json")
    assert r.exit_code != 0 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "w.json").exists()
