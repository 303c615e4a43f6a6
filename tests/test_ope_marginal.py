"""Marginalized importance sampling (`mis`) and double RL (`drl`): known answers on hand-made
trajectories, the exact value of a small tabular MDP, the cells of rebuilt observations, input
validation, the bootstrap that re-estimates the ratios, and the pipeline's `recommended` key."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from experiments.ope.estimators import (
    DRL,
    MIS,
    PDIS,
    LoggedBandit,
    LoggedTrajectories,
    bootstrap_replicates,
    make_estimator,
)
from experiments.ope.marginal import CellRule
from experiments.ope.recommend import recommend

# ----------------------------------------------------------------------------------------------
# hand-made data


def _random_trajectories(seed=0, n=60, T=7, cells=4, same=False, models=False):
    """Random padded trajectories of lengths 2..T; `same`: the candidate is the logging policy."""
    rng = np.random.default_rng(seed)
    length = rng.integers(2, T + 1, n)
    mask = np.arange(T)[None, :] < length[:, None]
    pscore = rng.uniform(0.2, 0.9, (n, T))
    target = pscore if same else rng.uniform(0.0, 1.0, (n, T))
    kw = {}
    if models:
        q = rng.normal(size=(n, T, 2))
        kw = {"q_hat": q, "v_hat": q.mean(axis=2)}
    return LoggedTrajectories(
        reward=rng.normal(1.0, 1.0, (n, T)),
        action=np.zeros((n, T), np.int64),
        pscore=pscore,
        target_prob=target,
        mask=mask,
        cell=rng.integers(0, cells, (n, T)),
        **kw,
    )


# A tabular MDP: states {0, 1}, actions {0, 1}, 3 steps. s_0 uniform; s_{t+1} = (s_t + a_t) % 2 or
# s_t, each with probability 1/2; r(s, a) = 2 s + a + 0.5 s a. Logging: uniform. Enumerating every
# (s0, a0, s1, a1, s2, a2) once gives 64 equally likely trajectories: the logging policy's exact
# distribution, on which every consistent estimator gives the exact value.
T_MDP = 3
PI1 = np.array([0.8, 0.1])  # candidate: P(a = 1 | s)


def _r(s, a):
    return 2.0 * s + a + 0.5 * s * a


def _pi(s, a):
    return PI1[s] if a == 1 else 1.0 - PI1[s]


def _tabular_population():
    rows = list(itertools.product([0, 1], repeat=2 * T_MDP))
    n = len(rows)
    state, action = np.zeros((n, T_MDP), np.int64), np.zeros((n, T_MDP), np.int64)
    for i, row in enumerate(rows):
        s = row[0]
        for t in range(T_MDP):
            a = row[2 * t + 1]
            state[i, t], action[i, t] = s, a
            if t + 1 < T_MDP:
                s = (s + a) % 2 if row[2 * t + 2] else s  # the coin of the transition
    reward = _r(state, action)
    target = np.vectorize(_pi)(state, action)
    return state, action, reward, target


def _dp_value(discount=1.0):
    """The candidate's exact value by the forward recursion of its state distribution."""
    d = np.array([0.5, 0.5])
    value = 0.0
    for t in range(T_MDP):
        value += discount**t * sum(d[s] * sum(_pi(s, a) * _r(s, a) for a in (0, 1)) for s in (0, 1))
        nxt = np.zeros(2)
        for s, a in itertools.product((0, 1), (0, 1)):
            p = d[s] * _pi(s, a)
            nxt[(s + a) % 2] += 0.5 * p
            nxt[s] += 0.5 * p
        d = nxt
    return value


def _tabular_data(q_table=None):
    state, action, reward, target = _tabular_population()
    kw = {}
    if q_table is not None:
        t = np.arange(T_MDP)[None, :]
        q = q_table[t, state]  # (n, T, A): a function of (t, s, a) only
        pi = np.stack([1.0 - PI1[state], PI1[state]], axis=2)
        kw = {"q_hat": q, "v_hat": (pi * q).sum(axis=2)}
    return LoggedTrajectories(
        reward=reward,
        action=action,
        pscore=np.full(reward.shape, 0.5),
        target_prob=target,
        mask=np.ones(reward.shape, bool),
        cell=state,
        **kw,
    )


# ----------------------------------------------------------------------------------------------
# known answers


@pytest.mark.parametrize("index", ["step", "left"])
@pytest.mark.parametrize("normalise", [True, False])
@pytest.mark.parametrize("name", ["mis", "drl"])
def test_candidate_equal_to_logging_gives_the_on_policy_mean(index, normalise, name):
    data = _random_trajectories(same=True, models=True)
    on_policy = (data.reward * data.mask).sum(axis=1).mean()
    est = make_estimator(name, index=index, normalise=normalise)
    if name == "mis":
        assert est.estimate(data) == pytest.approx(on_policy, rel=1e-12)
    else:  # every ratio is 1: drl = on-policy mean + mean of (v_hat - q_hat at the logged action)
        extra = ((data.v_hat - data.q_logged()) * data.mask).sum(axis=1).mean()
        assert est.estimate(data) == pytest.approx(on_policy + extra, rel=1e-12)
    assert est.estimate_per_sample(data).mean() == pytest.approx(est.estimate(data), rel=1e-12)


