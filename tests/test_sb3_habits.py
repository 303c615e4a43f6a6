"""What a data scientist used to stable-baselines3 does (issue 18): act with a trained agent on
clv/Customer-v0's observation, evaluate a bare SB3 model (in Python and with `clv evaluate` on a
plain `model.save()` zip), and watch `clv train` report its progress when stderr is not a terminal.
Every model here is really trained, for a few hundred steps."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import DQN, PPO

import sim.envs  # noqa: F401  (registers the ids)
from experiments.evaluate import evaluate
from policies.baselines import make_baseline
from policies.registry import PredictPolicy, as_policy, resolve_policy
from policies.rl import SB3Policy, train
from sim.envs.vec_env import PopulationVecEnv
from sim.errors import ConfigError
from sim.population import PopulationSimulator
from tests.cli_runner import clv, ok_json

TINY = {
    "n_envs": 32,
    "horizon": 8,
    "n_steps": 8,
    "batch_size": 128,
    "n_epochs": 2,
    "warm_start_samples": 512,
    "warm_start_epochs": 2,
    "critic_warmup_steps": 256,
}
TINY_DQN = {"n_envs": 16, "horizon": 8, "buffer_size": 2000, "learning_starts": 200, "batch_size": 32}
ASSUMED = "assumed to be clv/Customer-v0's observation"


@pytest.fixture(scope="module")
def plain_ppo(calibrated_world):
    """The README's plain SB3 snippet, tiny: PPO on the VecEnv's default observation."""
    path, _ = calibrated_world
    vec = PopulationVecEnv(str(path), n_envs=16, horizon=8, seed=0)
    return PPO("MlpPolicy", vec, n_steps=8, batch_size=64, n_epochs=1, seed=0, device="cpu").learn(384)


@pytest.fixture(scope="module")
def plain_zip(plain_ppo, tmp_path_factory):
    path = tmp_path_factory.mktemp("plain") / "my_ppo"
    plain_ppo.save(path)  # SB3 writes my_ppo.zip, and no card
    return path.with_suffix(".zip")


# ---- 1. one observation space for the env, the VecEnv and the agents ---------------------------


@pytest.mark.parametrize("algo, overrides", [("ppo", TINY), ("dqn", TINY_DQN)])
def test_a_trained_agent_acts_on_the_envs_observation(calibrated_world, tmp_path, algo, overrides):
    path, world = calibrated_world
    pol, _ = train(world, algo, steps=512, seed=0, overrides=overrides, out=tmp_path / "agent")
    env = gym.make("clv/Customer-v0", world=str(path), horizon=6)
    check_env(env.unwrapped)
    vec = PopulationVecEnv(str(path), n_envs=4, horizon=6, seed=0)
    assert env.observation_space == vec.observation_space
    assert env.observation_space.shape == pol.model.observation_space.shape
    assert env.unwrapped.encoder.names == pol.card["observation"]
    loaded = SB3Policy.load(tmp_path / "agent", world)
    obs, _ = env.reset(seed=0)
    for _ in range(6):  # act with the SB3 model itself, as an SB3 user does
        for model in (pol.model, loaded.model):
            action, _ = model.predict(obs, deterministic=True)
            assert 0 <= int(action) < world.n_actions
        # the policy wrapper reads the encoded observation too (it raised IndexError), and acts as on the dict
        masks = env.unwrapped.action_masks()
        a = loaded.act(obs, masks)
        assert a.shape == (1,) and masks[a[0]]
        assert np.array_equal(a, loaded.act(env.unwrapped.raw_observation(), masks[None]))
        obs, *_ = env.step(int(a[0]))


def test_an_agent_of_another_layout_gets_an_env_of_its_own(calibrated_world):
    path, world = calibrated_world
    pol, card = train(world, "ppo", steps=256, seed=0, overrides={**TINY, "uplift_features": False})
    assert card["encoder"] == {"model_features": True, "uplift_features": False}
    env = gym.make("clv/Customer-v0", world=str(path), horizon=4)
    obs, _ = env.reset(seed=1)
    with pytest.raises(ValueError, match=r"reads 27 features \(model_features=True, uplift_features=False\)"):
        pol.act(obs, env.unwrapped.action_masks())
    own = gym.make("clv/Customer-v0", world=str(path), horizon=4, encoder=pol.encoder)
    check_env(own.unwrapped)
    obs, _ = own.reset(seed=1)
    action, _ = pol.model.predict(obs, deterministic=True)
    assert 0 <= int(action) < world.n_actions


def test_the_default_observation_carries_the_myopic_values_of_greedy_uplift(calibrated_world):
    """The features `clv train` agents read are the greedy baseline's values: one computation."""
    _, world = calibrated_world
    sim = PopulationSimulator.new_customers(world, 500, seed=2)
    env_enc = PopulationVecEnv(world, n_envs=1, horizon=2).encoder
    x = env_enc.encode(sim.observe())
    v = make_baseline("greedy_uplift", world).values(sim.observe())[:, 1:]
    names = env_enc.names
    first = names.index(f"net_value_{world.catalogue.names[1]}")
    assert names[first:] == [f"net_value_{a}" for a in world.catalogue.names[1:]]
    assert np.allclose(x[:, first:], np.clip(np.sign(v) * np.log1p(np.abs(v)), -30, 30), atol=1e-5)
    assert env_enc.space().contains(x[0]) and env_enc.space().low[first] == -30


