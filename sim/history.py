"""Loaders and validation for a user's history folder (the data contract in DESIGN.md).

A history folder holds ``transactions.csv`` (or ``.parquet``, the only required table),
optionally ``customers``, ``products`` and ``decisions`` tables, ``actions.yaml`` and
``economics.yaml``. A table may also be a folder of Parquet parts (``transactions/`` or
``transactions.parquet/``, hive-style partitions allowed: a warehouse export, or `clv make-data
--format parquet`); its errors name the part and the row within it. Every input problem raises :class:`~sim.errors.HistoryError` naming the
file, the first offending row (as a spreadsheet counts it for CSV: header = row 1, first data
row = row 2; the 1-based data row for Parquet) and the column, in one line. What is repaired
instead (an invisible character in an id, a signup after the first purchase, a close of a product
never opened, a product opened or closed twice) and every default taken for a missing side file
is said in ``History.notes``, which calibration lists in the world's assumptions.

Everything is vectorised (pyarrow for reading and string work, numpy for numbers and sorting):
a 20M-row transactions CSV loads in seconds. Python-level scans of a file happen only to point
at a broken line or when a CSV holds blank lines or multi-line quoted values, where a data
record's spreadsheet row differs from its position.

Accepted dates: ``YYYY-MM-DD``, ``YYYYMMDD`` and ISO 8601 date-times (``T`` or space separator,
optional seconds and fraction, optional ``Z``/``+hh:mm`` offset, which is dropped: the date is
taken as written). Parquet datetime columns (naive or tz-aware, same rule) and integer
``YYYYMMDD`` columns are accepted too. Dates are normalised to the day, datetime64[ns]. Dates
before 1950 (EARLIEST_DATE) are refused, and so are dates more than FUTURE_SLACK_DAYS after the
day a history is loaded, unless clv generated it.
"""

from __future__ import annotations

import codecs
import csv
import datetime as _dt
import errno
import importlib.resources
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .catalogue import ActionCatalogue, Economics, load_actions, load_economics
from .errors import HistoryError

__all__ = [
    "History",
    "load_history",
    "read_table",
    "validate_transactions",
    "validate_customers",
    "validate_products",
    "validate_decisions",
    "merge_same_day",
    "load_cdnow",
    "read_probability_column",
    "REQUIRED_COLUMNS",
    "PRODUCT_EVENTS",
    "read_target_probs",
    "TARGET_PROBS_COLUMNS",
]

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "transactions": ("customer_id", "date", "amount"),
    "customers": ("customer_id",),
    "products": ("customer_id", "date", "product", "event"),
    "decisions": ("customer_id", "date", "action", "propensity"),
}
PRODUCT_EVENTS: tuple[str, ...] = ("open", "close")
SIDE_FILES: tuple[str, ...] = ("actions.yaml", "economics.yaml", "stages.yaml")
CDNOW_FOLDER = "<dataset:cdnow>"

_DAY_NS = 86_400_000_000_000
_DATE_HELP = "expected a date like 2024-03-31 (YYYY-MM-DD), 20240331 or 2024-03-31T14:05:00"
_COMPACT_DATE = r"\d{8}"
_ISO_DATE = (
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?"
    r"(?:Z|[+-]\d{2}(?::?\d{2})?)?"
)
_TZ_SUFFIX = r"^(\d{4}-\d{2}-\d{2}(?:[T ][\d:.,]+)?)(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_NAN_WORDS = frozenset({"nan", "-nan", "+nan", "na", "n/a", "nat", "null", "none", "#n/a"})
_MIN_DATE = np.datetime64("1678-01-01", "us")  # datetime64[ns] range, whole days
_MAX_DATE = np.datetime64("2262-04-10", "us")


@dataclass
class History:
    """A validated history folder (or a bundled dataset)."""

    folder: str  # where it came from ("<dataset:cdnow>" for bundled data)
    transactions: pd.DataFrame  # customer_id str, date datetime64[ns], amount float64 [+ product, channel, extras]
    customers: pd.DataFrame | None = None
    products: pd.DataFrame | None = None
    decisions: pd.DataFrame | None = None
    actions: ActionCatalogue | None = None
    economics: Economics = field(default_factory=Economics)
    stage_rules: Any = None  # StageRules from stages.yaml when the user fixes them
    report: dict[str, Any] = field(default_factory=dict)
    # what the reader repaired in the user's data, or took by default in place of a user file, one
    # sentence each ("products.csv: ...", "economics: ..."): calibration lists them in the world's
    # assumptions, so they show in JSON and in every report
    notes: list[str] = field(default_factory=list)
    decisions_file: str | None = None  # the decisions table's name in `folder` (errors name it)


# --------------------------------------------------------------------------------------------
# reading files


def read_table(folder: Path, stem: str, required: bool) -> tuple[pd.DataFrame | None, str]:
    """Find ``stem.csv`` or ``stem.parquet`` in `folder` and read it without interpretation.

    CSV cells come back as stripped-header, unstripped ``str`` columns (no NaN); rows whose
    cells are all blank are dropped. The index is the data row's spreadsheet row minus 2 (so
    ``index + 2`` is the row a user sees), for Parquet the 0-based row. Returns ``(None,
    "stem.csv")`` when the table is absent and not required.
    """
    folder = Path(folder)
    csv_path, pq_path = folder / f"{stem}.csv", folder / f"{stem}.parquet"
    parts = [d for d in (folder / stem, pq_path) if d.is_dir()]  # a folder of Parquet parts
    if len(parts) > 1:
        raise HistoryError(f"{stem}/", None, None, f"both {stem}/ and {stem}.parquet/ are in {folder}; keep only one")
    if parts:
        others = [p.name for p in (csv_path, pq_path) if p.exists() and p != parts[0]]
        if others:
            raise HistoryError(
                f"{parts[0].name}/", None, None, f"both {parts[0].name}/ and {others[0]} are in {folder}; keep only one"
            )
        return _read_parquet_parts(parts[0])
    for p in (csv_path, pq_path):
        _check_regular_file(p, f"; put the {stem} table there as a file, or remove it")
    has_csv, has_pq = csv_path.is_file(), pq_path.is_file()
    if has_csv and has_pq:
        raise HistoryError(
            csv_path.name, None, None, f"both {csv_path.name} and {pq_path.name} are in {folder}; keep only one"
        )
    if not (has_csv or has_pq):
        if not required:
            return None, csv_path.name
        hint = ""
        if folder.is_dir():
            near = sorted(p.name for p in folder.iterdir() if p.name.lower().startswith(stem.lower()))
            if near:
                hint = f" (found {', '.join(near)}: names are case-sensitive and must end in .csv or .parquet)"
        raise HistoryError(
            csv_path.name,
            None,
            None,
            f"missing: the history folder {folder} needs {csv_path.name} or {pq_path.name}{hint}",
        )
    path = pq_path if has_pq else csv_path
    try:
        return (_read_parquet(path) if has_pq else _read_csv(path)), path.name
    except OSError as e:  # e.g. no permission to read it
        raise HistoryError(
            path.name, None, None, f"cannot be read ({e.strerror or e}); check its permissions"
        ) from None


def _not_a_file(path: Path) -> str | None:
    """What `path` is, in words, when something is there but not a regular file to read (a
    directory, a dangling or looping symbolic link, a FIFO, a device); None for a regular file
    (links followed) or for nothing at all. Only stat is called: a FIFO is never opened, so it
    cannot hang the reader."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"is a symbolic link to {os.readlink(path)}, which does not exist" if path.is_symlink() else None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link that loops (it leads back to itself), not a file"
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file (a table is read more than once)"
    return "is a device or socket, not a file"


def _check_regular_file(path: Path, hint: str = "") -> None:
    """HistoryError naming `path` (what it is) when something other than a regular file is there."""
    problem = _not_a_file(path)
    if problem is not None:
        raise HistoryError(path.name, None, None, problem + hint)


def _side_file(folder: Path, name: str) -> Path | None:
    """`folder/name` when it is a regular file, None when absent; HistoryError when something else
    is there (a directory named actions.yaml was ignored, and the default catalogue taken)."""
    path = folder / name
    _check_regular_file(path, f"; give {name} as a file, or remove it")
    return path if path.is_file() else None


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        # dates as datetime64, not one Python date object per row (their text parse was 40 % of
        # reading a 1M-customer history)
        df = pq.read_table(path).to_pandas(date_as_object=False)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad input file
        raise HistoryError(path.name, None, None, f"cannot read the Parquet file: {e}") from None
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index(drop=all(n is None for n in df.index.names))
    df = df.reset_index(drop=True)
    df.columns = _clean_names([str(c) for c in df.columns], path.name)
    return df


class PartitionedTable(str):
    """The name a table read from a folder of Parquet parts goes by in errors ("transactions/"),
    with each part's name and row count, so that a row of the whole table is named by its part
    and its row there (`locate`; sim.errors.HistoryError calls it)."""

    parts: tuple[tuple[str, int], ...] = ()

    def __new__(cls, name: str, parts: list[tuple[str, int]]):
        obj = super().__new__(cls, name)
        obj.parts = tuple(parts)
        return obj

    def locate(self, row: int) -> tuple[str, int]:
        """(part, row within it) of the 1-based `row` of the whole table (Parquet rows count from 1)."""
        lo = 0
        for name, n in self.parts:
            if row <= lo + n:
                return f"{self}{name}", row - lo
            lo += n
        return str(self), row

    def __reduce__(self):  # crosses to Ray workers with its parts
        return (PartitionedTable, (str(self), list(self.parts)))


def _read_parquet_parts(path: Path) -> tuple[pd.DataFrame, str]:
    """A table stored as a folder of Parquet files (a warehouse export, `sim.bank_parts`'s output,
    hive-style partitions such as ``transactions/year=2024/month=06/part-0.parquet``; files whose
    names start with "." or "_" are skipped, as every Parquet writer's temporary and marker files
    are), read in the parts' sorted order. Hive partition keys become columns."""
    import pyarrow.dataset as ds

    name = f"{path.name}/"
    try:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
        fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad input folder
        raise HistoryError(name, None, None, f"cannot read the folder of Parquet parts: {e}") from None
    if not fragments:
        raise HistoryError(
            name, None, None, f"holds no Parquet parts (*.parquet files) in {path}; export the table there"
        )
    tables, parts = [], []
    for frag in fragments:
        rel = str(Path(frag.path).relative_to(path))
        try:
            t = frag.to_table(schema=dataset.schema)
        except Exception as e:  # noqa: BLE001 - a damaged part, or a schema other parts disagree with
            raise HistoryError(f"{name}{rel}", None, None, f"cannot read this Parquet part: {e}") from None
        tables.append(t)
        parts.append((rel, t.num_rows))
    try:
        df = pa.concat_tables(tables).to_pandas(date_as_object=False)
    except Exception as e:  # noqa: BLE001
        raise HistoryError(name, None, None, f"cannot read the folder of Parquet parts: {e}") from None
    del tables
    df.columns = _clean_names([str(c) for c in df.columns], name)
    return df, PartitionedTable(name, parts)


