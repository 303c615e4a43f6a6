"""The Gymnasium env `clv/Customer-v0` and the vectorised SB3 VecEnv: API contracts (check_env,
autoreset mode, masks, truncation), what the agent may see, determinism, and agreement of the
VecEnv's rewards with the population simulator."""

import copy

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim.envs  # noqa: F401  (registers the ids)
from sim.envs.customer import CustomerEnv, ObservationEncoder
from sim.envs.vec_env import PopulationVecEnv
from sim.population import PopulationSimulator, simulate
from sim.synthetic import BankConfig, truth_world


@pytest.fixture(scope="module")
def world():
    return truth_world(BankConfig())


def test_check_env_passes_on_the_default_and_on_a_calibrated_world(world, calibrated_world):
    check_env(CustomerEnv(horizon=8))
    path, _ = calibrated_world
    env = gym.make("clv/Customer-v0", world=str(path), horizon=8, discount=0.99)
    check_env(env.unwrapped)
    assert env.unwrapped.source.population == "book"


def test_metadata_declares_autoreset_mode():
    env = CustomerEnv(horizon=3)
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert PopulationVecEnv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


def test_episode_truncates_at_horizon_and_never_terminates(world):
    env = gym.make("clv/Customer-v0", world=world, horizon=5)
    env.reset(seed=1)
    flags = [env.step(0)[2:4] for _ in range(5)]
    assert [f[0] for f in flags] == [False] * 5
    assert [f[1] for f in flags] == [False] * 4 + [True]


def test_same_seed_same_episode(world):
    def run(seed):
        env = CustomerEnv(world, horizon=20)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for t in range(20):
            o, r, *_ = env.step(2 if t % 5 == 0 else 0)
            out += [o, np.array([r])]
        return np.concatenate(out)

    assert np.array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_observation_hides_latent_state(world):
    """Two customers identical in everything a bank sees but not in rate, hazard, spend or alive
    flag get the same observation."""
    twins = PopulationSimulator.new_customers(world, 2, seed=3)
    st = twins.state
    st.segment[:] = 0
    st.products[:] = False
    st.lam[:] = [0.1, 5.0]
    st.mu[:] = [0.001, 0.5]
    st.nu[:] = [0.01, 1.0]
    st.alive[:] = [True, False]
    twins.refresh()
    enc = ObservationEncoder.from_world(world)
    x = enc.encode(twins.observe())
    assert np.array_equal(x[0], x[1])
    assert not any(k in enc.names for k in ("lam", "mu", "nu", "alive"))
    assert x.dtype == np.float32 and x.shape == (2, enc.dim) and enc.space().contains(x[0])


def test_action_masks_enforce_min_gap_and_stage_eligibility(world):
    env = CustomerEnv(world, horizon=30)
    env.reset(seed=2)
    cat = world.catalogue
    gap = world.response.min_gap
    mask = env.action_masks()
    assert mask[0] and mask.dtype == bool and mask.shape == (len(cat),)
    stage = env._sim.state.stage[0]
    for i, a in enumerate(cat.actions[1:], start=1):
        assert mask[i] == (
            cat.actions[i].eligible_stages.__contains__(("new", "growth", "maturity", "dormancy", "churned")[stage])
        )
    a = int(np.flatnonzero(mask[1:])[0]) + 1
    _, _, _, _, info = env.step(a)
    assert info["contacted"] and not info["ineligible"]
    for _ in range(gap - 1):
        assert not env.action_masks()[1:].any()  # contacts min_gap periods apart
        _, _, _, _, info = env.step(a)  # a masked action becomes "none"
        assert info["ineligible"] and not info["contacted"]


def test_opted_out_channel_is_masked(world):
    env = CustomerEnv(world, horizon=5)
    env.reset(seed=4)
    before = env.action_masks()
    env._sim.state.opted_out[0, :] = True
    after = env.action_masks()
    assert after[0] and not after[1:].any() and before.sum() >= after.sum()


