"""Off-policy estimators (experiments/ope/estimators.py): input validation, unbiasedness against known
true values (a synthetic contextual bandit and a small MDP solved by dynamic programming), the
T = 1 reduction of the sequential estimators, the bootstrap and the weight diagnostics."""

import numpy as np
import pytest

from experiments.ope.estimators import (
    ESTIMATORS,
    IPS,
    PDIS,
    SNIPS,
    THIN_SUPPORT_ESS_SHARE,
    WDR,
    WPDIS,
    DirectMethod,
    DoublyRobust,
    LoggedBandit,
    LoggedTrajectories,
    SelfNormalizedDR,
    SequentialDR,
    bootstrap_ci,
    make_estimator,
    support_warning,
    weight_diagnostics,
)

# ----------------------------------------------------------------------------------------------
# synthetic contextual bandit with a known value

N_CTX, N_ACT = 5, 3
P_CTX = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
MU = np.array(
    [[0.1, 0.5, 0.3], [0.7, 0.2, 0.4], [0.3, 0.3, 0.9], [0.5, 0.8, 0.1], [0.2, 0.6, 0.6]]
)  # E[reward | context, action]
LOGGING = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.4, 0.4, 0.2], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
TARGET = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.1, 0.45, 0.45]])
TRUE_VALUE = float(P_CTX @ (TARGET * MU).sum(axis=1))  # exact value of the target policy


def make_bandit(n=50_000, seed=0, target=TARGET, logging=LOGGING, model="good"):
    rng = np.random.default_rng(seed)
    x = rng.choice(N_CTX, size=n, p=P_CTX)
    u = rng.random(n)[:, None]
    a = (u > np.cumsum(logging[x], axis=1)).sum(axis=1)
    r = (rng.random(n) < MU[x, a]).astype(float)
    r_hat = {"good": MU[x], "biased": np.clip(MU[x] + np.array([0.3, -0.2, 0.25]), 0, 1), None: None}[model]
    return LoggedBandit(reward=r, action=a, pscore=logging[x, a], target=target[x], reward_hat=r_hat)


@pytest.fixture(scope="module")
def bandit():
    return make_bandit()


@pytest.fixture(scope="module")
def biased_bandit():
    return make_bandit(model="biased")


def se(per_sample):
    return per_sample.std(ddof=1) / np.sqrt(per_sample.size)


# ----------------------------------------------------------------------------------------------
# small MDP with a known value: 2 states, 2 actions, churn (absorbing, reward 0), T = 5

S_P0 = np.array([0.7, 0.3])
TRANS = np.array([[[0.8, 0.2], [0.3, 0.7]], [[0.4, 0.6], [0.1, 0.9]]])  # P[s, a, s']
REW = np.array([[0.2, 0.5], [0.6, 1.0]])  # E[r | s, a]
CHURN = np.array([[0.05, 0.15], [0.1, 0.02]])  # P(end | s, a)
BEHAVIOUR = np.array([[0.6, 0.4], [0.5, 0.5]])
POLICY = np.array([[0.3, 0.7], [0.2, 0.8]])
HORIZON, GAMMA = 5, 0.9


def exact_q(policy=POLICY, horizon=HORIZON, gamma=GAMMA):
    """Q_t(s, a) and V_t(s) of `policy` by backward induction, (T, S, A) and (T, S)."""
    q = np.zeros((horizon, 2, 2))
    v = np.zeros((horizon + 1, 2))
    for t in reversed(range(horizon)):
        q[t] = REW + gamma * (1 - CHURN) * (TRANS @ v[t + 1])
        v[t] = (policy * q[t]).sum(axis=1)
    return q, v[:horizon]


Q_TRUE, V_TRUE = exact_q()
MDP_TRUE_VALUE = float(S_P0 @ V_TRUE[0])


