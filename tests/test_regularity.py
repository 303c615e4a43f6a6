"""Payment regularity by spectral analysis (sim/regularity.py): known answers, the definition
recomputed customer by customer, and the book columns calibration writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sim.regularity as reg
from sim.features import CustomerRows
from sim.regularity import REGULARITY_COLUMNS, book_regularity, payment_regularity, regularity_arrays

CUT = pd.Timestamp("2024-12-31")
DAY = 86_400 * 10**9
TWO_YEARS = 104 * 7


def _run(customers, period_days=7.0, **kw):
    """customers: (life in days before the cut-off, transaction days before the cut-off)."""
    codes, days, births = [], [], []
    for i, (life, ago) in enumerate(customers):
        ago = np.unique(np.asarray(ago, int))
        codes += [i] * ago.size
        days += list(CUT.value - ago * DAY)
        births.append(CUT.value - int(life) * DAY)
    return regularity_arrays(np.array(codes, int), np.array(days, np.int64), np.array(births), CUT, period_days, **kw)


def _poisson(seed, life=TWO_YEARS, per_week=None):
    rng = np.random.default_rng(seed)
    n = int(life / 7 * (per_week if per_week is not None else rng.uniform(0.2, 2.0)))
    return life, rng.integers(0, life, max(n, 4))


def test_every_four_periods_is_period_four_and_strong():
    out = _run([(TWO_YEARS, np.arange(0, TWO_YEARS, 28)), (TWO_YEARS - 20, np.arange(3, TWO_YEARS - 20, 28))])
    np.testing.assert_allclose(out["payment_period"], 4.0, atol=0.05)
    assert (out["payment_strength"] > 0.95).all()
    assert not out["turned_irregular"].any()


def test_monthly_payer_in_weeks():
    ago = np.round(np.arange(2, TWO_YEARS, 365.25 / 12)).astype(int)
    out = _run([(TWO_YEARS, ago), (60 * 7, ago[ago < 60 * 7])])
    np.testing.assert_allclose(out["payment_period"], 365.25 / 12 / 7, atol=0.1)
    assert (out["payment_strength"] > 0.6).all()


def test_quarterly_payer_is_found():
    out = _run([(TWO_YEARS, np.round(np.arange(5, TWO_YEARS, 91.31)).astype(int))])
    assert abs(out["payment_period"][0] - 13.0) < 0.8 and out["payment_strength"][0] > 0.5


def test_poisson_buyers_are_weak():
    out = _run([_poisson(s) for s in range(300)])
    s = out["payment_strength"]
    assert s.mean() < 0.15 and np.quantile(s, 0.99) < 0.35
    assert np.isfinite(out["payment_period"]).all()  # enough transactions: a period, just a weak one
    assert not out["turned_irregular"].any()


def test_turned_irregular_when_a_regular_payer_misses_payments():
    steady = (TWO_YEARS, np.arange(0, TWO_YEARS, 28))
    stopped = (TWO_YEARS, np.arange(8 * 7, TWO_YEARS, 28))  # last payment 8 weeks ago
    on_cycle = np.arange(14, TWO_YEARS, 28)
    skipped = (TWO_YEARS, on_cycle[(on_cycle < 40) | (on_cycle > 80)])  # two payments missed, then one more
    early_gone = (TWO_YEARS, np.arange(30 * 7, TWO_YEARS, 28))  # silent since before the recent window
    out = _run([steady, stopped, skipped, early_gone])
    assert out["turned_irregular"].tolist() == [False, True, True, False]
    # the recent window and the threshold are parameters
    assert _run([stopped], recent_periods=6)["turned_irregular"][0]
    assert not _run([stopped], recent_periods=2)["turned_irregular"][0]  # already 6 silent periods when it began
    assert not _run([stopped], regular_threshold=1.01)["turned_irregular"][0]


def test_too_few_transactions_or_too_short_a_life():
    out = _run([(TWO_YEARS, [3, 40, 300]), (20 * 7, np.arange(0, 20 * 7, 14)), (TWO_YEARS, []), (TWO_YEARS, [5] * 9)])
    assert np.isnan(out["payment_period"]).all()
    assert (out["payment_strength"] == 0).all() and not out["turned_irregular"].any()
    assert out["payment_strength"].dtype == float and out["turned_irregular"].dtype == bool


def test_periods_are_counted_back_from_the_cut_off_and_later_rows_ignored():
    life, ago = TWO_YEARS, np.arange(0, TWO_YEARS, 28)
    base = _run([(life, ago)])
    later = _run([(life, np.r_[ago, -3, -10])])  # negative: after the cut-off
    for c in REGULARITY_COLUMNS:
        np.testing.assert_array_equal(base[c], later[c])
    monthly = _run([(3 * 365, np.arange(0, 3 * 365, 91))], period_days=365.25 / 12)
    assert abs(monthly["payment_period"][0] - 3.0) < 0.1 and monthly["payment_strength"][0] > 0.8


def _mixed(seed: int, n: int):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        life = int(rng.integers(10, 900))
        if i % 3 == 0:
            step = rng.uniform(10, 120)
            ago = np.round(np.arange(rng.uniform(0, step), life, step) + rng.normal(0, 2, int(life // step) + 1)[:1])
            ago = ago[(ago >= 0) & (ago < life)]
        else:
            ago = rng.integers(0, life, int(rng.integers(0, 80)))
        out.append((life, np.asarray(ago, int)))
    return out


def test_vectorised_equals_one_customer_at_a_time(monkeypatch):
    custs = _mixed(3, 90)
    monkeypatch.setattr(reg, "_BLOCK_CELLS", 700)  # many blocks, several FFT lengths per block
    batch = _run(custs)
    for i, c in enumerate(custs):
        one = _run([c])
        for k in REGULARITY_COLUMNS:
            np.testing.assert_array_equal(batch[k][i], one[k][0], err_msg=f"customer {i} {k}")
    assert np.isfinite(batch["payment_period"]).sum() > 20


def _reference(life: int, ago: np.ndarray, pdays: float = 7.0):
    """The module docstring's definition, one customer, float64, plain loops."""
    L = min(int((life + 1) // pdays), reg.MAX_PERIODS)
    q = np.floor(np.unique(np.asarray(ago, int)) / pdays).astype(int)  # one transaction a day, as _run
    q = q[(q >= 0) & (q < L)]
    if L < reg.MIN_PERIODS or q.size < reg.MIN_TRANSACTIONS:
        return np.nan, 0.0
    x = np.bincount(L - 1 - q, minlength=L).astype(float)
    y = x - x.mean()
    E = y @ y
    if E <= 1e-12:
        return np.nan, 0.0
    N = int(max(16, 2 ** np.ceil(np.log2(2 * L))))
    P = np.abs(np.fft.rfft(y, n=N)) ** 2
    r = 2 * P / (L * E)
    r[N // 2] /= 2
    best = None
    for j in range(1, N // 2 + 1):
        p = N / j
        if not (2 - 1e-9 <= p <= min(reg.MAX_PERIOD, L / 4) + 1e-9):
            continue
        R2, df = 0.0, 0.0
        for h in range(1, reg.MAX_HARMONICS + 1):
            if h * j > N // 2:
                break
            w = h // 2
            R2 += max(r[min(max(h * j + o, 1), N // 2)] for o in range(-w, w + 1))
            df += 1 if h * j == N // 2 else 2
        R2 = min(R2, 1.0)
        Rc = min(R2, 1 - 1e-6)
        score = Rc / (1 - Rc) * (L - 1 - df) / df
        adj = 1 - (1 - R2) * (L - 1) / (L - 1 - df)
        if best is None or score >= best[0]:  # ascending j: ">=" keeps the shorter period on ties
            best = (score, p, adj)
    return best[1], float(np.clip(best[2], 0, 1))


def test_matches_the_definition_customer_by_customer():
    custs = _mixed(11, 60) + [_poisson(s) for s in range(20)]
    out = _run(custs)
    for i, (life, ago) in enumerate(custs):
        p, s = _reference(life, ago)
        if np.isnan(p):
            assert np.isnan(out["payment_period"][i]) and out["payment_strength"][i] == 0
            continue
        # float32 spectra in the module, float64 here: strengths agree closely; the period too
        # unless two candidate periods score the same to float32 precision
        assert out["payment_strength"][i] == pytest.approx(s, abs=2e-3), i
        if out["payment_period"][i] != p:
            assert out["payment_strength"][i] == pytest.approx(s, abs=1e-4), i


def test_payment_regularity_frame_keyed_like_the_book():
    ago = np.arange(0, TWO_YEARS, 28)
    tx = pd.DataFrame(
        {
            "customer_id": ["b"] * ago.size + ["a"] * 3,
            "date": list(CUT - pd.to_timedelta(ago, unit="D")) + list(CUT - pd.to_timedelta([1, 9, 30], unit="D")),
            "amount": 1.0,
        }
    )
    rows = CustomerRows.from_frame(tx)
    df = payment_regularity(rows, CUT, 7.0)
    assert df["customer_id"].tolist() == ["a", "b"] and list(df.columns) == ["customer_id", *REGULARITY_COLUMNS]
    assert np.isnan(df["payment_period"][0]) and df["payment_period"][1] == pytest.approx(4.0)
    # a book that also holds a customer without transactions (a signup birth)
    birth = np.array([CUT - pd.Timedelta(days=40), CUT - pd.Timedelta(days=TWO_YEARS), CUT], "datetime64[ns]")
    df2 = payment_regularity(rows, CUT, 7.0, ids=np.array(["a", "b", "c"]), birth=birth)
    assert df2["payment_period"][1] == pytest.approx(4.0)
    assert np.isnan(df2["payment_period"][2]) and df2["payment_strength"][2] == 0 and not df2["turned_irregular"][2]
    with pytest.raises(ValueError, match="not in `ids`"):
        payment_regularity(rows, CUT, 7.0, ids=np.array(["b"]))


def test_older_books_without_the_columns_get_unknown_values():
    book = pd.DataFrame({"customer_id": ["a", "b"], "segment": [0, 0]})
    got = book_regularity(book)
    assert np.isnan(got["payment_period"]).all() and (got["payment_strength"] == 0).all()
    assert got["turned_irregular"].dtype == bool and not got["turned_irregular"].any()
    book["payment_strength"] = [0.2, 0.9]
    assert book_regularity({c: book[c].to_numpy() for c in book})["payment_strength"].tolist() == [0.2, 0.9]


def test_calibration_writes_the_columns_and_the_simulator_ignores_them(calibrated_world):
    from sim.population import WorldTables, state_from_book

    path, world = calibrated_world
    book = world.read_book(path)
    for c in REGULARITY_COLUMNS:
        assert c in book.columns
    assert book["payment_period"].dtype == float and book["turned_irregular"].dtype == bool
    s = book["payment_strength"].to_numpy()
    assert ((s >= 0) & (s <= 1)).all() and (s[book["payment_period"].isna().to_numpy()] == 0).all()
    assert book["payment_period"].dropna().between(2, reg.MAX_PERIOD).all()
    tables = WorldTables.from_world(world)
    with_cols = state_from_book(world, book, np.random.default_rng(0), tables)
    without = state_from_book(world, book.drop(columns=list(REGULARITY_COLUMNS)), np.random.default_rng(0), tables)
    np.testing.assert_array_equal(with_cols.lam, without.lam)
    np.testing.assert_array_equal(with_cols.alive, without.alive)