def test_unknown_action_is_an_error(world):
    env = CustomerEnv(world, horizon=5)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="unknown action 99"):
        env.step(99)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"horizon": 0}, "horizon must be >= 1"),
        ({"discount": 1.5}, "discount must be in"),
        ({"population": "book"}, "needs the calibrated book"),
        ({"population": "aliens"}, "population must be"),
        ({"render_mode": "human"}, "render_mode must be one of ansi, rgb_array or None"),
    ],
)
def test_bad_env_arguments(world, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CustomerEnv(world, **kwargs)


# ---- the vectorised VecEnv ------------------------------------------------------------------


def test_vec_env_autoresets_slots_at_the_horizon(world):
    v = PopulationVecEnv(world, n_envs=64, horizon=3, seed=5)
    obs = v.reset()
    assert obs.shape == (64, v.observation_space.shape[0])
    for t in range(3):
        v.step_async(np.zeros(64, np.int64))
        obs, rew, done, infos = v.step_wait()
    assert done.all() and rew.dtype == np.float32
    assert all(i["TimeLimit.truncated"] and i["terminal_observation"].shape == obs[0].shape for i in infos)
    # fresh customers after the reset: tenure 0 in the new observations (new population)
    assert np.all(obs[:, 3] == 0.0)


def test_vec_env_masks_reach_maskable_ppo(world):
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    v = PopulationVecEnv(world, n_envs=16, horizon=4, seed=1)
    v.reset()
    assert is_masking_supported(v)
    m = get_action_masks(v)
    assert m.shape == (16, len(world.catalogue)) and m[:, 0].all()


def test_vec_env_same_seed_same_numbers(world):
    def run():
        v = PopulationVecEnv(world, n_envs=32, horizon=4, seed=9, reward="sampled")
        v.reset()
        rng = np.random.default_rng(0)
        out = []
        for _ in range(10):
            v.step_async(rng.integers(0, len(world.catalogue), 32))
            o, r, d, _ = v.step_wait()
            out.append(np.concatenate([o.ravel(), r]))
        return np.concatenate(out)

    assert np.array_equal(run(), run())


def test_vec_env_rewards_match_the_population_simulator(world):
    """Under "none", the VecEnv's mean reward per customer-period (sampled and expected alike)
    equals simulate()'s for the same population, within 4 standard errors."""
    w = copy.deepcopy(world)
    n, T = 4000, 6
    ref = simulate(w, "none", T, seed=11, customers=n)
    target = ref.periods["reward"].sum() / (n * T)
    for mode in ("sampled", "expected"):
        v = PopulationVecEnv(w, n_envs=n, horizon=T, seed=12, reward=mode, population="new")
        v.reset()
        per_customer = np.zeros(n)
        for _ in range(T):
            v.step_async(np.zeros(n, np.int64))
            _, r, _, _ = v.step_wait()
            per_customer += r
        se = np.hypot(per_customer.std() / np.sqrt(n), ref.customers["reward"].std() / np.sqrt(n)) / T
        assert abs(per_customer.mean() / T - target) < 4 * se, (mode, per_customer.mean() / T, target, se)


@pytest.mark.parametrize("env_id", ["clv/Customer-v0", "clv/TabularCustomer-v0"])
def test_render_modes_for_the_standard_helpers(env_id):
    """SB3's make_vec_env asks for rgb_array; ansi gives one line of text; an unknown mode is refused."""
    import gymnasium as gym

    text = gym.make(env_id, render_mode="ansi")
    text.reset(seed=0)
    text.step(0)
    assert isinstance(text.render(), str) and "t=" in text.render()
    pic = gym.make(env_id, render_mode="rgb_array")
    pic.reset(seed=0)
    frame = pic.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert gym.make(env_id).unwrapped.render() is None  # no render mode: nothing drawn
    with pytest.raises(ValueError, match="render_mode must be one of ansi, rgb_array"):
        gym.make(env_id, render_mode="braille")


def test_sb3_make_vec_env_works():
    from stable_baselines3.common.env_util import make_vec_env

    vec = make_vec_env("clv/Customer-v0", n_envs=2, seed=0)
    obs = vec.reset()
    assert obs.shape[0] == 2 and vec.render(mode="rgb_array").ndim == 3
    vec.close()