def make_trajectories(n=20_000, seed=1, model="good", horizon=HORIZON, behaviour=BEHAVIOUR):
    rng = np.random.default_rng(seed)
    shape = (n, horizon)
    s = (rng.random(n) < S_P0[1]).astype(int)
    alive = np.ones(n, bool)
    mask = np.zeros(shape, bool)
    reward, pscore, tprob = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    action, state = np.zeros(shape, int), np.zeros(shape, int)
    for t in range(horizon):
        a = (rng.random(n) < behaviour[s, 1]).astype(int)
        mask[:, t] = alive
        state[:, t], action[:, t] = s, a
        reward[alive, t] = (rng.random(n) < REW[s, a])[alive]
        pscore[alive, t] = behaviour[s, a][alive]
        tprob[alive, t] = POLICY[s, a][alive]
        alive = alive & (rng.random(n) >= CHURN[s, a])
        s = (rng.random(n) < TRANS[s, a, 1]).astype(int)
    q = Q_TRUE[:horizon] if horizon == HORIZON else exact_q(horizon=horizon)[0]
    if model == "biased":
        q = q + np.array([0.4, -0.3])
    t_idx = np.arange(horizon)[None, :]
    q_hat = q[t_idx, state]  # (n, T, A)
    v_hat = (POLICY[state] * q_hat).sum(axis=2)
    q_hat = np.where(mask[:, :, None], q_hat, np.nan)  # padding is NaN and must be ignored
    v_hat = np.where(mask, v_hat, np.nan)
    return LoggedTrajectories(
        reward=reward, action=action, pscore=pscore, target_prob=tprob, mask=mask, q_hat=q_hat, v_hat=v_hat
    )


@pytest.fixture(scope="module")
def trajectories():
    return make_trajectories()


@pytest.fixture(scope="module")
def biased_trajectories():
    return make_trajectories(model="biased")


# ----------------------------------------------------------------------------------------------
# bad inputs


def small_bandit_kwargs():
    return dict(
        reward=np.array([0.0, 1.0, 1.0, 0.0]),
        action=np.array([0, 1, 1, 0]),
        pscore=np.array([0.5, 0.5, 0.25, 1.0]),
        target=np.array([[0.5, 0.5], [0.1, 0.9], [1.0, 0.0], [0.3, 0.7]]),
        reward_hat=np.full((4, 2), 0.5),
    )


def _set(arr, pos, value):
    arr = np.array(arr, dtype=float)
    arr[pos] = value
    return arr


BANDIT_BAD = [
    ("reward", lambda a: _set(a, 1, np.nan), "LoggedBandit.reward[1]: not finite"),
    ("reward", lambda a: a[:3], "LoggedBandit.target: length 4 != len(reward) 3"),
    ("reward", lambda a: a.reshape(2, 2), "LoggedBandit.reward: expected 1 dimension"),
    ("pscore", lambda a: _set(a, 0, np.inf), "LoggedBandit.pscore[0]: not finite"),
    ("pscore", lambda a: _set(a, 1, 0.0), "LoggedBandit.pscore[1]: 0.0 outside (0, 1]"),
    ("pscore", lambda a: _set(a, 2, 1.5), "LoggedBandit.pscore[2]: 1.5 outside (0, 1]"),
    ("pscore", lambda a: _set(a, 3, -0.1), "LoggedBandit.pscore[3]: -0.1 outside (0, 1]"),
    ("pscore", lambda a: a[:3], "LoggedBandit.pscore: shape (3,)"),
    ("target", lambda a: _set(a, (3, 1), 0.6), "LoggedBandit.target[3]: row sums to 0.9"),
    ("target", lambda a: _set(a, (2, 0), 1.0 + 1e-5), "LoggedBandit.target[2]: row sums to"),
    ("target", lambda a: _set(_set(a, (0, 0), 1.2), (0, 1), -0.2), "LoggedBandit.target[0, 1]: negative probability"),
    ("target", lambda a: _set(a, (2, 0), np.nan), "LoggedBandit.target[2, 0]: not finite"),
    ("target", lambda a: a[:, 0], "LoggedBandit.target: expected 2 dimension"),
    ("action", lambda a: np.array([0, 1, 2, 0]), "LoggedBandit.action[2]: action 2 out of range [0, 1]"),
    ("action", lambda a: np.array([0, -1, 0, 0]), "LoggedBandit.action[1]: action -1 out of range"),
    ("action", lambda a: np.array([0, 0.5, 0, 0]), "LoggedBandit.action[1]: not an integer"),
    ("action", lambda a: np.array([0, 1, 0]), "LoggedBandit.action: shape (3,)"),
    ("reward_hat", lambda a: np.zeros((4, 3)), "LoggedBandit.reward_hat: shape (4, 3)"),
    ("reward_hat", lambda a: _set(a, (1, 1), np.nan), "LoggedBandit.reward_hat[1, 1]: not finite"),
]


