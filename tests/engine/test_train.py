"""End-to-end training on tiny data: a run folder holds everything the app and the CLI read.

These are the must-have CI checks: a holdout run and a k-fold run write every file with the right
names, sizes and values; the same seed gives the same numbers; the hook sees every event;
preflight refuses bad runs before a folder exists.
"""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fakes import check_run_folder, stems, tiny_config
from roofseg.data import dataset as data
from roofseg.engine import predict
from roofseg.model import checkpoint
from roofseg.store import runs
from roofseg.engine import train
from roofseg.exec import worker
from roofseg.config import RunConfig
from roofseg.model.factory import ModelError

def run_with_hook(cfg, runs_dir):
    events = []
    d = runs.create_run(cfg, runs_dir)
    st = worker.execute(d, hook=lambda event, info: events.append((event, info)), wait_for_slot=False)
    assert st["state"] == "done", st
    return d, events


# ---------------------------------------------------------------------------------------------
def test_holdout_run_folder_is_complete(finished_runs, demo64):
    for d in runs.list_runs(finished_runs):
        summary = check_run_folder(d, demo64, epochs=2)
        assert len(json.loads((d / "per_image.json").read_text())) == 2  # round(10 * 0.2)
        assert summary["val_dice_std"] == 0.0


def test_same_seed_same_numbers_and_hook_events(finished_runs, demo64, tmp_path):
    # the same config as finished_runs' bce_dice run: a second run must reproduce it exactly
    ref = next(d for d in runs.list_runs(finished_runs)
               if RunConfig.load(d / "config.json").loss == "bce_dice")
    d, events = run_with_hook(tiny_config(demo64, loss="bce_dice"), tmp_path)
    keys = ("train_loss", "val_loss", "val_dice", "lr")
    got = [[r[k] for k in keys] for r in runs.read_metrics(d)[0]]
    want = [[r[k] for k in keys] for r in runs.read_metrics(ref)[0]]
    assert got == want
    assert stems(d / "predictions" / "val") == stems(ref / "predictions" / "val")  # same split
    # the hook: start, one epoch event per epoch, the fold's end, the end
    assert [e for e, _ in events] == ["start", "epoch", "epoch", "fold_end", "end"]
    start, end = events[0][1], events[-1][1]
    assert start["pairs"] == 10 and start["epochs"] == 2 and start["device"] == "cpu"
    assert events[1][1]["epoch"] == 1 and "val_dice" in events[2][1]
    assert end == json.loads((d / "summary.json").read_text())


def odd_sized_copy(demo64, dst):
    """demo64 with two labelled images and one unlabeled image at 70x50 instead of 64x64."""
    shutil.copytree(demo64, dst)
    labelled = stems(dst / "labels")
    unlabeled = sorted(set(stems(dst / "images")) - set(labelled))
    for s in labelled[:2] + unlabeled[:1]:
        for sub, how in (("images", Image.BILINEAR), ("labels", Image.NEAREST)):
            p = dst / sub / f"{s}.png"
            if p.exists():
                Image.open(p).resize((70, 50), how).save(p)
    return dst


def test_kfold_run_folder(demo64, tmp_path):
    data_dir = odd_sized_copy(demo64, tmp_path / "data")
    d, events = run_with_hook(tiny_config(data_dir, folds=3, epochs=1), tmp_path / "runs")
    summary = check_run_folder(d, data_dir, epochs=1, folds=3)
    assert [e for e, _ in events].count("fold_end") == 3
    vals = [f["val_dice"] for f in summary["per_fold"]]
    assert summary["val_dice"] == pytest.approx(np.mean(vals))
    assert summary["val_dice_std"] == pytest.approx(np.std(vals, ddof=1))
    assert len(summary["best_epoch"]) == 3
    # out-of-fold: every labelled image predicted exactly once, by the model that did not see it
    per_img = json.loads((d / "per_image.json").read_text())
    assert sorted(r["name"] for r in per_img) == stems(data_dir / "labels")
    assert sorted({r["fold"] for r in per_img}) == [0, 1, 2]
    assert sorted(sum(1 for r in per_img if r["fold"] == f) for f in range(3)) == [3, 3, 4]
    assert "oof_dice_img" in summary


