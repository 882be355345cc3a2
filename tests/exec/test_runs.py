"""Tests for roofseg.store.runs and roofseg.exec.control: background runs can be queued, cancelled
and killed without losing their record; run ids cannot leave the runs folder; files are written
atomically."""
import json
import os
import signal
import time
from datetime import datetime

import pytest

from fakes import tiny_config
from roofseg.exec import control
from roofseg.store import results
from roofseg.model import checkpoint
from roofseg.store import pids, runs
from roofseg.store.runs import RunError


def wait_for(cond, what, timeout=180.0):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def pid_of(d) -> int:
    return int(json.loads((d / "status.json").read_text())["pid"])


def gone(pid) -> bool:
    """True when pid no longer runs (reaping it if it is our zombie child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def launched():
    """Run folders this test launched; a worker still alive at teardown is killed."""
    dirs = []
    yield dirs
    for d in dirs:
        st = runs.status(d)  # active only while the recorded pid is still this run's worker
        if st["state"] in runs.ACTIVE and st.get("pid"):
            pid = int(st["pid"])
            os.killpg(pid, signal.SIGKILL)
            wait_for(lambda: gone(pid), f"pid {pid} to end", 10)


def running_with_metrics(d) -> bool:
    return runs.status(d)["state"] == "running" and bool(runs.read_metrics(d)[0])


# ---------------------------------------------------------------------------------------------
# background runs
def test_queue_then_cancel_running_and_queued(demo64, tmp_path, monkeypatch, launched):
    monkeypatch.setenv("ROOFSEG_SLOTS", "1")
    cfg = tiny_config(demo64, epochs=500)  # far more than the test waits for
    a = control.launch(cfg, tmp_path)
    b = control.launch(cfg, tmp_path)
    launched += [a, b]
    assert a != b and runs.status(a)["state"] in runs.ACTIVE
    first = wait_for(lambda: next((d for d in (a, b) if running_with_metrics(d)), None),
                     "one run to train an epoch")
    second = b if first == a else a
    # one slot: the other run waits, alive, in the queue
    assert runs.status(second)["state"] == "queued" and not gone(pid_of(second))
    assert not runs.read_metrics(second)[0]

    pid = pid_of(first)
    st = control.cancel(first)
    assert st["state"] == "cancelled" and st["error"] == "cancelled by the user"
    assert gone(pid)
    assert runs.status(first)["state"] == "cancelled"  # stays cancelled, not 'failed'
    assert len(runs.read_metrics(first)[0]) >= 1       # the epochs done are kept
    assert "cancelled" in (first / "log.txt").read_text()

    # the freed slot goes to the queued run
    wait_for(lambda: runs.status(second)["state"] == "running", "the queued run to start")
    pid2 = pid_of(second)
    assert control.cancel(second)["state"] == "cancelled" and gone(pid2)
    table = results.rebuild(tmp_path).set_index("run_id")
    assert set(table.loc[[a.name, b.name], "status"]) == {"cancelled"}


def test_killed_run_is_reported_failed(demo64, tmp_path, launched):
    d = control.launch(tiny_config(demo64, epochs=500), tmp_path)
    launched.append(d)
    wait_for(lambda: running_with_metrics(d), "the run to train an epoch")
    pid = pid_of(d)
    os.killpg(pid, signal.SIGKILL)  # as the OOM killer or a closed laptop lid would
    st = wait_for(lambda: (s := runs.status(d))["state"] != "running" and s, "the death to be noticed", 20)
    assert st["state"] == "failed"
    assert f"pid {pid}" in st["error"] and "killed or crashed" in st["error"]
    assert json.loads((d / "status.json").read_text())["state"] == "failed"  # recorded, not just shown
    rows, bad = runs.read_metrics(d)
    assert rows and bad == 0
    assert "started" in (d / "log.txt").read_text()
    assert control.cancel(d)["state"] == "failed"  # nothing to cancel: the record stays as it is
    row = results.rebuild(tmp_path).set_index("run_id").loc[d.name]
    assert row["status"] == "failed" and row["epochs_done"] >= 1 and "killed" in row["error"]


# ---------------------------------------------------------------------------------------------
# creating and resolving
def test_runs_created_in_the_same_second_get_different_folders(demo64, tmp_path, monkeypatch):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(runs, "datetime", Frozen)
    tokens = iter(["aaaa", "aaaa", "bbbb", "cccc"])  # the second run draws a clashing suffix first
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: next(tokens))
    cfg = tiny_config(demo64)
    d1, d2, d3 = (runs.create_run(cfg, tmp_path) for _ in range(3))
    assert d1.name == "20260102-030405-Unet-resnet18-aaaa"
    assert d2.name == "20260102-030405-Unet-resnet18-bbbb" and d3.name.endswith("cccc")
    for d in (d1, d2, d3):
        assert runs.status(d)["state"] == "queued" and (d / "config.json").is_file()
    assert runs.list_runs(tmp_path) == [d1, d2, d3]


def test_create_run_validates_and_names_safely(demo64, tmp_path):
    d = runs.create_run(tiny_config(demo64, encoder="tu-convnext_atto", name="../../evil"), tmp_path)
    assert d.parent == tmp_path and "tu-convnext-atto" in d.name and "evil" not in d.name
    with pytest.raises(Exception, match="epochs"):
        runs.create_run(tiny_config(demo64).replace(epochs=0), tmp_path)


def test_resolve_accepts_ids_and_folders_inside(finished_runs, monkeypatch):
    d = runs.list_runs(finished_runs)[0]
    assert runs.resolve(finished_runs, d.name) == d
    assert runs.resolve(finished_runs, str(d)).resolve() == d.resolve()
    monkeypatch.chdir(finished_runs.parent)
    assert runs.resolve(finished_runs.name, f"{finished_runs.name}/{d.name}").resolve() == d.resolve()
    with pytest.raises(RunError, match="no run 'nope'"):
        runs.resolve(finished_runs, "nope")


@pytest.mark.parametrize("bad", ["../x", "/etc", "a/../../b", "..", ".", "", "x y", "-rf"])
def test_resolve_refuses_ids_that_leave_the_runs_folder(tmp_path, monkeypatch, bad):
    runs_dir = tmp_path / "runs"
    for d in (runs_dir / "a", tmp_path / "x", tmp_path / "b"):  # real runs just outside runs_dir
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    monkeypatch.chdir(runs_dir)  # so "../x" and "a/../../b" would reach them
    with pytest.raises(RunError):
        runs.resolve(runs_dir, bad)
    with pytest.raises(RunError):
        runs.resolve(".", bad)


# ---------------------------------------------------------------------------------------------
# status
def test_status_of_a_reused_pid_is_failed(demo64, tmp_path):
    d = runs.create_run(tiny_config(demo64), tmp_path)
    runs.set_status(d, state="running", pid=os.getpid())  # alive, but not this run's worker
    st = runs.status(d)
    assert st["state"] == "failed" and "ended without finishing" in st["error"]


def test_status_tells_a_reused_pid_by_its_start_time(demo64, tmp_path):
    d = runs.create_run(tiny_config(demo64), tmp_path)
    me = os.getpid()
    runs.set_status(d, state="running", pid=me, pid_start=pids.process_start(me))
    assert runs.status(d)["state"] == "running"  # this very process: alive, whatever its cmdline
    runs.set_status(d, pid_start="1")             # same pid, another start time: a recycled pid
    assert runs.status(d)["state"] == "failed"
    runs.set_status(d, state="running", pid=12345)  # a new pid without a start time ...
    assert "pid_start" not in json.loads((d / "status.json").read_text())  # ... drops the old one


def test_status_without_status_file(demo64, tmp_path):
    d = runs.create_run(tiny_config(demo64), tmp_path)
    (d / "status.json").write_text("{half")
    assert runs.status(d) == {"state": "failed", "error": "status.json missing or unreadable"}


def test_cancel_finished_run_changes_nothing(finished_runs):
    d = runs.list_runs(finished_runs)[0]
    before = (d / "status.json").read_text()
    assert control.cancel(d)["state"] == "done"
    assert (d / "status.json").read_text() == before


def test_delete_refuses_an_active_run(demo64, tmp_path):
    d = runs.create_run(tiny_config(demo64), tmp_path)
    runs.set_status(d, state="queued")  # no pid yet: launched but not started
    with pytest.raises(RunError, match="still queued; cancel it first"):
        runs.delete_run(d)
    runs.set_status(d, state="done")
    runs.delete_run(d)
    assert not d.exists() and runs.list_runs(tmp_path) == []


def test_list_runs_ignores_other_entries(finished_runs, tmp_path):
    assert len(runs.list_runs(finished_runs)) == 2
    (tmp_path / ".slots").mkdir()
    (tmp_path / "stray").mkdir()
    (tmp_path / "results.parquet").write_bytes(b"x")
    assert runs.list_runs(tmp_path) == [] and runs.list_runs(tmp_path / "missing") == []


# ---------------------------------------------------------------------------------------------
# files
def test_write_json_is_atomic(tmp_path):
    p = tmp_path / "status.json"
    for i in range(20):
        runs.write_json(p, {"i": i})
    assert json.loads(p.read_text()) == {"i": 19}
    with pytest.raises(TypeError):
        runs.write_json(p, {("not", "a str key"): 1})  # fails halfway through writing
    assert json.loads(p.read_text()) == {"i": 19}  # the old file is intact
    assert sorted(x.name for x in tmp_path.iterdir()) == ["status.json"]  # no temp files left


def test_read_metrics_skips_and_counts_bad_lines(tmp_path):
    for e in (1, 2):
        runs.append_metrics(tmp_path, {"epoch": e, "val_dice": 0.5})
    with open(tmp_path / "metrics.jsonl", "ab") as f:
        f.write(b'\n[1, 2]\n{"epoch": 3, "val_d')  # a blank line, a non-row, a power cut mid-line
    rows, bad = runs.read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2] and bad == 2
    assert runs.read_metrics(tmp_path / "none") == ([], 0)


class _RunsCode:
    """Unpickling this calls a function: what weights_only=True must refuse."""

    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_checkpoint_round_trip_and_refuses_junk(tmp_path, capsys):
    import torch
    checkpoint.save_checkpoint(tmp_path / "best.pt", {"config": {"arch": "Unet"}, "state_dict": {"w": torch.ones(2)}})
    ck = checkpoint.load_checkpoint(tmp_path / "best.pt")
    assert ck["config"] == {"arch": "Unet"} and torch.equal(ck["state_dict"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # no temp file left
    # a checkpoint that pickles an object would run code on load: refused, never executed
    torch.save({"config": {}, "extra": _RunsCode()}, tmp_path / "code.pt")
    with pytest.raises(RunError, match="code.pt: not a readable roofseg checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "code.pt")
    assert "code ran" not in capsys.readouterr().out
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="junk.pt: not a readable roofseg checkpoint"):
        checkpoint.load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_paths_in_fold_order(tmp_path):
    for i in (10, 2, 0, 1):
        (tmp_path / f"best_fold{i}.pt").write_bytes(b"")
    assert [p.name for p in runs.checkpoint_paths(tmp_path)] == \
        ["best_fold0.pt", "best_fold1.pt", "best_fold2.pt", "best_fold10.pt"]
