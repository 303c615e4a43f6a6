"""Value tables from a calibrated world (optimizer.value_sources) and `clv values`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from cli_runner import clv

from optimizer.value_sources import (
    COLUMNS,
    DEFAULT_HORIZON,
    DEFAULT_REPLICATIONS,
    branch_values,
    values_from_policy,
    values_from_simulation,
)
from optimizer.values import ValueTable, load_values
from policies.base import as_simulator_policy
from policies.baselines import make_baseline
from policies.rollout import clone_simulator
from sim.population import PopulationSimulator, sample_book

SMALL = dict(horizon=6, replications=2)


@pytest.fixture(scope="module")
def world_book(calibrated_world):
    path, world = calibrated_world
    return path, world, pd.read_parquet(world.book_path(path))


@pytest.fixture(scope="module")
def table(world_book):
    _, world, book = world_book
    return values_from_simulation(world, book, customers=150, seed=3, **SMALL)


def allowed_pairs(world, book, customers, seed):
    """(customer_id, action) pairs the contact rules allow at t = 0 for the sampled customers."""
    src = sample_book(book, customers, seed)
    masks = PopulationSimulator.from_book(world, src, 0).action_masks()
    ids = src["customer_id"].astype(str).to_numpy()
    names = world.catalogue.names
    return {(ids[i], names[a]) for i, a in zip(*np.nonzero(masks[:, 1:])) for a in [a + 1]}, masks


def test_defaults():
    assert DEFAULT_HORIZON == 52 and DEFAULT_REPLICATIONS >= 1


def test_columns_validation_and_eligibility(world_book, table):
    _, world, book = world_book
    assert tuple(table.columns) == COLUMNS
    vt = ValueTable.from_frame(table)  # the optimizer's validator accepts it
    assert vt.n_options == len(table) > 0
    assert "none" not in set(table["action"].astype(str))
    # exactly the allowed (customer, action) pairs: masked actions get no row, and some are masked
    pairs, masks = allowed_pairs(world, book, 150, seed=3)
    assert set(zip(table["customer_id"], table["action"].astype(str))) == pairs
    assert (~masks[:, 1:]).any()
    # catalogue channels, world segment names, book order of customers
    chan = {a.name: a.channel for a in world.catalogue.actions[1:]}
    assert (table["channel"].astype(str) == table["action"].astype(str).map(chan)).all()
    src = sample_book(book, 150, 3)
    seg = dict(zip(src["customer_id"].astype(str), np.array([s.name for s in world.segments])[src["segment"]]))
    assert (table["segment"].astype(str) == table["customer_id"].map(seg)).all()
    # continuation none: the budget pays exactly the catalogue cost of the one contact
    cost = {a.name: a.cost for a in world.catalogue.actions[1:]}
    np.testing.assert_allclose(table["cost"], table["action"].astype(str).map(cost), rtol=0, atol=1e-12)
    assert np.isfinite(table["value"]).all() and (table["value"] != -table["cost"]).any()
    diag = table.attrs["diagnostics"]
    assert diag["continuation"] == "none" and diag["customers"] == 150 and diag["cost_clipped_rows"] == 0


def test_same_seed_same_table(world_book, table):
    _, world, book = world_book
    again = values_from_simulation(world, book, customers=150, seed=3, **SMALL)
    pd.testing.assert_frame_equal(table, again)
    assert again.attrs == table.attrs
    other = values_from_simulation(world, book, customers=150, seed=4, **SMALL)
    assert not other["value"].equals(table["value"])


@pytest.mark.parametrize("continuation", [None, "greedy_uplift"])
def test_subset_branches_match_full_copies(world_book, continuation):
    """Each branch simulates only the customers its action is allowed for; with common random numbers
    that must give every customer exactly what a full copy of the simulator gives them."""
    _, world, book = world_book
    from optimizer.value_sources import continuation_fn

    src = sample_book(book, 200, 1)
    gamma = world.economics.discount_per_period
    sim = PopulationSimulator.from_book(world, src, np.random.SeedSequence(11))
    sim.crn = True
    ref = clone_simulator(sim)
    pol = None if continuation is None else make_baseline(continuation, world)
    masks, value, cost = branch_values(sim, 8, None if pol is None else continuation_fn(pol), gamma)
    follow = None if pol is None else as_simulator_policy(pol, greedy=True)
    A = masks.shape[1]
    clv, dcost, contacts = np.zeros((200, A)), np.zeros((200, A)), 0
    for a in range(A):
        b = clone_simulator(ref)
        for t in range(8):
            acts = np.where(masks[:, a], a, 0).astype(np.int16) if t == 0 else (None if follow is None else follow(b))
            out = b.step(acts)
            clv[:, a] += gamma**t * out.reward
            dcost[:, a] += gamma**t * out.cost
            contacts += int(out.contacted.sum()) if t else 0
    np.testing.assert_allclose(value, np.where(masks, clv - clv[:, :1], 0.0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(cost, np.where(masks, dcost - dcost[:, :1], 0.0), rtol=0, atol=1e-9)
    assert (contacts > 0) == (continuation is not None)  # the greedy continuation does contact
    assert np.abs(value[masks[:, 1:].any(axis=1)]).sum() > 0


def test_dead_customers_get_minus_the_cost(world_book):
    """Common random numbers: a customer who has left (and cannot be won back) lives the same future
    in every branch, so contacting them is worth exactly minus what it costs."""
    _, world, book = world_book
    w = copy.deepcopy(world)
    w.response.reactivation = [[0.0] * len(r) for r in w.response.reactivation]
    small = book.iloc[:200].copy()
    dead = small["customer_id"].astype(str).iloc[:100]
    small.loc[small.index[:100], "p_alive"] = 0.0
    df = values_from_simulation(w, small, None, horizon=10, replications=2, seed=0)
    on_dead = df["customer_id"].isin(set(dead))
    assert on_dead.any() and (~on_dead).any()
    np.testing.assert_allclose(df.loc[on_dead, "value"], -df.loc[on_dead, "cost"], rtol=0, atol=1e-9)
    assert (np.abs(df.loc[~on_dead, "value"] + df.loc[~on_dead, "cost"]) > 1e-6).any()


def test_more_customers_than_the_book(world_book):
    _, world, book = world_book
    small = book.iloc[:30]
    df = values_from_simulation(world, small, customers=45, horizon=3, replications=1, seed=0)
    vt = ValueTable.from_frame(df)  # no duplicate (customer, action) rows
    ids = set(df["customer_id"])
    assert any("#" in i for i in ids) and {i.split("#")[0] for i in ids} <= set(small["customer_id"].astype(str))
    assert df.attrs["diagnostics"]["resampled"] and vt.n <= 45


def test_policy_source_with_a_baseline(world_book):
    _, world, book = world_book
    kw = dict(customers=150, horizon=6, replications=2, seed=2)
    df = values_from_policy(world, book, "greedy_uplift", **kw)
    ValueTable.from_frame(df)
    diag = df.attrs["diagnostics"]
    assert diag["policy"] == "greedy_uplift" and diag["source"] == "policy"
    assert {"heldout_r2", "target_rms", "smoothed", "raw_mean_value_by_action"} <= set(diag)
    assert diag["smoothed"] == (np.isfinite(diag["heldout_r2"]) and diag["heldout_r2"] >= 0)
    # raw means are the simulation source with the policy as continuation; cost is never smoothed
    raw = values_from_simulation(world, book, continuation="greedy_uplift", **kw)
    pd.testing.assert_frame_equal(df.drop(columns="value"), raw.drop(columns="value"))
    assert (df["cost"] >= 0).all()
    assert diag["raw_mean_value_by_action"] == raw.attrs["diagnostics"]["mean_value_by_action"]
    if diag["smoothed"]:
        assert not df["value"].equals(raw["value"])
    else:
        pd.testing.assert_series_equal(df["value"], raw["value"])
    pd.testing.assert_frame_equal(df, values_from_policy(world, book, "greedy_uplift", **kw))


# ---- the command line -------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["sim", "policy"])
def test_cli_values_json(world_book, tmp_path, source):
    path, world, _ = world_book
    out = tmp_path / "v" / "values.parquet"
    extra = ["--policy", "greedy_uplift"] if source == "policy" else ["--continuation", "none"]
    r = clv(
        "values",
        path,
        "--source",
        source,
        *extra,
        "--customers",
        120,
        "--horizon",
        5,
        "--replications",
        2,
        "--seed",
        1,
        "--out",
        out,
        "--json",
    )
    assert r.exit_code == 0, (r.stderr, r.exception)
    doc = json.loads(r.stdout)
    vt = load_values(out)
    assert doc["rows"] == vt.n_options and doc["customers"] == 120 and doc["customers_with_options"] == vt.n
    assert doc["source"] == source and doc["horizon"] == 5 and doc["replications"] == 2 and doc["out"] == str(out)
    assert set(doc["actions"]) == set(vt.actions) and set(doc["mean_value_by_action"]) == set(world.catalogue.names[1:])
    for j, a in enumerate(vt.actions):
        e = vt.eligible[:, j]
        assert doc["mean_value_by_action"][a] == pytest.approx(vt.value[e, j].mean())
        assert doc["mean_cost_by_action"][a] == pytest.approx(vt.cost[e, j].mean())
    assert ("diagnostics" in doc) == (source == "policy")
    if source == "policy":
        assert "heldout_r2" in doc["diagnostics"] and "smoothed" in doc["diagnostics"]


BAD = [
    (["--source", "oracle"], ["--source", "oracle"]),
    (["--source", "policy"], ["--source policy needs --policy"]),
    (["--source", "sim", "--continuation", "nonsense"], ["--continuation nonsense"]),
    (["--source", "sim", "--policy", "bau"], ["--policy is for --source policy"]),
]


@pytest.mark.parametrize(
    "args,needles", BAD, ids=["bad source", "policy missing", "bad continuation", "policy with sim"]
)
def test_cli_values_bad_input(world_book, tmp_path, args, needles):
    path, _, _ = world_book
    out = tmp_path / "values.parquet"
    r = clv("values", path, *args, "--customers", 50, "--out", out, "--json")
    assert r.exit_code == 2, (r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert r.stdout == "" and not out.exists()


def test_cli_values_help_has_example():
    r = clv("values", "--help")
    assert r.exit_code == 0 and "Example: clv values" in r.stdout
