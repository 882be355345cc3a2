"""The sweep worker: ask a trial, train it as a run folder, tell the result, until the budget.

`python -m roofseg sweep-worker NAME` runs run_worker (study.launch_workers starts it); the
foreground `python -m roofseg sweep` calls it directly. See study.py for the design: budget,
pruning on fold 0, pruned runs as "cancelled", stale trials; the trial bookkeeping shared with
cancel_sweep is trials.py.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import replace

from roofseg.config import ConfigError, RunConfig, incompatible
from roofseg.exec import process, worker
from roofseg.store import runs
from roofseg.sweep.spec import HEARTBEAT_S, SweepSpec
from roofseg.sweep.study import (load_spec, make_pruner, make_sampler, open_study, register_worker,
                                 study_storage, sweep_dir, trials_frame)
from roofseg.sweep.trials import ask_lock, counted_trials, fail, reap, retry_missing, tell


@contextlib.contextmanager
def _heartbeat(storage, trial):
    """optuna records heartbeats only inside study.optimize; with ask/tell we send our own."""
    from optuna.storages import RDBStorage
    if not isinstance(storage, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried; never kill the trial
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_S):
                return
    th = threading.Thread(target=beat, daemon=True, name="sweep-heartbeat")
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join(5)


class _Pruned(BaseException):
    """Raised from the epoch hook. A BaseException, like KeyboardInterrupt, so that it passes
    through worker.execute's `except Exception` (which would record a failure)."""

    def __init__(self, epoch: int):
        super().__init__(epoch)
        self.epoch = epoch


def run_worker(name: str, runs_dir="runs", storage: str | None = None, n_trials: int | None = None,
               *, worker_index: int = 0, wait_for_slot: bool = True, hook=None) -> list[int]:
    """Ask a trial, train it as a run folder, tell the result; until the budget is reached, the
    sweep is cancelled, or this worker has run n_trials. Returns the numbers of its trials.

    hook(event, info), like train's: "epoch" (the metrics row plus "trial") and "trial" (the
    finished trial's row of trials_frame). Must run in the main thread (signal handlers).
    """
    spec = load_spec(name, runs_dir)
    spec = replace(spec, storage=storage or spec.storage)
    d = sweep_dir(runs_dir, name)
    stor = study_storage(spec, runs_dir)
    offset = 1_000_003 * worker_index + len(open_study(spec, runs_dir).get_trials(deepcopy=False))
    study = open_study(spec, runs_dir, sampler=make_sampler(spec, offset), pruner=make_pruner(spec))
    me = runs.read_json(register_worker(d, os.getpid(), worker_index))
    # SIGTERM outside a trial only sets this flag (inside one, worker.execute turns it into a
    # cancel of the run, then gives this handler back); killing us mid-bookkeeping would leave
    # a trial RUNNING
    term = []

    def on_term(signum, frame):
        term.append(signum)

    def stopping() -> bool:
        return bool(term) or (d / "STOP").exists()
    ran: list[int] = []
    with process.sigterm_handler(on_term):
        try:
            while (n_trials is None or len(ran) < n_trials) and not stopping():
                with ask_lock(spec, stor, d):
                    reap(study, spec, runs_dir)
                    if counted_trials(study) >= spec.budget() or stopping():
                        break
                    trial = study.ask(spec.distributions())
                    trial.set_user_attr("worker", me)
                try:
                    with _heartbeat(stor, trial):
                        outcome = _run_trial(study, trial, spec, runs_dir, wait_for_slot, hook, stopping)
                except BaseException as e:  # this process lives on (Ctrl-C, a bug): leave no stale trial
                    with contextlib.suppress(Exception):  # already told: nothing to do
                        fail(study, trial, f"worker stopped: {type(e).__name__}: {e}", interrupted=True)
                    raise
                ran.append(trial.number)
                if hook:
                    frame = trials_frame(name, runs_dir, storage)
                    hook("trial", frame[frame.trial == trial.number].iloc[0].to_dict())
                if outcome == "ctrl-c":
                    raise KeyboardInterrupt
                if outcome == "interrupted":
                    break
        finally:
            with contextlib.suppress(Exception), ask_lock(spec, stor, d):
                retry_missing(study)  # this worker's interrupted trial, if any, at once
            (d / "workers" / f"{runs.HOST}-{os.getpid()}.json").unlink(missing_ok=True)
    return ran


def _run_trial(study, trial, spec: SweepSpec, runs_dir, wait_for_slot, user_hook, stopping) -> str:
    """One trial as a run folder; returns its outcome: complete | pruned | failed | interrupted |
    ctrl-c."""
    from optuna.trial import TrialState
    from roofseg.store.results import rebuild
    n, params = trial.number, dict(trial.params)
    try:
        cfg = RunConfig.from_dict({**spec.base, **params, "sweep": spec.name,
                                   "name": f"{spec.name} #{n}"}).validate()
    except ConfigError as e:  # e.g. an enqueued point outside what a config allows
        fail(study, trial, f"invalid config: {e}")
        return "failed"
    run_dir = runs.create_run(cfg, runs_dir)
    trial.set_user_attr("run_id", run_dir.name)
    runs.write_json(run_dir / "sweep.json", {"sweep": spec.name, "trial": n, "params": params})
    why = incompatible(cfg.arch, cfg.encoder)
    if why:
        reason = f"{cfg.arch} with encoder {cfg.encoder} does not build: {why} (not trained)"
        runs.set_status(run_dir, state="failed", ended=time.time(), error=reason)
        fail(study, trial, reason)
        rebuild(runs_dir)
        return "failed"

    def hook(event, info):
        if user_hook:
            user_hook(event, {**info, "trial": n})
        if event != "epoch":
            return
        if stopping() or (runs.read_json(run_dir / "status.json", {}) or {}).get("state") == "cancelled":
            raise worker.Cancelled()  # the sweep was cancelled, or this run (maybe from another host)
        v = info.get(spec.metric)
        if info.get("fold") == 0 and isinstance(v, (int, float)) and math.isfinite(v):
            trial.report(float(v), step=int(info["epoch"]))
            # pruning after a holdout run's last epoch would save nothing and lose its result
            more = info["epoch"] < cfg.epochs or cfg.folds >= 2
            if more and trial.should_prune():
                raise _Pruned(int(info["epoch"]))

    try:
        st = worker.execute(run_dir, hook=hook, wait_for_slot=wait_for_slot)
    except _Pruned as p:
        msg = f"pruned by the {spec.pruner} pruner at epoch {p.epoch}"
        runs.set_status(run_dir, state="cancelled", ended=time.time(), error=msg, pruned_at=p.epoch)
        with open(run_dir / "log.txt", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
        tell(study, trial, state=TrialState.PRUNED)
        rebuild(runs_dir)
        return "pruned"
    if st["state"] == "done":
        value = (runs.read_json(run_dir / "summary.json", {}) or {}).get(spec.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            tell(study, trial, values=float(value))
            return "complete"
        fail(study, trial, f"{spec.metric} is missing from summary.json or not finite ({value})")
        return "failed"
    error = st.get("error") or st["state"]
    if st["state"] == "cancelled":
        ctrl_c = error.startswith("interrupted")  # worker.execute's words for Ctrl-C
        if ctrl_c or stopping():
            fail(study, trial, error if ctrl_c else f"sweep {spec.name} cancelled", interrupted=True)
            return "ctrl-c" if ctrl_c else "interrupted"
    fail(study, trial, error)  # a training error, or this one run cancelled by the user
    return "failed"
