"""The real DIDA data (../shared/data/dida, skipped when absent): the facts in its SOURCE.md hold
for roofseg's reading of it, and a short real training run leaves a complete run folder."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from roofseg.data import dataset as data
from roofseg.store import runs
from fakes import check_run_folder

ROOT = Path(__file__).resolve().parents[2]
UNLABELED = {"535", "537", "539", "551", "553"}


def test_check_dataset_finds_the_known_facts(shared_dida):
    rep = data.check_dataset(shared_dida)
    assert (rep.n_images, rep.n_labels, rep.n_pairs) == (30, 25, 25)
    assert set(rep.unlabeled) == UNLABELED and rep.orphan_labels == []
    assert rep.sizes == {"256x256": 30} and rep.modes == {"RGBA": 30} and rep.label_modes == {"L": 25}
    assert list(rep.flagged) == ["278"] and "270" in rep.flagged["278"]
    assert rep.unreadable == {} and rep.ok
    assert rep.roof_fraction == pytest.approx(0.140, abs=0.002)  # SOURCE.md: 14.0% without 278


def test_load_dataset_gives_24_rgba_pairs(shared_dida):
    d = data.load_dataset(shared_dida)
    assert len(d.names) == 24 and "278" not in d.names and "270" in d.names
    assert d.images.shape == (24, 256, 256, 4) and d.images.dtype == np.uint8
    assert d.masks.shape == (24, 256, 256) and set(np.unique(d.masks)) == {0, 1}
    assert set(d.test_names) == UNLABELED and d.test_images.shape == (5, 256, 256, 4)
    assert (d.images[..., 3] == 0).any()  # the redaction boxes survive as alpha 0
    assert d.excluded == {"278": d.report.flagged["278"]}


@pytest.mark.slow
def test_train_unet_resnet18_on_dida(shared_dida, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "roofseg", "train", "--data", str(shared_dida), "--runs-dir", str(tmp_path),
         "--arch", "Unet", "--encoder", "resnet18", "--epochs", "3", "--batch-size", "4",
         "--in-channels", "4", "--num-threads", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert "val_dice" in proc.stdout.splitlines()[-1]
    (run,) = runs.list_runs(tmp_path)
    summary = check_run_folder(run, shared_dida, epochs=3)
    assert summary["pairs"] == 24 and list(summary["excluded"]) == ["278"]
    assert not (run / "predictions" / "val" / "278.png").exists()
