"""Fixtures the page tests share: a runs folder of their own and the environment the app reads."""
from pathlib import Path

import pytest

from roofseg.exec import control
from roofseg.store import runs
from roofseg.sweep import study as sweep


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def env(demo64, runs_dir, monkeypatch):
    """The app on the 64-px demo with an empty runs folder; whatever a test started is stopped after
    it, passed or failed, so no worker trains on into the next test."""
    monkeypatch.setenv("ROOFSEG_DATA", str(demo64))
    monkeypatch.setenv("ROOFSEG_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # workers inherit it: tiny models, busy CI cores
    yield
    for name in sweep.list_sweeps(runs_dir):
        sweep.cancel_sweep(name, runs_dir, grace=2.0)
    for d in runs.list_runs(runs_dir):
        control.cancel(d, grace=1.0)