def _clean_names(raw: list[str], file: str) -> list[str]:
    names = [c.strip() for c in raw]
    for i, n in enumerate(names, start=1):
        if not n:
            raise HistoryError(
                file,
                1,
                None,
                f"column {i} of the header has no name; name it or remove the "
                "column (a saved pandas index? write with index=False)",
            )
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise HistoryError(file, 1, n, "the header names this column twice; column names must be unique")
        seen.add(n)
    return names


def _read_csv(path: Path) -> pd.DataFrame:
    name = path.name
    header = _csv_header(path)
    names = _clean_names(header, name)
    ncols = len(header)
    has_quotes, content_lines = _scan_bytes(path)

    def skip_blank(row: Any) -> str:
        return "skip" if not (row.text or "").strip() else "error"

    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(newlines_in_values=has_quotes, invalid_row_handler=skip_blank),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.large_string() for h in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        _raise_csv_problem(path, ncols, e)
    table = table.rename_columns(names)
    n = table.num_rows
    df = table.to_pandas()
    df.columns = names
    if content_lines != n + 1:
        rows = _record_rows(path, ncols, n)  # blank lines or multi-line values: map records to rows
        if rows is not None:
            df.index = pd.Index(rows - 2)
    if n:
        first = _arrow(df[names[0]])
        blank = _np_bool(pc.or_(pc.equal(pc.binary_length(first), 0), pc.utf8_is_space(first)))
        if blank.any():
            cand = np.flatnonzero(blank)
            for c in names[1:]:
                if not len(cand):
                    break
                sub = df[c].iloc[cand]
                cand = cand[(sub.str.strip() == "").to_numpy(dtype=bool)]
            if len(cand):
                df = df.drop(index=df.index[cand])
                df.attrs["blank_rows_skipped"] = int(len(cand))
    return df


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for rec in csv.reader(f):
                if rec:
                    return rec
    except UnicodeDecodeError:
        _raise_not_utf8(path)
    except csv.Error as e:
        raise HistoryError(path.name, 1, None, f"cannot read the header line: {e}") from None
    raise HistoryError(
        path.name,
        None,
        None,
        "file is empty; expected a header line (e.g. customer_id,date,amount) and at least one data row",
    )


def _scan_bytes(path: Path) -> tuple[bool, int | None]:
    """One pass over the bytes: does the file hold a quote character, and how many physical lines
    does it have up to its last non-blank one (None if it cannot tell cheaply)."""
    size = path.stat().st_size
    has_quote, newlines = False, 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            has_quote = has_quote or b'"' in chunk
            newlines += chunk.count(b"\n")
        tail_len = min(size, 1 << 20)
        f.seek(size - tail_len)
        tail = f.read()
    body = tail.rstrip(b" \t\r\n")
    if not body and tail_len < size:
        return has_quote, None
    return has_quote, newlines - tail.count(b"\n", len(body)) + 1


def _skipped(rec: list[str], ncols: int) -> bool:
    """Records the reader skips: empty lines, and whitespace-only lines when several columns."""
    return not rec or (ncols > 1 and len(rec) == 1 and rec[0] != "" and not rec[0].strip())


def _record_rows(path: Path, ncols: int, expected: int) -> np.ndarray | None:
    """Spreadsheet row of each data record (slow path: only for files with blank lines etc.)."""
    rows: list[int] = []
    header = False
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for rowno, rec in enumerate(csv.reader(f), start=1):
                if _skipped(rec, ncols):
                    continue
                if not header:
                    header = True
                    continue
                rows.append(rowno)
    except (csv.Error, UnicodeDecodeError):
        return None
    return np.asarray(rows, dtype=np.int64) if len(rows) == expected else None


def _raise_csv_problem(path: Path, ncols: int, err: Exception) -> None:
    if isinstance(err, UnicodeDecodeError) or "UTF8" in str(err) or "UTF-8" in str(err):
        _raise_not_utf8(path)
    header = False
    rowno = 0
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            for rowno, rec in enumerate(csv.reader(f), start=1):
                if _skipped(rec, ncols):
                    continue
                if not header:
                    header = True
                    continue
                if len(rec) != ncols:
                    line = ",".join(rec)
                    line = line if len(line) <= 80 else line[:77] + "..."
                    raise HistoryError(
                        path.name,
                        rowno,
                        None,
                        f"found {len(rec)} fields where the header has {ncols} ({line!r}); check for a "
                        "missing or extra comma, or quote values that contain commas",
                    )
    except csv.Error as e:
        raise HistoryError(path.name, rowno + 1, None, f"cannot parse this CSV line: {e}") from None
    raise HistoryError(path.name, None, None, f"cannot parse the CSV file: {err}")


def _raise_not_utf8(path: Path) -> None:
    dec = codecs.getincrementaldecoder("utf-8-sig")()
    lines = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            try:
                dec.decode(chunk)
            except UnicodeDecodeError as e:
                start = max(0, min(e.start, len(chunk)))
                bad = e.object[e.start : e.start + 1].hex() if isinstance(e.object, bytes) else "?"
                raise HistoryError(
                    path.name,
                    lines + chunk.count(b"\n", 0, start) + 1,
                    None,
                    f"the file is not UTF-8 text (byte 0x{bad}); save it as UTF-8 (in Excel: 'CSV UTF-8')",
                ) from None
            lines += chunk.count(b"\n")
    raise HistoryError(path.name, None, None, "the file is not UTF-8 text; save it as UTF-8")


# --------------------------------------------------------------------------------------------
# vectorised cell parsing


class _Checks:
    """Collects the first offending position of each check; reports the earliest row."""

    def __init__(self, df: pd.DataFrame, file: str):
        self.file = file if isinstance(file, PartitionedTable) else str(file)
        self.offset = 1 if self.file.lower().endswith(".parquet") or isinstance(file, PartitionedTable) else 2
        idx = df.index
        self.labels = idx.to_numpy() if pd.api.types.is_integer_dtype(idx.dtype) else None
        self.found: list[tuple[int, int, str, Callable[[int], str]]] = []

    def row(self, pos: int) -> int:
        return int(self.labels[pos] if self.labels is not None else pos) + self.offset

    def add(self, column: str, mask: Any, describe: Callable[[int], str]) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.found.append((int(mask.argmax()), len(self.found), column, describe))

    def raise_first(self) -> None:
        if self.found:
            pos, _, column, describe = min(self.found, key=lambda t: (t[0], t[1]))
            raise HistoryError(self.file, self.row(pos), column, describe(pos))


def _np_bool(x: Any) -> np.ndarray:
    if isinstance(x, (pa.ChunkedArray, pa.Array)):
        x = x.to_numpy(zero_copy_only=False)
    return np.asarray(x, dtype=bool)


def _arrow(t: pd.Series) -> pa.ChunkedArray:
    """The arrow (large_)string data behind a ``str`` series without NaN."""
    a = t.array
    r = a.__arrow_array__() if hasattr(a, "__arrow_array__") else pa.array(t.to_numpy(object), type=pa.large_string())
    return r if isinstance(r, pa.ChunkedArray) else pa.chunked_array([r])


def _to_str(s: pd.Series) -> pd.Series:
    """Stripped ``str`` series; missing values become "" (so they are reported as empty)."""
    dt = s.dtype
    if pd.api.types.is_float_dtype(dt):
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        fin = v[np.isfinite(v)]
        if len(fin) and np.all(fin == np.round(fin)) and np.abs(fin).max() < 2**53:
            s = s.astype("Int64")
    s = s.astype("str")
    if s.hasnans:
        s = s.fillna("")
    if not _needs_strip(_arrow(s)):
        return s
    return s.str.strip()