@pytest.mark.parametrize("discount", [1.0, 0.9])
@pytest.mark.parametrize("normalise", [True, False])
def test_mis_is_exact_on_the_logging_distribution_of_a_tabular_mdp(discount, normalise):
    exact = _dp_value(discount)
    data = _tabular_data()
    assert MIS(discount=discount, normalise=normalise).estimate(data) == pytest.approx(exact, rel=1e-12)
    # trajectory IS is exact there too (a sanity check of the enumeration)
    assert PDIS(discount=discount).estimate(data) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("discount", [1.0, 0.9])
def test_drl_is_exact_with_exact_ratios_whatever_the_q_model(discount):
    rng = np.random.default_rng(3)
    data = _tabular_data(q_table=rng.normal(0, 5, (T_MDP, 2, 2)))
    assert DRL(discount=discount).estimate(data) == pytest.approx(_dp_value(discount), rel=1e-12)


def test_a_window_longer_than_the_horizon_is_per_decision_is():
    data = _random_trajectories(seed=4)
    assert MIS(window=data.horizon).estimate(data) == pytest.approx(PDIS().estimate(data), rel=1e-12)
    assert MIS(window=0).estimate(data) != pytest.approx(PDIS().estimate(data), rel=1e-3)


def test_step_and_left_indexes_agree_when_every_trajectory_has_the_same_length():
    data = _tabular_data()
    assert MIS(index="left").estimate(data) == pytest.approx(MIS(index="step").estimate(data), rel=1e-12)


