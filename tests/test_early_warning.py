"""Early warning (sim/early_warning.py, sim/early_warning_stack.py, sim/churn.py,
sim/engagement_hmm.py): the metrics and the stack's inputs on hand-computed examples, no holdout
leakage into the anchors or the stacked score, the HMM history's format, and the `early_warning`
key of the validation document and its report table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sim.churn import churn_probabilities, inactivity_probabilities
from sim.early_warning import (
    ACTIVE_PERIODS,
    _engine_stack,
    auc,
    best_f1_threshold,
    decile_table,
    early_warning,
    engine_scores,
    features_at,
    paired_bootstrap,
    threshold_metrics,
    top_decile,
)
from sim.early_warning_stack import (
    STACK_FEATURES,
    expected_transactions,
    fit_stack,
    posterior_quantities,
    stack_design,
)
from sim.engagement_hmm import HMMConfig, write_hmm_history
from sim.history import load_history

CE, HE = "2023-06-25", "2023-12-24"  # on the small HMM history below (start 2022-01-03, 104 weeks)


# ---- metrics, by hand -----------------------------------------------------------------------------


def test_auc_perfect_reversed_tied():
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert auc(y, s) == 1.0
    assert auc(y, -s) == 0.0
    assert auc(y, np.ones(5)) == 0.5
    # positives {0.9, 0.5}, negatives {0.9, 0.1}: pairs 0.5 (tie) + 1 + 0 + 1 = 2.5 of 4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.9, 0.5, 0.1])) == pytest.approx(0.625)
    assert auc(np.ones(3), np.arange(3.0)) is None


def test_best_f1_threshold_and_metrics():
    y = np.array([1, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    # flag >= t: F1 = 2 tp / (flagged + positives): 2/4, 4/5, 4/6, 6/7, 6/8, 6/9
    t, f1 = best_f1_threshold(y, s)
    assert t == 0.6 and f1 == pytest.approx(6 / 7)
    m = threshold_metrics(y, s, t)
    assert m["precision"] == pytest.approx(0.75) and m["recall"] == 1.0 and m["f1"] == pytest.approx(6 / 7)
    assert m["flagged_share"] == pytest.approx(4 / 6)
    # ties: a group of equal scores is flagged together (t = 1: 2/4; t = 0: everyone, 4/6)
    t2, f2 = best_f1_threshold(np.array([1, 0, 1, 0]), np.array([1.0, 1.0, 0.0, 0.0]))
    assert t2 == 0.0 and f2 == pytest.approx(2 / 3)
    t3, f3 = best_f1_threshold(np.array([1, 1, 0, 0, 0, 1]), np.array([2.0, 2.0, 1.0, 1.0, 1.0, 0.0]))
    assert t3 == 2.0 and f3 == pytest.approx(4 / 5)  # t = 2: 4/5; t = 1: 4/8; t = 0: 6/9


def test_top_decile_and_decile_table():
    n = 20
    s = np.arange(n, 0, -1).astype(float)  # customer 0 scores highest
    y = np.zeros(n, bool)
    y[[0, 1, 5, 19]] = True  # base rate 0.2
    prec, lift = top_decile(y, s)
    assert prec == 1.0 and lift == pytest.approx(5.0)
    table = decile_table(y, s)
    assert [r["customers"] for r in table] == [2] * 10
    assert [r["churned"] for r in table] == [2, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert table[0]["lift"] == pytest.approx(5.0) and table[2]["lift"] == pytest.approx(2.5)
    assert table[-1]["cumulative_capture"] == 1.0 and table[2]["cumulative_capture"] == pytest.approx(0.75)
    # a constant score: the top decile is a random tenth, in expectation the base rate
    prec, lift = top_decile(y, np.zeros(n))
    assert prec == pytest.approx(0.2) and lift == pytest.approx(1.0)
    assert all(r["lift"] == pytest.approx(1.0) for r in decile_table(y, np.zeros(n)))


def test_churn_and_inactivity_by_hand():
    alive = np.array([True, True, False])
    lam, mu = np.array([1.0, 0.5, 1.0]), np.array([1.0, 0.2, 1.0])
    idle = inactivity_probabilities("pareto_nbd", alive, lam, mu, 3, (2,))["inactive_prob_2"]
    e = np.exp(-2 * (lam + mu))
    assert idle == pytest.approx(np.r_[(e + mu / (lam + mu) * (1 - e))[:2], 1.0])
    assert inactivity_probabilities("bg_nbd", alive, lam, mu, 3, (2,))["inactive_prob_2"] == pytest.approx(
        [np.exp(-2.0), np.exp(-1.0), 1.0]
    )
    churn = churn_probabilities("pareto_nbd", alive, lam, mu, 3, (13, 26))
    assert churn["churn_prob_13"] == pytest.approx([1 - np.exp(-13.0), 1 - np.exp(-2.6), 1.0])


def test_paired_bootstrap_counts_equal_resampling():
    """The counted bootstrap gives the intervals of resampling the customers and recomputing
    auc() and top_decile() on each resample (same seed, same resamples), ties included."""
    rng = np.random.default_rng(5)
    n = 157
    y = rng.random(n) < 0.3
    a = np.round(rng.random(n) * 12)  # many ties
    b = rng.random(n)
    got = paired_bootstrap(y, a, b, reps=60, seed=4)
    r = np.random.default_rng(np.random.SeedSequence([4, 0xB007]))
    d_auc, d_lift = [], []
    for _ in range(60):
        i = r.integers(0, n, n)
        d_auc.append(auc(y[i], a[i]) - auc(y[i], b[i]))
        d_lift.append(top_decile(y[i], a[i])[1] - top_decile(y[i], b[i])[1])
    assert got["resamples"] == 60
    assert got["auc"] == pytest.approx(list(np.quantile(d_auc, [0.025, 0.975])), abs=1e-12)
    assert got["top_decile_lift"] == pytest.approx(list(np.quantile(d_lift, [0.025, 0.975])), abs=1e-12)


# ---- the stacked score's inputs, by hand ----------------------------------------------------------


@pytest.mark.parametrize(
    "model, alive, lam, mu, h, expected",
    [
        # Pareto/NBD alive: lam (1 - e^{-mu h}) / mu
        ("pareto_nbd", [True], [1.0], [0.5], 2.0, [2 * (1 - np.exp(-1.0))]),
        # BG/NBD alive: (1 - e^{-lam mu h}) / mu
        ("bg_nbd", [True], [2.0], [0.25], 2.0, [4 * (1 - np.exp(-1.0))]),
        # no dropout: lam h; dead: nothing
        ("pareto_nbd", [True, False], [0.5, 3.0], [0.0, 0.1], 4.0, [2.0, 0.0]),
        # two twins of one customer, one dead: the mean
        ("pareto_nbd", [True, False], [1.0, 1.0], [0.0, 0.0], 3.0, [1.5]),
    ],
)
def test_expected_transactions_by_hand(model, alive, lam, mu, h, expected):
    n = len(expected)
    got = expected_transactions(model, np.array(alive), np.array(lam), np.array(mu), n, h)
    assert got == pytest.approx(expected)


def test_recent_purchases_and_design():
    """features_at counts the purchases of the last ACTIVE_PERIODS periods; the design reads them
    as log1p and a missing payment period as a flag, with no missing values."""
    days = ["2023-12-31", "2024-02-05", "2024-03-04", "2024-03-25", "2023-06-05"]
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b"],
            "date": pd.to_datetime(days),
            "amount": [10.0, 20.0, 30.0, 40.0, 5.0],
        }
    )
    f = features_at(tx, None, pd.Timestamp("2024-03-31"), 7.0)
    # a: 2023-12-31 is exactly 13 weeks before the cut-off, outside (cut-off - 13 weeks, cut-off]
    assert f["customer_id"].tolist() == ["a", "b"]
    assert f["recent_purchases"].tolist() == [3.0, 0.0]
    assert f["active"].tolist() == [True, False]
    post = pd.DataFrame({"p_idle": [0.2, 1.0], "p_alive": [0.9, 0.0], "expected_tx": [2.5, 0.0]})
    X = stack_design(f, post)
    assert list(X.columns) == list(STACK_FEATURES) and not X.isna().any().any()
    assert X["log_recent_purchases"].tolist() == pytest.approx([np.log(4.0), 0.0])
    assert X["logit_p_idle"].iloc[0] == pytest.approx(np.log(0.2 / 0.8))
    assert np.isfinite(X["logit_p_idle"].iloc[1])  # P = 1 clipped, not infinite


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing column", "feature column 'recent_purchases' is missing"),
        ("rows differ", "3 feature rows but 2 posterior rows"),
        ("one class", "one class only"),
        ("labels differ", "3 training rows but 2 labels"),
    ],
)
def test_stack_input_errors(case, message):
    f = pd.DataFrame(
        {"recency": [1.0, 2, 3], "frequency": [1.0, 2, 3], "mean_amount": [5.0, 6, 7], "tenure": [4.0, 5, 6]}
    )
    f["recent_purchases"] = [1.0, 0, 2]
    post = pd.DataFrame({"p_idle": [0.1, 0.5, 0.9], "p_alive": [0.9, 0.5, 0.2], "expected_tx": [3.0, 1, 0.1]})
    with pytest.raises(ValueError, match=message):
        if case == "missing column":
            stack_design(f.drop(columns="recent_purchases"), post)
        elif case == "rows differ":
            stack_design(f, post.iloc[:2])
        elif case == "one class":
            fit_stack(stack_design(f, post), np.ones(3))
        else:
            fit_stack(stack_design(f, post), np.array([0, 1]))


# ---- the HMM history and the whole measurement ----------------------------------------------------


@pytest.fixture(scope="module")
def hmm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hmm")
    write_hmm_history(d, HMMConfig(customers=600, weeks=104, seed=3))
    return d


def test_hmm_history_format(hmm_dir):
    for f in ("transactions.csv", "customers.csv", "economics.yaml", "truth.json"):
        assert (hmm_dir / f).is_file(), f
    h = load_history(hmm_dir)
    assert h.economics.period == "week"
    assert "signup_date" in h.customers.columns and len(h.customers) == 600
    tx = h.transactions.merge(h.customers, on="customer_id")
    assert len(tx) == len(h.transactions) > 0
    assert (tx["date"] >= tx["signup_date"]).all()
    assert (h.transactions["amount"] > 0).all()
    truth = json.loads((hmm_dir / "truth.json").read_text())
    assert sum(truth["final_state_counts"].values()) == 600
    # same seed, same files
    again = hmm_dir.parent / "again"
    write_hmm_history(again, HMMConfig(customers=600, weeks=104, seed=3))
    assert (again / "transactions.csv").read_bytes() == (hmm_dir / "transactions.csv").read_bytes()


def test_no_holdout_leakage(hmm_dir):
    """The anchors and the engine score the holdout from data up to the calibration end only: with
    every transaction after it removed, every holdout score is the same; only the labels change."""
    h = load_history(hmm_dir)
    doc = early_warning(h, CE, HE, return_arrays=True)
    ce = pd.Timestamp(CE)
    ts, th, tr = doc["threshold_split"], doc["training_split"], doc["arrays"]
    assert pd.Timestamp(th["label_end"]) <= pd.Timestamp(ts["cutoff"]) < ce
    assert pd.Timestamp(th["features_cutoff"]) < pd.Timestamp(th["label_end"])
    assert pd.Timestamp(ts["label_end"]) == ce
    h.transactions = h.transactions.loc[h.transactions["date"] <= ce].reset_index(drop=True)
    cut_doc = early_warning(h, CE, HE, return_arrays=True)
    cut = cut_doc["arrays"]
    for k in ("customer_id", "engine", "recency_rule", "hgb", "engine_stack"):
        assert np.array_equal(tr["holdout"][k], cut["holdout"][k]), k
    # so are the thresholds, chosen on the calibration window, and the stack's learned weights
    assert (
        doc["training_split"]["engine_stack"]["coefficients"]
        == cut_doc["training_split"]["engine_stack"]["coefficients"]
    )
    for k in ("engine", "recency_rule", "hgb", "engine_stack"):
        assert doc["scores"][k]["threshold"] == cut_doc["scores"][k]["threshold"]
    assert cut["holdout"]["churned"].all()  # nobody buys in an emptied holdout


def test_population_is_active_at_cutoff(hmm_dir):
    h = load_history(hmm_dir)
    doc = early_warning(h, CE, HE, return_arrays=True)
    ids = doc["arrays"]["holdout"]["customer_id"]
    tx = h.transactions
    lo = pd.Timestamp(CE) - pd.Timedelta(days=7 * ACTIVE_PERIODS)
    recent = set(tx.loc[(tx["date"] > lo) & (tx["date"] <= pd.Timestamp(CE)), "customer_id"].astype(str))
    assert set(ids) == recent
    assert doc["customers"] == len(ids) and doc["churned"] == int(doc["arrays"]["holdout"]["churned"].sum())


def test_validate_has_early_warning(hmm_dir):
    from sim.validate import validate

    metrics, _ = validate(load_history(hmm_dir), CE, HE, replications=2)
    ew = json.loads(json.dumps(metrics))["early_warning"]  # JSON-clean
    assert set(ew["scores"]) == {"engine", "recency_rule", "hgb", "engine_stack"}
    # the target is judged on the recommended, stacked score; the posterior alone is still reported
    assert ew["recommended_score"] == ew["target"]["score"] == "engine_stack"
    assert ew["target"]["engine_posterior"]["score"] == "engine"
    assert set(ew["target"]["intervals"]) >= {
        "engine_stack_minus_hgb",
        "engine_stack_minus_recency_rule",
        "engine_minus_hgb",
    }
    stack = ew["training_split"]["engine_stack"]
    assert list(stack["coefficients"]) == list(STACK_FEATURES)
    assert "recent_purchases" not in ew["training_split"]["features"]  # the boosted anchor's inputs are unchanged
    for m in ew["scores"].values():
        assert 0.0 <= m["auc"] <= 1.0 and len(m["deciles"]) == 10
        assert 0.0 <= m["recall"] <= 1.0 and m["top_decile_lift"] >= 0.0
    assert ew["active_periods"] == ACTIVE_PERIODS and "met" in ew["target"]
    off, _ = validate(load_history(hmm_dir), CE, HE, replications=2, early_warning=False)
    assert "early_warning" not in off


def test_stack_reads_the_engine_posterior(hmm_dir):
    """The stack's P(no purchase) input is the engine score itself (same twins); an untrainable
    training split gives a reason instead of a score, and the target falls back to the engine."""
    from sim.calibrate import calibrate

    h = load_history(hmm_dir)
    world, book, _ = calibrate(h, CE)
    f = features_at(h.transactions, h.customers, pd.Timestamp(CE), world.economics.period_days)
    ids = f.loc[f["active"], "customer_id"].to_numpy(dtype=str)
    q = posterior_quantities(world, book, ids, 13.0, 16, 0)
    assert np.array_equal(q["p_idle"].to_numpy(), engine_scores(world, book, ids, 13.0, 16, 0))
    assert ((q["expected_tx"] >= 0) & (q["p_alive"].between(0, 1))).all()
    fa = f.loc[f["active"]].reset_index(drop=True)
    feats, idss = (fa, fa, fa), (ids, ids, ids)
    why = _engine_stack(
        h, pd.Timestamp(CE), {}, feats, idss, np.ones(len(ids), bool), (world, book), (world, book), 13, 16, 0
    )
    assert isinstance(why, str) and "one class only" in why


def test_report_table_has_the_stack(hmm_dir):
    from experiments.reports.run_checks import _early_warning

    doc = early_warning(load_history(hmm_dir), CE, HE)
    html = _early_warning(json.loads(json.dumps(doc, default=str)))
    assert "engine stacked" in html and "boosted trees (HGB)" in html and "recency rule" in html
