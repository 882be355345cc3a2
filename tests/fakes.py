"""Builders shared by the tests of several layers: hand-made run folders (no training), damaged
files, and the check that a finished run folder is complete.

They live here, not in a test module, so that no test module imports another.
"""
from __future__ import annotations

import io
import json
import math
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from roofseg.config import RunConfig
from roofseg.engine import predict
from roofseg.model import checkpoint
from roofseg.store import runs


def tiny_config(data: Path, **kw) -> RunConfig:
    """A 2-epoch Unet-resnet18 from scratch on one thread: the smallest real run, for any test."""
    base = dict(data=str(data), arch="Unet", encoder="resnet18", encoder_weights="none", epochs=2, batch_size=4, lr=1e-3,
                augment="light", seed=0, num_threads=1)
    base.update(kw)
    return RunConfig(**base).validate()


ROW_KEYS = {"fold", "epoch", "train_loss", "val_loss", "val_dice", "val_iou", "val_precision",
            "val_recall", "val_accuracy", "val_dice_img", "val_iou_img", "lr", "epoch_s",
            "best_val_dice", "time"}


def stems(folder):
    return sorted(p.stem for p in folder.iterdir())


def check_run_folder(run_dir, data_dir, epochs: int, folds: int = 0) -> dict:
    """Assert a finished run folder is complete and consistent; return its summary."""
    summary = json.loads((run_dir / "summary.json").read_text())
    labelled = sorted(set(stems(data_dir / "labels")) - set(summary["excluded"]))
    unlabeled = sorted(set(stems(data_dir / "images")) - set(stems(data_dir / "labels")))
    cfg = RunConfig.load(run_dir / "config.json")
    # status: done, with the worker's pid and times in order
    st = json.loads((run_dir / "status.json").read_text())
    assert st["state"] == "done", st
    assert isinstance(st["pid"], int) and st["created"] <= st["started"] <= st["ended"]
    # metrics: one flushed row per epoch and fold, every column a plotter expects
    rows, bad = runs.read_metrics(run_dir)
    n_models = folds if folds >= 2 else 1
    assert bad == 0 and len(rows) == epochs * n_models
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert all(math.isfinite(r[k]) for k in ROW_KEYS), r
        assert 0 <= r["val_dice"] <= 1 and r["lr"] > 0 and r["epoch_s"] > 0
    assert [(r["fold"], r["epoch"]) for r in rows] == [(f, e) for f in range(n_models)
                                                       for e in range(1, epochs + 1)]
    # weights: one file per model, the config frozen inside, loadable without running code
    names = ["best.pt"] if n_models == 1 else [f"best_fold{i}.pt" for i in range(n_models)]
    assert [p.name for p in runs.checkpoint_paths(run_dir)] == names
    for i, name in enumerate(names):
        ck = checkpoint.load_checkpoint(run_dir / name)
        assert ck["config"] == cfg.to_dict() and ck["fold"] == i
        fold_rows = [r for r in rows if r["fold"] == i]
        best = max(fold_rows, key=lambda r: r["val_dice"])
        assert ck["val_dice"] == best["val_dice"] and ck["epoch"] == best["epoch"]
        assert summary["per_fold"][i]["val_dice"] == best["val_dice"]
    _, frozen = predict.load_model(run_dir / names[0])  # rebuilds from the config inside
    assert frozen == cfg
    # summary
    assert summary["folds"] == n_models and summary["epochs"] == epochs and summary["pairs"] == len(labelled)
    assert 0 <= summary["val_dice"] <= 1 and len(summary["per_fold"]) == n_models
    # per-image rows and predicted masks: every validation image once, at its file's size
    per_img = json.loads((run_dir / "per_image.json").read_text())
    val_names = [r["name"] for r in per_img]
    assert len(val_names) == len(set(val_names)) and set(val_names) <= set(labelled)
    for r in per_img:
        assert 0 <= r["dice"] <= 1 and r["tp"] + r["fp"] + r["fn"] + r["tn"] > 0
    pred = run_dir / "predictions"
    assert stems(pred / "val") == stems(pred / "val_prob") == sorted(val_names)
    assert stems(pred / "test") == stems(pred / "test_prob") == unlabeled
    for sub, src in (("val", "images"), ("val_prob", "images"), ("test", "images"), ("test_prob", "images")):
        for p in (pred / sub).iterdir():
            assert p.suffix == ".png"
            im = Image.open(p)
            assert im.mode == "L" and im.size == Image.open(data_dir / src / p.name).size, p
            if sub in ("val", "test"):
                assert set(np.unique(np.asarray(im))) <= {0, 255}, p
    # log and environment
    log = (run_dir / "log.txt").read_text()
    assert "started" in log and log.rstrip().endswith("done")
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"] and env["smp"] and "torchvision_guard" in env
    return summary


