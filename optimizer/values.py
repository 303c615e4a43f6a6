"""Value tables: the optimizer's input (one row per customer or segment x action), validated and
packed into dense (rows x actions) arrays.

The long table has the columns `customer_id, segment, action, channel, value, cost` and an
optional `count`:

- `value`: the expected incremental value of the action over doing nothing ("none"), net of
  what the action costs (so the optimizer maximises lifetime value, not spend);
- `cost`: the expected cost the action charges to the marketing budget, >= 0;
- `count`: rows that stand for several identical customers (a segment-level table); the
  optimizer then decides how many of them get each action. Absent means 1.
- `cash_cost` (optional): what the contact costs in cash, at catalogue price. `cost` is what the
  decision charges to the budget, which `clv values` measures as the contact cost it adds over
  what the continuation would spend anyway (the incremental cost); with `cash_cost` the plan's
  cash spend is reported beside it. Absent: the cash spend is not known.

"none" is implicit (value 0, cost 0) and must not appear; a customer with no row for an action is
not eligible for it (contact rules, opt-outs). Strings stay in Arrow (dictionary-encoded) so a
10M-row table loads without ten million Python strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import HistoryError

REQUIRED = ("customer_id", "segment", "action", "channel", "value", "cost")
OPTIONAL = ("count", "cash_cost")
NONE_ACTION = "none"


class ValueTableError(HistoryError):
    """Bad input in a value table: "file, row R, column 'c': message" (one line)."""


@dataclass
class ValueTable:
    """Dense form of a value table: row i (a customer, or `count[i]` identical ones) x action j."""

    ids: np.ndarray  # (n,) customer ids (or segment-level row ids) as strings
    segment: np.ndarray  # (n,) int index into `segments`
    segments: list[str]
    actions: list[str]  # J actions (never "none")
    channels: list[str]
    action_channel: np.ndarray  # (J,) int index into `channels`
    value: np.ndarray  # (n, J) float64, 0 where not eligible
    cost: np.ndarray  # (n, J) float64, 0 where not eligible
    eligible: np.ndarray  # (n, J) bool
    count: np.ndarray = field(default=None)  # (n,) int64 >= 1
    source: str = "<arrays>"
    id_type: str = "text"  # "integer" when the user's ids were integers: outputs give them back as such
    cash_cost: np.ndarray | None = None  # (n, J) catalogue cost of the contact, 0 where not eligible; None: unknown

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.count is None:
            self.count = np.ones(n, dtype=np.int64)
        self.value = np.where(self.eligible, self.value, 0.0)
        self.cost = np.where(self.eligible, self.cost, 0.0)
        if self.cash_cost is not None:
            self.cash_cost = np.where(self.eligible, self.cash_cost, 0.0)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @property
    def customer_level(self) -> bool:
        return bool((self.count == 1).all())

    @property
    def n_options(self) -> int:
        return int(self.eligible.sum())

    def segment_sizes(self) -> np.ndarray:
        return np.bincount(self.segment, weights=self.count, minlength=len(self.segments)).astype(np.int64)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, source: str = "<frame>", row_offset: int = 1) -> "ValueTable":
        """Validate and pack a long DataFrame (see the module docstring for the columns)."""
        import pyarrow as pa

        for col in ("value", "cost", "count", "cash_cost"):
            if col in df.columns and df[col].dtype == object:
                num = pd.to_numeric(df[col], errors="coerce")
                bad = np.flatnonzero(num.isna().to_numpy() & df[col].notna().to_numpy())
                if len(bad):
                    raise ValueTableError(
                        source, int(bad[0]) + row_offset, col, f"{df[col].iloc[bad[0]]!r} is not a number"
                    )
                df = df.assign(**{col: num})
        return _from_arrow([pa.Table.from_pandas(df, preserve_index=False)], source, row_offset)

    def user_ids(self, ids: np.ndarray) -> np.ndarray:
        """Ids (text inside) in the user's own type."""
        from sim.history import restore_customer_ids

        return restore_customer_ids(ids, self.id_type)

    def to_frame(self) -> pd.DataFrame:
        """The long table back (eligible rows only), e.g. to save a built or generated table."""
        r, j = np.nonzero(self.eligible)
        out = pd.DataFrame(
            {
                "customer_id": self.user_ids(self.ids[r]),
                "segment": np.asarray(self.segments, dtype=object)[self.segment[r]],
                "action": np.asarray(self.actions, dtype=object)[j],
                "channel": np.asarray(self.channels, dtype=object)[self.action_channel[j]],
                "value": self.value[r, j],
                "cost": self.cost[r, j],
            }
        )
        if self.cash_cost is not None:
            out["cash_cost"] = self.cash_cost[r, j]
        if not self.customer_level:
            out["count"] = self.count[r]
        return out


