"""Payment regularity from a customer's transaction series by spectral analysis.

A customer who pays on a cycle (salary-driven card use, monthly transfers, supplier runs) leaves a
peak in the periodogram of their activity series; a regular payer whose cycle breaks is an early
sign of dormancy (the bank case studies). For every customer, vectorised (no loop per customer):

* **Series.** Transactions per period (economics ``period_days``; same-day transactions already
  merged by calibration) over the complete periods of the customer's life up to the cut-off,
  counted back from the cut-off (the last period ends on the cut-off day, so the recent periods
  are whole; a partial period at birth is left out), at most ``max_periods`` of them (the most
  recent). Counts per period rather than days: cycles shorter than two periods cannot be seen at
  the world's resolution anyway (Nyquist), a daily series would cost seven times more and its
  week-day rhythm would dominate, and counts (unlike a 0/1 "active" flag) keep a frequent
  customer's pay-week bursts.
* **Periodogram.** y = series − its mean; X(f) = Σₜ yₜ e^(−2πift) (numpy ``rfft`` of y zero-padded
  to N(L), the smallest power of two ≥ 2L and ≥ 16: the grid f = j/N depends on the series length
  L only, so grouping customers by N gives exactly the per-customer result). Normalised as in
  Scargle (1982) / Lomb (1976): r(f) = c·|X(f)|² / (L·Σy²) (c = 2, or 1 at f = ½) is the share of
  the series' variance (its non-DC spectral power) that the best sinusoid at f explains (exact at
  the Fourier frequencies k/L, a close approximation in between).
* **Cycle of period p = 1/f**, 2 ≤ p ≤ min(``max_period``, L/4) (at least four cycles seen):
  R²(p) = Σₕ r(h·f) over the first min(⌊p/2⌋, MAX_HARMONICS) harmonics (a pay cycle is a spike
  train, whose power is spread over the harmonics); harmonic h takes the largest r within
  ±⌊h/2⌋ grid steps of h·f (an off-grid fundamental moves it that far). For an integer p with
  all its harmonics this is the R² of the "mean activity at each phase of a p-cycle" fit, with
  df = p − 1 degrees of freedom (the multi-harmonic periodogram / analysis of variance of
  Schwarzenberg-Czerny 1989, 1996); in general df = Σₕ c.
* **Dominant period** (``payment_period``, in periods): the p maximising the analysis-of-variance
  statistic F = (R²/df) / ((1 − R²)/(L − 1 − df)); ties (perfect cycles, whose multiples 2p, 3p
  explain as much) go to the shorter period. **Strength** (``payment_strength``): the adjusted R²
  there, 1 − (1 − R²)(L − 1)/(L − 1 − df), clipped to [0, 1]. A perfect cycle scores 1, a
  monthly payer in weeks about 0.75, a random (Poisson) buyer over two years about 0.1 (the
  degrees-of-freedom correction removes what noise alone gives a cycle). Customers with fewer
  than ``min_transactions`` transactions in the series, a series shorter than ``min_periods``
  periods, or no variation get NaN period and 0 strength.
* **turned_irregular.** Split the series into the earlier part (all but the last
  ``recent_periods`` periods) and the recent window. True when (1) the earlier part on its own
  is a regular payer (same rules and definitions: strength ≥ ``regular_threshold``, period pₑ),
  (2) it was still on its cycle when the recent window began (its trailing run of silent
  periods is shorter than g = ⌈1.5·pₑ⌉), and (3) the series has a run of at least g silent
  periods that ends inside the recent window (a run still open at the cut-off counts): a payment
  the cycle predicted within half a cycle was missed. A regular payer whose recent activity
  stays as frequent but loses its rhythm is not flagged (only missed payments are).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .features import CustomerRows, lookup

REGULARITY_COLUMNS = ("payment_period", "payment_strength", "turned_irregular")
MAX_PERIOD = 26.0  # longest cycle looked for, in periods (half a year of weeks)
MAX_PERIODS = 104  # the series: at most the last 104 periods (two years of weeks)
RECENT_PERIODS = 13  # the recent window of turned_irregular (a quarter of weeks)
MIN_TRANSACTIONS = 4
MIN_PERIODS = 26  # shortest series (half a year of weeks: cycles up to 6.5 periods)
REGULAR_THRESHOLD = 0.5  # strength of a regular payer
MISSED_CYCLES = 1.5  # silent run, in cycles, that counts as a missed payment
MAX_HARMONICS = 4  # harmonics summed into a cycle's power (fundamental + 3)
OVERSAMPLE = 2  # FFT length >= OVERSAMPLE x series length
_BLOCK_CELLS = 1 << 22  # series cells per block of customers (bounds memory)
_DAY_NS = 86_400 * 10**9


def fft_length(L: np.ndarray | int) -> np.ndarray:
    """N(L): the FFT length of a series of L periods (smallest power of two >= 2L, at least 16)."""
    L = np.maximum(np.asarray(L, np.int64), 1)
    return np.maximum(16, 1 << np.ceil(np.log2(OVERSAMPLE * L)).astype(np.int64))


def _spectrum_block(y: np.ndarray, L: np.ndarray, N: int, max_period: float) -> tuple[np.ndarray, np.ndarray]:
    """(period, strength) of each row of the zero-padded, demeaned series y (B, <=N), length L.
    Works frequency-major ((frequency, customer) arrays) so that harmonics are row gathers."""
    B = y.shape[0]
    E = np.einsum("ij,ij->i", y, y)
    X = np.fft.rfft(y.astype(np.float32), n=N, axis=1)  # (B, N/2 + 1), complex64
    half = N // 2
    # c |X|^2 / (L E): the share of the variance a sinusoid at j/N explains (c = 1 at Nyquist)
    r = np.square(X.real)
    r += np.square(X.imag)
    r = np.ascontiguousarray(r.T)  # (N/2 + 1, B)
    r *= (2.0 / (L * np.maximum(E, 1e-300))).astype(np.float32)[None, :]
    r[half] *= 0.5
    j_lo = max(1, int(np.ceil(N / max_period - 1e-9)))
    js = np.arange(j_lo, half + 1)
    S = np.zeros((js.size, B), np.float32)
    df = np.zeros(js.size)
    for h in range(1, MAX_HARMONICS + 1):  # harmonics h = 1 .. min(floor(p/2), MAX_HARMONICS), p = N/j
        n_sel = int(np.count_nonzero(h * js <= half))  # js ascending: the first n_sel candidates
        if not n_sel:
            break
        idx = h * js[:n_sel]
        w = h // 2  # an off-grid fundamental puts harmonic h up to h/2 grid steps from h*j
        best = r[idx]
        for o in range(-w, w + 1):
            if o:
                np.maximum(best, r[np.clip(idx + o, 1, half)], out=best)
        S[:n_sel] += best
        df[:n_sel] += np.where(idx == half, 1.0, 2.0)
    # the cycle maximising the analysis-of-variance F = (R2 / df) / ((1 - R2) / (L - 1 - df))
    R2 = np.minimum(S, 1.0, out=S)
    Lf = L.astype(np.float32)
    ratio = (Lf[None, :] - 1.0 - df[:, None].astype(np.float32)) / df[:, None].astype(np.float32)
    score = np.minimum(R2, 1.0 - 1e-6)  # R2 = 1 (a perfect cycle): its multiples 2p, 3p... tie; df decides
    score /= 1.0 - score
    score *= ratio
    j_min = np.ceil(N / np.minimum(max_period, L / 4.0) - 1e-9)  # periods up to L/4 and max_period
    np.putmask(score, js[:, None] < j_min[None, :], -1.0)
    k_best = js.size - 1 - np.argmax(score[::-1], axis=0)  # ties: the shorter period
    cols = np.arange(B)
    valid = score[k_best, cols] >= 0
    r2 = R2[k_best, cols].astype(float)
    dfb = df[k_best]
    strength = 1.0 - (1.0 - r2) * (L - 1.0) / np.maximum(L - 1.0 - dfb, 1.0)  # adjusted R2
    period = N / js[k_best].astype(float)
    bad = ~valid | (E <= 1e-12)
    return np.where(bad, np.nan, period), np.where(bad, 0.0, np.clip(strength, 0.0, 1.0))


def _periodograms(
    code: np.ndarray,
    t: np.ndarray,
    cnt: np.ndarray,
    L: np.ndarray,
    max_period: float,
    min_transactions: int,
    min_periods: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Dominant period and strength per customer from their active periods: rows (customer
    code, period t in [0, L[code]), transactions cnt) sorted by code. Customers are processed in
    blocks of consecutive codes (bounded memory), grouped by N(L) within a block."""
    n = L.shape[0]
    period = np.full(n, np.nan)
    strength = np.zeros(n)
    n_tx = np.bincount(code, weights=cnt, minlength=n)
    eligible = (L >= min_periods) & (n_tx >= min_transactions)
    if not eligible.any():
        return period, strength
    N_of = fft_length(L)
    row_start = np.r_[0, np.cumsum(np.bincount(code, minlength=n))]
    block = max(1, _BLOCK_CELLS // max(int(L.max()), 1))
    for c0 in range(0, n, block):
        c1 = min(n, c0 + block)
        el = eligible[c0:c1]
        if not el.any():
            continue
        Wb = max(int(L[c0:c1].max()), 1)
        r0, r1 = row_start[c0], row_start[c1]
        dense = np.bincount((code[r0:r1] - c0) * Wb + t[r0:r1], weights=cnt[r0:r1], minlength=(c1 - c0) * Wb)
        dense = dense.reshape(c1 - c0, Wb)
        for N in np.unique(N_of[c0:c1][el]):
            m = np.flatnonzero(el & (N_of[c0:c1] == N))
            Lm = L[c0 + m]
            w = min(int(Lm.max()), Wb)
            y = dense[m, :w]
            y -= (y.sum(axis=1) / Lm)[:, None] * (np.arange(w)[None, :] < Lm[:, None])  # demean over the life
            period[c0 + m], strength[c0 + m] = _spectrum_block(y, Lm, int(N), max_period)
    return period, strength


def regularity_arrays(
    codes: np.ndarray,
    day_ns: np.ndarray,
    birth_ns: np.ndarray,
    cutoff: pd.Timestamp | str,
    period_days: float,
    *,
    max_period: float = MAX_PERIOD,
    max_periods: int = MAX_PERIODS,
    recent_periods: int = RECENT_PERIODS,
    min_transactions: int = MIN_TRANSACTIONS,
    min_periods: int = MIN_PERIODS,
    regular_threshold: float = REGULAR_THRESHOLD,
    presorted: bool = False,
) -> dict[str, np.ndarray]:
    """Payment regularity of customers 0..n-1 (n = len(birth_ns), births as int64 ns) from their
    transactions: row i is customer `codes[i]` on day `day_ns[i]` (int64 ns, day resolution;
    `presorted`: rows already sorted by (code, day), as in CustomerRows); rows after the cut-off
    are ignored. Returns the REGULARITY_COLUMNS as arrays aligned to the codes (definitions: the
    module docstring)."""
    n = int(np.asarray(birth_ns).shape[0])
    codes = np.asarray(codes)
    day_ns = np.asarray(day_ns, np.int64)
    cut_ns = pd.Timestamp(cutoff).normalize().value
    if not presorted and codes.size > 1:
        dc = np.diff(codes)
        if not np.all((dc > 0) | ((dc == 0) & (np.diff(day_ns) >= 0))):
            order = np.lexsort((day_ns, codes))
            codes, day_ns = codes[order], day_ns[order]
    pdays = float(period_days)
    # complete periods from birth to the cut-off, counted back from it: period q = 0 holds the
    # cut-off day and the pdays - 1 days before it (float arithmetic on day counts: exact to 1e-6)
    per_ns = 1.0 / (_DAY_NS * pdays)
    birth_days = np.floor((cut_ns - np.asarray(birth_ns, np.int64)) / _DAY_NS + 1e-6)
    L = np.clip(np.floor((birth_days + 1) / pdays + 1e-9), 0, max_periods).astype(np.int32)
    q = np.floor((cut_ns - day_ns) * per_ns + 1e-9).astype(np.int32)  # negative: after the cut-off
    Lc = L[codes]
    inside = (q >= 0) & (q < Lc)
    if not inside.all():
        codes, q, Lc = codes[inside], q[inside], Lc[inside]
    t = Lc - 1 - q  # forward index in the series: 0 = its oldest period; nondecreasing per customer
    del q, Lc
    # one row per active period (customer, t) with its number of transactions
    first = np.empty(codes.size, bool)
    if codes.size:
        first[0] = True
        np.not_equal(codes[1:], codes[:-1], out=first[1:])
        first[1:] |= t[1:] != t[:-1]
    pos = np.flatnonzero(first)
    cnt = np.diff(np.r_[pos, codes.size]).astype(float)
    ac, at = codes[pos].astype(np.int64), t[pos]
    del first, t
    kw = dict(max_period=max_period, min_transactions=min_transactions, min_periods=min_periods)
    period, strength = _periodograms(ac, at, cnt, L, **kw)

    # turned_irregular: silent runs around the split between the earlier part (t < Le) and the recent window
    Le = np.maximum(L - int(recent_periods), 0)
    turned = np.zeros(n, bool)
    if ac.size == 0:
        return {"payment_period": period, "payment_strength": strength, "turned_irregular": turned}
    seg = np.flatnonzero(np.r_[True, ac[1:] != ac[:-1]])  # each customer's first active row
    who = ac[seg]
    last_of = np.r_[ac[1:] != ac[:-1], True]
    nxt = np.where(last_of, L[ac], np.r_[at[1:], 0])  # next active period (L: none up to the cut-off)
    run = np.where(nxt - 1 >= Le[ac], nxt - at - 1, -1)  # silent periods after each active one, if ending recently
    recent_run = np.zeros(n, np.int64)
    recent_run[who] = np.maximum.reduceat(run, seg)
    early = at < Le[ac]
    n_early = np.bincount(ac, weights=early, minlength=n).astype(np.int64)
    has_e = n_early[who] > 0
    trailing = np.full(n, np.iinfo(np.int64).max)  # the earlier part's trailing silent run
    trailing[who[has_e]] = Le[who[has_e]] - 1 - at[seg[has_e] + n_early[who[has_e]] - 1]
    # only customers who can qualify (g = ceil(1.5 p) >= 3) need the earlier part's periodogram
    g_max = np.ceil(MISSED_CYCLES * max_period - 1e-9)
    cand = (recent_run >= 3) & (trailing < g_max) & (Le >= min_periods)
    sub = early & cand[ac]
    if sub.any():
        p_e, s_e = _periodograms(ac[sub], at[sub], cnt[sub], Le, **kw)
        gap = np.ceil(MISSED_CYCLES * np.where(np.isfinite(p_e), p_e, np.inf) - 1e-9)
        turned = cand & (s_e >= regular_threshold) & (trailing < gap) & (recent_run >= gap)
    return {"payment_period": period, "payment_strength": strength, "turned_irregular": turned}


def payment_regularity(
    rows: CustomerRows,
    cutoff: pd.Timestamp | str,
    period_days: float,
    *,
    ids: np.ndarray | None = None,
    birth: np.ndarray | None = None,
    **options,
) -> pd.DataFrame:
    """One row per customer (customer_id + REGULARITY_COLUMNS), keyed like the book: `ids`
    (sorted, default rows.ids) with their `birth` dates (datetime64, aligned to `ids`; default
    each customer's first transaction). Customers of `ids` without transactions get NaN, 0,
    False. `options` are regularity_arrays' keyword arguments."""
    if ids is None:
        ids = rows.ids
        birth_ns = rows.day_ns[rows.starts] if rows.codes.size else np.zeros(0, np.int64)
        codes = rows.codes
    else:
        ids = np.asarray(ids, dtype=object)  # not fixed-width: rows x the longest id x 4 bytes; lookup hashes
        pos, found = lookup(ids, rows.ids)
        if not found.all():
            raise ValueError("payment_regularity: some customers of `rows` are not in `ids`")
        if not rows.codes.size:
            codes = np.zeros(0, np.int64)
        elif pos.size == ids.shape[0] and np.array_equal(pos, np.arange(pos.size)):
            codes = rows.codes  # the same customers in the same order: no copy of a code per transaction
        else:
            codes = pos[rows.codes]
        birth_ns = np.full(ids.shape[0], np.iinfo(np.int64).max)  # no transaction, no birth: empty series
        if rows.codes.size:
            birth_ns[pos] = rows.day_ns[rows.starts]
    if birth is not None:
        birth_ns = np.asarray(birth, "datetime64[ns]").astype(np.int64)
    out = regularity_arrays(codes, rows.day_ns, birth_ns, cutoff, period_days, presorted=True, **options)
    return pd.DataFrame({"customer_id": ids, **out})


def regularity_columns(rows: CustomerRows, summary, cutoff: pd.Timestamp, period_days: float) -> dict[str, np.ndarray]:
    """The book's regularity columns, aligned to the calibration's summary (sim.calibrate.build_book)."""
    df = payment_regularity(rows, cutoff, period_days, ids=summary.customer_id, birth=summary.birth)
    return {c: df[c].to_numpy() for c in REGULARITY_COLUMNS}


def book_regularity(book: pd.DataFrame | dict) -> dict[str, np.ndarray]:
    """The regularity columns of a book; a book written before they existed gets the "unknown"
    values (NaN period, 0 strength, not turned irregular), so older worlds keep working."""
    n = len(book["customer_id"]) if "customer_id" in book else len(next(iter(book.values())))
    defaults = {
        "payment_period": np.full(n, np.nan),
        "payment_strength": np.zeros(n),
        "turned_irregular": np.zeros(n, bool),
    }
    return {c: (np.asarray(book[c]) if c in book else defaults[c]) for c in REGULARITY_COLUMNS}
