"""Tests for sim.btyd (Pareto/NBD, BG/NBD) and sim.spend (Gamma-Gamma).

Reference numbers for the full CDNOW master file were computed once with the `lifetimes` package
(0.11.3, in a throwaway virtualenv; clv-engine never imports it) on the calibration summary built as in
`cdnow_calibration` below (same-day purchases merged, first purchase = birth, x = repeat purchase days up
to 1997-09-30 inclusive, t_x and T in weeks = days/7; lifetimes'
`summary_data_from_transaction_data(..., observation_period_end="1997-09-30", freq="D",
monetary_value_col="dollar_value")` with recency and T divided by 7 gives identical arrays):

* BG/NBD: `BetaGeoFitter().fit(x, t_x, T)` (BFGS, autograd gradient) gives r=0.251624011, alpha=4.788945170,
  a=0.723433036, b=2.161086981 and standard errors r 0.004201975, alpha 0.131254957, a 0.053929193,
  b 0.198589123. The parameters below are that solution polished by running Nelder-Mead
  (xatol=fatol=1e-11, restarted 4 times) on lifetimes' own `BetaGeoFitter._negative_log_likelihood`;
  the total log-likelihood is lifetimes' likelihood at the polished parameters.
* Pareto/NBD: `ParetoNBDFitter().fit(x, t_x, T)` (Nelder-Mead, tol 1e-4) gives r=0.597432, alpha=11.585867,
  s=0.522188, beta=8.827380; polished as above (6 restarts; Powell agrees) on lifetimes' own
  `ParetoNBDFitter._negative_log_likelihood` (hyp2f1-based likelihood) to the values below. The default
  fit is within 4.3e-5 relative of the polished optimum.
* Gamma-Gamma: `GammaGammaFitter().fit(x, monetary)` on the 9,450 customers with x > 0 and
  monetary > 0 (monetary = mean value of the repeat purchases in calibration, as lifetimes computes it)
  gives p=6.275359, q=3.624450, v=14.983689, se p 0.399697509, q 0.090553414, v 1.344036387; polished
  as above.
* Conditional expectations: lifetimes' `conditional_expected_number_of_purchases_up_to_time(39, x, t_x, T)`,
  `conditional_probability_alive` and `expected_number_of_purchases_up_to_time` with `params_` set by
  hand to the published CDNOW-sample parameters (FHL 2005: BG/NBD r=0.243, alpha=4.414, a=0.793,
  b=2.426; Pareto/NBD r=0.553, alpha=10.578, s=0.606, beta=11.669) and to a second set with a > 1 / s > 1.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.special import gammaln, hyp2f1

from sim import btyd
from sim.btyd import BGNBD, FitInfo, ParetoNBD, compress, fit_bg_nbd, fit_pareto_nbd
from sim.spend import GammaGamma, fit_gamma_gamma

# ---- lifetimes reference values (see module docstring) -----------------------------------------
REF_BG = dict(r=0.2516239690074597, alpha=4.788943417035242, a=0.7234335078401817, b=2.161088328107823)
REF_BG_LL = -95368.44393316076
REF_BG_SE = dict(r=0.004201974929448912, alpha=0.1312549573674562, a=0.05392919311134966, b=0.1985891228194004)
REF_PNBD = dict(r=0.5974199680336257, alpha=11.585657753563966, s=0.522185638367167, beta=8.827759253352971)
REF_PNBD_LL = -95415.11861746982
REF_GG = dict(p=6.275360759012013, q=3.624449538272701, gamma=14.983680911032687)
REF_GG_LL = -40763.47626139074
REF_GG_SE = dict(p=0.3996975092947232, q=0.09055341400769155, gamma=1.3440363865494798)
REF_GG_N = 9450

# (x, t_x, T) triples, holdout length 39 weeks; "uncond" is E[X(t)] at t = 1, 10, 39, 78
TRIPLES = [
    (0, 0.0, 38.86),
    (0, 0.0, 27.0),
    (1, 2.0, 38.0),
    (1, 30.43, 32.0),
    (2, 5.57, 38.86),
    (2, 30.0, 31.0),
    (3, 12.0, 35.0),
    (4, 35.71, 38.86),
    (5, 8.0, 39.0),
    (6, 30.14, 37.0),
    (8, 20.0, 36.0),
    (10, 37.0, 38.0),
    (12, 15.0, 38.86),
    (15, 33.0, 34.0),
    (20, 25.0, 39.0),
    (25, 38.5, 38.86),
    (30, 10.0, 30.0),
    (40, 36.0, 38.0),
    (50, 38.0, 38.86),
    (60, 20.0, 39.0),
]
REF_COND = {
    "bg_published": dict(
        params=(0.243, 4.414, 0.793, 2.426),
        holdout=[
            0.19509805201125396,
            0.2593953814922083,
            0.22050908903541014,
            0.8261024983069087,
            0.234030708275127,
            1.6013313378372496,
            0.6378935140040644,
            2.5860256959923555,
            0.042903300601084896,
            3.508793116150551,
            0.9791507913873255,
            6.794423335522145,
            0.008013027000787563,
            11.000274486517478,
            0.14287452763621056,
            16.98329489036276,
            3.7039057182137455e-09,
            25.029330663932726,
            33.39119799906576,
            2.8032407502624034e-12,
        ],
        uncond=[0.05326789117165627, 0.4324133622344203, 1.1967231933207985, 1.8605190579427455],
    ),
    "bg_a_gt_1": dict(
        params=(0.5, 6.0, 1.6, 4.0),
        holdout=[
            0.37088934223081743,
            0.48092267765215035,
            0.1724999271737713,
            0.8376661195179957,
            0.15932717014215664,
            1.4393270533458045,
            0.42009305302340005,
            2.1525926353442566,
            0.027330382232561738,
            2.625858580893335,
            0.5510040037487632,
            5.358735839616467,
            0.0051003756146702425,
            8.356131682094732,
            0.07820511258495654,
            13.120357700317548,
            7.135298323370644e-09,
            17.805361967653425,
            25.10790609052865,
            4.905930844563461e-12,
        ],
        uncond=[0.08050956195087902, 0.6347006218421083, 1.6040362050066554, 2.2938346922011026],
    ),
    "pnbd_published": dict(
        params=(0.553, 10.578, 0.606, 11.669),
        holdout=[
            0.10708146821530892,
            0.1753614929904234,
            0.18721682700562395,
            1.1296546345676777,
            0.24045901896089017,
            1.9097097158108973,
            0.726132073159759,
            2.853214445787415,
            0.09128025240475637,
            3.798305037295202,
            1.4954321423788095,
            6.928508092132328,
            0.032059580269481636,
            10.958168907255621,
            0.42017325904900543,
            16.677028643819462,
            8.41244602188927e-07,
            25.3039441457825,
            32.60144271728027,
            6.082888057343713e-10,
        ],
        uncond=[0.050979843245990884, 0.4276011428324295, 1.2130028442810157, 1.9093981293136852],
    ),
    "pnbd_s_gt_1": dict(
        params=(0.8, 9.0, 1.7, 14.0),
        holdout=[
            0.01798674596007211,
            0.04120048248751986,
            0.021737404038045836,
            0.948170718819473,
            0.02865395215304548,
            1.5310599721944267,
            0.14547165149514013,
            2.1489679791572684,
            0.008425113196626401,
            2.329065685584987,
            0.3309348103864884,
            5.331073421338211,
            0.0033950553020962136,
            8.216579486092515,
            0.0711357904533999,
            12.892483514362114,
            3.625572155803261e-08,
            17.535500835663413,
            24.56993065830648,
            3.059873669560449e-11,
        ],
        uncond=[0.08381752086754289, 0.5587342051952603, 1.077655351012545, 1.3018778717418502],
    ),
}


def cdnow_calibration(end: str = "1997-09-30"):
    """(x, t_x, T, monetary) per customer of the bundled CDNOW master file, through the project's
    own loader and summary (same-day purchases merged; times in weeks = days / 7)."""
    from sim.features import summarise
    from sim.history import load_cdnow, merge_same_day

    tx, _ = merge_same_day(load_cdnow().transactions)
    s = summarise(tx, end, 7.0)
    return s.x, s.t_x, s.T, s.spend_mean


@pytest.fixture(scope="module")
def cdnow():
    return cdnow_calibration()


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a / b - 1.0))


# ---- data prep / compress ----------------------------------------------------------------------


def test_cdnow_summary_shape(cdnow):
    x, t_x, T, monetary = cdnow
    assert x.size == 23570
    assert x.sum() == 24337 and (x == 0).sum() == 14119  # as lifetimes' summary gives
    assert np.all(t_x <= T) and np.all(t_x[x == 0] == 0)
    assert ((x > 0) & (monetary > 0)).sum() == REF_GG_N


def test_compress_roundtrip():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, 1000).astype(float)
    T = rng.integers(20, 30, 1000) / 7.0
    t_x = np.where(x > 0, np.floor(T * rng.uniform(size=1000) * 7) / 7, 0.0)
    t_x2 = t_x + np.where(x > 0, 1e-12, 0.0)  # differences below 1e-9 are merged
    xu, txu, Tu, counts, inv = compress(x, t_x2, T)
    assert counts.sum() == 1000 and xu.size == counts.size < 1000
    np.testing.assert_array_equal(xu[inv], x)
    np.testing.assert_allclose(txu[inv], t_x, atol=1e-9)
    np.testing.assert_allclose(Tu[inv], T, atol=1e-9)
    assert len({(a, b, c) for a, b, c in zip(xu, txu, Tu)}) == xu.size


def test_input_validation():
    m = ParetoNBD(0.5, 10.0, 0.5, 10.0)
    with pytest.raises(ValueError):
        m.loglik([1], [5.0], [4.0])  # t_x > T
    with pytest.raises(ValueError):
        m.loglik([0], [1.0], [4.0])  # x = 0 but t_x > 0
    with pytest.raises(ValueError):
        BGNBD(0.2, 4.0, 0.8, 2.4).loglik([-1], [0.0], [4.0])
    with pytest.raises(ValueError):
        ParetoNBD(0.5, -1.0, 0.5, 10.0)
    with pytest.raises(ValueError):
        BGNBD.from_dict(ParetoNBD(1, 1, 1, 1).to_dict())


def test_dict_roundtrip():
    for m in (ParetoNBD(0.55, 10.5, 0.6, 11.6), BGNBD(0.24, 4.4, 0.79, 2.4), GammaGamma(6.2, 3.7, 15.4)):
        d = m.to_dict()
        assert d["model"] == m.name
        assert type(m).from_dict(d) == m


# ---- Pareto/NBD integral against the hypergeometric closed form --------------------------------


def _log_integral_hyp2f1(r, alpha, s, beta, x, t_x, T):
    """log ∫_{t_x}^T (β+τ)^-(s+1)(α+τ)^-(r+x) dτ = log[J(t_x) - J(T)] with (Fader & Hardie 2005 note)
    J(t) = (M+t)^-k / k · 2F1(k, b; k+1; |α-β|/(M+t)), k = r+s+x, M = max(α, β), b = s+1 if α >= β else r+x.
    For large x the 2F1 overflows, so it is evaluated after Euler's transformation:
    2F1(k, b; k+1; z) = (1-z)^(1-b) 2F1(1, k+1-b; k+1; z)."""
    m = r + x
    k = m + s
    big, bb = (alpha, s + 1.0) if alpha >= beta else (beta, m)
    d = abs(alpha - beta)

    def logJ(t):
        z = d / (big + t)
        return (
            -k * np.log(big + t) - np.log(k) + (1.0 - bb) * np.log1p(-z) + np.log(hyp2f1(1.0, k + 1.0 - bb, k + 1.0, z))
        )

    l0, l1 = logJ(t_x), logJ(T)
    return l0 + np.log1p(-np.exp(l1 - l0))


PNBD_GRID_PARAMS = [
    (r, a, s, b)
    for r in (0.1, 0.55, 2.0)
    for s in (0.1, 0.6, 2.5)
    for a, b in ((0.5, 20.0), (10.6, 11.7), (20.0, 0.5), (5.0, 80.0), (60.0, 3.0), (3.0, 3.0))
]
PNBD_GRID_ROWS = np.array(
    [
        (0, 0, 1),
        (0, 0, 39),
        (0, 0, 200),
        (1, 0.5, 39),
        (2, 10, 39),
        (5, 10, 200),
        (5, 150, 200),
        (50, 20, 200),
        (200, 30, 200),
        (200, 150, 200),
        (20, 0.1, 52),
        (500, 10, 200),
        (500, 199, 200),
        (3, 0.01, 100),
    ],
    dtype=float,
)


def test_pareto_integral_matches_hyp2f1():
    """Gauss–Legendre integral vs the exact hypergeometric formula: <= 1e-8 relative everywhere on the
    grid (r, s in 0.1..2.5; alpha, beta from 0.5 to 80 with alpha<beta, alpha>beta, alpha=beta;
    x up to 500; t_x, T up to 200 weeks)."""
    x, t_x, T = PNBD_GRID_ROWS.T
    worst = 0.0
    for r, a, s, b in PNBD_GRID_PARAMS:
        ours, _ = btyd._pnbd_integral(r, a, s, b, x, t_x, T, False)
        exact = _log_integral_hyp2f1(r, a, s, b, x, t_x, T)
        worst = max(worst, float(np.max(np.abs(np.expm1(ours - exact)))))
        # the full per-customer log-likelihood, assembled from the exact integral
        ll_exact = (
            gammaln(r + x)
            - gammaln(r)
            + r * np.log(a)
            + s * np.log(b)
            + np.logaddexp(-(r + x) * np.log(a + T) - s * np.log(b + T), np.log(s) + exact)
        )
        np.testing.assert_allclose(ParetoNBD(r, a, s, b).loglik(x, t_x, T), ll_exact, rtol=0, atol=1e-8)
    assert worst < 1e-8, worst


def test_pareto_degenerate_rows():
    m = ParetoNBD(0.55, 10.6, 0.6, 11.7)
    # t_x == T: certainly alive, integral term vanishes; T = 0: L = 1
    assert m.p_alive([3], [20.0], [20.0])[0] == 1.0
    np.testing.assert_allclose(m.loglik([0], [0.0], [0.0]), 0.0, atol=1e-15)
    ll = m.loglik([500, 1000], [10.0, 5.0], [200.0, 200.0])
    assert np.all(np.isfinite(ll))


# ---- gradients ----------------------------------------------------------------------------------


def _fd_check(terms, params, data, rtol=1e-6):
    params = np.asarray(params, float)
    _, _, g = terms(params, data, True)
    for j in range(params.size):
        h = 1e-5 * params[j]
        up, dn = params.copy(), params.copy()
        up[j] += h
        dn[j] -= h
        fd = (terms(up, data, False)[0] - terms(dn, data, False)[0]) / (2 * h)
        np.testing.assert_allclose(
            g[:, j],
            fd,
            rtol=rtol,
            atol=rtol * max(1.0, float(np.max(np.abs(fd)))),
            err_msg=f"parameter {j} at {params}",
        )


def test_pareto_gradient_matches_finite_differences():
    x, t_x, T = PNBD_GRID_ROWS.T
    data = btyd._Data(x, t_x, T)
    for params in [
        (0.55, 10.6, 0.6, 11.7),
        (0.1, 0.5, 2.5, 20.0),
        (2.0, 20.0, 0.1, 0.5),
        (0.3, 60.0, 1.2, 3.0),
        (1.5, 5.0, 0.6, 80.0),
        (0.8, 9.0, 1.0, 9.0),
    ]:
        _fd_check(btyd._pnbd_terms, params, data)


def test_bg_gradient_matches_finite_differences():
    x, t_x, T = PNBD_GRID_ROWS.T
    data = btyd._Data(x, t_x, T)
    for params in [(0.243, 4.414, 0.793, 2.426), (2.0, 0.5, 3.0, 0.4), (0.1, 60.0, 0.2, 10.0)]:
        _fd_check(btyd._bgnbd_terms, params, data)


def test_gamma_gamma_gradient_matches_finite_differences():
    from sim import spend

    rng = np.random.default_rng(3)
    x = rng.integers(1, 30, 50).astype(float)
    m = rng.gamma(2.0, 15.0, 50)
    for params in [(6.25, 3.74, 15.44), (0.5, 1.2, 3.0), (20.0, 8.0, 100.0)]:
        _fd_check(spend._gg_terms, params, spend._GGData(x, m))


# ---- agreement with lifetimes on CDNOW ----------------------------------------------------------


def test_bg_nbd_fit_matches_lifetimes(cdnow):
    x, t_x, T, _ = cdnow
    t0 = time.perf_counter()
    model, info = fit_bg_nbd(x, t_x, T)
    print(
        f"\nBG/NBD fit on CDNOW ({x.size} customers, {info.n_unique} unique rows): "
        f"{time.perf_counter() - t0:.3f} s, {info.iterations} iterations"
    )
    assert isinstance(info, FitInfo) and info.converged
    assert info.n_customers == 23570
    assert _rel(model.params, list(REF_BG.values())) < 1e-5
    assert abs(info.loglik / REF_BG_LL - 1) < 1e-9
    assert abs(model.loglik(x, t_x, T).sum() / REF_BG_LL - 1) < 1e-9
    # standard errors: lifetimes takes the exact (autograd) Hessian at its own optimum
    assert _rel([info.se[k] for k in REF_BG_SE], list(REF_BG_SE.values())) < 1e-3


def test_pareto_nbd_fit_matches_lifetimes(cdnow):
    x, t_x, T, _ = cdnow
    t0 = time.perf_counter()
    model, info = fit_pareto_nbd(x, t_x, T)
    print(
        f"\nPareto/NBD fit on CDNOW ({x.size} customers, {info.n_unique} unique rows): "
        f"{time.perf_counter() - t0:.3f} s, {info.iterations} iterations"
    )
    assert info.converged
    assert _rel(model.params, list(REF_PNBD.values())) < 1e-5
    assert abs(info.loglik / REF_PNBD_LL - 1) < 1e-9
    assert all(np.isfinite(v) and v > 0 for v in info.se.values())


def test_gamma_gamma_fit_matches_lifetimes(cdnow):
    x, _, _, monetary = cdnow
    model, info = fit_gamma_gamma(x, monetary)  # rows with x = 0 or monetary = 0 are dropped
    assert info.converged and info.n_customers == REF_GG_N
    assert _rel(model.params, list(REF_GG.values())) < 1e-5
    assert abs(info.loglik / REF_GG_LL - 1) < 1e-9
    assert _rel([info.se[k] for k in REF_GG_SE], list(REF_GG_SE.values())) < 1e-3


def test_fit_with_weights_equals_expanded_rows(cdnow):
    x, t_x, T, _ = cdnow
    xu, txu, Tu, counts, _ = compress(x, t_x, T)
    for fit in (fit_bg_nbd, fit_pareto_nbd):
        m1, i1 = fit(x, t_x, T)
        m2, i2 = fit(xu, txu, Tu, weights=counts)
        assert _rel(m1.params, m2.params) < 1e-9
        assert abs(i1.loglik - i2.loglik) < 1e-6
        assert i2.n_customers == i1.n_customers and i2.n_unique == i1.n_unique


# ---- conditional expectations -------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(REF_COND))
def test_expected_holdout_matches_lifetimes(key):
    ref = REF_COND[key]
    cls = BGNBD if key.startswith("bg") else ParetoNBD
    model = cls(*ref["params"])
    x, t_x, T = np.array(TRIPLES).T
    np.testing.assert_allclose(model.expected_holdout(39.0, x, t_x, T), ref["holdout"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(
        model.expected_unconditional(np.array([1.0, 10.0, 39.0, 78.0])), ref["uncond"], rtol=1e-6
    )


def test_expected_holdout_continuous_at_s1_and_a1():
    x, t_x, T = np.array(TRIPLES).T
    for make in (lambda v: ParetoNBD(0.5, 10.0, v, 12.0), lambda v: BGNBD(0.3, 5.0, v, 3.0)):
        at1 = make(1.0).expected_holdout(39.0, x, t_x, T)
        assert np.all(np.isfinite(at1))
        for v in (1.0 - 1e-7, 1.0 + 1e-7, 1.0 - 1e-3, 1.0 + 1e-3):
            near = make(v).expected_holdout(39.0, x, t_x, T)
            np.testing.assert_allclose(near, at1, rtol=3 * abs(v - 1.0) + 1e-9)
        u = make(1.0).expected_unconditional(np.array([1.0, 39.0]))
        np.testing.assert_allclose(make(1.0 + 1e-7).expected_unconditional(np.array([1.0, 39.0])), u, rtol=1e-6)


def test_expected_holdout_small_h_is_alive_times_rate():
    """d/dh E[Y(h)] at h = 0 is P(alive)·E[λ | alive] = P(alive)·(r+x)/(α+T) for both models."""
    x, t_x, T = np.array(TRIPLES).T
    for model in (ParetoNBD(0.553, 10.578, 0.606, 11.669), BGNBD(0.243, 4.414, 0.793, 2.426)):
        h = 1e-6
        post = model.posterior_if_alive(x, t_x, T)
        rate = model.p_alive(x, t_x, T) * post["lam_shape"] / post["lam_rate"]
        np.testing.assert_allclose(model.expected_holdout(h, x, t_x, T) / h, rate, rtol=1e-4)


def test_expected_unconditional_equals_conditional_for_newborn():
    t = np.array([0.5, 10.0, 39.0, 100.0])
    for model in (ParetoNBD(0.553, 10.578, 0.606, 11.669), BGNBD(0.243, 4.414, 0.793, 2.426)):
        z = np.zeros_like(t)
        np.testing.assert_allclose(model.expected_unconditional(t), model.expected_holdout(t, z, z, z), rtol=1e-12)


# ---- posterior sanity ---------------------------------------------------------------------------


def test_p_alive_bounds_and_monotone_in_T():
    models = (
        ParetoNBD(0.553, 10.578, 0.606, 11.669),
        ParetoNBD(2.0, 0.5, 2.5, 20.0),
        ParetoNBD(0.3, 60.0, 0.2, 3.0),
        BGNBD(0.243, 4.414, 0.793, 2.426),
        BGNBD(2.0, 0.5, 3.0, 0.4),
    )
    T = np.linspace(20.0, 300.0, 60)
    for model in models:
        for x, t_x in ((0, 0.0), (1, 5.0), (3, 19.0), (20, 10.0), (200, 19.9)):
            pa = model.p_alive(np.full_like(T, x), np.full_like(T, t_x), T)
            assert np.all((pa >= 0) & (pa <= 1)), (model, x, t_x)
            if isinstance(model, BGNBD) and x == 0:
                np.testing.assert_array_equal(pa, 1.0)  # BG/NBD: no dropout before a repeat purchase
            else:
                assert np.all(np.diff(pa) < 0), (model, x, t_x)


def test_posterior_if_alive():
    x, t_x, T = np.array(TRIPLES).T
    pn = ParetoNBD(0.553, 10.578, 0.606, 11.669).posterior_if_alive(x, t_x, T)
    np.testing.assert_allclose(pn["lam_shape"], 0.553 + x)
    np.testing.assert_allclose(pn["lam_rate"], 10.578 + T)
    np.testing.assert_allclose(pn["mu_shape"], 0.606)
    np.testing.assert_allclose(pn["mu_rate"], 11.669 + T)
    bg = BGNBD(0.243, 4.414, 0.793, 2.426).posterior_if_alive(x, t_x, T)
    np.testing.assert_allclose(bg["p_a"], 0.793)
    np.testing.assert_allclose(bg["p_b"], 2.426 + x)
    np.testing.assert_allclose(bg["lam_rate"], 4.414 + T)


def test_gamma_gamma_posterior():
    gg = GammaGamma(6.25, 3.74, 15.44)
    shape, rate = gg.posterior_nu([0, 2, 10], [0.0, 30.0, 40.0])
    np.testing.assert_allclose(shape, [3.74, 6.25 * 2 + 3.74, 6.25 * 10 + 3.74])
    np.testing.assert_allclose(rate, [15.44, 15.44 + 60.0, 15.44 + 400.0])
    e = gg.conditional_expected_spend([0, 2, 10], [0.0, 30.0, 40.0])
    np.testing.assert_allclose(e[0], gg.mean_spend())
    np.testing.assert_allclose(e, 6.25 * rate / (shape - 1.0))
    # shrinkage of the customer's mean towards the population mean pγ/(q-1) ≈ 35.2
    assert 30.0 < e[1] < e[0] < e[2] < 40.0


# ---- parameter recovery on simulated data -------------------------------------------------------


def simulate_pareto_nbd(rng, n, r, alpha, s, beta, T):
    lam = rng.gamma(r, 1.0 / alpha, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    tau = rng.exponential(1.0 / mu)
    end = np.minimum(tau, T)
    x = rng.poisson(lam * end)
    t_x = np.where(x > 0, end * rng.uniform(size=n) ** (1.0 / np.maximum(x, 1)), 0.0)  # max of x uniforms
    return x.astype(float), t_x, T


def simulate_bg_nbd(rng, n, r, alpha, a, b, T):
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    n_T = rng.poisson(lam * T)  # purchases in (0, T] if never dropping out
    d = rng.geometric(p)  # dropout right after the d-th repeat purchase
    x = np.minimum(n_T, d)
    # time of the x-th of n_T uniform purchase times on (0, T]: T·Beta(x, n_T - x + 1)
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), np.maximum(n_T - x + 1, 1)), 0.0)
    return x.astype(float), t_x, T


def test_parameter_recovery_from_simulation():
    """Fit 20,000 simulated customers; each estimate must lie within 4 standard errors (FitInfo.se) of the
    true value. Tolerance: for a correct likelihood the ML estimate is ≈ normal around the truth with
    these SEs, so a 4-SE miss has probability ≈ 6e-5 per parameter (≈ 5e-4 for all eight); a wrong
    likelihood or gradient at this sample size shows up as a bias of many SEs. The seed is fixed, so the
    test is deterministic."""
    rng = np.random.default_rng(20240601)
    n = 20_000
    T = 52.0 - np.floor(rng.uniform(0, 12 * 7, n)) / 7.0  # births spread over 12 weeks, day resolution
    true_pn = ParetoNBD(0.55, 10.6, 0.61, 11.7)
    x, t_x, TT = simulate_pareto_nbd(rng, n, *true_pn.params, T)
    model, info = fit_pareto_nbd(x, t_x, TT)
    assert info.converged
    for k, v in true_pn.to_dict().items():
        if k != "model":
            assert abs(getattr(model, k) - v) < 4 * info.se[k], (k, getattr(model, k), v, info.se[k])
    true_bg = BGNBD(0.243, 4.414, 0.793, 2.426)
    x, t_x, TT = simulate_bg_nbd(rng, n, *true_bg.params, T)
    model, info = fit_bg_nbd(x, t_x, TT)
    assert info.converged
    for k, v in true_bg.to_dict().items():
        if k != "model":
            assert abs(getattr(model, k) - v) < 4 * info.se[k], (k, getattr(model, k), v, info.se[k])


def test_gamma_gamma_recovery_from_simulation():
    rng = np.random.default_rng(7)
    true = GammaGamma(6.25, 3.74, 15.44)
    n = 20_000
    x = rng.integers(1, 15, n).astype(float)
    nu = rng.gamma(true.q, 1.0 / true.gamma, n)
    # mean of x Gamma(p, nu) values = Gamma(p x, nu x) / x ... i.e. Gamma(shape p x, rate nu x)
    mean_spend = rng.gamma(true.p * x, 1.0 / (nu * x))
    model, info = fit_gamma_gamma(x, mean_spend)
    for k in ("p", "q", "gamma"):
        assert abs(getattr(model, k) - getattr(true, k)) < 4 * info.se[k], k
