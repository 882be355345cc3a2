"""Tests for roofseg.store.results: the derived results table is complete, incremental and self-healing."""
import json
import multiprocessing
import sys
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from roofseg.store import results
from roofseg.store import runs
from roofseg.config import LOSSES, RunConfig
from fakes import fake_finished_run


@pytest.fixture
def runs_copy(finished_runs, tmp_path):
    """A writable copy of finished_runs (file times kept, as copytree does)."""
    dst = tmp_path / "runs"
    shutil.copytree(finished_runs, dst)
    return dst


def count_run_row(monkeypatch):
    calls = []
    real = results.run_row
    monkeypatch.setattr(results, "run_row", lambda d: calls.append(Path(d).name) or real(d))
    return calls


def test_rebuild_one_row_per_run(runs_copy):
    df = results.rebuild(runs_copy, full=True)
    assert len(df) == 2 and sorted(df["loss"]) == ["bce_dice", "dice"]
    assert set(df["run_id"]) == {d.name for d in runs.list_runs(runs_copy)}
    assert set(RunConfig().to_dict()) <= set(df.columns)  # every config field, flat
    assert (df["status"] == "done").all() and (df["epochs_done"] == 2).all()
    for _, row in df.iterrows():
        summary = json.loads((runs_copy / row["run_id"] / "summary.json").read_text())
        assert row["val_dice"] == summary["val_dice"] and row["val_iou"] == summary["val_iou"]
    assert df["ended"].dtype.kind == "f" and "_stamp" not in df
    on_disk = pd.read_parquet(results.table_path(runs_copy))
    assert len(on_disk) == 2


def test_rebuild_is_incremental(runs_copy, monkeypatch):
    results.rebuild(runs_copy, full=True)
    calls = count_run_row(monkeypatch)
    results.rebuild(runs_copy)
    assert calls == []  # nothing changed: nothing re-read
    d = runs.list_runs(runs_copy)[0]
    summary = json.loads((d / "summary.json").read_text())
    runs.write_json(d / "summary.json", {**summary, "val_dice": 0.999})
    df = results.rebuild(runs_copy)
    assert calls == [d.name]
    assert df.set_index("run_id").loc[d.name, "val_dice"] == 0.999
    calls.clear()
    fake_finished_run(runs_copy, "20990101-000000-new", 0.5)
    assert len(results.rebuild(runs_copy)) == 3 and calls == ["20990101-000000-new"]
    calls.clear()
    results.rebuild(runs_copy, full=True)
    assert len(calls) == 3


def test_deleted_run_leaves_the_table(runs_copy):
    results.rebuild(runs_copy)
    gone = runs.list_runs(runs_copy)[0]
    runs.delete_run(gone)
    assert list(results.rebuild(runs_copy)["run_id"]) == [runs.list_runs(runs_copy)[0].name]


def test_active_runs_are_always_reread(runs_copy, monkeypatch):
    d = runs.list_runs(runs_copy)[0]
    runs.write_json(d / "status.json", {"state": "running"})  # launched moments ago: no pid yet
    results.rebuild(runs_copy)
    calls = count_run_row(monkeypatch)
    results.rebuild(runs_copy)
    assert calls == [d.name]


def test_corrupted_table_is_rebuilt_with_a_warning(runs_copy):
    results.table_path(runs_copy).write_bytes(b"PAR1 this is not parquet \x00\xff")
    df, warning = results.load(runs_copy)
    assert len(df) == 2 and warning and "results.parquet" in warning and "rebuilt" in warning
    assert len(pd.read_parquet(results.table_path(runs_copy))) == 2  # healed on disk
    df, warning = results.load(runs_copy)
    assert warning is None and len(df) == 2


def test_empty_runs_folder(tmp_path):
    df, warning = results.load(tmp_path / "runs")
    assert df.empty and warning is None and {"run_id", "status", "arch"} <= set(df.columns)


def test_rows_for_running_and_damaged_runs(tmp_path):
    d = fake_finished_run(tmp_path, "a-running", 0.0)
    (d / "summary.json").unlink()
    runs.set_status(d, state="running")
    for e, dice in ((1, 0.2), (2, 0.6), (3, 0.4)):
        runs.append_metrics(d, {"epoch": e, "val_dice": dice, "val_iou": dice / 2})
    bad = fake_finished_run(tmp_path, "b-damaged", 0.0)
    (bad / "status.json").write_text("{")
    (bad / "summary.json").write_text("not json")
    (bad / "config.json").write_text("[]")
    odd = fake_finished_run(tmp_path, "c-hand-edited", 0.0)
    for name, text in (("status.json", "[2]"), ("summary.json", '"x"'), ("config.json", "[1]")):
        (odd / name).write_text(text)  # valid JSON, but not objects
    df = results.rebuild(tmp_path).set_index("run_id")
    assert df.loc["a-running", "val_dice"] == 0.6 and df.loc["a-running", "epochs_done"] == 3
    for bad in ("b-damaged", "c-hand-edited"):
        assert df.loc[bad, "status"] == "failed" and "unreadable" in df.loc[bad, "error"]


# ---------------------------------------------------------------------------------------------
# several runs finishing at once
PER_PROCESS = 3


def _finish_and_rebuild(runs_dir: str, i: int, barrier) -> None:
    """Child process: after the barrier, finish PER_PROCESS fake runs, rebuilding after each."""
    barrier.wait()
    for j in range(PER_PROCESS):
        fake_finished_run(runs_dir, f"20260101-00000{i}-fake-{j}", val_dice=i / 10 + j / 100,
                          loss=LOSSES[i])
        results.rebuild(runs_dir)


def test_runs_finishing_at_once_all_land_in_the_table(tmp_path, monkeypatch):
    # spawn re-imports the parent's __main__ in each child; an AppTest earlier in this process
    # leaves a page script there, which the children would then run. A bare __main__ keeps them
    # to this module's function.
    import types
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_finish_and_rebuild, args=(str(tmp_path), i, barrier)) for i in range(4)]
    for p in procs:
        p.start()
    # meanwhile, read the table as the app does: it must never be half-written
    table, reads, broken = results.table_path(tmp_path), 0, []
    deadline = time.time() + 180
    while any(p.is_alive() for p in procs) and time.time() < deadline:
        if table.exists():
            try:
                results.read_table(table)
                reads += 1
            except Exception as e:
                broken.append(repr(e))
        time.sleep(0.005)
    for p in procs:
        p.join(10)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert not broken, broken[:3]
    # the table the processes left behind, not a fresh rebuild
    df = pd.read_parquet(results.table_path(tmp_path))
    assert len(df) == 4 * PER_PROCESS and df["run_id"].is_unique
    assert sorted(df["loss"].unique()) == sorted(LOSSES[:4])
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