# bytes that may begin / end a whitespace character in UTF-8 (conservative for non-ASCII)
_WS_FIRST = np.zeros(256, dtype=bool)
_WS_FIRST[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0xC2, 0xE1, 0xE2, 0xE3]] = True
_WS_LAST = np.zeros(256, dtype=bool)
_WS_LAST[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_WS_LAST[0x80:0xC0] = True


def _string_buffers(ch: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets, data bytes) of a string chunk, read in place (no copies); None when it holds no
    bytes. `data[offsets[i]:offsets[i + 1]]` is row i."""
    width = 8 if pa.types.is_large_string(ch.type) else 4
    bufs = ch.buffers()
    offs = np.frombuffer(
        bufs[1], dtype=np.int64 if width == 8 else np.int32, count=len(ch) + 1, offset=ch.offset * width
    )
    if bufs[2] is None or offs[-1] == offs[0]:
        return None
    return offs, np.frombuffer(bufs[2], dtype=np.uint8)


def _needs_strip(arr: pa.ChunkedArray) -> bool:
    """Could any cell start or end with whitespace? (reads the string buffers, no copies)"""
    for ch in arr.chunks:
        if len(ch) == 0:
            continue
        if ch.null_count or not (pa.types.is_large_string(ch.type) or pa.types.is_string(ch.type)):
            return True
        found = _string_buffers(ch)
        if found is None:
            continue
        offs, data = found
        nonempty = offs[1:] > offs[:-1]
        if _WS_FIRST[data[offs[:-1][nonempty]]].any() or _WS_LAST[data[offs[1:][nonempty] - 1]].any():
            return True
    return False


def _pack_fixed_width(arr: pa.ChunkedArray) -> np.ndarray | None:
    """Big-endian uint64 of each string when all have the same byte length <= 8 (else None);
    order-preserving, so equal/ordered like the strings."""
    if len(arr) == 0 or arr.null_count:
        return None
    width = None
    parts = []
    for ch in arr.chunks:
        if len(ch) == 0:
            continue
        if not (pa.types.is_large_string(ch.type) or pa.types.is_string(ch.type)):
            return None
        isz = 8 if pa.types.is_large_string(ch.type) else 4
        bufs = ch.buffers()
        offs = np.frombuffer(
            bufs[1], dtype=np.int64 if isz == 8 else np.int32, count=len(ch) + 1, offset=ch.offset * isz
        )
        w = int(offs[1] - offs[0])
        if width is None:
            width = w
        if w != width or not 1 <= w <= 8 or int(offs[-1] - offs[0]) != w * len(ch) or not np.all(np.diff(offs) == w):
            return None
        data = np.frombuffer(bufs[2], dtype=np.uint8, count=w * len(ch), offset=int(offs[0]))
        parts.append(data.reshape(len(ch), w))
    assert width is not None
    out = np.zeros((len(arr), 8), dtype=np.uint8)
    pos = 0
    for d in parts:
        out[pos : pos + len(d), :width] = d
        pos += len(d)
    return out.view(">u8").ravel().astype(np.uint64)


def _encode(arr: pa.ChunkedArray, chunked: bool) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes (int64) and distinct values. `chunked`: encode chunk by chunk and merge
    (fast and copy-free when there are few distinct values, e.g. dates)."""
    if not chunked:
        packed = _pack_fixed_width(arr)
        if packed is not None:  # short fixed-width ids: hashing integers is ~3x faster
            enc = pc.dictionary_encode(pa.array(packed))
            codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            # codes are numbered in order of first appearance: first occurrences are where the
            # running maximum grows
            grows = np.empty(len(codes), dtype=bool)
            grows[0] = True
            np.greater(codes[1:], np.maximum.accumulate(codes)[:-1], out=grows[1:])
            return codes, arr.take(pa.array(np.flatnonzero(grows))).combine_chunks()
    if not chunked or arr.num_chunks <= 1:
        enc = pc.dictionary_encode(arr.combine_chunks())
        return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary
    parts = [pc.dictionary_encode(c) for c in arr.chunks]
    top = pc.dictionary_encode(pa.concat_arrays([p.dictionary for p in parts]))
    gmap = top.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    codes = np.empty(len(arr), dtype=np.int64)
    pos = dpos = 0
    for p in parts:
        k = len(p)
        codes[pos : pos + k] = gmap[dpos + p.indices.to_numpy(zero_copy_only=False)]
        pos += k
        dpos += len(p.dictionary)
    return codes, top.dictionary


def _is_plain_number_dtype(dt: Any) -> bool:
    return pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)


MAX_ID_LENGTH = 256  # characters: an id is a code; memory grew with the longest one (a 2 MB id, 22 GB)
_CONTROL = "[\\x00-\\x1f\\x7f]"  # RE2 class of the C0 control characters and DEL
# a byte-order mark or zero-width character, invisible in every viewer: "\ufeff123" was a second
# customer beside "123" (a BOM is what a file concatenated onto another leaves at a line start)
_INVISIBLE = "[\\x{feff}\\x{200b}-\\x{200d}\\x{2060}]"
_CONTROL_BYTES = np.zeros(256, dtype=bool)
_CONTROL_BYTES[list(range(0x20)) + [0x7F]] = True


def _byte_flags(arr: pa.ChunkedArray) -> tuple[bool, bool]:
    """(any control byte, any byte that may start an invisible character: 0xEF or 0xE2) in the
    strings' bytes: one pass over the data buffers, no copies; the rows are found only when set."""
    control = invisible = False
    for ch in arr.chunks:
        if len(ch) == 0 or not (pa.types.is_large_string(ch.type) or pa.types.is_string(ch.type)):
            continue
        found = _string_buffers(ch)
        if found is None:
            continue
        offs, data = found
        data = data[int(offs[0]) : int(offs[-1])]
        for i in range(0, len(data), 1 << 24):  # in slices: the masks stay small at 20M rows
            part = data[i : i + (1 << 24)]
            control = control or bool(_CONTROL_BYTES[part].any())
            invisible = invisible or bool(((part == 0xEF) | (part == 0xE2)).any())
    return control, invisible


def _ids(ck: _Checks, s: pd.Series, column: str, notes: list[str] | None = None) -> pd.Series:
    """Customer ids as stripped text. Refused: empty, longer than MAX_ID_LENGTH characters, or
    holding a control character (a NUL: a damaged file). Repaired, and said in `notes`: a
    byte-order mark or zero-width character inside an id is removed."""
    t = _to_str(s)
    arr = _arrow(t)
    control, invisible = _byte_flags(arr)
    if invisible:
        found = _np_bool(pc.match_substring_regex(arr, _INVISIBLE))
        if found.any():
            pos = int(found.argmax())
            t = pd.Series(pc.replace_substring_regex(arr, _INVISIBLE, ""), index=t.index, dtype=t.dtype)
            t = t.str.strip()
            arr = _arrow(t)
            if notes is not None:
                notes.append(
                    f"{ck.file}: {_count(int(found.sum()), f'{column} value')} held a byte-order mark or zero-width "
                    f"character (first in row {ck.row(pos)}), removed: invisible, it made a second customer of one id"
                )
    nbytes = pc.binary_length(arr)
    ck.add(column, _np_bool(pc.equal(nbytes, 0)), lambda pos: f"{column} is empty; every row needs a {column}")
    if len(arr) and pc.max(nbytes).as_py() > MAX_ID_LENGTH:  # bytes >= characters: count these only then
        chars = pc.utf8_length(arr).to_numpy(zero_copy_only=False)
        ck.add(
            column,
            chars > MAX_ID_LENGTH,
            lambda pos: (
                f"{column} is {int(chars[pos]):,} characters long (it starts {t.iloc[pos][:24]!r}); an id is at most "
                f"{MAX_ID_LENGTH} characters: is this the right column, or are quotes unbalanced?"
            ),
        )
    if control:
        bad = _np_bool(pc.match_substring_regex(arr, _CONTROL))

        def describe(pos: int) -> str:
            value = t.iloc[pos]
            char = next(c for c in value if ord(c) < 0x20 or ord(c) == 0x7F)
            return (
                f"{column} {value[:40]!r} holds the control character {char!r} (byte 0x{ord(char):02x}); the file is "
                "damaged or not plain text: re-export it, or remove the character"
            )

        ck.add(column, bad, describe)
    return t


def _text(ck: _Checks, s: pd.Series, column: str, what: str) -> pd.Series:
    t = _to_str(s)
    empty = _np_bool(pc.equal(pc.binary_length(_arrow(t)), 0))
    ck.add(column, empty, lambda pos: f"{column} is empty; {what}")
    return t