def test_a_single_cell_with_normalising_gives_summed_one_step_ips():
    """With one cell the normalised state ratio is 1 at every step: mis is sum_t mean_i rho r."""
    data = _random_trajectories(seed=5, cells=1)
    data = LoggedTrajectories(**{**data.__dict__, "mask": np.ones(data.mask.shape, bool)})
    rho = data.target_prob / data.pscore
    assert MIS().estimate(data) == pytest.approx((rho * data.reward).mean(axis=0).sum(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# bootstrap


@pytest.mark.parametrize("name", ["mis", "drl"])
def test_bootstrap_is_deterministic_and_reestimates_the_ratios(name):
    data = _random_trajectories(seed=6, models=True)
    est = make_estimator(name)
    a = bootstrap_replicates(est, data, 40, seed=11)
    assert np.array_equal(a, bootstrap_replicates(est, data, 40, seed=11))
    assert not np.array_equal(a, bootstrap_replicates(est, data, 40, seed=12))
    # each replicate is the estimate on that resample, ratios estimated on the resample
    idx = np.random.default_rng(11).integers(0, data.n, size=(40, data.n))
    assert np.allclose(a, est.estimate_from_indices(data, idx), rtol=1e-12)
    assert est.estimate_from_indices(data, idx[0]) == pytest.approx(a[0], rel=1e-12)
    # ... which is not the resampled mean of the full-sample per-customer terms
    frozen = np.stack([est.estimate_per_sample(data)[row].mean() for row in idx])
    assert not np.allclose(a, frozen, rtol=1e-6)
    # cluster bootstrap with one group per customer is the plain bootstrap
    assert np.array_equal(a, bootstrap_replicates(est, data, 40, seed=11, groups=np.arange(data.n)))


# ----------------------------------------------------------------------------------------------
# cells


def _obs(stage, segment, products, last_contact):
    return {
        "stage": np.asarray(stage),
        "segment": np.asarray(segment),
        "products": np.asarray(products, bool),
        "last_contact": np.asarray(last_contact),
    }


def test_cells_merge_rare_cells_into_their_parent():
    n = 30
    stage = np.zeros(n, int)
    segment = np.zeros(n, int)
    products = np.zeros((n, 4), bool)
    contact = np.full(n, 10)
    contact[:10] = 1  # 10 contacted, 20 not: both cells kept at min_decisions 10
    segment[-3:] = 1  # 3 rows of segment 1 (not contacted): merged up to stage 0 alone
    products[-3:, :3] = True
    code, labels = CellRule(min_decisions=10).cells(_obs(stage, segment, products, contact))
    assert sorted(labels) == sorted([(0,), (0, 0, 0, 0), (0, 0, 0, 1)])
    assert {labels[c] for c in code[-3:]} == {(0,)}
    assert {labels[c] for c in code[:10]} == {(0, 0, 0, 1)}
    # products are bucketed 0, 1, 2, 3+; everything is kept with min_decisions 1
    code1, labels1 = CellRule(min_decisions=1).cells(_obs(stage, segment, products, contact))
    assert labels1[code1[-1]] == (0, 1, 3, 0)
    _, info = CellRule(min_decisions=10).fit(_obs(stage, segment, products, contact))
    assert info["cells"] == 3 and info["merged_cells"] == 1 and info["decisions_in_merged_cells"] == 3


# ----------------------------------------------------------------------------------------------
# validation


def _no_cell():
    d = _random_trajectories()
    return LoggedTrajectories(**{**d.__dict__, "cell": None})


BAD = [
    (lambda: MIS(index="days"), ValueError, r"mis: index must be one of step, left, got 'days'"),
    (lambda: DRL(normalise=1), ValueError, r"drl: normalise must be True or False, got 1"),
    (lambda: MIS(window=-1), ValueError, r"mis: window must be an integer >= 0, got -1"),
    (lambda: MIS(window=1.5), ValueError, r"mis: window must be an integer >= 0"),
    (lambda: DRL(discount=1.5), ValueError, r"drl: discount must be in \[0, 1\], got 1.5"),
    (lambda: MIS().estimate(_no_cell()), ValueError, r"mis: needs LoggedTrajectories.cell"),
    (lambda: DRL().estimate(_random_trajectories()), ValueError, r"drl: needs LoggedTrajectories.q_hat"),
    (
        lambda: MIS().estimate(LoggedBandit(reward=[1.0], action=[0], pscore=[1.0], target=[[1.0]])),
        TypeError,
        r"mis: expects LoggedTrajectories, got LoggedBandit",
    ),
    (
        lambda: LoggedTrajectories(
            reward=np.ones((1, 2)),
            action=np.zeros((1, 2), int),
            pscore=np.ones((1, 2)),
            target_prob=np.ones((1, 2)),
            mask=np.ones((1, 2), bool),
            cell=[[0, -1]],
        ),
        ValueError,
        r"LoggedTrajectories.cell\[0, 1\]",
    ),
    (
        lambda: LoggedTrajectories(
            reward=np.ones((1, 2)),
            action=np.zeros((1, 2), int),
            pscore=np.ones((1, 2)),
            target_prob=np.ones((1, 2)),
            mask=np.ones((1, 2), bool),
            cell=[0, 1],
        ),
        ValueError,
        r"LoggedTrajectories.cell: shape \(2,\) does not match expected \(1, 2\)",
    ),
    (lambda: MIS()._from_counts(_random_trajectories(), np.ones(3)), ValueError, r"mis: counts must be \(B, 60\)"),
    (
        lambda: MIS().estimate_from_indices(_random_trajectories(), np.array([0.5])),
        ValueError,
        r"mis: idx must be a non-empty int array",
    ),
    (lambda: CellRule(min_decisions=0), ValueError, r"CellRule.min_decisions: must be an integer >= 1, got 0"),
    (lambda: CellRule(contact_periods=2.5), ValueError, r"CellRule.contact_periods: must be an integer >= 1"),
    (lambda: CellRule().cells({"stage": np.zeros(2)}), ValueError, r"observations lack segment, products"),
    (
        lambda: CellRule().cells(_obs([0, -1], [0, 0], np.zeros((2, 1)), [1, 1])),
        ValueError,
        r"CellRule: stage must be non-negative integers",
    ),
]


@pytest.mark.parametrize("make, error, message", BAD)
def test_bad_input_is_refused_with_a_message(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ----------------------------------------------------------------------------------------------
# recommendation


@pytest.mark.parametrize(
    "estimand, ran, expected",
    [
        ("per_customer", {"pdis": "pdis", "mis": "mis", "drl": "drl"}, "drl"),
        ("per_customer", {"pdis": "pdis", "mis": "mis"}, "mis"),
        ("per_customer", {"ips": "pdis", "dm": "fqe"}, "dm"),  # the requested key of the estimator that ran
        ("per_decision", {"dm": "dm", "ips": "ips", "dr": "dr"}, "dr"),
        ("per_decision", {"dm": "dm"}, "dm"),
    ],
)
def test_recommended_is_the_first_of_the_stated_order_that_ran(estimand, ran, expected):
    rec = recommend(estimand, {k: {"estimator": v} for k, v in ran.items()})
    assert rec["estimator"] == expected and rec["why"]


def test_pipeline_runs_mis_and_drl_and_recommends_drl():
    from experiments.ope import OPESettings, evaluate_offline
    from policies.baselines import make_baseline
    from sim.synthetic import BankConfig, generate_bank_history

    hist, truth = generate_bank_history(BankConfig(customers=300, weeks=60, seed=3))
    world = truth["world"]
    res = evaluate_offline(
        hist,
        OPESettings(estimand="per_customer", estimators=("mis", "drl", "fqe"), n_boot=20),
        policy=make_baseline("bau", world),
        world=world,
    )
    for k in ("mis", "drl"):
        e = res["estimates"][k]
        assert e["estimator"] == k and e["ci_low"] <= e["value"] <= e["ci_high"]
        assert 0 < e["ess_min_step"] <= e["ess"] <= res["customers"]
    assert res["models"]["cells"]["cells"] >= 5  # at least one cell per stage seen
    assert res["recommended"]["estimator"] == "drl"