@pytest.mark.parametrize("field, corrupt, message", BANDIT_BAD)
def test_logged_bandit_rejects_bad_input(field, corrupt, message):
    kw = small_bandit_kwargs()
    kw[field] = corrupt(kw[field])
    with pytest.raises(ValueError) as err:
        LoggedBandit(**kw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_logged_bandit_accepts_integral_float_actions_and_copies():
    kw = small_bandit_kwargs()
    kw["action"] = kw["action"].astype(float)
    data = LoggedBandit(**kw)
    assert data.action.dtype == np.int64 and data.n == 4 and data.n_actions == 2
    kw["reward"][0] = 99.0  # the dataclass holds its own copy
    assert data.reward[0] == 0.0
    np.testing.assert_allclose(data.weights(), [1.0, 1.8, 0.0, 0.3])


def small_traj_kwargs():
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], bool)
    return dict(
        reward=np.ones((3, 3)),
        action=np.zeros((3, 3), int),
        pscore=np.full((3, 3), 0.5),
        target_prob=np.full((3, 3), 0.5),
        mask=mask,
        q_hat=np.zeros((3, 3, 2)),
        v_hat=np.zeros((3, 3)),
    )


TRAJ_BAD = [
    (
        "mask",
        lambda a: np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0]], bool),
        "LoggedTrajectories.mask[0, 2]: valid step after an invalid one",
    ),
    ("mask", lambda a: a[0], "LoggedTrajectories.mask: expected 2 dimensions"),
    ("mask", lambda a: np.where(a, 2, 0), "LoggedTrajectories.mask[0, 0]: not boolean"),
    ("reward", lambda a: _set(a, (1, 1), np.nan), "LoggedTrajectories.reward[1, 1]: not finite"),
    ("reward", lambda a: a[:, :2], "LoggedTrajectories.reward: shape (3, 2)"),
    ("pscore", lambda a: _set(a, (0, 2), 0.0), "LoggedTrajectories.pscore[0, 2]: 0.0 outside (0, 1]"),
    ("pscore", lambda a: _set(a, (2, 0), np.inf), "LoggedTrajectories.pscore[2, 0]: not finite"),
    ("target_prob", lambda a: _set(a, (2, 0), 1.5), "LoggedTrajectories.target_prob[2, 0]: 1.5 outside [0, 1]"),
    ("target_prob", lambda a: _set(a, (1, 0), -0.5), "LoggedTrajectories.target_prob[1, 0]: -0.5 outside [0, 1]"),
    (
        "action",
        lambda a: _set(a, (0, 1), 2).astype(int),
        "LoggedTrajectories.action[0, 1]: action 2 out of range [0, 1]",
    ),
    ("q_hat", lambda a: None, "LoggedTrajectories.q_hat: q_hat and v_hat must be given together"),
    ("q_hat", lambda a: a[:, :, 0], "LoggedTrajectories.q_hat: expected 3 dimension"),
    ("q_hat", lambda a: a[:2], "LoggedTrajectories.q_hat: shape (2, 3, 2)"),
    ("v_hat", lambda a: _set(a, (0, 0), np.nan), "LoggedTrajectories.v_hat[0, 0]: not finite"),
]


