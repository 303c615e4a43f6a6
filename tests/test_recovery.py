"""Calibration recovers the truth of the synthetic bank history within its sampling error.

Tolerance: |estimate - truth| <= 4 standard errors, per parameter.
- Activity (Pareto/NBD) and spend (Gamma-Gamma) parameters are maximum-likelihood estimates;
  their standard errors are the delta-method errors from the inverse observed information
  (FitInfo.se). Under a correct model the estimate is asymptotically normal, so a 4-SE miss has
  probability ~6e-5 per parameter.
- Intervention effects are self-normalised inverse-propensity estimates; their standard errors
  come from a customer-clustered bootstrap (a customer's decisions move together).
The history is generated with a fixed seed, so each check is deterministic; across seeds the
z-scores behave like standard normal draws (checked when the tolerance was set, see the
closing note of issue 2), which is why the bound is not loosened per parameter.
"""

import numpy as np
import pytest

from sim.calibrate import calibrate
from sim.synthetic import BankConfig, generate_bank_history
from sim.validate import validate

Z = 4.0
CE = "2024-06-30"


@pytest.fixture(scope="module")
def bank():
    hist, truth = generate_bank_history(BankConfig(seed=7))
    world, book, report = calibrate(hist, CE)
    return hist, truth, world, book


def test_activity_and_spend_parameters_within_sampling_error(bank):
    _, truth, world, _ = bank
    true_seg = {s.name: s for s in truth["world"].segments}
    assert sorted(true_seg) == sorted(s.name for s in world.segments)
    for g, seg in enumerate(world.segments):
        t = true_seg[seg.name]
        se = world.fit["activity"][f"segment_{g}"]["se"]
        for k in ("r", "alpha", "s", "beta"):
            assert abs(seg.activity[k] - t.activity[k]) <= Z * se[k], (seg.name, k, seg.activity[k], t.activity[k])
        se = world.fit["spend"][f"segment_{g}"]["se"]
        for k in ("p", "q", "gamma"):
            assert abs(seg.spend[k] - t.spend[k]) <= Z * se[k], (seg.name, k, seg.spend[k], t.spend[k])


@pytest.mark.parametrize("effect", ["activity_lift", "adoption_uplift", "dropout_reduction"])
def test_intervention_effects_within_sampling_error(bank, effect):
    _, truth, world, _ = bank
    rep = world.fit["response"]
    est = np.array(rep["raw"][effect], float)
    se = np.array(rep["se"][effect], float)
    true = np.array(getattr(truth["world"].response, effect), float)
    cells = np.isfinite(est) & np.isfinite(se)
    assert cells.sum() >= 8, "too few action x stage cells estimated from the logged decisions"
    z = (est[cells] - true[cells]) / se[cells]
    assert np.all(np.abs(z) <= Z), dict(zip(map(tuple, np.argwhere(cells)), np.round(z, 2)))
    # the estimates carry information: the typical standard error of the lift is well below the effects
    if effect == "activity_lift":
        assert np.median(se[cells]) < 0.1


def test_world_uses_data_where_it_has_it_and_flags_priors(bank):
    _, _, world, _ = bank
    src = np.array(world.response.source["activity_lift"])
    assert (src[1:] == "data").sum() + (src[1:] == "blend").sum() >= 8
    assert any("priors" in a for a in world.assumptions)


def test_stage_rules_from_stages_yaml_and_seasonality_found(bank):
    _, truth, world, _ = bank
    assert world.stage_rules == truth["world"].stage_rules
    season = np.asarray(world.seasonality)
    true = np.asarray(truth["world"].seasonality)
    # December (ISO weeks 48-52) above average and summer (28-33) below, as in the truth
    assert season[47:52].mean() > 1.05 and true[47:52].mean() > 1.05
    assert season[27:33].mean() < 1.0


def test_product_hazards_within_sampling_error(bank):
    """Adoption hazards per segment x stage x product: events / (alive-weighted) periods at risk,
    with a Poisson standard error sqrt(events) / periods; checked where there are >= 30 events."""
    _, truth, world, _ = bank
    true_seg = {s.name: s for s in truth["world"].segments}
    # the world lists products in its own (sorted) order: compare by name
    order = [truth["world"].products.index(p) for p in world.products]
    ev = np.asarray(world.fit["products"]["adopt_events"])
    risk = np.asarray(world.fit["products"]["adopt_at_risk"])
    checked = 0
    for g, seg in enumerate(world.segments):
        tru = np.asarray(true_seg[seg.name].product_adoption)[:, order]
        rich = ev[g] >= 30
        raw = ev[g][rich] / risk[g][rich]
        se = np.sqrt(ev[g][rich]) / risk[g][rich]
        assert np.all(np.abs(raw - tru[rich]) <= Z * se), (seg.name, raw, tru[rich], se)
        checked += int(rich.sum())
        init = np.asarray(true_seg[seg.name].initial_products)[order]
        n = seg.n_customers
        np.testing.assert_allclose(seg.initial_products, init, atol=Z * np.sqrt(0.25 / n))
    assert checked >= 10


def test_holdout_forecast_on_bank_history(bank):
    hist, _, _, _ = bank
    m, _ = validate(hist, CE, "2024-12-29", replications=4)
    assert m["holdout_policy"] == "logged decisions replayed"
    assert abs(m["aggregate_error"]) < 0.05
    assert m["per_customer_corr"] > 0.85
    assert m["active_auc"] > 0.95


def test_bootstrap_over_random_groups_gives_the_per_customer_standard_errors(bank, monkeypatch):
    """Large books bootstrap random groups of customers (sim.response.BOOT_GROUPS); forced here on
    the test book: the point estimates are the same, the standard errors agree with the
    per-customer bootstrap's within the bootstrap's own noise (200 replicates: ~5 % per cell)."""
    import sim.response

    hist, _, world, book = bank
    assert len(book) >= 3 * 1_000  # groups of several customers each
    monkeypatch.setattr(sim.response, "BOOT_GROUPS", 1_000)
    grouped, _, _ = calibrate(hist, CE)
    for effect in ("activity_lift", "adoption_uplift", "dropout_reduction"):
        a, b = (np.array(w.fit["response"]["raw"][effect], float) for w in (world, grouped))
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
        np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-12)
        sa, sb = (np.array(w.fit["response"]["se"][effect], float) for w in (world, grouped))
        cells = np.isfinite(sa) & np.isfinite(sb)
        ratio = sb[cells] / sa[cells]
        assert 0.85 < np.median(ratio) < 1.15, (effect, np.round(ratio, 2))
        assert np.all((ratio > 0.6) & (ratio < 1.6)), (effect, np.round(ratio, 2))