def _parse_date_strings(u: pd.Series) -> np.ndarray:
    """Parse distinct date strings; datetime64[ns] floored to the day, NaT where unreadable."""
    out = np.full(len(u), np.datetime64("NaT"), dtype="datetime64[us]")
    if not len(u):
        return out.astype("datetime64[ns]")
    compact = u.str.fullmatch(_COMPACT_DATE).to_numpy(dtype=bool)
    iso = u.str.fullmatch(_ISO_DATE).to_numpy(dtype=bool)
    if compact.any():
        out[compact] = pd.to_datetime(u[compact], format="%Y%m%d", errors="coerce").to_numpy("datetime64[us]")
    if iso.any():
        wall = u[iso].str.replace(_TZ_SUFFIX, r"\1", regex=True).str.replace(",", ".", regex=False)
        out[iso] = pd.to_datetime(wall, format="ISO8601", errors="coerce").to_numpy("datetime64[us]")
    out[(out < _MIN_DATE) | (out >= _MAX_DATE)] = np.datetime64("NaT")
    days = out.astype("datetime64[D]")
    return days.astype("datetime64[ns]")


def _date_problem(column: str, raw: str) -> str:
    if raw == "":
        return f"{column} is empty; {_DATE_HELP}"
    if re.fullmatch(_COMPACT_DATE, raw) or re.fullmatch(_ISO_DATE, raw):
        day = raw[:10] if "-" in raw else raw
        ok = pd.to_datetime(day, format="%Y-%m-%d" if "-" in raw else "%Y%m%d", errors="coerce")
        if pd.isna(ok):
            return f"{column} {raw!r} is not a calendar date; {_DATE_HELP}"
        if not (_MIN_DATE <= np.datetime64(ok, "us") < _MAX_DATE):
            return f"{column} {raw!r} is outside the supported range (years 1678 to 2262)"
        return f"{column} {raw!r} has an invalid time of day; {_DATE_HELP}"
    return f"cannot read {column} {raw!r}; {_DATE_HELP}"


# No bank's electronic records go back before 1950 (its first computers came in the late 1950s),
# while 1900-01-01 and 1899-12-30 are what an empty date cell becomes in a spreadsheet, and such a
# day stretched one customer's life by a century. Earlier dates are refused, in every table.
EARLIEST_DATE = np.datetime64("1950-01-01", "ns")