# ---- 2. any SB3 model, anything with predict --------------------------------------------------


def test_evaluate_takes_a_bare_sb3_model(calibrated_world, plain_ppo):
    _, world = calibrated_world
    res = evaluate(world, plain_ppo, customers=200, periods=4, seeds=2)
    assert list(res["policies"]) == ["ppo"] and ASSUMED in res["notes"]["ppo"]
    res = evaluate(
        world, {"bau": make_baseline("bau", world), "mine": plain_ppo}, customers=200, periods=4, seeds=2, crn=True
    )
    assert res["reference"] == "bau" and "mine" in res["vs_reference"]
    assert np.isfinite(res["policies"]["mine"]["clv"]["mean"])


def test_the_adapter_keeps_to_the_contact_rules(calibrated_world, plain_ppo):
    _, world = calibrated_world
    pol = as_policy(plain_ppo, world)
    assert isinstance(pol, SB3Policy) and ASSUMED in pol.note
    sim = PopulationSimulator.new_customers(world, 300, seed=4)
    masks = sim.action_masks()
    p = pol.action_probs(sim.observe(), masks)
    assert np.allclose(p.sum(axis=1), 1) and not (p * ~masks).any()


class Always:
    """Not SB3 at all: anything with predict(obs, deterministic=...) is a policy."""

    def __init__(self, action: int):
        self.action = action

    def predict(self, obs, deterministic=True):
        return np.full(len(obs), self.action), None


def test_anything_with_predict_is_a_policy(calibrated_world):
    _, world = calibrated_world
    onboarding = next(i for i, a in enumerate(world.catalogue.actions) if i and "new" in a.eligible_stages)
    pol = as_policy(Always(onboarding), world, name="always")
    assert isinstance(pol, PredictPolicy)
    sim = PopulationSimulator.new_customers(world, 300, seed=5)
    for _ in range(3):
        masks = sim.action_masks()
        p = pol.action_probs(sim.observe(), masks)
        want = np.where(masks[:, onboarding], onboarding, 0)  # a forbidden action becomes "none"
        assert np.array_equal(p.argmax(axis=1), want) and not (p * ~masks).any()
        sim.step(want.astype(np.int16))
    res = evaluate(world, {"always": Always(onboarding)}, customers=100, periods=4, seeds=1)
    assert res["policies"]["always"]["contacts"]["mean"] > 0


def test_clv_evaluate_takes_a_plain_model_save_zip(calibrated_world, plain_zip):
    path, _ = calibrated_world
    args = ("evaluate", path, "--policy", "bau", "--policy", plain_zip, "--customers", 200, "--periods", 4)
    doc = ok_json(clv(*args, "--seeds", 2, "--json"))
    assert list(doc["policies"]) == ["bau", "my_ppo"] and ASSUMED in doc["notes"]["my_ppo"]
    r = clv(*args, "--seeds", 1)
    assert r.exit_code == 0 and "my_ppo" in r.stdout
    assert f"note: {plain_zip} has no card: its 35 inputs are {ASSUMED}" in r.stderr


class _Flat(gym.Env):
    """An env of the wrong shape, to train models that cannot act in the world."""

    def __init__(self, n_obs: int, n_actions: int):
        self.observation_space = spaces.Box(0, 1, (n_obs,), np.float32)
        self.action_space = spaces.Discrete(n_actions)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, True, {}