def fake_finished_run(runs_dir, name, val_dice, loss="dice"):
    """A run folder as a finished worker leaves it, without training."""
    d = Path(runs_dir) / name
    d.mkdir(parents=True)
    RunConfig(loss=loss, epochs=3).save(d / "config.json")
    now = time.time()
    runs.write_json(d / "status.json", {"state": "done", "created": now, "started": now, "ended": now})
    runs.write_json(d / "summary.json", {"val_dice": val_dice, "val_dice_std": 0.0, "folds": 1, "minutes": 0.1})
    return d


def make_kfold_run(runs_dir: Path, data: Path, name: str = "kfold-fake") -> Path:
    """A hand-made finished 3-fold run without weights: val_dice = 0.1*epoch + 0.1*fold, so each
    epoch's folds are (0.1, 0.2, 0.3) + 0.1*(epoch-1): mean 0.2 + 0.1*(epoch-1), std 0.1."""
    d = Path(runs_dir) / f"20200101-000000-{name}"
    d.mkdir(parents=True)
    tiny_config(data, folds=3, name=name).save(d / "config.json")
    runs.write_json(d / "status.json", {"state": "done", "created": 1.0e9})
    for fold in range(3):
        for epoch in (1, 2):
            runs.append_metrics(d, {"fold": fold, "epoch": epoch, "train_loss": 1.0 / epoch,
                                    "val_dice": 0.1 * epoch + 0.1 * fold, "epoch_s": 0.1})
    runs.write_json(d / "summary.json", {"folds": 3, "val_dice": 0.3, "val_dice_std": 0.1,
                                         "val_iou": 0.2, "val_iou_std": 0.05, "minutes": 0.5})
    return d


def seed_run(runs_dir: Path, data: Path, seed: int, dice: float, **cfg) -> Path:
    """A hand-made finished holdout run with the given seed, val Dice and config fields."""
    d = Path(runs_dir) / f"20200101-00000{seed}-{cfg.get('loss', 'bce_dice')}-s{seed}"
    d.mkdir(parents=True)
    tiny_config(data, seed=seed, name=f"seed {seed}", **cfg).save(d / "config.json")
    runs.write_json(d / "status.json", {"state": "done", "created": 1.0e9})
    runs.write_json(d / "summary.json", {"folds": 1, "val_dice": dice, "val_iou": dice / 2})
    return d


A_FOLDS = [0.70, 0.72, 0.68, 0.71, 0.69]


NAMES = [f"img{i:02d}" for i in range(25)]


EPOCHS = 3


def fake_run(runs_dir: Path, run_id: str, fold_dice, *, data="data", folds=5, seed=0, state="done",
             image_dice=None, names=NAMES, epochs_done=None, **cfg) -> Path:
    """A run folder whose fold f ends (epoch EPOCHS) at val_dice fold_dice[f], climbing 0.05 an
    epoch before; val_iou = Dice/(2 - Dice). per_image.json: image i in fold i % k."""
    d = Path(runs_dir) / run_id
    d.mkdir(parents=True)
    data = str(Path(runs_dir).parent / data)
    runs.write_json(d / "config.json", {**RunConfig().to_dict(), "data": data, "folds": folds,
                                        "seed": seed, "epochs": EPOCHS, "name": run_id, **cfg})
    runs.write_json(d / "status.json", {"state": state, "created": 1.0e9,
                                        **({"error": "CUDA out of memory"} if state == "failed" else {})})
    k = max(folds, 1)
    for f, final in enumerate(fold_dice):
        for e in range(1, (epochs_done or EPOCHS) + 1):
            dice = final - 0.05 * (EPOCHS - e)
            runs.append_metrics(d, {"fold": f, "epoch": e, "train_loss": 1.0 / e, "val_dice": dice,
                                    "val_iou": dice / (2 - dice), "epoch_s": 0.1})
    if image_dice is not None:
        rows = [{"name": n, "fold": i % k, "dice": float(v), "iou": float(v / (2 - v)),
                 "tp": 10, "fp": 1, "fn": 1, "tn": 100} for i, (n, v) in enumerate(zip(names, image_dice))]
        runs.write_json(d / "per_image.json", rows)
    runs.write_json(d / "summary.json", {"folds": k, "pairs": len(names), "val_dice": float(np.mean(fold_dice))})
    return d


def images_a(seed=0):
    return 0.7 + np.random.default_rng(seed).normal(0, 0.05, len(NAMES))


def make_zip(entries: dict[str, bytes], symlinks: dict[str, str] = {}) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in symlinks.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so external_attr carries the mode
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def truncate(path: Path) -> None:
    b = path.read_bytes()
    path.write_bytes(b[: len(b) // 2])


def huge_png(path: Path) -> Path:
    """5000 x 5000 pixels, a few KB on disk (1 bit per pixel, all zero)."""
    Image.new("1", (5000, 5000)).save(path)
    return path
