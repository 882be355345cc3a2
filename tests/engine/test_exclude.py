"""RunConfig.exclude: images a label review flagged are left out of the next run, recorded in its
config and summary, and the user's files are never touched (issue #13)."""
from __future__ import annotations

import hashlib
import json

import pytest

from fakes import tiny_config
from roofseg.config import ConfigError, RunConfig
from roofseg.data import dataset as data
from roofseg.engine import train
from roofseg.exec import worker
from roofseg.store import runs


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.png"))}


def test_excluded_images_are_not_trained_on_and_are_recorded(demo64, tmp_path):
    names = [s for s, _, _ in data.find_pairs(demo64)[0]][:2]
    before = _digest(demo64)
    d = runs.create_run(tiny_config(demo64, epochs=1, exclude=",".join(names)), tmp_path)
    assert worker.execute(d, wait_for_slot=False)["state"] == "done"
    s = json.loads((d / "summary.json").read_text())
    assert set(names) <= set(s["excluded"]) and s["pairs"] == 10 - len(names)
    assert not {r["name"] for r in runs.read_per_image(d)} & set(names)
    assert json.loads((d / "config.json").read_text())["exclude"] == ",".join(names)
    assert _digest(demo64) == before  # nothing the user had changed


def test_exclude_names_images_not_paths_and_must_exist(demo64):
    with pytest.raises(ConfigError, match="exclude"):
        RunConfig(exclude="../labels/1").validate()
    with pytest.raises(data.DataError, match="nope is not a labelled image"):
        train.preflight(tiny_config(demo64, exclude="nope"))
    assert RunConfig(exclude=" a, b ,").excluded_names() == ["a", "b"]