def _bad_zip(kind: str, folder, world) -> str:
    import torch

    out = folder / f"{kind}.zip"
    A = world.n_actions
    if kind == "not_a_zip":
        out.write_bytes(b"PK but not really")
    elif kind == "no_data":
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("policy.pth", b"")
    elif kind == "relu":
        PPO("MlpPolicy", _Flat(35, A), n_steps=8, batch_size=8, policy_kwargs={"activation_fn": torch.nn.ReLU}).save(
            out
        )
    elif kind == "two_actions":
        DQN("MlpPolicy", _Flat(35, 2), learning_starts=0).save(out)
    elif kind == "ten_inputs":
        PPO("MlpPolicy", _Flat(10, A), n_steps=8, batch_size=8).save(out)
    return str(out)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("not_a_zip", "not a stable-baselines3 model.zip (BadZipFile"),
        ("no_data", "not a stable-baselines3 model.zip (KeyError"),
        ("relu", "its policy_kwargs hold Python objects (activation_fn or a features extractor)"),
        ("two_actions", "the model chooses among 2 actions; this world has"),
        ("ten_inputs", "reads 10 inputs; this world's observation has 35"),
    ],
)
def test_plain_zips_that_cannot_act_are_one_line(calibrated_world, tmp_path, kind, message):
    path, world = calibrated_world
    spec = _bad_zip(kind, tmp_path, world)
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_policy(spec, world)
    r = clv("evaluate", path, "--policy", spec, "--customers", 50, "--periods", 2, "--seeds", 1)
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_card_folder_is_still_a_clv_train_agent(calibrated_world, tmp_path):
    """A zip beside a card that is not its model.zip is a plain zip, never the card's model."""
    path, world = calibrated_world
    pol, _ = train(world, "ppo", steps=256, seed=0, overrides=TINY, out=tmp_path / "agent")
    assert isinstance(resolve_policy(str(tmp_path / "agent"), world), SB3Policy)
    assert resolve_policy(str(tmp_path / "agent" / "model.zip"), world).card["steps"] == 256
    pol.model.save(tmp_path / "agent" / "other")
    other = resolve_policy(str(tmp_path / "agent" / "other.zip"), world)
    assert "steps" not in other.card and ASSUMED in other.note


# ---- 3. progress ---------------------------------------------------------------------------------


def test_training_reports_every_part_and_sb3_timesteps(calibrated_world):
    _, world = calibrated_world
    seen, timesteps = [], []
    train(
        world,
        "ppo",
        steps=512,
        seed=0,
        overrides=TINY,
        progress=lambda d, t: timesteps.append((d, t)),
        report=lambda s, d, t: seen.append((s, d, t)),
    )
    steps = list(dict.fromkeys(s for s, _, _ in seen))
    assert steps == [
        "collecting greedy_uplift's decisions",
        "fitting the actor to them",
        "critic warm-up (actor frozen)",
        "reinforcement learning",
    ]
    for step in steps:  # each part counts up to its total; SB3's two count the timesteps of all 512
        done = [d for s, d, _ in seen if s == step]
        total = {t for s, _, t in seen if s == step}
        assert done == sorted(done) and len(total) == 1
        assert done[-1] == (256 if step.startswith("critic") else total.pop())
    assert [t for _, t in timesteps] == [512] * len(timesteps)
    done = [d for d, _ in timesteps]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 512 and len(set(done)) > 4


LINE = re.compile(r"^\[\s*([\d.]+) s\] (.+?): ([\d,]+)/([\d,]+) \((\d+) %\)$")


def test_clv_train_prints_progress_lines_when_not_a_tty(calibrated_world, tmp_path):
    path, _ = calibrated_world
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    r = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "train", str(path), "--steps", "512", "--out", str(tmp_path / "a")]
        + sets
        + ["--json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 512 and "\r" not in r.stderr
    lines = [m.groups() for m in map(LINE.match, r.stderr.splitlines()) if m]
    by_step: dict[str, list[int]] = {}
    for _, step, done, _, _ in lines:
        by_step.setdefault(step, []).append(int(done.replace(",", "")))
    assert list(by_step) == [
        "collecting greedy_uplift's decisions",
        "fitting the actor to them",
        "critic warm-up (actor frozen)",
        "reinforcement learning",
    ]
    rl = by_step["reinforcement learning"]
    assert rl == sorted(rl) and len(set(rl)) >= 3 and 256 <= rl[0] and rl[-1] <= 512
    assert all(v == sorted(v) for v in by_step.values())
    elapsed = [float(e) for e, *_ in lines]
    assert elapsed == sorted(elapsed)
    assert "reinforcement learning: done" in r.stderr and "training ppo: done" in r.stderr
