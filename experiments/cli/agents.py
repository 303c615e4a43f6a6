"""The agent commands: train (an RL policy on a world) and evaluate (policies compared by simulation)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import JsonOpt, _check_out, _check_world, _emit, _load_world, _progress, _user_errors, _write_json, app


@app.command()
def train(
    world_path: Path = typer.Argument(..., metavar="WORLD", help="World JSON from `clv calibrate`."),
    algo: str = typer.Option("ppo", "--algo", help="ppo, maskable_ppo (masks from the contact rules) or dqn."),
    steps: Optional[int] = typer.Option(
        None, "--steps", min=1, help="Customer-periods of experience (default: 2,000,000 for PPO, 1,000,000 for DQN)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same trained policy."),
    out: Path = typer.Option(..., "--out", help="Folder for model.zip and card.json."),
    population: str = typer.Option(
        "book", "--population", help="book: digital twins of the calibrated customers; new: brand-new customers."
    ),
    sets: list[str] = typer.Option(
        [],
        "--set",
        help="Override a hyperparameter, e.g. --set n_envs=256 (repeatable; see policies/rl.py HYPERPARAMS).",
    ),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", help="Folder for TensorBoard logs (optional)."),
    as_json: bool = JsonOpt,
) -> None:
    """Train an RL agent (stable-baselines3) on a calibrated world with the vectorised simulator.

    Writes the SB3 zip and a JSON card (world hash, algo, hyperparameters, seed, training curve).

    Example: clv train world.json --algo ppo --steps 2000000 --seed 0 --out agents/ppo
    """
    with _user_errors():
        from policies.rl import ALGOS
        from sim.errors import ConfigError
        from sim.population import POPULATIONS

        if algo not in ALGOS:
            raise ConfigError(f"--algo {algo!r}: choose ppo, maskable_ppo or dqn")

        if population not in POPULATIONS:
            raise ConfigError(f"--population must be book or new, got {population!r}")
        from experiments.config import parse_sets

        overrides = parse_sets(sets, "learning_rate=0.0001", name="NAME")
        if tensorboard is not None:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")
        _check_world(world_path)
        _check_out(out, folder=True, inputs=(world_path,), writes=("model.zip", "card.json"))
        from policies.rl import DEFAULT_STEPS, hyperparameters

        try:
            hyperparameters(algo, overrides)
        except ValueError as e:
            raise ConfigError(f"--set: {e}") from None
        world, book = _load_world(world_path, population)
        from experiments.results import TrainingResult
        from policies.rl import train as run

        total = int(steps or DEFAULT_STEPS[algo])
        # every part of the training by name (the warm start's, then SB3's timesteps, by an SB3
        # callback): a bar on a terminal, else a line per tenth and per part with the elapsed time
        with _progress(f"training {algo}", total) as upd:
            _, card = run(
                world,
                algo,
                steps=total,
                seed=seed,
                out=out,
                overrides=overrides,
                population=population,
                book=book,
                tensorboard=str(tensorboard) if tensorboard else None,
                report=lambda step, done, tot: upd(done, tot, step=step),
                world_path=str(world_path),
            )
    curve = card["training_curve"]
    doc = TrainingResult(card, str(out)).to_dict()
    _emit(
        doc,
        as_json,
        f"trained {algo} for {card['steps']:,} steps in {card['seconds']:.0f}s -> {out}/model.zip"
        + (f"\nmean episode return at the end: {curve[-1]['mean_episode_return']:.2f}" if curve else ""),
    )


@app.command()
def evaluate(
    world_path: Path = typer.Argument(..., metavar="WORLD", help="World JSON from `clv calibrate`."),
    policies: list[str] = typer.Option(
        ...,
        "--policy",
        help="A baseline (none, random, bau, churn_threshold, greedy_uplift), a folder from `clv train`, or a zip "
        "from a plain SB3 model.save() (read as clv/Customer-v0's observation); repeatable.",
    ),
    customers: int = typer.Option(20_000, "--customers", min=1, help="Customers per run."),
    periods: int = typer.Option(52, "--periods", min=1, help="Periods per run."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds (runs per policy); CIs are over seeds."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    population: str = typer.Option("book", "--population", help="book (digital twins) or new customers."),
    reference: Optional[str] = typer.Option(
        None, "--reference", help="Policy to compare the others with (default: bau if given, else the first)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for evaluation.json and evaluation.png."),
    as_json: bool = JsonOpt,
) -> None:
    """Compare policies by simulation with common random numbers; 95% CIs over seeds.

    Reports per policy CLV per customer (discounted), retention at horizon, marketing ROI, cross-sell
    rate, active share and contacts per customer, and each policy's paired difference to the reference.

    Example: clv evaluate world.json --policy none --policy bau --policy agents/ppo --customers 20000 --periods 52 --seeds 5 --json
    """
    with _user_errors():
        from sim.errors import ConfigError
        from sim.population import POPULATIONS

        if population not in POPULATIONS:
            raise ConfigError(f"--population must be book or new, got {population!r}")
        if len(set(policies)) != len(policies):
            dup = next(p for p in policies if policies.count(p) > 1)
            raise ConfigError(f"--policy {dup}: given twice; give each policy once")
        _check_world(world_path)
        _check_out(out, folder=True, inputs=(world_path, *policies), writes=("evaluation.json", "evaluation.png"))
        world, book = _load_world(world_path, population)
        from experiments.evaluate import evaluate as run
        from experiments.evaluate import plot
        from policies.registry import policy_label, resolve_policy

        pols = {}
        for spec in policies:
            p = resolve_policy(spec, world)
            name = policy_label(spec)
            pols[name] = p
        if reference is not None and reference not in pols:
            raise ConfigError(f"--reference {reference!r} is not among the policies: {', '.join(pols)}")
        t0 = time.perf_counter()
        with _progress("evaluating", seeds * len(pols)) as upd:
            done = [0]

            def tick(k: int) -> None:
                done[0] += k
                upd(done[0])

            res = run(
                world,
                pols,
                customers=customers,
                periods=periods,
                seeds=seeds,
                seed=seed,
                book=book,
                reference=reference,
                progress=tick,
            )
        res["seconds"] = round(time.perf_counter() - t0, 2)
        res["world"] = str(world_path)
        res["population"] = population
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            plot(res, Path(out) / "evaluation.png")
            res["files"] = [str(Path(out) / "evaluation.json"), str(Path(out) / "evaluation.png")]
            _write_json(Path(out) / "evaluation.json", res)
    lines = [f"{'policy':<18}{'CLV':>10}{'retention':>11}{'ROI':>8}{'contacts':>10}"]
    for n, m in res["policies"].items():
        lines.append(
            f"{n:<18}{m['clv']['mean']:>10.2f}{m['retention']['mean']:>11.3f}"
            f"{m['marketing_roi']['mean']:>8.2f}{m['contacts']['mean']:>10.2f}"
        )
    for n, d in res["vs_reference"].items():
        c = d["clv"]
        lines.append(
            f"{n} vs {res['reference']}: CLV {c['mean']:+.2f} (95% CI {c['ci_low']:+.2f} to {c['ci_high']:+.2f})"
        )
    _emit(res, as_json, "\n".join(lines))