@pytest.mark.parametrize("field, corrupt, message", TRAJ_BAD)
def test_logged_trajectories_rejects_bad_input(field, corrupt, message):
    kw = small_traj_kwargs()
    kw[field] = corrupt(kw[field])
    with pytest.raises(ValueError) as err:
        LoggedTrajectories(**kw)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_trajectory_padding_is_ignored():
    """Garbage (NaN, zero pscore, bad actions) at padded steps changes nothing."""
    clean = LoggedTrajectories(**small_traj_kwargs())
    kw = small_traj_kwargs()
    pad = ~kw["mask"]
    for name in ("reward", "pscore", "target_prob", "v_hat"):
        kw[name] = np.where(pad, np.nan, kw[name])
    kw["action"] = np.where(pad, 7, kw["action"])
    kw["q_hat"] = np.where(pad[:, :, None], np.nan, kw["q_hat"])
    dirty = LoggedTrajectories(**kw)
    for est in (PDIS(0.9), WPDIS(0.9), SequentialDR(0.9), WDR(0.9)):
        np.testing.assert_array_equal(est.estimate_per_sample(dirty), est.estimate_per_sample(clean))
    # reward 1 at every valid step, weight 1 per step: PDIS value = sum of discounts over the prefix
    np.testing.assert_allclose(PDIS(0.5).estimate_per_sample(clean), [1.75, 1.5, 1.0])


@pytest.mark.parametrize(
    "make, exc, message",
    [
        (lambda: IPS(clip=0), ValueError, "ips: clip must be a positive number"),
        (lambda: DoublyRobust(clip=-1.0), ValueError, "dr: clip must be a positive number"),
        (lambda: PDIS(discount=1.5), ValueError, "pdis: discount must be in [0, 1]"),
        (lambda: WDR(discount=np.nan), ValueError, "wdr: discount must be in [0, 1]"),
        (lambda: make_estimator("magic"), ValueError, "unknown estimator 'magic'; known: dm, dr, dr_seq"),
        (
            lambda: DirectMethod().estimate(make_bandit(100, model=None)),
            ValueError,
            "dm: needs LoggedBandit.reward_hat",
        ),
        (
            lambda: SelfNormalizedDR().estimate(make_bandit(100, model=None)),
            ValueError,
            "sndr: needs LoggedBandit.reward_hat",
        ),
        (lambda: PDIS().estimate(make_bandit(100)), TypeError, "pdis: expects LoggedTrajectories"),
        (lambda: IPS().estimate(LoggedTrajectories(**small_traj_kwargs())), TypeError, "ips: expects LoggedBandit"),
        (
            lambda: SequentialDR().estimate(
                LoggedTrajectories(**{**small_traj_kwargs(), "q_hat": None, "v_hat": None})
            ),
            ValueError,
            "dr_seq: needs LoggedTrajectories.q_hat and v_hat",
        ),
        (
            lambda: IPS().estimate_from_indices(make_bandit(100), np.array([], int)),
            ValueError,
            "idx must be a non-empty int array",
        ),
    ],
)
def test_estimator_misuse_is_reported(make, exc, message):
    with pytest.raises(exc) as err:
        make()
    assert message in str(err.value)


def test_registry():
    assert set(ESTIMATORS) == {
        "dm",
        "ips",
        "snips",
        "dr",
        "sndr",
        "pdis",
        "wpdis",
        "dr_seq",
        "wdr",
        "fqe",
        "mis",
        "drl",
    }
    assert all(cls.name == name for name, cls in ESTIMATORS.items())
    est = make_estimator("ips", clip=5.0)
    assert isinstance(est, IPS) and est.clip == 5.0
    assert make_estimator("wdr", discount=0.9) == WDR(0.9)  # frozen dataclasses compare by value
    with pytest.raises(AttributeError):
        est.clip = 1.0


# ----------------------------------------------------------------------------------------------
# interface consistency: mean of per-sample terms, estimate_from_indices on the identity resample

BANDIT_ESTIMATORS = [
    DirectMethod(),
    IPS(),
    IPS(clip=2.0),
    SNIPS(),
    DoublyRobust(),
    DoublyRobust(clip=2.0),
    SelfNormalizedDR(),
]
SEQ_ESTIMATORS = [PDIS(GAMMA), WPDIS(GAMMA), SequentialDR(GAMMA), WDR(GAMMA)]


