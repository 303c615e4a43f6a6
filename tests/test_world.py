"""WorldModel persistence: versioned plain JSON (no pickle), lossless round trip, clear errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from sim.calibrate import calibrate
from sim.errors import ConfigError
from sim.synthetic import BankConfig, generate_bank_history
from sim.world import SCHEMA_VERSION, WorldModel, _clean


@pytest.fixture(scope="module")
def world() -> WorldModel:
    history, _truth = generate_bank_history(BankConfig(customers=300, weeks=70, seed=1))
    w, book, report = calibrate(history, "2023-03-31")
    assert len(book) == report["customers"] > 0
    return w


def _no_nan_tokens(text: str) -> dict:
    """json.loads that refuses NaN / Infinity / -Infinity (they are not JSON)."""

    def refuse(token: str):
        raise AssertionError(f"non-JSON constant {token} in the world file")

    return json.loads(text, parse_constant=refuse)


def test_round_trip(world, tmp_path):
    path = tmp_path / "world.json"
    world.save(path)
    loaded = WorldModel.load(path)
    # the file stores NaN as null, so compare with the JSON-clean form of the original
    assert loaded.to_dict() == _clean(world.to_dict())
    assert loaded.hash() == world.hash()
    # and a second trip is exact, down to the bytes
    again = tmp_path / "again.json"
    loaded.save(again)
    assert WorldModel.load(again).to_dict() == loaded.to_dict()
    assert again.read_bytes() == path.read_bytes()
    # the loaded world is usable: typed parts come back as their classes
    assert [s.name for s in loaded.segments] == [s.name for s in world.segments]
    assert loaded.catalogue.names == world.catalogue.names
    assert loaded.stage_rules == world.stage_rules
    assert loaded.economics.discount_per_period == pytest.approx(world.economics.discount_per_period)


def test_file_is_plain_json(world, tmp_path, monkeypatch):
    path = tmp_path / "world.json"
    world.save(path)
    text = path.read_text(encoding="utf-8")
    d = _no_nan_tokens(text)
    assert d["schema_version"] == SCHEMA_VERSION == 1
    assert {"segments", "response", "stage_rules", "economics", "catalogue"} <= set(d)

    def no_pickle(*a, **k):
        raise AssertionError("world files must not be unpickled")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    assert WorldModel.load(path).hash() == world.hash()


def test_hash_tracks_content(world):
    d = world.to_dict()
    changed = WorldModel.from_dict(_clean(d))
    assert changed.hash() == world.hash()
    changed.segments[0].share += 0.01
    assert changed.hash() != world.hash()


def test_unsupported_schema_version(world, tmp_path):
    d = _clean(world.to_dict())
    d["schema_version"] = 999
    path = tmp_path / "future.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="schema_version") as e:
        WorldModel.load(path)
    assert "999" in str(e.value)


def test_missing_schema_version(world, tmp_path):
    d = _clean(world.to_dict())
    del d["schema_version"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="schema_version"):
        WorldModel.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="clv calibrate"):
        WorldModel.load(tmp_path / "nope.json")


def test_not_json(tmp_path):
    path = tmp_path / "world.json"
    path.write_text("schema_version: 1\n")  # YAML, say
    with pytest.raises(ConfigError, match="not a world JSON"):
        WorldModel.load(path)


def test_binary_file_is_not_json(tmp_path):
    path = tmp_path / "world.json"
    path.write_bytes(pickle.dumps({"schema_version": 1}))
    with pytest.raises(ConfigError, match="not a world JSON"):
        WorldModel.load(path)


@pytest.mark.parametrize(
    "text, match", [("[1, 2]", "not a world JSON file \\(a list"), ('{"a": 1}', "no schema_version")]
)
def test_json_that_is_no_world_names_the_file(tmp_path, text, match):
    path = tmp_path / "other.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        WorldModel.load(path)
    assert str(e.value).startswith(f"{path}: ") and "clv calibrate" in str(e.value)


def test_missing_field(world, tmp_path):
    d = _clean(world.to_dict())
    del d["segments"]
    path = tmp_path / "world.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="segments"):
        WorldModel.load(path)


def test_nan_is_written_as_null(world, tmp_path):
    w = WorldModel.from_dict(_clean(world.to_dict()))
    w.segments[0].share = float("nan")
    w.segments[0].activity["r"] = np.float64("nan")
    w.fit["probe"] = [1.0, float("inf"), np.nan, np.float32(2.5)]
    path = tmp_path / "nan.json"
    w.save(path)
    d = _no_nan_tokens(path.read_text())
    assert d["segments"][0]["share"] is None
    assert d["segments"][0]["activity"]["r"] is None
    assert d["fit"]["probe"] == [1.0, None, None, 2.5]
    assert "NaN" not in path.read_text()
    # hashing treats NaN the same way, so the saved file hashes like the in-memory world
    assert WorldModel.load(path).hash() == w.hash()