def _dates(ck: _Checks, s: pd.Series, column: str) -> np.ndarray:
    """datetime64[ns] values normalised to the day; problems registered on `ck`."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        v = s.to_numpy()
        days = v.astype("datetime64[D]")
        bad = np.isnat(days) | (days < _MIN_DATE.astype("datetime64[D]")) | (days >= _MAX_DATE.astype("datetime64[D]"))
        out = np.where(bad, np.datetime64("NaT"), days).astype("datetime64[D]").astype("datetime64[ns]")
        ck.add(column, bad, lambda pos: f"{column} is missing or out of range ({s.iloc[pos]}); {_DATE_HELP}")
    else:
        if not (isinstance(s.dtype, pd.StringDtype) and not s.hasnans):
            s = _to_str(s)
        codes, uniq = _encode(_arrow(s), chunked=True)
        parsed = _parse_date_strings(uniq.to_pandas().str.strip())
        out = parsed[codes]
        ck.add(column, np.isnat(out), lambda pos: _date_problem(column, str(s.iloc[pos]).strip()))
    fix = "fix it or leave it empty" if column == "signup_date" else "fix it or drop the row"
    ck.add(
        column,
        out < EARLIEST_DATE,
        lambda pos: (
            f"{column} {np.datetime64(out[pos], 'D')} is before {np.datetime64(EARLIEST_DATE, 'D')}, older than any "
            f"bank's electronic records (an empty date cell becomes 1900-01-01 in a spreadsheet); {fix}"
        ),
    )
    return out


# A history is what happened: a warehouse export holds nothing dated after the day it is loaded, so a
# later date is a data error (a mis-typed or mis-parsed year, 2042 for 2024) that would stretch the
# calibration's clocks (a customer's age, the last transaction that cut-off dates are checked
# against). Dates up to FUTURE_SLACK_DAYS after today are accepted: an export written in a time zone
# ahead of the reader's, postings value-dated a few days ahead, a month-end batch. A history that clv
# generated (its README.json names the generator, as `clv run` checks before writing one) is not
# checked: `clv make-data --start 2026-06-01` or `--weeks 520` legitimately runs past today.
FUTURE_SLACK_DAYS = 31


def _not_future(ck: _Checks, dates: np.ndarray, column: str, today: Any, fix: str = "fix it or drop the row") -> None:
    """Registers on `ck` the dates more than FUTURE_SLACK_DAYS after `today` (None: no check)."""
    if today is None:
        return
    day = np.datetime64(pd.Timestamp(today), "D")
    limit = (day + np.timedelta64(FUTURE_SLACK_DAYS, "D")).astype("datetime64[ns]")
    ck.add(
        column,
        dates > limit,
        lambda pos: (
            f"{column} {np.datetime64(dates[pos], 'D')} is more than {FUTURE_SLACK_DAYS} days after today ({day}): "
            f"a history holds what has happened (a mis-typed year?); {fix}"
        ),
    )


def _generated_by_clv(folder: Path) -> bool:
    """Whether `folder` is a history clv generated: its README.json names the generator
    (sim.synthetic, sim.bank_parts, sim.engagement_hmm), as experiments.cli.outputs reads it."""
    path = folder / "README.json"
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return False
        return bool(json.loads(path.read_text(encoding="utf-8")).get("generator"))
    except (OSError, ValueError, AttributeError):
        return False


def _numbers(s: pd.Series) -> tuple[np.ndarray, Callable[[int], str]]:
    """float64 values (NaN where unreadable) and a function giving a cell's text."""
    if _is_plain_number_dtype(s.dtype):
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        return v, lambda pos: "NaN" if np.isnan(v[pos]) else repr(float(v[pos]))
    if isinstance(s.dtype, pd.StringDtype) and not s.hasnans:
        try:  # fast path: clean text casts directly
            v = pc.cast(_arrow(s), pa.float64()).to_numpy()
            return np.asarray(v, dtype="float64"), lambda pos: str(s.iloc[pos]).strip()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    t = _to_str(s)
    try:
        v = pc.cast(_arrow(t), pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        v = pd.to_numeric(t, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return np.asarray(v, dtype="float64"), lambda pos: str(t.iloc[pos])


def _number_problem(column: str, raw: str, v: float) -> str | None:
    """Describes an empty, missing, unreadable or infinite cell; None for a finite number."""
    if np.isnan(v):
        if raw == "":
            return f"{column} is empty"
        if raw.lower() in _NAN_WORDS:
            return f"{column} is NaN (missing value {raw!r})"
        return (
            f"{column} is not a number ({raw!r}): write plain numbers such as 1234.56, without "
            "currency symbols or thousands separators"
        )
    if np.isinf(v):
        return f"{column} is infinite ({raw})"
    return None


def _amounts(ck: _Checks, s: pd.Series, column: str) -> np.ndarray:
    v, raw = _numbers(s)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(v) | (v < 0) | (v > MAX_AMOUNT)

    def describe(pos: int) -> str:
        r = raw(pos)
        p = _number_problem(column, r, v[pos])
        if p is not None:
            return f"{p}; expected a number >= 0"
        if v[pos] > MAX_AMOUNT:
            return f"{column} is {r}, above {MAX_AMOUNT:g}: not one transaction's amount; check the unit and the column"
        return f"{column} is negative ({r}); amounts must be >= 0 — net refunds into the purchase or drop them"

    ck.add(column, bad, describe)
    return v


PROPENSITY_FLOOR = 1e-9  # below it importance weights overflow (1e-320 gave null estimates, exit 0)
MAX_AMOUNT = 1e12  # one transaction above a trillion is a unit or column mistake (1e308 overflowed to inf)


def _propensities(ck: _Checks, s: pd.Series, column: str) -> np.ndarray:
    v, raw = _numbers(s)
    with np.errstate(invalid="ignore"):
        bad = ~((v >= PROPENSITY_FLOOR) & (v <= 1))

    def describe(pos: int) -> str:
        r = raw(pos)
        p = _number_problem(column, r, v[pos]) or f"{column} is {r}"
        if np.isfinite(v[pos]) and 0 < v[pos] < PROPENSITY_FLOOR:
            return (
                f"{p}, below the floor {PROPENSITY_FLOOR:g}: a probability that small makes the importance "
                "weights overflow; record the logging policy's probability, or drop the decision"
            )
        return (
            f"{p}; propensity must be in (0, 1] — the logging policy's probability of the action it "
            "took (log 'none' decisions with their probability too)"
        )

    ck.add(column, bad, describe)
    return v


def read_probability_column(folder: str | Path, column: str) -> pd.DataFrame:
    """customer_id, date and `column` (float64 in [0, 1]) from the decisions table: a candidate
    policy's probability of each logged action, carried by the table (`clv ope
    --target-prob-column`). Bad cells raise HistoryError naming the file, row and column."""
    raw, file = read_table(Path(folder), "decisions", required=True)
    df = _prepare(raw, file, "decisions")
    if column not in df.columns:
        extra = [c for c in df.columns if c not in REQUIRED_COLUMNS["decisions"] + ("cost",)]
        raise HistoryError(
            file,
            None,
            column,
            "no such column"
            + (f"; extra columns: {', '.join(extra)}" if extra else "; the table has no extra columns"),
        )
    ck = _Checks(df, file)
    v, text = _numbers(df[column])
    with np.errstate(invalid="ignore"):
        bad = ~((v >= 0) & (v <= 1))

    def describe(pos: int) -> str:
        r = text(pos)
        p = _number_problem(column, r, v[pos]) or f"{column} is {r}"
        return f"{p}; a target probability must be in [0, 1] (the candidate's probability of the logged action)"

    ck.add(column, bad, describe)
    ck.raise_first()
    cid = _ids(ck, df["customer_id"], "customer_id")
    date = _dates(ck, df["date"], "date")
    ck.raise_first()
    # object arrays, not fixed-width str ones (rows x the longest id x 4 bytes); the frame holds str
    return pd.DataFrame({"customer_id": np.asarray(cid, dtype=object), "date": date, column: v})


TARGET_PROBS_COLUMNS = ("customer_id", "date", "action", "probability")


def read_table_file(path: Path, what: str, hint: str) -> pd.DataFrame:
    """A user's table at a path of its own (not in a history folder), CSV or Parquet, read without
    interpretation as `read_table` reads a history's; a missing file or another suffix is a
    HistoryError naming it (`what`: the table in words; `hint`: what to give instead)."""
    problem = _not_a_file(path)
    if problem is not None:
        raise HistoryError(str(path), None, None, f"{problem}; {hint}")
    if not path.is_file():
        raise HistoryError(str(path), None, None, f"no such file; {hint}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise HistoryError(path.name, None, None, f"expected a .csv or .parquet {what}")
    try:
        return _read_parquet(path) if suffix == ".parquet" else _read_csv(path)
    except OSError as e:
        raise HistoryError(
            path.name, None, None, f"cannot be read ({e.strerror or e}); check its permissions"
        ) from None


def read_target_probs(path: str | Path) -> pd.DataFrame:
    """A candidate policy's action distribution at logged decisions (`clv ope --target-probs`), CSV
    or Parquet in long format: customer_id, date, action, probability, one row per decision and
    action of non-zero probability (absent rows are 0). Returns those columns (customer_id and
    action as str, date normalised to the day, probability float64 in [0, 1]) and `row`, the row a
    user sees (spreadsheet row for CSV, 0-based for Parquet), for later messages. Unreadable cells
    raise HistoryError naming the file, row and column; checks against the decisions are the
    caller's (experiments.ope.targets)."""
    path = Path(path)
    raw = read_table_file(path, "file of target probabilities", "give a CSV or Parquet file of target probabilities")
    df = _prepare(raw, path.name, "target probabilities", TARGET_PROBS_COLUMNS)
    ck = _Checks(df, path.name)
    cid = _ids(ck, df["customer_id"], "customer_id")
    date = _dates(ck, df["date"], "date")
    action = _text(ck, df["action"], "action", "name the action the probability is of")
    v, text = _numbers(df["probability"])
    with np.errstate(invalid="ignore"):
        bad = ~((v >= 0) & (v <= 1))

    def describe(pos: int) -> str:
        r = text(pos)
        p = _number_problem("probability", r, v[pos]) or f"probability is {r}"
        return f"{p}; a probability must be in [0, 1]"

    ck.add("probability", bad, describe)
    ck.raise_first()
    return pd.DataFrame(
        {
            "customer_id": np.asarray(cid, dtype=object),  # object, not fixed-width: see read_probability_column
            "date": date,
            "action": np.asarray(action, dtype=object),
            "probability": v,
            "row": (ck.labels if ck.labels is not None else np.arange(len(df))).astype(np.int64) + ck.offset,
        }
    )


def _costs(ck: _Checks, s: pd.Series, column: str) -> np.ndarray:
    v, raw = _numbers(s)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(v) | (v < 0)

    def describe(pos: int) -> str:
        r = raw(pos)
        p = _number_problem(column, r, v[pos])
        if p is not None:
            return (
                f"{p}; expected the contact's cost, a number >= 0 (0 if it cost nothing), or drop the "
                "cost column to use the catalogue's costs"
            )
        return f"{column} is negative ({r}); costs must be >= 0"

    ck.add(column, bad, describe)
    return v


def _prepare(df: pd.DataFrame | None, file: str, table: str, required: tuple[str, ...] | None = None) -> pd.DataFrame:
    """`df` with stripped, unique column names holding the `required` columns (default: the data
    contract's for `table`) and at least one row; HistoryError naming the file and column otherwise."""
    required = REQUIRED_COLUMNS[table] if required is None else required
    if df is None:
        raise HistoryError(file, None, None, f"no {table} table given")
    names = [str(c).strip() for c in df.columns]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise HistoryError(file, None, dup, "the header names this column twice; column names must be unique")
    if names != list(df.columns):
        df = df.set_axis(names, axis=1)
    for col in required:
        if col not in df.columns:
            hint = ""
            near = [c for c in names if c.lower() == col.lower()]
            if near:
                hint = f" (found {near[0]!r}: column names are case-sensitive)"
            elif len(names) == 1 and any(sep in names[0] for sep in (";", "\t", "|")):
                hint = " (the header looks like it uses another separator; save as comma-separated CSV)"
            raise HistoryError(
                file,
                None,
                col,
                f"missing required column '{col}'; the {table} table needs "
                f"{', '.join(required)}; found: {', '.join(names)}{hint}",
            )
    if len(df) == 0:
        raise HistoryError(file, None, None, f"no data rows; the {table} table needs at least one row below the header")
    return df


def _extras(df: pd.DataFrame, skip: Iterable[str]) -> dict[str, Any]:
    """Extra columns, kept; text columns are stripped of surrounding whitespace."""
    skip = set(skip)
    out: dict[str, Any] = {}
    for c in df.columns:
        if c in skip:
            continue
        s = df[c]
        if isinstance(s.dtype, pd.StringDtype) or s.dtype == object:
            s = s.astype("str").str.strip()
        out[c] = s.array
    return out


def _day_numbers(dates: Any) -> np.ndarray:
    v = np.asarray(dates, dtype="datetime64[ns]").view("int64")
    return np.floor_divide(v, _DAY_NS)


def _is_sorted(cid: pa.ChunkedArray, day: np.ndarray | None) -> bool:
    n = len(cid)
    if n < 2:
        return True
    a, b = cid.slice(0, n - 1), cid.slice(1)
    if pc.any(pc.less(b, a)).as_py():
        return False
    if day is None:
        return True
    same = _np_bool(pc.equal(a, b))
    return not np.any(same & (day[1:] < day[:-1]))


def _sort_order(cid: pa.ChunkedArray, day: np.ndarray | None) -> tuple[np.ndarray, pa.Array] | None:
    """Stable order by (customer_id[, day]) and the customer ids in that order; None when the
    rows are already sorted. Vectorised: one hash encoding of the ids, one integer sort."""
    n = len(cid)
    if _is_sorted(cid, day):
        return None
    codes, dictionary = _encode(cid, chunked=False)
    srt = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty(len(dictionary), dtype=np.int64)
    rank[srt] = np.arange(len(dictionary), dtype=np.int64)
    key = rank[codes]  # customer rank, in file order
    del codes, rank
    span, dmin = 1, 0
    if day is not None:
        dmin = int(day.min())
        span = int(day.max()) - dmin + 1
    if len(dictionary) * span * n < 2**62:
        # one int64 key (rank, day, position): a plain sort is stable and much faster than argsort
        if day is not None:
            key *= span
            key += day
            key -= dmin
        key *= n
        key += np.arange(n, dtype=np.int64)
        key.sort()
        ranks = key // (span * n)
        np.remainder(key, n, out=key)
        order = key
    else:
        order = np.lexsort((day, key)) if day is not None else np.argsort(key, kind="stable")
        ranks = key[order]
    ids = dictionary.take(pa.array(srt)).take(pa.array(ranks))  # monotone gather: fast
    return order, ids


def _sorted_frame(cols: dict[str, Any], by_date: bool = True) -> pd.DataFrame:
    """DataFrame of `cols` (customer_id first) stably sorted by customer_id[, date]."""
    cid = cols["customer_id"]
    cid = cid if isinstance(cid, pd.Series) else pd.Series(cid)
    day = _day_numbers(cols["date"]) if by_date else None
    res = _sort_order(_arrow(cid), day)
    out: dict[str, Any] = {}
    for k, v in cols.items():
        v = v.array if isinstance(v, (pd.Series, pd.Index)) else v
        if res is not None:
            order, ids = res
            if k == "customer_id":
                v = pd.Series(pa.chunked_array([ids]).to_pandas()).array
            elif isinstance(v, np.ndarray):
                v = v[order]
            else:
                v = v.take(order)
        out[k] = v
    return pd.DataFrame(out)


def _group_starts(cid: pd.Series, day: np.ndarray) -> np.ndarray:
    """True where a new (customer, day) group starts, for rows sorted by customer and date."""
    n = len(day)
    starts = np.ones(n, dtype=bool)
    if n > 1:
        a = _arrow(cid)
        starts[1:] = _np_bool(pc.not_equal(a.slice(1), a.slice(0, n - 1))) | (day[1:] != day[:-1])
    return starts


def merge_same_day(tx: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per (customer_id, date): amounts (and other numeric columns, e.g. n_items) summed.

    Dates are taken to the day. Text columns (product, channel, ...) are dropped since one day's
    purchases may mix them. Returns the merged frame, sorted by customer and date, and the number
    of rows merged away (``len(tx) - len(merged)``).
    """
    for c in REQUIRED_COLUMNS["transactions"]:
        if c not in tx.columns:
            raise KeyError(f"merge_same_day needs a {c!r} column")
    day = _day_numbers(tx["date"].to_numpy())
    numeric = [
        c for c in tx.columns if c not in ("customer_id", "date", "amount") and _is_plain_number_dtype(tx[c].dtype)
    ]
    if _already_merged(tx, day):  # a validated history without same-day rows: no copy of a whole book
        return tx[["customer_id", "date", "amount", *numeric]], 0
    cols: dict[str, Any] = {
        "customer_id": _to_str(tx["customer_id"]),
        "date": day.astype("datetime64[D]").astype("datetime64[ns]"),
        "amount": tx["amount"].to_numpy(dtype="float64"),
    }
    for c in tx.columns:
        if c not in cols and _is_plain_number_dtype(tx[c].dtype):
            cols[c] = tx[c].to_numpy()
    tx = _sorted_frame(cols)
    n = len(tx)
    if n == 0:
        return tx, 0
    starts = _group_starts(tx["customer_id"], _day_numbers(tx["date"].to_numpy()))
    idx = np.flatnonzero(starts)
    out: dict[str, Any] = {
        "customer_id": tx["customer_id"].array.take(idx),
        "date": tx["date"].to_numpy()[idx],
    }
    for c in list(cols)[2:]:
        out[c] = np.add.reduceat(tx[c].to_numpy(), idx)
    merged = pd.DataFrame(out)
    return merged, n - len(merged)


def _already_merged(tx: pd.DataFrame, day: np.ndarray) -> bool:
    """Whether `tx` is what merge_same_day would make of it, up to its text columns: ids as text
    without gaps, dates at midnight in datetime64[ns], float amounts, sorted by customer and date,
    one row per customer and day (what validate_transactions gives for most histories)."""
    cid, date = tx["customer_id"], tx["date"]
    if not (isinstance(cid.dtype, pd.StringDtype) and not cid.hasnans and date.dtype == "datetime64[ns]"):
        return False
    if tx["amount"].dtype != np.float64 or not len(tx) or not tx.index.equals(pd.RangeIndex(len(tx))):
        return False
    if np.any(date.to_numpy().view("int64") != day * _DAY_NS):
        return False
    arr = _arrow(cid)
    if _needs_strip(arr) or not _is_sorted(arr, day):
        return False
    return bool(_group_starts(cid, day).all())


def _duplicate_rows(tx: pd.DataFrame, starts: np.ndarray) -> int:
    """Rows equal in every column to an earlier row (only same-customer-day rows can be)."""
    gid = np.cumsum(starts) - 1
    multi = np.bincount(gid)[gid] > 1
    if not multi.any():
        return 0
    return int(tx.loc[multi].duplicated().sum())


# --------------------------------------------------------------------------------------------
# table validation


def validate_transactions(
    df: pd.DataFrame, file: str, notes: list[str] | None = None, today: Any = None
) -> pd.DataFrame:
    """customer_id (str), date (datetime64[ns], day), amount (float64 >= 0) [+ product, channel,
    extra columns], sorted by customer_id and date (stable). Repairs are said in `notes`.
    `today`: dates more than FUTURE_SLACK_DAYS after it are refused (None: not checked)."""
    df = _prepare(df, file, "transactions")
    ck = _Checks(df, file)
    cid = _ids(ck, df["customer_id"], "customer_id", notes)
    date = _dates(ck, df["date"], "date")
    _not_future(ck, date, "date", today)
    amount = _amounts(ck, df["amount"], "amount")
    ck.raise_first()
    cols: dict[str, Any] = {"customer_id": cid, "date": date, "amount": amount}
    for c in ("product", "channel"):
        if c in df.columns:
            cols[c] = _to_str(df[c])
    cols.update(_extras(df, cols))
    return _sorted_frame(cols)


SIGNUP_SLACK_DAYS = 366  # a customers table may be extracted after the transactions, but not a year after


def validate_customers(
    df: pd.DataFrame, file: str, notes: list[str] | None = None, last_day: Any = None, today: Any = None
) -> pd.DataFrame:
    """customer_id (str, unique) [+ signup_date datetime64[ns], attribute columns], sorted by id.

    `last_day`: the history's last transaction; a signup_date more than SIGNUP_SLACK_DAYS after it
    (2100-01-01: a placeholder for "unknown") is refused, and so is one more than
    FUTURE_SLACK_DAYS after `today`."""
    df = _prepare(df, file, "customers")
    ck = _Checks(df, file)
    cid = _ids(ck, df["customer_id"], "customer_id", notes)
    cols: dict[str, Any] = {"customer_id": cid}
    if "signup_date" in df.columns:
        signup = cols["signup_date"] = _dates(ck, df["signup_date"], "signup_date")
        if last_day is not None:
            last = np.datetime64(pd.Timestamp(last_day), "D")
            ck.add(
                "signup_date",
                signup > (last + np.timedelta64(SIGNUP_SLACK_DAYS, "D")).astype("datetime64[ns]"),
                lambda pos: (
                    f"signup_date {np.datetime64(signup[pos], 'D')} is more than a year after the last transaction "
                    f"({last}): a placeholder, not a signup; fix it or leave it empty"
                ),
            )
        _not_future(ck, signup, "signup_date", today, "fix it or leave it empty")
    ck.raise_first()
    dup = cid.duplicated().to_numpy(dtype=bool)
    if dup.any():
        pos = int(dup.argmax())
        first = int(np.flatnonzero((cid == cid.iloc[pos]).to_numpy(dtype=bool))[0])
        raise HistoryError(
            file,
            ck.row(pos),
            "customer_id",
            f"duplicate customer_id {cid.iloc[pos]!r} (first in row {ck.row(first)}); "
            "the customers table needs one row per customer",
        )
    cols.update(_extras(df, cols))
    return _sorted_frame(cols, by_date=False)


def validate_products(
    df: pd.DataFrame, file: str, notes: list[str] | None = None, first_day: Any = None, today: Any = None
) -> pd.DataFrame:
    """customer_id, date, product (str), event ('open'|'close'), sorted by customer and date.

    A product is held or not (the world's holdings are yes/no), and each customer's events of one
    product are read in date order as a holding that starts and ends. What does not fit is
    repaired, and each repair is said in `notes` (with its count and first row):

    - a close of a product the customer does not hold, before any open of it (closed before it was
      opened), is a product held since before the history: an open is added on `first_day` (the
      history's first day; default the table's);
    - an open while the product is already held (opened twice), and a close after it was already
      closed (closed twice), are ignored: dropped from the table, so every consumer (calibration's
      counts of opens minus closes, the observations' and rewards' last event) sees one holding.

    An open and a close of one product on one day change nothing: read as closed and re-opened
    when the product was held before that day, as opened and closed when it was not, and written
    in that order. `today`: dates more than FUTURE_SLACK_DAYS after it are refused (None: not checked)."""
    df = _prepare(df, file, "products")
    ck = _Checks(df, file)
    cid = _ids(ck, df["customer_id"], "customer_id", notes)
    date = _dates(ck, df["date"], "date")
    _not_future(ck, date, "date", today)
    product = _text(ck, df["product"], "product", "name the product opened or closed (e.g. credit_card)")
    event = _to_str(df["event"]).str.lower()
    ck.add(
        "event",
        ~event.isin(PRODUCT_EVENTS).to_numpy(dtype=bool),
        lambda pos: f"event is {_to_str(df['event']).iloc[pos]!r}; expected 'open' or 'close'",
    )
    ck.raise_first()
    key = pd.DataFrame({"c": cid.array, "d": date, "p": product.array, "e": event.array})
    dup = key.duplicated().to_numpy(dtype=bool)
    if dup.any():
        pos = int(dup.argmax())
        same = (key == key.iloc[pos]).all(axis=1).to_numpy(dtype=bool)
        first = int(np.flatnonzero(same)[0])
        raise HistoryError(
            file,
            ck.row(pos),
            None,
            f"duplicate of row {ck.row(first)} (same customer_id, date, product and event); "
            "record each product event once",
        )
    cols: dict[str, Any] = {"customer_id": cid, "date": date, "product": product, "event": event}
    cols.update(_extras(df, cols))
    fix = _product_holdings(cid, product, date, (event == "close").to_numpy(dtype=bool))
    if not (fix.orphan.any() or fix.opened_twice.any() or fix.closed_twice.any() or fix.second.any()):
        return _sorted_frame(cols)  # nothing to repair or to put in order (most tables)
    first_day = date.min() if first_day is None else min(np.datetime64(pd.Timestamp(first_day), "ns"), date.min())
    orphan, second = fix.orphan, fix.second.copy()
    held = pd.DataFrame({"customer_id": cid[orphan].array, "product": product[orphan].array})
    if orphan.any():
        pos = int(orphan.argmax())
        # a close on the history's first day itself: the added open comes first on that day
        second |= orphan & (date == first_day)
        if notes is not None:
            notes.append(
                f"{file}: {_count(int(orphan.sum()), 'close')} of a product the customer did not hold (no open "
                f"before; first in row {ck.row(pos)}: {product.iloc[pos]!r} closed on "
                f"{np.datetime64(date[pos], 'D')}), taken as held since before the history: "
                f"{_count(len(held), 'open')} added on {np.datetime64(first_day, 'D')}"
            )
    for mask, word, state, did, since in (
        (fix.opened_twice, "open", "already held", "opened", "held since"),
        (fix.closed_twice, "close", "no longer held", "closed", "already closed on"),
    ):
        if mask.any() and notes is not None:
            pos = int(mask.argmax())
            notes.append(
                f"{file}: {_count(int(mask.sum()), word)} of a product the customer {state} (first in row "
                f"{ck.row(pos)}: customer {cid.iloc[pos]!r}, {product.iloc[pos]!r} {did} on "
                f"{np.datetime64(date[pos], 'D')}, {since} {np.datetime64(fix.previous[pos], 'D')}), ignored: "
                "a product is held or not"
            )
    keep = ~(fix.opened_twice | fix.closed_twice)
    table = pd.DataFrame({k: (v.array if isinstance(v, pd.Series) else v) for k, v in cols.items()})
    added = held.assign(date=first_day, event="open")
    full = pd.concat([table[keep], added[list(added.columns)]], ignore_index=True)
    # first on a day what comes first there (the sort by customer and date below is stable)
    full = full.iloc[np.argsort(np.concatenate([second[keep], np.zeros(len(added), dtype=bool)]), kind="stable")]
    return _sorted_frame({c: full[c] for c in table.columns})


@dataclass
class _ProductFix:
    """What `_product_holdings` found, one entry per row of the table (file order)."""

    orphan: np.ndarray  # a close before any open of the product: held since before the history
    opened_twice: np.ndarray  # an open while the product is held
    closed_twice: np.ndarray  # a close while it is not held, after an earlier close
    second: np.ndarray  # an event that comes second on a day with an open and a close of its product
    previous: np.ndarray  # datetime64[ns]: the day of the product's events before this row's


def _product_holdings(cid: pd.Series, product: pd.Series, date: np.ndarray, close: np.ndarray) -> _ProductFix:
    """Each customer's and product's events read as a yes/no holding, in date order. Duplicate
    rows are refused before, so a day holds at most one open and one close of a product. A day
    with both changes nothing (closed and re-opened if held, opened and closed if not). On a day
    with one event the holding before it is set by the last earlier day with one event (an open
    leaves the product held, a close leaves it not held, whether or not it was redundant): an
    open then is opened twice, a close closed twice; a close on the first day of events, with no
    open that day, was held since before the history. Vectorised: one sort, running maxima."""
    n = len(close)
    c_code = pd.factorize(cid.to_numpy())[0].astype(np.int64)
    p_code = pd.factorize(product.to_numpy())[0].astype(np.int64)
    day = _day_numbers(date)
    order = np.lexsort((close, day, p_code, c_code))
    pair = (c_code * (int(p_code.max()) + 1) + p_code)[order] if n else np.zeros(0, np.int64)
    d = day[order]
    new_pair = np.ones(n, dtype=bool)
    new_pair[1:] = pair[1:] != pair[:-1]
    new_day = new_pair.copy()
    new_day[1:] |= d[1:] != d[:-1]
    day_id = np.cumsum(new_day) - 1  # (pair, day) of each sorted row
    m = int(day_id[-1]) + 1 if n else 0
    c_sorted = close[order]
    has_close = np.zeros(m, dtype=bool)
    has_open = np.zeros(m, dtype=bool)
    has_close[day_id[c_sorted]] = True
    has_open[day_id[~c_sorted]] = True
    both = has_open & has_close
    starts = np.flatnonzero(new_day)
    first_of_pair = np.maximum.accumulate(np.where(new_pair[starts], np.arange(m), 0))  # its pair's first day
    single = np.where(~both, np.arange(m), -1)
    last_single = np.maximum.accumulate(single) if m else single
    prev = np.full(m, -1, dtype=np.int64)
    prev[1:] = last_single[:-1]
    prev[prev < first_of_pair] = -1  # the last single-event day before, within the pair
    held_before = (prev >= 0) & has_open[np.maximum(prev, 0)]
    orphan_day = has_close & ~has_open & (np.arange(m) == first_of_pair)
    twice_open_day = has_open & ~has_close & held_before
    twice_close_day = has_close & ~has_open & ~held_before & ~orphan_day
    # a day with both: the close second when not held before (opened and closed), else the open
    second_sorted = both[day_id] & (c_sorted != held_before[day_id])
    # the pair's day before (of any events), for the notes
    prev_day = np.where(np.arange(m) > first_of_pair, d[starts][np.maximum(np.arange(m) - 1, 0)], 0)
    out = [np.zeros(n, dtype=bool) for _ in range(4)]
    for o, v in zip(
        out, (orphan_day[day_id], twice_open_day[day_id], twice_close_day[day_id], second_sorted), strict=True
    ):
        o[order] = v
    previous = np.zeros(n, dtype=np.int64)
    previous[order] = prev_day[day_id]
    return _ProductFix(*out, previous=(previous * _DAY_NS).astype("datetime64[ns]"))


def _known_array(known: Any) -> pa.Array:
    if isinstance(known, pa.ChunkedArray):
        known = known.combine_chunks()
    if isinstance(known, pa.Array):
        return known.cast(pa.large_string())
    if isinstance(known, (set, frozenset)):
        known = list(known)
    return pa.array(np.asarray(known, dtype=object), type=pa.large_string())


def validate_decisions(
    df: pd.DataFrame,
    file: str,
    actions: ActionCatalogue | None,
    known_customers: set[str] | None,
    notes: list[str] | None = None,
    today: Any = None,
) -> pd.DataFrame:
    """customer_id, date, action (str), propensity (float64 in (0, 1]) [+ cost float64 >= 0],
    one decision per customer and day, sorted by customer and date.

    `actions`: when given, every action must be in the catalogue. `known_customers` (a set, or
    any array of ids): when given, every decision must be about one of them. `today`: decisions
    dated more than FUTURE_SLACK_DAYS after it are refused (None, e.g. for a deployment file of
    planned contacts: not checked).
    """
    df = _prepare(df, file, "decisions")
    ck = _Checks(df, file)
    cid = _ids(ck, df["customer_id"], "customer_id", notes)
    date = _dates(ck, df["date"], "date")
    _not_future(ck, date, "date", today)
    action = _text(ck, df["action"], "action", "give the action taken ('none' when no contact was made)")
    if actions is not None:
        names = actions.names
        unknown = ~_np_bool(pc.is_in(_arrow(action), value_set=pa.array(names, type=pa.large_string())))
        unknown &= (action != "").to_numpy(dtype=bool)
        listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        ck.add(
            "action",
            unknown,
            lambda pos: (
                f"unknown action {action.iloc[pos]!r}; actions.yaml defines: {listed} (add it there or fix the row)"
            ),
        )
    propensity = _propensities(ck, df["propensity"], "propensity")
    cols: dict[str, Any] = {"customer_id": cid, "date": date, "action": action, "propensity": propensity}
    if "cost" in df.columns:
        cols["cost"] = _costs(ck, df["cost"], "cost")
    ck.raise_first()

    later = _Checks(df, file)
    if known_customers is not None:
        unknown_c = ~_np_bool(pc.is_in(_arrow(cid), value_set=_known_array(known_customers)))
        later.add(
            "customer_id",
            unknown_c,
            lambda pos: (
                f"unknown customer {cid.iloc[pos]!r}: not in transactions nor customers; "
                "decisions must be about customers in the history (drop or fix the row)"
            ),
        )
    key = pd.DataFrame({"c": cid.array, "d": date})
    dup = key.duplicated().to_numpy(dtype=bool)

    def describe_dup(pos: int) -> str:
        same = ((key["c"] == key["c"].iloc[pos]) & (key["d"] == key["d"].iloc[pos])).to_numpy(dtype=bool)
        first = int(np.flatnonzero(same)[0])
        day = str(np.datetime64(date[pos], "D"))
        return (
            f"second decision for customer {cid.iloc[pos]!r} on {day} (first in row {ck.row(first)}); "
            "log one decision per customer per day"
        )

    later.add("date", dup, describe_dup)
    later.raise_first()
    cols.update(_extras(df, cols))
    return _sorted_frame(cols)


# --------------------------------------------------------------------------------------------
# folders and bundled data


def _summarise_transactions(tx: pd.DataFrame) -> tuple[pa.Array, dict[str, int]]:
    """Distinct customer ids (tx is sorted) and the report's counts."""
    n = len(tx)
    cid = _arrow(tx["customer_id"])
    new_cid = np.ones(n, dtype=bool)
    if n > 1:
        new_cid[1:] = _np_bool(pc.not_equal(cid.slice(1), cid.slice(0, n - 1)))
    day = _day_numbers(tx["date"].to_numpy())
    starts = new_cid.copy()
    if n > 1:
        starts[1:] |= day[1:] != day[:-1]
    ids = cid.combine_chunks().filter(pa.array(new_cid)) if n else pa.array([], pa.large_string())
    return ids, {
        "duplicate_transaction_rows": _duplicate_rows(tx, starts),
        "same_day_merged": int(n - starts.sum()),
        "transaction_customers": int(new_cid.sum()) if n else 0,
    }


_CANONICAL_INT = r"-?(?:0|[1-9][0-9]{0,17})"  # round-trips through int64 and back to the same text


def customer_id_type(raw: pd.Series, ids: Any) -> str:
    """ "integer" when the user's customer ids are integers (an integer Parquet column, or CSV cells
    that all read as integers written without leading zeros), else "text": outputs give the ids
    back in the user's own type (`restore_customer_ids`), while everything inside uses text.
    `ids` are the ids as text (distinct ones suffice)."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        return "text"
    if pd.api.types.is_integer_dtype(raw.dtype):
        return "integer"
    if pd.api.types.is_float_dtype(raw.dtype) or not len(ids):
        return "text"
    return "integer" if integer_text(ids) else "text"


def integer_text(values: Any) -> bool:
    """Whether every value reads as an integer written without leading zeros (and round-trips
    through int64): ids a user wrote as numbers. Checked on the distinct values, in Arrow (no
    Python object per row: a 1M-customer book's 32M rows took 10 s that way)."""
    if isinstance(values, pd.Series):
        arr = _arrow(values.astype("str"))
    elif isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    else:
        values = np.asarray(values, dtype=object)
        try:  # text as it is (a fixed-width copy costs the longest id x 4 bytes per value)
            arr = pa.array(values, type=pa.large_string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # not all text: as str() writes each
            arr = pa.array(values.astype(str), type=pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    if not len(arr):
        return False
    u = pc.unique(arr)
    if u.null_count:
        return False
    return bool(pc.all(pc.match_substring_regex(u, f"^{_CANONICAL_INT}$")).as_py())


def restore_customer_ids(ids, id_type: str | None) -> np.ndarray:
    """Customer ids (text inside clv-engine) in the user's own type: int64 for "integer"."""
    ids = np.asarray(ids, dtype=object)
    if id_type == "integer" and ids.size:
        if integer_text(ids):  # resampled twins ("123#2") stay text
            return ids.astype(str).astype(np.int64)
    return ids


def load_history(folder: str | Path) -> History:
    """Read and validate a history folder; raises HistoryError (file, row, column) on bad input."""
    folder = Path(folder)
    if not folder.exists():
        raise HistoryError(
            str(folder), None, None, "history folder not found; give the folder that holds transactions.csv"
        )
    if not folder.is_dir():
        raise HistoryError(str(folder), None, None, "not a folder; give the folder that holds transactions.csv")
    report: dict[str, Any] = {}
    notes: list[str] = []
    skipped = 0
    # the day the history is loaded: nothing in it can be later (FUTURE_SLACK_DAYS)
    today = None if _generated_by_clv(folder) else np.datetime64(_dt.date.today(), "D")

    raw, tx_file = read_table(folder, "transactions", required=True)
    assert raw is not None
    skipped += int(raw.attrs.get("blank_rows_skipped", 0))
    tx = validate_transactions(raw, tx_file, notes, today=today)
    tx_ids, counts = _summarise_transactions(tx)
    report["customer_id_type"] = customer_id_type(raw["customer_id"], tx_ids)
    del raw
    report["transactions_rows"] = len(tx)

    customers = products = decisions = None
    first_day, last_day = tx["date"].min(), tx["date"].max()
    raw, file = read_table(folder, "customers", required=False)
    if raw is not None:
        skipped += int(raw.attrs.get("blank_rows_skipped", 0))
        customers = validate_customers(raw, file, notes, last_day=last_day, today=today)
        notes += _signups_after_first_purchase(customers, tx_ids, tx, file)
        if "signup_date" in customers.columns and customers["signup_date"].notna().any():
            first_day = min(first_day, customers["signup_date"].min())
    raw, file = read_table(folder, "products", required=False)
    if raw is not None:
        skipped += int(raw.attrs.get("blank_rows_skipped", 0))
        products = validate_products(raw, file, notes, first_day=first_day, today=today)

    actions_file, economics_file, stages_file = (_side_file(folder, n) for n in SIDE_FILES)
    actions = load_actions(actions_file) if actions_file else None
    economics = load_economics(economics_file) if economics_file else Economics()
    if economics_file is None:
        notes.append(f"economics: no economics.yaml in the history; {_economics_defaults(economics)}")
    stage_rules = load_stage_rules(stages_file) if stages_file else None

    raw, file = read_table(folder, "decisions", required=False)
    if raw is not None:
        skipped += int(raw.attrs.get("blank_rows_skipped", 0))
        known = [tx_ids.cast(pa.large_string())]
        if customers is not None:
            known.append(_arrow(customers["customer_id"]).combine_chunks().cast(pa.large_string()))
        decisions = validate_decisions(raw, file, actions, pa.concat_arrays(known), notes, today=today)

    report["customers_rows"] = 0 if customers is None else len(customers)
    report["products_rows"] = 0 if products is None else len(products)
    report["decisions_rows"] = 0 if decisions is None else len(decisions)
    report.update(counts)
    report["blank_rows_skipped"] = skipped
    return History(
        folder=str(folder),
        transactions=tx,
        customers=customers,
        products=products,
        decisions=decisions,
        actions=actions,
        economics=economics,
        report=report,
        stage_rules=stage_rules,
        notes=notes,
        decisions_file=file if decisions is not None else None,
    )


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _economics_defaults(econ: Economics) -> str:
    return (
        f"period {econ.period}, margin_rate {econ.margin_rate:g} (the whole transaction amount is margin), "
        "no discounting, no product margins"
    )


def _signups_after_first_purchase(customers: pd.DataFrame, tx_ids: pa.Array, tx: pd.DataFrame, file: str) -> list[str]:
    """A sentence when some signup_date is later than the customer's first transaction: the
    calibration takes the earlier day as the customer's birth (sim.features.summarise)."""
    if "signup_date" not in customers.columns or not len(tx):
        return []
    n = len(tx)
    cid = _arrow(tx["customer_id"])
    new_cid = np.ones(n, dtype=bool)
    if n > 1:
        new_cid[1:] = _np_bool(pc.not_equal(cid.slice(1), cid.slice(0, n - 1)))
    first = tx["date"].to_numpy()[new_cid]  # tx is sorted by customer and date: one per tx_ids entry
    where = pc.index_in(_arrow(customers["customer_id"]), value_set=tx_ids).fill_null(-1)
    where = where.to_numpy(zero_copy_only=False).astype(np.int64)
    has = where >= 0
    pos_tx = np.maximum(where, 0)
    signup = customers["signup_date"].to_numpy("datetime64[ns]")
    late = has & ~np.isnat(signup) & (signup > first[pos_tx])
    if not late.any():
        return []
    i = int(late.argmax())
    return [
        f"{file}: {_count(int(late.sum()), 'signup_date')} later than the customer's first transaction (e.g. customer "
        f"{customers['customer_id'].iloc[i]!r}: signup {np.datetime64(signup[i], 'D')}, first transaction "
        f"{np.datetime64(first[pos_tx[i]], 'D')}); the first transaction is taken as the customer's start"
    ]


def load_cdnow() -> History:
    """The bundled CDNOW master file (Fader & Hardie): 69,659 purchases of 23,570 customers,
    1997-01-01 to 1998-06-30. Transactions carry amount (= dollar value) and n_items (= CDs)."""
    name = "CDNOW_master.txt.gz"
    ref = importlib.resources.files("sim.data") / name
    with ref.open("rb") as fh:
        raw = pd.read_csv(
            fh,
            compression="gzip",
            sep=r"\s+",
            header=0,
            names=["customer_id", "date", "n_items", "amount"],
            dtype={"customer_id": str, "date": str, "n_items": np.int64, "amount": np.float64},
        )
    tx = validate_transactions(raw[["customer_id", "date", "amount", "n_items"]], name)
    report = {"transactions_rows": len(tx), "customers_rows": 0, "products_rows": 0, "decisions_rows": 0}
    report.update(_summarise_transactions(tx)[1])
    report["blank_rows_skipped"] = 0
    econ = Economics(period="week", margin_rate=1.0)
    return History(
        folder=CDNOW_FOLDER,
        transactions=tx,
        economics=econ,
        report=report,
        notes=[f"economics: the bundled CDNOW dataset has no economics.yaml; {_economics_defaults(econ)}"],
    )


def load_stage_rules(path: Path):
    """stages.yaml: fixed lifecycle-stage thresholds, in periods (new_periods, mature_periods,
    dormant_after, churned_after); any key left out is estimated from the history."""
    from .user_yaml import UserYamlError, load_yaml_file
    from .world import StageRules

    try:
        raw = load_yaml_file(path) or {}
    except UserYamlError as e:
        raise HistoryError(Path(path).name, None, None, str(e)) from None
    if not isinstance(raw, dict):
        raise HistoryError(Path(path).name, None, None, "expected a mapping of stage thresholds")
    known = set(StageRules.__dataclass_fields__)
    for k, v in raw.items():
        if k not in known:
            raise HistoryError(Path(path).name, None, k, f"unknown setting; allowed: {sorted(known)}")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise HistoryError(Path(path).name, None, k, f"must be a whole number of periods >= 1, got {v!r}")
    for lo, hi in (("new_periods", "mature_periods"), ("dormant_after", "churned_after")):
        if lo in raw and hi in raw and raw[lo] >= raw[hi]:
            raise HistoryError(
                Path(path).name, None, hi, f"{raw[hi]} must be above {lo} ({raw[lo]}): the stages come in that order"
            )
    return raw