@pytest.mark.parametrize("est", BANDIT_ESTIMATORS + SEQ_ESTIMATORS, ids=lambda e: repr(e))
def test_per_sample_mean_and_identity_resample_equal_estimate(est, bandit, trajectories):
    data = trajectories if est in SEQ_ESTIMATORS else bandit
    value = est.estimate(data)
    per = est.estimate_per_sample(data)
    assert per.shape == (data.n,)
    assert per.mean() == pytest.approx(value, rel=1e-10, abs=1e-12)
    assert est.estimate_from_indices(data, np.arange(data.n)) == pytest.approx(value, rel=1e-10)
    # a resample is the estimator applied to the resampled data (normaliser recomputed)
    idx = np.random.default_rng(3).integers(0, 500, 400)
    sub = _subset(data, np.arange(500))
    assert est.estimate_from_indices(sub, idx) == pytest.approx(est.estimate(_subset(sub, idx)), rel=1e-10)
    batch = est.estimate_from_indices(sub, np.stack([idx, idx[::-1]]))
    np.testing.assert_allclose(batch, [est.estimate(_subset(sub, idx))] * 2, rtol=1e-10)


def _subset(data, idx):
    if isinstance(data, LoggedBandit):
        return LoggedBandit(
            data.reward[idx],
            data.action[idx],
            data.pscore[idx],
            data.target[idx],
            None if data.reward_hat is None else data.reward_hat[idx],
        )
    return LoggedTrajectories(
        data.reward[idx],
        data.action[idx],
        data.pscore[idx],
        data.target_prob[idx],
        data.mask[idx],
        data.q_hat[idx],
        data.v_hat[idx],
    )


# ----------------------------------------------------------------------------------------------
# one-step: unbiasedness against the exact value


def test_true_value_differs_from_logging_value():
    """The test is informative: the target and logging policies have clearly different values."""
    logging_value = float(P_CTX @ (LOGGING * MU).sum(axis=1))
    assert abs(TRUE_VALUE - logging_value) > 0.15


@pytest.mark.parametrize("est", [IPS(), SNIPS(), DoublyRobust(), SelfNormalizedDR()], ids=lambda e: e.name)
@pytest.mark.parametrize("model", ["good", "biased"])
def test_bandit_estimators_unbiased(est, model, bandit, biased_bandit):
    data = bandit if model == "good" else biased_bandit
    per = est.estimate_per_sample(data)
    assert abs(est.estimate(data) - TRUE_VALUE) < 3 * se(per)


def test_dm_exact_with_correct_model_biased_otherwise(bandit, biased_bandit):
    dm = DirectMethod()
    good = dm.estimate_per_sample(bandit)
    assert abs(good.mean() - TRUE_VALUE) < 3 * se(good)
    assert se(good) < 0.002  # only context sampling noise
    biased = dm.estimate_per_sample(biased_bandit)
    assert abs(biased.mean() - TRUE_VALUE) > 0.05
    assert abs(biased.mean() - TRUE_VALUE) > 10 * se(biased)
    dr = DoublyRobust().estimate_per_sample(biased_bandit)
    assert abs(dr.mean() - TRUE_VALUE) < 3 * se(dr)


def test_ips_on_policy_is_the_mean_reward():
    data = make_bandit(5_000, target=LOGGING)
    np.testing.assert_allclose(data.weights(), 1.0)
    assert IPS().estimate(data) == pytest.approx(data.reward.mean(), rel=1e-12)
    assert SNIPS().estimate(data) == pytest.approx(data.reward.mean(), rel=1e-12)


def test_clipping_caps_weights_and_reduces_variance(bandit):
    assert bandit.weights().max() > 3
    assert bandit.weights(clip=2.0).max() == 2.0
    raw, clipped = IPS().estimate_per_sample(bandit), IPS(clip=2.0).estimate_per_sample(bandit)
    assert clipped.var() < 0.8 * raw.var()
    assert (clipped <= raw).all()


def test_dr_has_lower_variance_than_ips_with_a_good_model(bandit):
    assert DoublyRobust().estimate_per_sample(bandit).var() < 0.5 * IPS().estimate_per_sample(bandit).var()


# ----------------------------------------------------------------------------------------------
# sequential: unbiasedness against dynamic programming, reduction to one step at T = 1


