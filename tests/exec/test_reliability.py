"""Reliability: bad input gets a message naming the file and the problem; crashes, full disks and
concurrent runs lose nothing. Library and CLI side (the pages' side is test_app_reliability.py).

Read-only folders are simulated when the tests run as root, since root writes through chmod 0o555.
"""
from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fakes import fake_finished_run, truncate, huge_png, tiny_config
from roofseg.cli import main as cli
from roofseg.data import dataset as data
from roofseg.engine import predict
from roofseg.store import results
from roofseg.model import checkpoint
from roofseg.store import runs
from roofseg.engine import train
from roofseg.exec import control, worker

ROOT = Path(__file__).resolve().parents[2]


def main(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------
# bad files: reported by name, left out, and the rest still trains
def test_check_names_every_broken_file(demo_copy, capsys):
    labelled = stems(demo_copy / "labels")
    unlabeled = sorted(set(stems(demo_copy / "images")) - set(labelled))
    truncate(demo_copy / "images" / f"{labelled[0]}.png")                  # cut short by a copy
    (demo_copy / "labels" / f"{labelled[1]}.png").write_bytes(b"")           # zero bytes
    (demo_copy / "images" / f"{unlabeled[0]}.png").write_text("<html>404</html>")  # text named .png
    huge_png(demo_copy / "images" / "huge.png")                              # over data.MAX_PIXELS
    rep = data.check_dataset(demo_copy)
    why = {Path(f).name: w for f, w in rep.unreadable.items()}
    assert set(why) == {f"{labelled[0]}.png", f"{labelled[1]}.png", f"{unlabeled[0]}.png", "huge.png"}
    assert "truncated" in why[f"{labelled[0]}.png"] and "empty file" in why[f"{labelled[1]}.png"]
    assert "not a readable image" in why[f"{unlabeled[0]}.png"] and "5000x5000" in why["huge.png"]
    assert rep.flagged == {labelled[0]: "image unreadable", labelled[1]: "label unreadable"}
    d = data.load_dataset(demo_copy)  # the rest loads
    assert len(d.names) == 8 and d.test_names == unlabeled[1:]
    rc, out, _ = main(capsys, "data", "check", demo_copy)
    assert rc == 1
    for f in (f"images/{labelled[0]}.png", f"labels/{labelled[1]}.png", f"images/{unlabeled[0]}.png",
              "images/huge.png"):
        assert any(line.startswith("unreadable:") and f in line for line in out.splitlines()), (f, out)


def test_mask_values_are_binarised_as_documented_and_reported(demo_copy):
    s = stems(demo_copy / "labels")
    m = np.zeros((64, 64), np.uint8)
    m[:20] = 1
    m[20:40] = 2  # class-index mask: classes 1 and 2 are both roof
    cases = {s[0]: (m, "L"), s[1]: (np.where(m > 0, 128, 0).astype(np.uint8), "L"),  # {0, 128}
             s[2]: ((m > 0).astype(np.uint8), "L"), s[3]: (np.where(m > 0, 255, 0).astype(np.uint8), "L"),
             s[4]: (np.stack([np.where(m > 0, 255, 0)] * 3, 2).astype(np.uint8), "RGB"),
             s[5]: (np.where(m > 0, 65535, 0).astype(np.uint16), None)}  # 16 bit
    for stem, (a, mode) in cases.items():
        Image.fromarray(a, mode).save(demo_copy / "labels" / f"{stem}.png")
    for stem in cases:  # every encoding of the same mask decodes to it
        np.testing.assert_array_equal(data.load_label(demo_copy / "labels" / f"{stem}.png"), m > 0, stem)
    rep = data.check_dataset(demo_copy)
    assert rep.flagged == {}  # none is excluded ...
    assert set(rep.warnings) == {s[0], s[1], s[5]}  # ... but the unusual values are said
    assert rep.warnings[s[0]] == "mask values [0, 1, 2]: every non-zero value counted as roof"
    assert rep.warnings[s[1]] == "mask values [0, 128]: values >= 128 counted as roof"
    assert "scaled to 8 bit" in rep.warnings[s[5]]
    assert f"warning {s[0]}: mask values [0, 1, 2]: every non-zero value counted as roof" in rep.lines()


def test_roofless_and_all_roof_masks_are_warned_and_kept(demo_copy):
    s = stems(demo_copy / "labels")
    for stem, v in ((s[0], 0), (s[1], 0), (s[2], 255)):  # two byte-identical empty masks
        Image.fromarray(np.full((64, 64), v, np.uint8)).save(demo_copy / "labels" / f"{stem}.png")
    rep = data.check_dataset(demo_copy)
    assert rep.flagged == {}  # identical because empty, not a copy: kept
    assert rep.warnings == {s[0]: "mask has no roof pixels", s[1]: "mask has no roof pixels",
                            s[2]: "mask is all roof"}
    d = data.load_dataset(demo_copy)
    assert len(d.names) == 10 and f"warning {s[2]}: mask is all roof" in d.notes


def test_prediction_only_data_is_said_refused_for_training_and_predicted(demo_copy, finished_runs):
    shutil.rmtree(demo_copy / "labels")
    rep = data.check_dataset(demo_copy)
    assert rep.n_pairs == 0 and len(rep.unlabeled) == 12 and not rep.ok
    assert any("prediction-only data" in line for line in rep.lines())
    with pytest.raises(data.DataError, match="no image has a label.*prediction-only"):
        train.preflight(tiny_config(demo_copy))
    (demo_copy / "labels").mkdir()  # an empty labels/ folder: the same
    with pytest.raises(data.DataError, match="prediction-only"):
        train.preflight(tiny_config(demo_copy))
    images = predict.unlabeled_images(demo_copy)
    probs = predict.predict_images(runs.list_runs(finished_runs)[0], dict(list(images.items())[:2]))
    assert all(p.shape == (64, 64) for p in probs.values()) and len(probs) == 2


# ---------------------------------------------------------------------------------------------
# one training through all of it: broken files, mixed and non-square sizes, odd names
def odd_dataset(demo64: Path, root: Path) -> tuple[Path, dict[str, str]]:
    """demo64 with stems renamed to names with spaces and unicode, images made non-square (96x64),
    one pair at 80x50, one unlabeled image at 70x45, and broken files. Returns (dir, {role: stem})."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    labelled = stems(demo64 / "labels")
    unlabeled = sorted(set(stems(demo64 / "images")) - set(labelled))
    role = {"odd_size": f"Haus ü {labelled[0]}", "truncated": f"Haus ü {labelled[1]}",
            "zero_byte_label": f"Haus ü {labelled[2]}", "test_odd": f"tile ä {unlabeled[0]}",
            "test_text": f"tile ä {unlabeled[1]}"}
    for i, s in enumerate(labelled + unlabeled):
        new = f"Haus ü {s}" if s in labelled else f"tile ä {s}"
        size = {role["odd_size"]: (80, 50), role["test_odd"]: (70, 45)}.get(new, (96, 64))
        Image.open(demo64 / "images" / f"{s}.png").resize(size).save(root / "images" / f"{new}.png")
        if s in labelled:
            Image.open(demo64 / "labels" / f"{s}.png").resize(size, Image.NEAREST).save(
                root / "labels" / f"{new}.png")
    truncate(root / "images" / f"{role['truncated']}.png")
    (root / "labels" / f"{role['zero_byte_label']}.png").write_bytes(b"")
    (root / "images" / f"{role['test_text']}.png").write_text("not an image")
    huge_png(root / "images" / "huge.png")
    return root, role


def test_training_survives_broken_files_odd_sizes_and_names(demo64, tmp_path, capsys):
    ds, role = odd_dataset(demo64, tmp_path / "odd data")
    cfg = tiny_config(ds, epochs=2, augment="light")
    train.preflight(cfg)  # the broken files do not stop a run
    d = runs.create_run(cfg, tmp_path / "runs")
    st = worker.execute(d, wait_for_slot=False)
    assert st["state"] == "done", (d / "log.txt").read_text()
    summary = json.loads((d / "summary.json").read_text())
    assert set(summary["excluded"]) == {role["truncated"], role["zero_byte_label"]}
    assert summary["pairs"] == 8 and any("resized" in n for n in summary["data_notes"])
    log = (d / "log.txt").read_text()
    assert f"excluded {role['truncated']}: image unreadable" in log and "image size 96x64" in log
    # predictions come back with the input's name and at the input's own size
    val, test = stems(d / "predictions" / "val"), stems(d / "predictions" / "test")
    assert len(val) == 2 and test == [role["test_odd"]]
    for sub, names in (("val", val), ("test", test)):
        for name in names:
            got = Image.open(d / "predictions" / sub / f"{name}.png")
            assert got.size == Image.open(ds / "images" / f"{name}.png").size, name
    per_image = json.loads((d / "per_image.json").read_text())
    assert sorted(r["name"] for r in per_image) == val
    # predicting files with such names: the CLI and the download zips keep them
    src = tmp_path / "to predict"
    src.mkdir()
    shutil.copy(ds / "images" / f"{role['test_odd']}.png", src / "dach ö 1.png")
    Image.open(ds / "images" / f"{role['odd_size']}.png").convert("RGB").save(src / "Straße 2.jpg")
    rc, _, err = main(capsys, "predict", d.name, "--images", src, "--out", tmp_path / "out",
                      "--runs-dir", tmp_path / "runs")
    assert rc == 0, err
    assert stems(tmp_path / "out") == ["Straße 2", "dach ö 1"]
    assert Image.open(tmp_path / "out" / "Straße 2.png").size == (80, 50)
    probs = predict.predict_images(d, {p.stem: data.load_image(p) for p in src.iterdir()})
    z = zipfile.ZipFile(io.BytesIO(predict.zip_masks(probs, 0.5)))
    assert sorted(z.namelist()) == ["Straße 2.png", "dach ö 1.png"]
    assert Image.open(io.BytesIO(z.read("dach ö 1.png"))).size == (70, 45)


# ---------------------------------------------------------------------------------------------
# config values out of range
@pytest.mark.parametrize("argv, text", [
    (["--epochs", "0"], "epochs=0: must be between 1 and 10000"),
    (["--lr", "0"], "lr=0.0: must be > 0"),
    (["--folds", "1"], "folds=1: must be 0 (holdout) or >= 2"),
    (["--batch-size", "0"], "batch_size=0: must be >= 1"),
])
def test_out_of_range_flags(argv, text, tmp_path, capsys):
    rc, _, err = main(capsys, "train", *argv, "--runs-dir", tmp_path / "runs")
    assert rc == 2 and f"error: command line: {text}" in err and "Traceback" not in err
    assert runs.list_runs(tmp_path / "runs") == []


def test_hand_edited_config_in_a_run_folder_fails_the_run_naming_the_file(demo64, tmp_path, capsys):
    d = runs.create_run(tiny_config(demo64), tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "lr": -1}))
    rc, _, _ = main(capsys, "worker", d)
    assert rc == 1
    st = runs.status(d)
    assert st["state"] == "failed" and f"{d / 'config.json'}: lr=-1.0: must be > 0" in st["error"]
    assert "lr=-1.0" in (d / "log.txt").read_text()
    df, warning = results.load(tmp_path)  # the table still reads it
    assert warning is None and df.set_index("run_id").loc[d.name, "status"] == "failed"


# ---------------------------------------------------------------------------------------------
# full disk, read-only folder
def test_full_disk_never_replaces_a_good_checkpoint(tmp_path, monkeypatch):
    good = {"config": {"arch": "Unet"}, "state_dict": {"w": torch.ones(3)}}
    checkpoint.save_checkpoint(tmp_path / "best.pt", good)
    before = (tmp_path / "best.pt").read_bytes()

    def full_disk(obj, f, *a, **kw):  # writes part of the file, then the disk is full
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 the first bytes of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write .*best\.pt \(No space left on device\); "
                                      r"the previous best\.pt, if any, is unchanged"):
        checkpoint.save_checkpoint(tmp_path / "best.pt", {"state_dict": {"w": torch.zeros(3)}})
    assert (tmp_path / "best.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left
    monkeypatch.undo()
    assert torch.equal(checkpoint.load_checkpoint(tmp_path / "best.pt")["state_dict"]["w"], torch.ones(3))


def test_full_disk_during_training_fails_the_run_with_the_reason(demo64, tmp_path, monkeypatch):
    d = runs.create_run(tiny_config(demo64), tmp_path)

    def no_space(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fit(cfg, run_dir, hook=None, log=print):  # the first checkpoint meets a full disk
        monkeypatch.setattr(torch, "save", no_space)
        checkpoint.save_checkpoint(run_dir / "best.pt", {})
    monkeypatch.setattr(train, "fit", fit)
    st = worker.execute(d, wait_for_slot=False)
    assert st["state"] == "failed"
    assert st["error"].startswith("OSError: [Errno 28] could not write") and "No space left" in st["error"]
    assert not list(d.glob("*.pt")) and not list(d.glob(".*.tmp"))


def test_read_only_runs_folder_is_a_clear_error(demo64, tmp_path, readonly, capsys):
    rdir = readonly(tmp_path / "runs")
    cfg = tiny_config(demo64)
    for make in (runs.create_run, control.launch):
        with pytest.raises(runs.RunError, match=re.escape(f"cannot create a run folder in {rdir}: Permission denied")):
            make(cfg, rdir)
    assert list(rdir.iterdir()) == []
    rc, _, err = main(capsys, "train", "--data", demo64, "--runs-dir", rdir, "--epochs", 1)
    assert rc == 2 and f"error: cannot create a run folder in {rdir}" in err


def test_a_table_that_cannot_be_saved_is_still_shown(finished_runs, tmp_path, monkeypatch):
    rdir = tmp_path / "runs"
    shutil.copytree(finished_runs, rdir, ignore=shutil.ignore_patterns("*.pt", "results.parquet"))

    def no_space(self, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_space)
    df, warning = results.load(rdir)
    assert len(df) == 2 and set(df["status"]) == {"done"} and "_stamp" not in df
    assert warning.startswith(f"could not update {rdir / 'results.parquet'} (No space left on device)")


def test_a_dead_run_reads_failed_even_when_its_status_cannot_be_written(demo64, tmp_path, monkeypatch):
    d = runs.create_run(tiny_config(demo64), tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass", d.name])
    dead.wait()
    runs.set_status(d, state="running", pid=dead.pid)

    def read_only(*a):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(runs, "write_json", read_only)
    st = runs.status(d)
    assert st["state"] == "failed" and "ended without finishing" in st["error"]


# ---------------------------------------------------------------------------------------------
# several runs finishing at once
def test_runs_finishing_at_once_with_slow_rebuilds_all_land(tmp_path, monkeypatch):
    """Like test_results' process test, but each rebuild is slowed between listing the run folders
    and writing the table, so without the lock a writer with a stale list would drop others' rows.
    Threads contend for the lock as processes do: flock locks belong to each open() of the file."""
    real = results._frame

    def slow(rows):
        time.sleep(random.uniform(0.0, 0.15))
        return real(rows)
    monkeypatch.setattr(results, "_frame", slow)
    start, errors = threading.Barrier(4), []

    def finish(i):
        try:
            start.wait()
            for j in range(3):
                fake_finished_run(tmp_path, f"20260101-00000{i}-fake-{j}", val_dice=i / 10 + j / 100)
                results.rebuild(tmp_path)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(repr(e))
    threads = [threading.Thread(target=finish, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    df = pd.read_parquet(results.table_path(tmp_path))  # as the last writer left it
    assert sorted(df["run_id"]) == sorted(f"20260101-00000{i}-fake-{j}" for i in range(4) for j in range(3))


# ---------------------------------------------------------------------------------------------
# security
class _MakesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling this would create self.path
        return (open, (self.path, "w"))


def test_a_checkpoint_whose_pickle_runs_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"config": {}, "state_dict": {}, "x": _MakesAFile(str(marker))}, tmp_path / "best.pt")
    assert not marker.exists()
    with pytest.raises(runs.RunError, match="best.pt: not a readable roofseg checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "best.pt")
    assert not marker.exists()
    with pytest.raises(runs.RunError):  # and through the prediction path
        predict.load_model(tmp_path / "best.pt")
    assert not marker.exists()


def test_the_app_serves_on_localhost_only():
    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["address"] == "localhost"
    assert conf["browser"]["gatherUsageStats"] is False
    make = (ROOT / "Makefile").read_text().split("\napp:", 1)[1].split("\n\n", 1)[0]
    assert "streamlit run app.py" in make and "--server.address localhost" in make