# ---------------------------------------------------------------------------------------------
# preflight: refuse before a run folder is made
@pytest.mark.parametrize("kw, error, text", [
    (dict(batch_size=9), data.DataError, "batch_size=9 is larger than the 8 training images"),
    # k-fold: 10 pairs in 3 folds of 4/3/3 -> the smallest training set has 6 images
    (dict(folds=3, batch_size=7), data.DataError, "batch_size=7 is larger than the 6 training images"),
    (dict(folds=11), data.DataError, "folds=11 is more than the 10 usable"),
    (dict(arch="DPT", encoder="resnet18"), ModelError, "DPT with encoder resnet18 does not build"),
    (dict(arch="PAN"), ModelError, "PAN with encoder resnet18 cannot run on 64x64 inputs"),
    (dict(encoder="resnet19"), ModelError, "unknown encoder 'resnet19'"),
    (dict(encoder_weights="/nonexistent/w.pth"), FileNotFoundError, "w.pth: file not found"),
    (dict(init_from="/nonexistent/run"), FileNotFoundError, "no best"),
])
def test_preflight_refuses(demo64, kw, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(")):
        train.preflight(tiny_config(demo64, **kw))


def test_preflight_accepts_what_fit_accepts(demo64):
    rep = train.preflight(tiny_config(demo64, folds=3, batch_size=6))
    assert rep.n_pairs == 10
    train.preflight(tiny_config(demo64, batch_size=8))
    train.preflight(tiny_config(demo64, arch="PAN", image_size=128))


def test_preflight_missing_data(tmp_path):
    with pytest.raises(data.DataError, match="nowhere: dataset folder not found"):
        train.preflight(tiny_config(tmp_path / "nowhere"))


def test_preflight_counts_only_usable_pairs(demo_copy):
    labelled = stems(demo_copy / "labels")
    for s in labelled[1:]:
        shutil.copyfile(demo_copy / "labels" / f"{labelled[0]}.png", demo_copy / "labels" / f"{s}.png")
    with pytest.raises(data.DataError, match="1 usable labelled pair"):
        train.preflight(tiny_config(demo_copy))
    train.preflight(tiny_config(demo_copy, exclude_flagged=False))


def test_training_error_becomes_failed_status(demo_copy, tmp_path):
    d = runs.create_run(tiny_config(demo_copy), tmp_path / "runs")
    shutil.rmtree(demo_copy)  # the data vanished between launch and start
    st = worker.execute(d, wait_for_slot=False)
    assert st["state"] == "failed" and "dataset folder not found" in st["error"]
    log = (d / "log.txt").read_text()
    assert "Traceback" in log and "failed: DataError" in log
    assert json.loads((d / "status.json").read_text())["state"] == "failed"


def test_best_weights_written_once_per_fold_and_kept_on_cancel(demo64, tmp_path, monkeypatch):
    """New bests are held in memory and written at most every CHECKPOINT_EVERY_S and at the
    fold's end; a run stopped mid-fold (here: the hook raises after epoch 3, as Cancel's SIGTERM
    does) still leaves the best epoch so far on disk."""
    writes = []
    real = checkpoint.save_checkpoint
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda p, obj: (writes.append(obj["epoch"]), real(p, obj)))
    monkeypatch.setattr(train, "CHECKPOINT_EVERY_S", 3600.0)
    cfg = tiny_config(demo64, epochs=5, lr=3e-3)
    d = runs.create_run(cfg, tmp_path / "runs")

    class Stop(Exception):
        pass

    def hook(event, info):
        if event == "epoch" and info["epoch"] == 3:
            raise Stop
    with pytest.raises(Stop):
        train.fit(cfg, d, hook=hook, log=lambda *_: None)
    rows, _ = runs.read_metrics(d)
    best = max(rows, key=lambda r: r["val_dice"])
    assert len(rows) == 3 and writes == sorted({1, best["epoch"]})  # epoch 1 at once, the best at the stop
    ck = checkpoint.load_checkpoint(d / "best.pt")
    assert ck["epoch"] == best["epoch"] and ck["val_dice"] == best["val_dice"]
    models, _ = predict.load_run_models(d, "cpu")  # the app and the CLI can predict with it
    assert len(models) == 1


def test_best_keeper_writes_when_the_interval_has_passed(tmp_path, monkeypatch):
    import torch
    cfg = RunConfig()
    model = torch.nn.Linear(2, 1)
    k = train.BestKeeper(tmp_path / "best.pt", cfg, 0, every_s=0.0)
    k.update(model, 1, 0.5)
    k.update(model, 2, 0.6)
    assert checkpoint.load_checkpoint(tmp_path / "best.pt")["epoch"] == 2  # interval 0: every best at once
    k = train.BestKeeper(tmp_path / "b2.pt", cfg, 0, every_s=3600.0)
    k.update(model, 1, 0.5)  # the first best: written at once, so a file exists early
    assert checkpoint.load_checkpoint(tmp_path / "b2.pt")["epoch"] == 1
    with torch.no_grad():
        model.weight.fill_(1.0)
    k.update(model, 2, 0.6)
    with torch.no_grad():
        model.weight.fill_(7.0)  # training goes on: the held copy must not follow the model
    assert checkpoint.load_checkpoint(tmp_path / "b2.pt")["epoch"] == 1  # epoch 2 held, not written yet
    k.flush()
    ck = checkpoint.load_checkpoint(tmp_path / "b2.pt")
    assert ck["epoch"] == 2 and ck["state_dict"]["weight"].tolist() == [[1.0, 1.0]]
