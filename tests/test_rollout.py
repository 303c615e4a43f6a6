"""Rollout policy improvement: branches share random numbers, so the branch that takes the base
policy's own action reproduces the base policy's return exactly; labels and fits are sane."""

import numpy as np
import pytest

from policies.base import as_simulator_policy
from policies.baselines import make_baseline
from policies.rollout import clone_simulator, fit_advantages, rollout_labels
from sim.population import PopulationSimulator
from sim.synthetic import BankConfig, truth_world


@pytest.fixture(scope="module")
def world():
    return truth_world(BankConfig())


def test_clone_is_independent_and_replays_the_same_future(world):
    sim = PopulationSimulator.new_customers(world, 500, seed=3)
    sim.crn = True
    twin = clone_simulator(sim)
    a = [sim.step().reward for _ in range(5)]
    b = [twin.step().reward for _ in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sim.state is not twin.state and sim.rng is not twin.rng


def test_branch_of_the_base_action_equals_following_the_base_policy(world):
    base = make_baseline("greedy_uplift", world)
    lab = rollout_labels(world, base, customers=400, snapshots=[0], horizon=6, seed=2)
    # follow the base policy from the same start, same random numbers
    rng = np.random.default_rng(np.random.SeedSequence([2, 0x5EED]))
    sim = PopulationSimulator.new_customers(world, 400, rng)
    sim.crn = True
    act = as_simulator_policy(base, greedy=True)
    g = world.economics.discount_per_period
    ret = sum(g**h * sim.step(act(sim)).reward for h in range(6))
    q_base = lab.q[np.arange(400), lab.base_action]
    assert np.allclose(q_base, ret)
    assert np.all(np.isneginf(lab.q[~lab.masks])) and np.all(np.isfinite(lab.q[lab.masks]))
    assert lab.regret.min() >= 0 and 0 <= lab.summary()["changed_share"] <= 1


def test_fitted_advantages_recover_a_known_signal():
    rng = np.random.default_rng(0)
    n, A = 20_000, 3
    X = rng.random((n, 2)).astype(np.float32)
    truth = np.stack([np.zeros(n), 4 * X[:, 0] - 2, 1 - 2 * X[:, 1]], axis=1)
    q = truth + rng.normal(0, 5, (n, A))  # noisy rollouts around the true advantages
    masks = np.ones((n, A), bool)
    predict, info = fit_advantages(X, q, masks, seed=0, epochs=15, hidden=(32,))
    pred = predict(X)
    assert np.abs(pred[:, 0]).max() == 0
    # the fitted mean is far closer to the truth than any single noisy rollout
    assert np.sqrt(((pred - truth)[:, 1:] ** 2).mean()) < 0.5
    assert (np.argmax(pred, 1) == np.argmax(truth, 1)).mean() > 0.85
