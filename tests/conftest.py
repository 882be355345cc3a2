"""Shared fixtures: a tiny synthetic dataset (64 px), tiny configs, finished runs to read.

Everything runs on the CPU with encoder_weights='none'. Session-scoped fixtures are built once;
tests that modify data copy it first.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

import roofseg.model  # noqa: F401  (the torchvision guard runs before timm/smp import)
from fakes import tiny_config

SHARED_DIDA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dida"


@pytest.fixture(scope="session")
def demo64(tmp_path_factory) -> Path:
    """12 images (10 labelled) of 64x64: read-only, shared by the whole session."""
    from roofseg.data.demo import make_demo
    return make_demo(tmp_path_factory.mktemp("data") / "demo64", n_images=12, n_labels=10, size=64, seed=0)


@pytest.fixture
def demo_copy(demo64, tmp_path) -> Path:
    """A private, writable copy of demo64 for tests that damage data."""
    dst = tmp_path / "data"
    shutil.copytree(demo64, dst)
    return dst


@pytest.fixture
def tiny_cfg(demo64):
    return tiny_config(demo64)


@pytest.fixture(scope="session")
def finished_runs(demo64, tmp_path_factory) -> Path:
    """A runs folder with two finished tiny runs (holdout; different loss) for read-only tests."""
    from roofseg.store import runs
    from roofseg.exec import worker
    runs_dir = tmp_path_factory.mktemp("runs")
    for loss in ("bce_dice", "dice"):
        d = runs.create_run(tiny_config(demo64, loss=loss), runs_dir)
        st = worker.execute(d, wait_for_slot=False)
        assert st["state"] == "done", st
    return runs_dir


@pytest.fixture
def shared_dida() -> Path:
    if not (SHARED_DIDA / "images").is_dir():
        pytest.skip(f"real DIDA data not present at {SHARED_DIDA}")
    return SHARED_DIDA


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run the in-process tests on one CPU thread, as tiny_config's runs do (fit sets it anyway).

    Two OpenMP threads on a busy 2-core machine spin against each other: building and running the
    models of test_models.py took 53 s instead of 7 s.
    """
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def readonly(monkeypatch):
    """make(folder): the folder refuses new entries, as a read-only mount would (EACCES)."""
    made = []

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            made.append(folder)
            return folder
        real = os.mkdir  # Path.mkdir goes through os.mkdir

        def mkdir(path, *a, **kw):
            if Path(path).parent == folder:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real(path, *a, **kw)
        monkeypatch.setattr(os, "mkdir", mkdir)
        return folder
    yield make
    for f in made:
        f.chmod(0o755)
