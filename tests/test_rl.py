"""RL training (stable-baselines3 / sb3-contrib on the vectorised env), the saved card and model,
determinism, and `clv train` / `clv evaluate` end to end at a small scale."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policies.rl import SB3Policy, hyperparameters, train
from sim.population import PopulationSimulator

TINY = {
    "n_envs": 32,
    "horizon": 8,
    "n_steps": 8,
    "batch_size": 128,
    "n_epochs": 2,
    "rollout_customers": 200,
    "rollout_horizon": 4,
    "warm_start_samples": 512,
    "warm_start_epochs": 2,
    "critic_warmup_steps": 256,
}
TINY_DQN = {
    "n_envs": 16,
    "horizon": 8,
    "buffer_size": 2000,
    "learning_starts": 200,
    "batch_size": 32,
    "target_update_interval": 100,
}


def clv(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "experiments.cli", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(r.stderr)
    return r


@pytest.mark.parametrize(
    "algo, overrides, message",
    [
        ("a2c", {}, "unknown algo 'a2c'"),
        ("ppo", {"learning_rat": 0.1}, "unknown hyperparameter 'learning_rat'"),
        ("dqn", {"n_steps": 5}, "unknown hyperparameter 'n_steps'"),
    ],
)
def test_bad_hyperparameters(algo, overrides, message):
    with pytest.raises(ValueError, match=message):
        hyperparameters(algo, overrides)


def test_overrides_keep_types():
    hp = hyperparameters("ppo", {"n_envs": "64", "learning_rate": "0.001"})
    assert hp["n_envs"] == 64 and isinstance(hp["n_envs"], int) and hp["learning_rate"] == 1e-3


def _params(policy):
    return np.concatenate([p.detach().numpy().ravel() for p in policy.model.policy.parameters()])


def test_same_seed_same_policy_and_card_round_trip(calibrated_world, tmp_path):
    path, world = calibrated_world
    a, card = train(world, "ppo", steps=1024, seed=3, overrides=TINY, out=tmp_path / "a")
    b, _ = train(world, "ppo", steps=1024, seed=3, overrides=TINY)
    c, _ = train(world, "ppo", steps=1024, seed=4, overrides=TINY)
    assert np.array_equal(_params(a), _params(b))
    assert not np.array_equal(_params(a), _params(c))
    saved = json.loads((tmp_path / "a" / "card.json").read_text())
    for key in ("algo", "seed", "steps", "world_hash", "hyperparameters", "training_curve", "observation", "actions"):
        assert key in saved
    assert saved["world_hash"] == world.hash() and saved["hyperparameters"]["n_envs"] == 32
    assert saved["warm_start"]["teacher"] == "greedy_uplift" and 0 <= saved["warm_start"]["agreement"] <= 1
    loaded = SB3Policy.load(tmp_path / "a", world)
    sim = PopulationSimulator.new_customers(world, 300, seed=1)
    obs, masks = sim.observe(), sim.action_masks()
    p1, p2 = a.action_probs(obs, masks), loaded.action_probs(obs, masks)
    assert np.array_equal(p1, p2)
    assert np.allclose(p1.sum(axis=1), 1) and not (p1 * ~masks).any()


@pytest.mark.parametrize("algo, overrides", [("maskable_ppo", TINY), ("dqn", TINY_DQN)])
def test_other_algos_train_and_act_within_masks(calibrated_world, algo, overrides, tmp_path, monkeypatch):
    _, world = calibrated_world
    pol, card = train(world, algo, steps=1024, seed=0, overrides=overrides, out=tmp_path / algo)
    # loading a saved agent unpickles nothing (policies.rl.plain_objects) and acts exactly as trained
    import pickle

    import cloudpickle

    def refuse(*args, **kwargs):
        raise AssertionError("SB3Policy.load unpickled an object")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = SB3Policy.load(tmp_path / algo, world)
    sim0 = PopulationSimulator.new_customers(world, 200, seed=3)
    assert np.array_equal(
        loaded.action_probs(sim0.observe(), sim0.action_masks()), pol.action_probs(sim0.observe(), sim0.action_masks())
    )
    sim = PopulationSimulator.new_customers(world, 200, seed=2)
    masks = sim.action_masks()
    for deterministic in (True, False):
        pol.deterministic = deterministic
        p = pol.action_probs(sim.observe(), masks)
        assert p.shape == masks.shape and np.allclose(p.sum(axis=1), 1) and not (p * ~masks).any()
    assert card["algo"] == algo


def test_cli_train_then_evaluate(calibrated_world, tmp_path):
    path, _ = calibrated_world
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    r = clv("train", path, "--algo", "ppo", "--steps", 512, "--seed", 1, "--out", tmp_path / "agent", *sets, "--json")
    doc = json.loads(r.stdout)
    assert doc["algo"] == "ppo" and Path(doc["model"]).is_file() and Path(doc["card"]).is_file()
    r = clv(
        "evaluate",
        path,
        "--policy",
        "none",
        "--policy",
        "bau",
        "--policy",
        "greedy_uplift",
        "--policy",
        tmp_path / "agent",
        "--customers",
        300,
        "--periods",
        6,
        "--seeds",
        3,
        "--out",
        tmp_path / "eval",
        "--json",
    )
    res = json.loads(r.stdout)
    assert set(res["policies"]) == {"none", "bau", "greedy_uplift", "agent"} and res["reference"] == "bau"
    for name, m in res["policies"].items():
        for key in ("clv", "retention", "marketing_roi", "cross_sell_rate", "active_share", "contacts"):
            assert set(m[key]) == {"mean", "ci_low", "ci_high"}
        assert m["clv"]["ci_low"] <= m["clv"]["mean"] <= m["clv"]["ci_high"]
    assert res["policies"]["none"]["contacts"]["mean"] == 0 and res["policies"]["none"]["marketing_roi"]["mean"] is None
    assert "clv" in res["vs_reference"]["agent"] and "ci_excludes_zero" in res["vs_reference"]["agent"]["clv"]
    assert (tmp_path / "eval" / "evaluation.png").stat().st_size > 10_000
    # same seed, same numbers
    again = json.loads(
        clv(
            "evaluate",
            path,
            "--policy",
            "none",
            "--policy",
            "bau",
            "--policy",
            "greedy_uplift",
            "--policy",
            tmp_path / "agent",
            "--customers",
            300,
            "--periods",
            6,
            "--seeds",
            3,
            "--json",
        ).stdout
    )
    assert again["policies"] == res["policies"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--algo", "a2c"], "--algo 'a2c'"),
        (["--set", "learning_rat=1"], "unknown hyperparameter 'learning_rat'"),
        (["--set", "oops"], "expected NAME=VALUE"),
        (["--population", "x"], "--population must be book or new"),
    ],
)
def test_cli_train_bad_options(calibrated_world, tmp_path, args, message):
    path, _ = calibrated_world
    r = clv("train", path, "--out", tmp_path / "x", *args, check=False)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "nonsense"], "not a baseline"),
        (["--policy", "none", "--policy", "none"], "each policy once"),
        (["--policy", "none", "--reference", "bau"], "--reference 'bau'"),
    ],
)
def test_cli_evaluate_bad_options(calibrated_world, args, message):
    path, _ = calibrated_world
    r = clv("evaluate", path, *args, "--customers", 50, "--periods", 2, "--seeds", 1, check=False)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