def test_mdp_truth_matches_on_policy_monte_carlo():
    """The DP value is the value the simulator produces: logging with the target policy itself."""
    data = make_trajectories(n=20_000, seed=7, behaviour=POLICY)
    np.testing.assert_allclose(data.cumulative_weights(), 1.0)
    per = PDIS(GAMMA).estimate_per_sample(data)
    assert abs(per.mean() - MDP_TRUE_VALUE) < 3 * se(per)
    assert data.mask[:, -1].mean() < 0.9  # churn actually shortens trajectories


@pytest.mark.parametrize("est", SEQ_ESTIMATORS, ids=lambda e: e.name)
@pytest.mark.parametrize("model", ["good", "biased"])
def test_sequential_estimators_unbiased(est, model, trajectories, biased_trajectories):
    data = trajectories if model == "good" else biased_trajectories
    per = est.estimate_per_sample(data)
    assert abs(est.estimate(data) - MDP_TRUE_VALUE) < 3 * se(per)


def test_sequential_dr_beats_pdis_with_exact_models(trajectories):
    pdis = PDIS(GAMMA).estimate_per_sample(trajectories)
    dr = SequentialDR(GAMMA).estimate_per_sample(trajectories)
    assert dr.var() < 0.2 * pdis.var()


def bandit_as_trajectories(data: LoggedBandit) -> LoggedTrajectories:
    return LoggedTrajectories(
        reward=data.reward[:, None],
        action=data.action[:, None],
        pscore=data.pscore[:, None],
        target_prob=data.target_pscore[:, None],
        mask=np.ones((data.n, 1), bool),
        q_hat=data.reward_hat[:, None, :],
        v_hat=(data.target * data.reward_hat).sum(axis=1)[:, None],
    )


