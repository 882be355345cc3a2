"""roofseg.store.progress on run folders written by hand: no training, no processes of our own."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from roofseg.store import progress
from roofseg.store import runs


def fake_run(runs_dir, run_id, *, state="running", epochs=3, folds=0, name="", rows=(), extra="",
             **status):
    """A run folder as a worker leaves it: config.json, status.json, metrics.jsonl."""
    d = runs_dir / run_id
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"epochs": epochs, "folds": folds, "name": name}))
    runs.write_json(d / "status.json", {"state": state, **status})
    lines = [json.dumps(r) for r in rows]
    (d / "metrics.jsonl").write_text("".join(x + "\n" for x in lines) + extra)
    return d


def row(fold, epoch, **kw):
    return {"fold": fold, "epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch,
            "val_dice": 0.1 * epoch, "val_iou": 0.05 * epoch, "epoch_s": 2.0, "time": 0.0, **kw}


def test_progress_running_holdout(tmp_path):
    now = time.time()
    d = fake_run(tmp_path, "r1", epochs=4, started=now - 10, name="base",
                 rows=[row(0, 1, epoch_s=1.0), row(0, 2, epoch_s=3.0)])
    p = progress.progress(d)
    assert (p["state"], p["done"], p["total"], p["fraction"]) == ("running", 2, 4, 0.5)
    assert p["name"] == "base" and p["fold"] == 0 and p["folds"] == 1
    assert p["eta_s"] == pytest.approx(2.0 * 2)  # mean epoch_s 2 s x 2 epochs left
    assert 9 <= p["elapsed_s"] < 30
    assert p["last"]["epoch"] == 2 and p["error"] is None


def test_progress_kfold_counts_every_fold_and_moves_to_the_next(tmp_path):
    rows = [row(0, 1), row(0, 2), row(1, 1), row(1, 2)]
    d = fake_run(tmp_path, "r1", epochs=2, folds=3, started=time.time(), rows=rows)
    p = progress.progress(d)
    assert (p["done"], p["total"], p["folds"]) == (4, 6, 3)
    assert p["fold"] == 2  # folds 0 and 1 finished their epochs; fold 2 is training
    assert p["eta_s"] == pytest.approx(2 * 2.0)


def test_progress_queued_and_finished(tmp_path):
    q = progress.progress(fake_run(tmp_path, "q", state="queued", created=time.time()))
    assert (q["state"], q["done"], q["elapsed_s"], q["eta_s"]) == ("queued", 0, 0.0, None)
    assert q["last"] == {} and q["name"] == "q"  # no name: the run id
    f = progress.progress(fake_run(tmp_path, "f", state="failed", started=100.0, ended=160.0,
                                   error="DataError: boom", rows=[row(0, 1)]))
    assert (f["elapsed_s"], f["eta_s"], f["error"]) == (60.0, 0.0, "DataError: boom")


def test_progress_skips_a_torn_metrics_line(tmp_path):
    d = fake_run(tmp_path, "r", started=time.time(), rows=[row(0, 1)], extra='{"fold": 0, "ep')
    p = progress.progress(d)
    assert p["done"] == 1 and p["bad_lines"] == 1


def test_progress_of_a_run_without_a_readable_config(tmp_path):
    d = fake_run(tmp_path, "r", rows=[row(0, 1)])
    (d / "config.json").write_text("[1, 2]")  # hand-edited into something else
    p = progress.progress(d)
    assert (p["name"], p["done"], p["total"], p["fraction"]) == ("r", 1, 0, 0.0)
    assert progress.curves_frame([d]).label.unique().tolist() == ["r"]


def test_curves_frame_is_long_with_a_global_step(tmp_path):
    a = fake_run(tmp_path, "a", epochs=2, folds=2, name="same",
                 rows=[row(0, 1), row(0, 2), row(1, 1), row(1, 2)], extra="not json\n")
    b = fake_run(tmp_path, "b", epochs=2, name="same", rows=[row(0, 1)])
    c = fake_run(tmp_path, "c", epochs=2, rows=[])
    df = progress.curves_frame([a, b, c], metrics=["val_dice", "val_loss"])
    assert list(df.columns) == ["run_id", "label", "fold", "epoch", "step", "metric", "value"]
    assert len(df) == (4 + 1) * 2
    fold1 = df[(df.run_id == "a") & (df.fold == 1) & (df.metric == "val_dice")]
    assert fold1.epoch.tolist() == [1, 2] and fold1.step.tolist() == [3, 4]
    assert set(df.label) == {"same (a)", "same (b)"}  # a shared name is told apart by id
    every = progress.curves_frame([b])
    assert set(every.metric) == {"train_loss", "val_loss", "val_dice", "val_iou"}  # no bookkeeping
    assert progress.curves_frame([]).empty


def test_active_and_finished_runs_in_creation_order(tmp_path):
    # same second, so the ids sort by their random suffix; status.json's 'created' decides
    for t, (suffix, state) in enumerate([("e", "done"), ("d", "queued"), ("c", "failed"),
                                         ("b", "running"), ("a", "cancelled")]):
        fake_run(tmp_path, f"20240101-000001-{suffix}", state=state, created=1000.0 + t)
    assert [d.name[-1] for d in progress.active_runs(tmp_path)] == ["d", "b"]
    assert [d.name[-1] for d in progress.finished_runs(tmp_path, n=2)] == ["a", "c"]
    assert [d.name[-1] for d in progress.finished_runs(tmp_path)] == ["a", "c", "e"]
    assert progress.active_runs(tmp_path / "missing") == []


def test_active_runs_turns_a_dead_worker_into_failed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs this run
    d = fake_run(tmp_path, "dead", state="running", pid=proc.pid)
    assert progress.active_runs(tmp_path) == []
    p = progress.progress(d)
    assert p["state"] == "failed" and "ended without finishing" in p["error"]


def test_log_tail(tmp_path):
    d = fake_run(tmp_path, "r")
    assert progress.log_tail(d) == ""
    (d / "log.txt").write_text("".join(f"line {i}\n" for i in range(30)))
    assert progress.log_tail(d, lines=3) == "line 27\nline 28\nline 29"
