"""Tests for `python -m roofseg`: train, runs, predict, data; bad input is one line, never a traceback.

One real subprocess trains (the entry point as a user runs it); the other commands run through
cli.main in-process, which is the same code without the interpreter start-up.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from roofseg.cli import main as cli
from roofseg.exec import control
from roofseg.store import runs
from roofseg.config import RunConfig
from fakes import check_run_folder

ROOT = Path(__file__).resolve().parents[2]


def roofseg_cmd(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "roofseg", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def main(capsys, *argv):
    """cli.main in-process: (exit code, stdout, stderr)."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse: --help, bad choices
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err, text):
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and text in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def trained(demo64, tmp_path_factory):
    """`python -m roofseg train` on demo64, one epoch: (completed process, runs dir, run dir)."""
    runs_dir = tmp_path_factory.mktemp("cli-runs")
    proc = roofseg_cmd("train", "--data", demo64, "--runs-dir", runs_dir, "--epochs", 1,
                       "--batch-size", 4, "--num-threads", 1)
    found = runs.list_runs(runs_dir)
    return proc, runs_dir, (found[0] if found else None)


# ---------------------------------------------------------------------------------------------
def test_train_subprocess(trained, demo64):
    proc, runs_dir, run = trained
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"run {run}" in proc.stdout
    assert "fold 0 epoch   1/1" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("val_dice ") and "val_iou" in last
    summary = check_run_folder(run, demo64, epochs=1)
    assert f"val_dice {summary['val_dice']:.4f}" in last


def test_runs_lists_the_run(trained, capsys):
    _, runs_dir, run = trained
    rc, out, err = main(capsys, "runs", "--runs-dir", runs_dir)
    assert rc == 0 and err == ""
    header, row = out.strip().splitlines()
    assert header.split()[:4] == ["run_id", "status", "arch", "encoder"] and "val_dice" in header
    defaults = RunConfig()  # the run trained with the default arch and encoder
    assert row.split()[:4] == [run.name, "done", defaults.arch, defaults.encoder]
    rc, out, _ = main(capsys, "runs", "--runs-dir", runs_dir, "--format", "json")
    rec = json.loads(out)
    assert rc == 0 and len(rec) == 1 and rec[0]["run_id"] == run.name and 0 <= rec[0]["val_dice"] <= 1
    rc, out, _ = main(capsys, "runs", "--runs-dir", runs_dir, "--format", "csv")
    assert out.splitlines()[0].startswith("run_id,status,") and len(out.splitlines()) == 2
    rc, out, _ = main(capsys, "runs", "--runs-dir", runs_dir.parent / "empty-runs")
    assert rc == 0 and out.strip() == "no runs"


@pytest.fixture
def images(demo64, tmp_path):
    """A folder of images to predict: three demo PNGs, an odd-sized RGB JPEG, a greyscale PNG."""
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((demo64 / "images").iterdir())[:3]:
        shutil.copy(p, src / p.name)
    rgb = np.asarray(Image.open(p).convert("RGB"))
    Image.fromarray(rgb).resize((70, 50)).save(src / "odd.jpg")
    Image.fromarray(rgb[..., 0]).resize((100, 90)).save(src / "grey.png")
    (src / "readme.txt").write_text("not an image: ignored")
    return src


def test_predict_writes_masks_with_input_names_and_sizes(trained, images, tmp_path, capsys):
    _, runs_dir, run = trained
    out = tmp_path / "out"
    rc, stdout, err = main(capsys, "predict", run.name, "--images", images, "--out", out,
                           "--runs-dir", runs_dir, "--probs")
    assert rc == 0, err
    inputs = sorted(p for p in images.iterdir() if p.suffix != ".txt")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p.stem}.png" for p in inputs] + [f"{p.stem}_prob.png" for p in inputs])
    for p in inputs:
        m = Image.open(out / f"{p.stem}.png")
        assert m.mode == "L" and m.size == Image.open(p).size, p.name
        assert set(np.unique(np.asarray(m))) <= {0, 255}
        assert Image.open(out / f"{p.stem}_prob.png").size == m.size
    assert len(stdout.strip().splitlines()) == len(inputs) and "roof" in stdout
    # a run folder path (inside --runs-dir) works as well as its id
    rc, _, err = main(capsys, "predict", run, "--images", images, "--out", tmp_path / "out2",
                      "--runs-dir", runs_dir)
    assert rc == 0, err


def test_predict_refuses_to_overwrite(trained, images, tmp_path, capsys):
    _, runs_dir, run = trained
    out = tmp_path / "out"
    out.mkdir()
    first = sorted(images.iterdir())[0]
    (out / f"{first.stem}.png").write_bytes(b"my own mask")
    rc, _, err = main(capsys, "predict", run.name, "--images", images, "--out", out, "--runs-dir", runs_dir)
    assert rc != 0
    assert_one_error_line(err, "--overwrite")
    assert (out / f"{first.stem}.png").read_bytes() == b"my own mask"
    assert [p.name for p in out.iterdir()] == [f"{first.stem}.png"]  # nothing half-written
    rc, _, err = main(capsys, "predict", run.name, "--images", images, "--out", out,
                      "--runs-dir", runs_dir, "--overwrite")
    assert rc == 0, err
    assert Image.open(out / f"{first.stem}.png").size == Image.open(first).size