@pytest.mark.parametrize(
    "seq, one_step",
    [(PDIS(0.7), IPS()), (WPDIS(0.7), SNIPS()), (SequentialDR(0.7), DoublyRobust()), (WDR(0.7), SelfNormalizedDR())],
    ids=lambda e: e.name,
)
@pytest.mark.parametrize("model", ["good", "biased"])
def test_sequential_reduces_to_one_step_at_horizon_one(seq, one_step, model):
    data = make_bandit(2_000, seed=11, model=model)
    traj = bandit_as_trajectories(data)
    np.testing.assert_allclose(
        seq.estimate_per_sample(traj), one_step.estimate_per_sample(data), rtol=1e-12, atol=1e-12
    )
    assert seq.estimate(traj) == pytest.approx(one_step.estimate(data), rel=1e-12)
    idx = np.random.default_rng(0).integers(0, data.n, data.n)
    assert seq.estimate_from_indices(traj, idx) == pytest.approx(one_step.estimate_from_indices(data, idx), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# bootstrap


@pytest.mark.parametrize("est", [IPS(), SNIPS(), DoublyRobust(), SelfNormalizedDR()], ids=lambda e: e.name)
def test_bootstrap_ci_covers_truth_and_is_deterministic(est, bandit):
    low, high = bootstrap_ci(est, bandit, n_boot=200, seed=1)
    assert low < TRUE_VALUE < high
    assert low < est.estimate(bandit) < high
    assert bootstrap_ci(est, bandit, n_boot=200, seed=1) == (low, high)
    assert bootstrap_ci(est, bandit, n_boot=200, seed=2) != (low, high)


def test_bootstrap_ci_narrower_for_dr_than_ips(bandit):
    ips_low, ips_high = bootstrap_ci(IPS(), bandit, n_boot=200)
    dr_low, dr_high = bootstrap_ci(DoublyRobust(), bandit, n_boot=200)
    assert dr_high - dr_low < 0.75 * (ips_high - ips_low)


@pytest.mark.parametrize("est", [SNIPS(), SelfNormalizedDR(), WPDIS(GAMMA), WDR(GAMMA)], ids=lambda e: e.name)
def test_bootstrap_ci_is_percentiles_of_estimate_from_indices(est, bandit, trajectories):
    """The vectorised bootstrap equals the plain loop over estimate_from_indices (ratio
    normalisers recomputed per resample), drawing idx = rng.integers(0, n, (n_boot, n))."""
    data = _subset(trajectories if est in SEQ_ESTIMATORS else bandit, np.arange(300))
    n_boot, alpha = 150, 0.1
    idx = np.random.default_rng(5).integers(0, data.n, size=(n_boot, data.n))
    loop = [est.estimate_from_indices(data, row) for row in idx]
    expected = tuple(np.quantile(loop, [alpha / 2, 1 - alpha / 2]))
    np.testing.assert_allclose(bootstrap_ci(est, data, n_boot=n_boot, alpha=alpha, seed=5), expected, rtol=1e-10)


def test_bootstrap_ci_sequential_covers_truth(trajectories):
    low, high = bootstrap_ci(WDR(GAMMA), trajectories, n_boot=200, seed=0)
    assert low < MDP_TRUE_VALUE < high


def test_bootstrap_1000_resamples_of_50k_ratio_estimator(bandit):
    # (its speed, about 1.3 s here, is a benchmark figure, not a unit-test assertion)
    low, high = bootstrap_ci(SelfNormalizedDR(), bandit, n_boot=1000, seed=0)
    point = SelfNormalizedDR().estimate(bandit)
    assert low < point < high


@pytest.mark.parametrize(
    "kw, message", [({"n_boot": 0}, "n_boot must be >= 1"), ({"alpha": 1.0}, "alpha must be in (0, 1)")]
)
def test_bootstrap_rejects_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bootstrap_ci(IPS(), make_bandit(100), **kw)


# ----------------------------------------------------------------------------------------------
# weight diagnostics


def test_ess_equals_n_for_uniform_weights():
    data = make_bandit(1_000, target=LOGGING)
    diag = weight_diagnostics(data)
    assert diag["n"] == 1_000
    assert diag["ess"] == pytest.approx(1_000)
    assert diag["ess_share"] == pytest.approx(1.0)
    assert diag["max_weight"] == pytest.approx(1.0) and diag["mean_weight"] == pytest.approx(1.0)
    assert diag["zero_target_share"] == 0.0
    assert support_warning(diag) is None


def test_diagnostics_of_the_synthetic_bandit(bandit):
    diag = weight_diagnostics(bandit)
    w = bandit.weights()
    assert diag["ess"] == pytest.approx(w.sum() ** 2 / (w**2).sum())
    assert 0.1 < diag["ess_share"] < 1.0
    assert diag["mean_weight"] == pytest.approx(1.0, abs=0.02)  # propensities are right
    assert diag["max_weight"] == pytest.approx(w.max())


def test_zero_target_share_for_a_deterministic_target():
    greedy = np.eye(N_ACT)[MU.argmax(axis=1)]
    data = make_bandit(10_000, seed=4, target=greedy)
    diag = weight_diagnostics(data)
    assert diag["zero_target_share"] == pytest.approx((data.target_pscore == 0).mean())
    assert 0.4 < diag["zero_target_share"] < 0.8


def test_support_warning_fires_when_target_goes_where_logging_rarely_goes():
    rare = np.array([0.9998, 0.0001, 0.0001])
    logging = np.tile(rare, (N_CTX, 1))
    target = np.tile([0.0, 0.5, 0.5], (N_CTX, 1))
    data = make_bandit(20_000, seed=2, target=target, logging=logging)
    diag = weight_diagnostics(data)
    assert diag["ess_share"] < THIN_SUPPORT_ESS_SHARE
    assert diag["max_weight"] == pytest.approx(5_000)
    message = support_warning(diag)
    assert message is not None and "thin support" in message and "\n" not in message


def test_weight_diagnostics_for_trajectories(trajectories):
    diag = weight_diagnostics(trajectories)
    w_final = trajectories.cumulative_weights()[:, -1]
    assert diag["n"] == trajectories.n
    assert diag["ess"] == pytest.approx(w_final.sum() ** 2 / (w_final**2).sum())
    assert diag["mean_weight"] == pytest.approx(1.0, abs=0.05)
    assert diag["zero_target_share"] == 0.0
