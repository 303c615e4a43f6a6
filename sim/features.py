"""Per-customer summaries (x, t_x, T, RFM) and the customer x period activity panel, vectorised.

Time is measured in periods of the world's economics (weeks by default) with day resolution:
t = days / period_days. A customer's birth is their signup date when customers.csv has one,
otherwise their first transaction; with a first-transaction birth, x counts repeat transactions
only (the BTYD convention); with a signup birth, every transaction counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class CustomerSummary:
    # str (an object array, as every customer-id array here: a fixed-width numpy str array costs
    # customers x the longest id x 4 bytes, 80 MB for 100,000 ids of 200 characters), sorted
    customer_id: np.ndarray
    birth: np.ndarray  # datetime64[ns]
    x: np.ndarray  # transactions after birth (repeat transactions for first-purchase births)
    t_x: np.ndarray  # periods from birth to the last transaction (0 if none)
    T: np.ndarray  # periods from birth to the cut-off
    n_tx: np.ndarray  # all transactions up to the cut-off (incl. the birth purchase)
    total_amount: np.ndarray  # all amounts up to the cut-off
    spend_x: np.ndarray  # number of transactions whose values feed the spend model
    spend_mean: np.ndarray  # their mean value (0 when spend_x == 0)
    last_date: np.ndarray  # datetime64, NaT when no transaction
    birth_is_signup: bool

    def __len__(self) -> int:
        return int(self.customer_id.shape[0])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                k: getattr(self, k)
                for k in (
                    "customer_id",
                    "birth",
                    "x",
                    "t_x",
                    "T",
                    "n_tx",
                    "total_amount",
                    "spend_x",
                    "spend_mean",
                    "last_date",
                )
            }
        )


@dataclass
class CustomerRows:
    """Transactions grouped by customer: sorted by (customer, date), with integer codes.
    Built once per cut-off (hash factorisation, no string sort) and shared by the summaries."""

    ids: np.ndarray  # (C,) str (object array), sorted
    codes: np.ndarray  # (n,) customer code of each row (int32 unless 2**31 customers or more)
    day_ns: np.ndarray  # (n,) int64 date in ns
    amount: np.ndarray  # (n,) float
    starts: np.ndarray  # (C,) first row of each customer

    @classmethod
    def from_frame(cls, tx: pd.DataFrame) -> "CustomerRows":
        codes, uniq = pd.factorize(tx["customer_id"], sort=True)
        di = tx["date"].to_numpy("datetime64[ns]").astype(np.int64)
        amount = tx["amount"].to_numpy(float)
        if codes.size > 1:
            dc = np.diff(codes)
            if not np.all((dc > 0) | ((dc == 0) & (np.diff(di) >= 0))):
                order = np.lexsort((di, codes))
                codes, di, amount = codes[order], di[order], amount[order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if codes.size else np.zeros(0, np.int64)
        if len(uniq) < np.iinfo(np.int32).max:  # a code per transaction: int32 halves 0.25 GB at 31.7M rows
            codes = codes.astype(np.int32)
        return cls(ids=np.asarray(uniq, dtype=object), codes=codes, day_ns=di, amount=amount, starts=starts)

    def gaps_days(self) -> np.ndarray:
        """Days between consecutive transactions of the same customer."""
        same = self.codes[1:] == self.codes[:-1]
        return (np.diff(self.day_ns)[same]) / 86_400e9


def summarise(
    tx: pd.DataFrame,
    cutoff: pd.Timestamp,
    period_days: float,
    customers: pd.DataFrame | None = None,
    rows: CustomerRows | None = None,
) -> CustomerSummary:
    """Summary of every customer born on or before `cutoff` from day-level transactions
    (same-day transactions already merged), using only transactions on or before `cutoff`.
    `rows` may pass the already grouped transactions up to the cut-off."""
    cutoff = pd.Timestamp(cutoff)
    if rows is None:
        rows = CustomerRows.from_frame(tx.loc[tx["date"] <= cutoff, ["customer_id", "date", "amount"]])
    signup = None
    if customers is not None and "signup_date" in customers.columns:
        signup = customers.set_index("customer_id")["signup_date"]
    ids_tx = rows.ids
    n_ids = ids_tx.shape[0]
    ends = np.r_[rows.starts[1:], rows.codes.size] - 1
    n_tx = (ends - rows.starts + 1) if n_ids else np.zeros(0, np.int64)
    total = np.add.reduceat(rows.amount, rows.starts) if n_ids else np.zeros(0)
    first = rows.day_ns[rows.starts]
    last = rows.day_ns[ends]
    # the value of the first transaction, to exclude it from repeat spend (first-purchase births)
    first_amount = rows.amount[rows.starts]

    if signup is not None:
        all_ids = sorted_union(ids_tx, signup.index)
        su = signup.reindex(all_ids).to_numpy("datetime64[ns]").astype("int64")
        pos = lookup(all_ids, ids_tx)[0]  # every id of ids_tx is in all_ids
        first_all = np.full(all_ids.shape[0], np.iinfo(np.int64).max)
        first_all[pos] = first
        nat = np.isnat(signup.reindex(all_ids).to_numpy("datetime64[ns]"))
        birth = np.where(nat, first_all, np.minimum(su, first_all))
        keep = birth <= cutoff.value
        ids = all_ids[keep]
        birth = birth[keep]
        idx = np.full(all_ids.shape[0], -1)
        idx[pos] = np.arange(n_ids)
        idx = idx[keep]
        has = idx >= 0
        g = lambda arr, fill: np.where(has, arr[np.maximum(idx, 0)], fill)  # noqa: E731
        n_tx_c, total_c = g(n_tx, 0), g(total, 0.0)
        last_c = g(last, np.iinfo(np.int64).min)
        x = n_tx_c.astype(float)
        spend_x, spend_sum = x.copy(), total_c
        birth_is_signup = True
    else:
        ids, birth = ids_tx, first
        n_tx_c, total_c, last_c = n_tx, total, last
        x = (n_tx - 1).astype(float)
        spend_x = x.copy()
        spend_sum = total - first_amount
        birth_is_signup = False
    day_ns = 86_400 * 10**9
    has_tx = n_tx_c > 0
    t_x = np.where(has_tx & (x > 0), (last_c - birth) / day_ns / period_days, 0.0)
    T = (cutoff.value - birth) / day_ns / period_days
    spend_mean = np.divide(spend_sum, spend_x, out=np.zeros_like(spend_sum, dtype=float), where=spend_x > 0)
    last_dt = np.where(has_tx, last_c, np.iinfo(np.int64).min).astype("datetime64[ns]")
    last_dt[~has_tx] = np.datetime64("NaT")
    return CustomerSummary(
        customer_id=ids,
        birth=birth.astype("datetime64[ns]"),
        x=x,
        t_x=np.maximum(t_x, 0.0),
        T=np.maximum(T, 0.0),
        n_tx=n_tx_c.astype(np.int64),
        total_amount=total_c.astype(float),
        spend_x=spend_x,
        spend_mean=spend_mean,
        last_date=last_dt,
        birth_is_signup=birth_is_signup,
    )


def _strings(values) -> pa.Array | pa.ChunkedArray:
    """`values` (a Series, an Arrow array, an array or list of str) as Arrow strings, without a
    fixed-width numpy copy."""
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.array
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, from_pandas=True)
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.large_string())
    return arr


def sorted_union(a, b) -> np.ndarray:
    """The distinct ids of `a` and `b`, sorted, as an object array: np.union1d's answer (Arrow
    sorts UTF-8 bytes, which is code-point order, as numpy and Python sort str), in Arrow: an
    object-array sort compares Python strings one pair at a time (2.3x slower at 1M ids), a
    fixed-width one costs the longest id x 4 bytes per id."""
    parts = [_strings(x) for x in (a, b)]
    chunks = [c.cast(pa.large_string()) for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
    u = pc.unique(pa.chunked_array(chunks, type=pa.large_string()))
    return np.asarray(u.take(pc.sort_indices(u)).to_numpy(zero_copy_only=False), dtype=object)


def lookup(ids: np.ndarray, values) -> tuple[np.ndarray, np.ndarray]:
    """(row in the sorted, distinct `ids`, found?) for each customer id in `values` (a Series, an
    Arrow array or an array of str); rows of unknown ids are 0 and must be masked with `found`.

    A hash lookup on Arrow strings: `values` (one per transaction or decision) is never turned
    into a fixed-width numpy array, which costs rows x longest id x 4 bytes (a 36-character UUID
    column of 20M rows: 2.9 GB), and neither is `ids`."""
    n = len(values)
    if len(ids) == 0 or n == 0:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    arr = _strings(values)
    keys = _strings(ids)
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    pos = pc.index_in(arr, value_set=keys.cast(arr.type))
    found = pos.is_valid().to_numpy(zero_copy_only=False)
    code = pos.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    return code, np.asarray(found, bool)


def period_index(dates: np.ndarray, origin: pd.Timestamp, period_days: float) -> np.ndarray:
    """Index of the period each date falls in, counting from `origin` (period 0 starts there)."""
    days = (np.asarray(dates, "datetime64[ns]") - np.datetime64(pd.Timestamp(origin), "ns")) / np.timedelta64(1, "D")
    return np.floor(days / period_days).astype(np.int64)


def count_in_window(codes: np.ndarray, dates: np.ndarray, n: int, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    """Per customer code, the number of rows with start < date <= end."""
    d = np.asarray(dates, "datetime64[ns]")
    m = (d > np.datetime64(pd.Timestamp(start), "ns")) & (d <= np.datetime64(pd.Timestamp(end), "ns"))
    return np.bincount(codes[m], minlength=n)


@dataclass
class Panel:
    """Customer x period grid over [origin, cutoff]: transaction counts and observable stages.

    stage_before[i, w] is the stage at the start of period w, from behaviour up to period w-1,
    which is what a decision taken in period w sees (and what the simulator uses)."""

    origin: pd.Timestamp
    n_periods: int
    counts: np.ndarray  # (N, W) int16 transactions per period
    birth_period: np.ndarray  # (N,) int
    stage_before: np.ndarray  # (N, W) int8; -1 before birth


PANEL_BLOCK_CELLS = 4_000_000  # customer x period cells whose stages are computed together


PANEL_ROW_BLOCK = 4_000_000  # transactions placed on the panel together


def build_panel(
    summary: CustomerSummary,
    tx: pd.DataFrame,
    cutoff: pd.Timestamp,
    period_days: float,
    rules,
    rows: CustomerRows | None = None,
) -> Panel:
    """The activity panel, for histories that need it (products, decisions); O(N x W) memory.
    `rows`: the transactions up to `cutoff` already grouped (CustomerRows), read in place of `tx`."""
    origin = pd.Timestamp(summary.birth.min()).normalize()
    W = int(period_index(np.array([np.datetime64(pd.Timestamp(cutoff), "ns")]), origin, period_days)[0]) + 1
    N = len(summary)
    if rows is None:
        dates = tx["date"].to_numpy("datetime64[ns]")
        upto = dates <= np.datetime64(pd.Timestamp(cutoff), "ns")
        # the two columns filtered, not the frame (a copy of every column of every transaction)
        ids = tx["customer_id"].array
        code, ok = lookup(summary.customer_id, ids if upto.all() else ids[upto])
        w = period_index(dates[upto], origin, period_days)
        cell = code[ok] * W + w[ok]
        del code, ok, w
    else:
        # each distinct id looked up once (not one string per transaction), and the cells found a
        # block of transactions at a time: whole, the int64 temporaries per transaction were ~1.5 GB
        # of a 1M-customer book (31.7M transactions)
        pos, found = lookup(summary.customer_id, rows.ids)
        cell = np.empty(rows.codes.size, np.int64)
        m = 0
        for lo in range(0, rows.codes.size, PANEL_ROW_BLOCK):
            c = rows.codes[lo : lo + PANEL_ROW_BLOCK]
            ok = found[c]
            w = period_index(rows.day_ns[lo : lo + PANEL_ROW_BLOCK].view("datetime64[ns]"), origin, period_days)
            part = pos[c[ok]] * W + w[ok]
            cell[m : m + part.size] = part
            m += part.size
        cell = cell[:m]
    flat = np.bincount(cell, minlength=N * W).reshape(N, W)
    del cell
    counts = np.empty((N, W), np.int16)
    block = max(1, PANEL_BLOCK_CELLS // max(W, 1))
    for lo in range(0, N, block):  # the clip's int64 copy by blocks of customers too
        counts[lo : lo + block] = np.minimum(flat[lo : lo + block], np.iinfo(np.int16).max)
    del flat
    birth_p = period_index(summary.birth, origin, period_days)
    # the birth purchase itself is not a "repeat" transaction but it is activity: keep it
    cols = np.arange(W)
    stage = np.empty((N, W), np.int8)
    # in blocks of customers: the stages' int64 temporaries are ~50 bytes a cell for a whole book
    block = max(1, PANEL_BLOCK_CELLS // max(W, 1))
    for lo in range(0, N, block):
        hi = min(lo + block, N)
        last_active = np.where(counts[lo:hi] > 0, cols[None, :], -1)
        np.maximum.accumulate(last_active, axis=1, out=last_active)
        # at the start of period w, the last active period is last_active[:, w-1]
        prev = np.concatenate([np.full((hi - lo, 1), -1), last_active[:, :-1]], axis=1)
        tenure = cols[None, :] - birth_p[lo:hi, None]
        recency = np.where(prev >= 0, cols[None, :] - 1 - prev, tenure)
        part = rules.assign(tenure, recency).astype(np.int8)
        part[tenure < 0] = -1
        stage[lo:hi] = part
    return Panel(origin=origin, n_periods=W, counts=counts, birth_period=birth_p, stage_before=stage)