def test_foreground_run_is_seen_running_and_can_be_cancelled(demo64, tmp_path):
    # a run trained in another terminal (or a script: through sh, so that it is not our child and
    # shares sh's process group) is shown by `runs`/the app as running and stopped by `cancel`
    proc = subprocess.Popen(["sh", "-c", '"$@"; echo "exit status $?" >&2', "sh",
                             sys.executable, "-m", "roofseg", "train", "--data", str(demo64),
                             "--runs-dir", str(tmp_path), "--epochs", "500", "--num-threads", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (runs.list_runs(tmp_path) and runs.read_metrics(runs.list_runs(tmp_path)[0])[0]):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        (run,) = runs.list_runs(tmp_path)
        assert runs.status(run)["state"] == "running"  # not taken for a dead process
        assert control.cancel(run)["state"] == "cancelled"
        out, err = proc.communicate(timeout=30)
        assert "error: run cancelled" in err and err.rstrip().endswith("exit status 1")
        assert runs.status(run)["state"] == "cancelled"
    finally:  # on failure, leave no training process behind (sh's child is not ours to reap)
        for run in runs.list_runs(tmp_path):
            st = runs.status(run)  # checks the pid is still this run's process
            if st["state"] in runs.ACTIVE and st.get("pid"):
                os.kill(st["pid"], signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ---------------------------------------------------------------------------------------------
# bad input: a non-zero exit and one "error: ..." line
def test_bad_input_subprocess(tmp_path):
    proc = roofseg_cmd("train", "--lr", "-1", "--runs-dir", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: command line: lr=-1.0: must be > 0 and <= 10"
    assert not list(tmp_path.iterdir())


def test_unknown_arch_is_an_argparse_choice(capsys):
    rc, _, err = main(capsys, "train", "--arch", "Unet3D")
    assert rc == 2
    line = assert_one_error_line(err, "invalid choice: 'Unet3D'")
    assert "DeepLabV3Plus" in line


@pytest.mark.parametrize("argv, text", [
    (["train", "--lr", "-1"], "lr=-1.0: must be > 0"),
    (["train", "--data", "{tmp}/nowhere"], "nowhere: dataset folder not found"),
    (["train", "--data", "{demo}", "--batch-size", "9"], "batch_size=9 is larger than the 8 training images"),
    (["train", "--data", "{demo}", "--folds", "11"], "folds=11 is more than the 10"),
    (["train", "--data", "{demo}", "--encoder", "resnet19"], "unknown encoder 'resnet19'"),
    (["train", "--data", "{demo}", "--image-size", "100"], "image_size=100: must be 0 (native) or a positive multiple of 32"),
    (["predict", "nope", "--images", "{demo}/images", "--out", "{tmp}/o"], "no run 'nope' in"),
    (["predict", "../escape", "--images", "{demo}/images", "--out", "{tmp}/o"], "is not a folder in"),
    (["cancel", "nope"], "no run 'nope' in"),
    (["data", "check", "{tmp}/nowhere"], "nowhere: dataset folder not found"),
])
def test_bad_input_is_one_error_line(argv, text, demo64, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    argv = [a.format(tmp=tmp_path, demo=demo64) for a in argv]
    rc, out, err = main(capsys, *argv, "--runs-dir", runs_dir) if argv[0] != "data" else main(capsys, *argv)
    assert rc == 2
    assert_one_error_line(err, text)
    assert runs.list_runs(runs_dir) == []  # refused before a run folder was made


def test_broken_image_to_predict_names_the_file(finished_runs, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_text("not a png")
    run = runs.list_runs(finished_runs)[0]
    rc, _, err = main(capsys, "predict", run.name, "--images", tmp_path / "in", "--out", tmp_path / "o",
                      "--runs-dir", finished_runs)
    assert rc == 2
    assert_one_error_line(err, "broken.png: not a readable image")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="dataset folder not found"):
        cli.main(["--debug", "train", "--data", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path)])


# ---------------------------------------------------------------------------------------------
# config files
def config_args(*argv):
    return cli.config_from_args(cli.build_parser().parse_args(["train", *map(str, argv)]))


def test_config_file_with_flags_overriding(demo64, tmp_path):
    f = tmp_path / "exp.json"
    f.write_text(json.dumps({"data": str(demo64), "epochs": 5, "lr": 0.01, "loss": "dice", "amp": False}))
    cfg = config_args("--config", f, "--epochs", 2, "--amp")
    assert (cfg.epochs, cfg.lr, cfg.loss, cfg.amp, cfg.data) == (2, 0.01, "dice", True, str(demo64))
    assert config_args("--config", f).epochs == 5
    # a flag may fix a value the file has wrong; the check comes after the flags
    f.write_text(json.dumps({"epochs": 0}))
    assert config_args("--config", f, "--epochs", 3).epochs == 3


@pytest.mark.parametrize("content, text", [('{"epochs": 0}', "epochs=0"), ('{"epoch": 3}', "unknown field"),
                                           ("{epochs: 3}", "not valid JSON")])
def test_bad_config_file_names_the_file(tmp_path, capsys, content, text):
    f = tmp_path / "exp.json"
    f.write_text(content)
    rc, _, err = main(capsys, "train", "--config", f, "--runs-dir", tmp_path / "runs")
    assert rc == 2
    line = assert_one_error_line(err, text)
    assert str(f) in line


def test_flags_without_config_use_defaults():
    cfg = config_args("--loss", "focal", "--no-exclude-flagged", "--folds", 3)
    assert cfg.loss == "focal" and cfg.exclude_flagged is False and cfg.folds == 3
    assert cfg.arch == RunConfig().arch and cfg.lr == RunConfig().lr  # the rest: the defaults


# ---------------------------------------------------------------------------------------------
# data, cancel, help
def test_data_demo(tmp_path, capsys):
    rc, out, err = main(capsys, "data", "demo", tmp_path / "d", "--size", 64, "--n-images", 3, "--n-labels", 2)
    assert rc == 0, err
    assert out.strip() == str(tmp_path / "d")
    assert len(list((tmp_path / "d" / "images").glob("*.png"))) == 3
    assert len(list((tmp_path / "d" / "labels").glob("*.png"))) == 2
    assert Image.open(next((tmp_path / "d" / "images").glob("*.png"))).size == (64, 64)


def test_data_check_names_the_flagged_stem(demo_copy, capsys):
    labels = sorted((demo_copy / "labels").iterdir())
    shutil.copyfile(labels[0], labels[4])
    rc, out, err = main(capsys, "data", "check", demo_copy)
    assert rc == 0, err  # still trainable: the copy is excluded
    assert out.splitlines()[0].endswith("12 images, 10 labels, 10 pairs, 2 unlabeled (prediction set)")
    flagged = [line for line in out.splitlines() if line.startswith("flagged")]
    assert len(flagged) == 1 and flagged[0].startswith(f"flagged {labels[4].stem}:") and labels[0].stem in flagged[0]


def test_data_check_fails_on_unreadable_files(demo_copy, capsys):
    next((demo_copy / "images").iterdir()).write_bytes(b"")
    rc, out, _ = main(capsys, "data", "check", demo_copy)
    assert rc == 1 and "unreadable:" in out and "empty file" in out


def test_cancel_a_finished_run(finished_runs, capsys):
    run = runs.list_runs(finished_runs)[0]
    rc, out, _ = main(capsys, "cancel", run.name, "--runs-dir", finished_runs)
    assert rc == 0 and out.strip() == "done"


@pytest.mark.parametrize("argv", [[], ["train"], ["predict"], ["runs"], ["cancel"], ["data"],
                                  ["data", "demo"], ["data", "check"], ["data", "fetch-dida"]])
def test_help(argv, capsys):
    rc, out, _ = main(capsys, *argv, "--help")
    assert rc == 0 and out.startswith("usage: python -m roofseg")
    if argv == ["train"]:
        # every config field is a flag, documented from the comment beside the field
        assert "--crop-size" in out and "--no-exclude-flagged" in out and "multiple of 32" in out


def test_train_with_seeds_makes_one_run_per_seed(demo64, tmp_path, capsys):
    rc, out, err = main(capsys, "train", "--data", demo64, "--runs-dir", tmp_path, "--epochs", 1,
                        "--batch-size", 4, "--num-threads", 1, "--seed", 7, "--seeds", 2, "--no-wait")
    assert rc == 0, err
    made = runs.list_runs(tmp_path)
    assert sorted(RunConfig.load(d / "config.json").seed for d in made) == [7, 8]
    assert all(runs.status(d)["state"] == "done" for d in made)
    assert out.count("run ") >= 2 and out.count("val_dice") >= 2
    rc, _, err = main(capsys, "train", "--data", demo64, "--runs-dir", tmp_path, "--seeds", 0)
    assert rc != 0 and "--seeds must be >= 1" in err and len(runs.list_runs(tmp_path)) == 2


def test_seeded_repeats_a_recipe_with_consecutive_seeds(tiny_cfg):
    """The one rule behind train --seeds and the Train page's Seeds (control.launch_seeds)."""
    cfgs = control.seeded(tiny_cfg.replace(seed=7), 3)
    assert [c.seed for c in cfgs] == [7, 8, 9] and all(c.replace(seed=7) == cfgs[0] for c in cfgs)
    with pytest.raises(ValueError, match=">= 1"):
        control.seeded(tiny_cfg, 0)
