"""The pipeline's currency checks: content hashes of the build's inputs and the state file."""

from __future__ import annotations

import os
import time

from warpforge_launch import inventory
from warpforge_launch.lab import pipeline


def _inv(source, profile="standin"):
    doc = inventory.default_document()
    doc["build"] = {"profile": profile, "source": str(source)}
    return inventory.parse(doc, None, {})


def test_source_key_follows_content_not_mtime(tmp_path):
    sg = tmp_path / "examples" / "snakegrinder"
    (sg / "src").mkdir(parents=True)
    (sg / "src" / "a.py").write_text("x = 1\n")
    (sg / "src" / "__pycache__").mkdir()
    (sg / "src" / "__pycache__" / "a.pyc").write_bytes(b"junk")
    (tmp_path / "unrelated.txt").write_text("not a build input\n")
    inv = _inv(tmp_path)
    key = pipeline.source_key(inv)
    later = time.time() + 100
    os.utime(sg / "src" / "a.py", (later, later))
    (tmp_path / "unrelated.txt").write_text("changed\n")
    (sg / "src" / "__pycache__" / "a.pyc").write_bytes(b"other junk")
    assert pipeline.source_key(inv) == key
    (sg / "src" / "a.py").write_text("x = 2\n")
    assert pipeline.source_key(inv) != key
    (sg / "src" / "a.py").write_text("x = 1\n")
    assert pipeline.source_key(inv) == key
    (sg / "src" / "b.py").write_text("")
    assert pipeline.source_key(inv) != key


def test_source_key_covers_the_recipe(tmp_path):
    (tmp_path / "examples" / "snakegrinder").mkdir(parents=True)
    doc = inventory.default_document()
    doc["build"] = {"profile": "standin", "source": str(tmp_path)}
    a = pipeline.source_key(inventory.parse(doc, None, {}))
    doc["build"]["test_floors"] = {"snakegrinder-dist": 1}
    assert pipeline.source_key(inventory.parse(doc, None, {})) != a


def test_state_is_per_inventory_and_survives_a_reload(tmp_path):
    path = tmp_path / "state" / "pipeline-state.json"
    s = pipeline.State(path, "inv-a")
    assert not s.current("build", "k1")
    s.record("build", "k1", release="r1")
    pipeline.State(path, "inv-b").record("build", "k2")
    again = pipeline.State(path, "inv-a")
    assert again.current("build", "k1") and not again.current("build", "k2")
    assert again.stages["build"]["release"] == "r1"
    again.forget("build")
    assert not again.current("build", "k1")


def test_state_file_that_is_not_json_starts_over(tmp_path):
    path = tmp_path / "pipeline-state.json"
    path.write_text("{not json")
    s = pipeline.State(path, "x")
    assert s.stages == {}
    s.record("smoke", "k")
    assert pipeline.State(path, "x").current("smoke", "k")


def test_release_of_a_missing_dist_is_none(tmp_path):
    assert pipeline.release_of(tmp_path / "nothing") is None