def load_values(path: str | Path) -> ValueTable:
    """Read a value table from Parquet or CSV; bad input raises ValueTableError naming file, row, column."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise ValueTableError(str(path), None, None, "value table not found; build one with `clv values`")
    try:
        if path.suffix.lower() == ".csv":
            # ids and labels as strings whatever they look like; numbers parsed below with row errors
            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    column_types={
                        c: pa.dictionary(pa.int32(), pa.string())
                        for c in ("customer_id", "segment", "action", "channel")
                    }
                ),
            )
            offset = 2  # spreadsheet row: header is row 1
        else:
            table = pq.read_table(
                path,
                read_dictionary=[
                    c for c in ("customer_id", "segment", "action", "channel") if c in pq.read_schema(path).names
                ],
            )
            offset = 1  # 1-based data row
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueTableError(
            str(path),
            None,
            None,
            f"cannot read as {'CSV' if path.suffix.lower() == '.csv' else 'Parquet'}: "
            + str(e).splitlines()[0].rstrip(". ")
            + "; give the table written by `clv values` "
            "(or a CSV)",
        ) from None
    holder = [table]
    table = None  # free the Arrow columns before the dense arrays are built
    return _from_arrow(holder, str(path), offset)


def _from_arrow(holder: list, source: str, offset: int) -> ValueTable:
    """Validate and pack; `holder` is a one-element list with the Arrow table, emptied here once
    the columns are extracted so its memory is freed before the dense arrays are built."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = holder.pop()

    def fail(i: int | None, col: str | None, msg: str):
        raise ValueTableError(source, None if i is None else int(i) + offset, col, msg)

    names = [c.strip() for c in table.column_names]
    table = table.rename_columns(names)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        fail(
            None,
            missing[0],
            f"missing column (a value table needs {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})",
        )
    if table.num_rows == 0:
        fail(None, None, "no rows")

    def labels(col: str):
        """(codes per row, names) of a string column, whitespace-trimmed; works on the
        dictionary (distinct values) so ten million rows cost one pass over integer codes."""
        arr = table.column(col)
        if not pa.types.is_dictionary(arr.type):
            if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                arr = pc.cast(arr, pa.string())
            arr = pc.dictionary_encode(arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr)
            arr = pa.chunked_array([arr])
        arr = arr.unify_dictionaries() if arr.num_chunks > 1 else arr
        chunks = arr.chunks
        dictionary = chunks[0].dictionary if chunks else pa.array([], pa.string())
        if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
            dictionary = pc.cast(dictionary, pa.string())
        idx = (
            np.concatenate([np.asarray(c.indices.fill_null(-1)) for c in chunks]).astype(np.int64)
            if chunks
            else np.zeros(0, dtype=np.int64)
        )
        names = np.asarray([(v or "").strip() for v in dictionary.to_pylist()], dtype=object)
        bad = idx < 0
        empty = np.flatnonzero(names == "")
        if len(empty):
            bad |= np.isin(idx, empty)
        if bad.any():
            fail(np.flatnonzero(bad)[0], col, "empty")
        uniq, inv = np.unique(names.astype(str), return_inverse=True)  # trimming can merge values
        used = np.zeros(len(uniq), dtype=bool)
        codes = inv.ravel()[idx]
        used[codes] = True
        remap = np.cumsum(used) - 1
        return remap.astype(np.int32)[codes], uniq[used].astype(object)

    def numbers(col: str) -> np.ndarray:
        arr = table.column(col)
        try:
            x = np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            s = np.asarray(pc.cast(arr, pa.string()).to_pylist(), dtype=object)
            for i, v in enumerate(s):
                try:
                    float(v)
                except (TypeError, ValueError):
                    fail(i, col, f"{v!r} is not a number")
            raise
        bad = ~np.isfinite(x)
        if bad.any():
            fail(np.flatnonzero(bad)[0], col, "missing, NaN or infinite")
        return x

    raw_type = table.column("customer_id").type
    if pa.types.is_dictionary(raw_type):
        raw_type = raw_type.value_type
    cust, cust_names = labels("customer_id")
    from sim.history import integer_text

    id_type = "integer" if pa.types.is_integer(raw_type) or integer_text(cust_names) else "text"
    seg, seg_names = labels("segment")
    act, act_names = labels("action")
    chan, chan_names = labels("channel")
    value, cost = numbers("value"), numbers("cost")
    has_count = "count" in names
    cnt = numbers("count") if has_count else None
    cash = numbers("cash_cost") if "cash_cost" in names else None
    table = None  # free the Arrow columns before the dense arrays are built
    if (cost < 0).any():
        i = np.flatnonzero(cost < 0)[0]
        fail(i, "cost", f"negative cost {cost[i]:g}")
    if cash is not None and (cash < 0).any():
        i = np.flatnonzero(cash < 0)[0]
        fail(i, "cash_cost", f"negative cost {cash[i]:g}")
    none_code = np.flatnonzero(np.char.lower(act_names.astype(str)) == NONE_ACTION)
    if len(none_code):
        i = np.flatnonzero(act == none_code[0])[0]
        fail(i, "action", "'none' is implicit (value 0, cost 0); leave it out of the table")
    if has_count:
        bad = (cnt < 1) | (cnt != np.round(cnt))
        if bad.any():
            i = np.flatnonzero(bad)[0]
            fail(i, "count", f"{cnt[i]:g} is not a whole number >= 1")
        cnt = cnt.astype(np.int64)
    else:
        cnt = np.ones(len(cust), dtype=np.int64)

    n, J = len(cust_names), len(act_names)
    key = cust.astype(np.int64) * J + act
    order = np.argsort(key, kind="stable")
    sk = key[order]
    del key
    dup = np.flatnonzero(sk[1:] == sk[:-1])
    del sk
    if len(dup):
        first = order[dup + 1].min()
        fail(
            first,
            "action",
            f"duplicate row for customer {cust_names[cust[first]]!r} and action {act_names[act[first]]!r}",
        )

    def consistent(owner: np.ndarray, n_owner: int, attr: np.ndarray, col: str, what: str, names_, attr_names):
        ref = np.full(n_owner, -1, dtype=np.int64)
        ref[owner[::-1]] = attr[::-1]  # first occurrence wins
        bad = attr != ref[owner]
        if bad.any():
            i = np.flatnonzero(bad)[0]
            show = (lambda v: int(v)) if attr_names is None else (lambda v: attr_names[v])
            fail(
                i,
                col,
                f"{what} {names_[owner[i]]!r} has {col} {show(attr[i])!r} here but "
                f"{show(ref[owner[i]])!r} on an earlier row",
            )
        return ref

    cust_seg = consistent(cust, n, seg, "segment", "customer", cust_names, seg_names)
    act_chan = consistent(act, J, chan, "channel", "action", act_names, chan_names)
    cust_cnt = (
        consistent(cust, n, cnt, "count", "customer", cust_names, None) if has_count else np.ones(n, dtype=np.int64)
    )

    # actions and segments in sorted order so that results do not depend on row order
    a_order = np.argsort(act_names.astype(str))
    a_rank = np.empty(J, dtype=np.int64)
    a_rank[a_order] = np.arange(J)
    s_order = np.argsort(seg_names.astype(str))
    s_rank = np.empty(len(seg_names), dtype=np.int64)
    s_rank[s_order] = np.arange(len(seg_names))
    c_order = np.argsort(chan_names.astype(str))
    c_rank = np.empty(len(chan_names), dtype=np.int64)
    c_rank[c_order] = np.arange(len(chan_names))

    V = np.zeros((n, J))
    C = np.zeros((n, J))
    E = np.zeros((n, J), dtype=bool)
    aj = a_rank[act]
    V[cust, aj] = value
    C[cust, aj] = cost
    E[cust, aj] = True
    CC = None
    if cash is not None:
        CC = np.zeros((n, J))
        CC[cust, aj] = cash
    act_channel = np.empty(J, dtype=np.int64)
    act_channel[a_rank] = c_rank[act_chan]
    return ValueTable(
        ids=cust_names.astype(str),
        id_type=id_type,
        segment=s_rank[cust_seg],
        segments=[str(s) for s in seg_names[s_order]],
        actions=[str(a) for a in act_names[a_order]],
        channels=[str(c) for c in chan_names[c_order]],
        action_channel=act_channel,
        value=V,
        cost=C,
        eligible=E,
        count=cust_cnt,
        source=source,
        cash_cost=CC,
    )
