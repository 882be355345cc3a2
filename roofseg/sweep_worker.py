"""The sweep worker: ask a trial, train it as a run folder, tell the result, until the budget.

`python -m roofseg sweep-worker NAME` runs run_worker (sweep.launch_workers starts it); the
foreground `python -m roofseg sweep` calls it directly. See sweep.py for the design: budget,
pruning on fold 0, pruned runs as "cancelled", stale trials.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import re
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

from . import runs, worker
from .config import ConfigError, RunConfig, incompatible
from .sweep import (HEARTBEAT_S, SweepSpec, counted_trials, is_interrupted, load_spec, make_pruner,
                    make_sampler, open_study, pid_alive, register_worker, study_storage, sweep_dir,
                    trials_frame)


@contextlib.contextmanager
def _ask_lock(spec: SweepSpec, runs_dir):
    """One worker at a time counts the trials and asks for the next: the budget stays exact.
    A PostgreSQL advisory lock across hosts, else a lock file in the sweep folder (both are
    released by the OS or the server when their holder dies)."""
    url = spec.storage
    if re.match(r"^postgres(ql)?[+:]", url):
        import sqlalchemy as sa
        key = int.from_bytes(hashlib.blake2b(f"roofseg-sweep:{spec.name}".encode(), digest_size=8)
                             .digest(), "big", signed=True)
        with study_storage(spec, runs_dir).engine.connect() as c:
            c.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                c.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    else:
        with open(sweep_dir(runs_dir, spec.name) / ".ask.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _annotate(study, t, **attrs) -> None:
    # optuna has no public call to annotate another process's trial; its own retry callback
    # uses the storage the same way
    for k, v in attrs.items():
        study._storage.set_trial_user_attr(t._trial_id, k, v)


def _tell(study, trial, **kw) -> None:
    try:
        study.tell(trial, **kw)
    except RuntimeError as e:  # GridSampler calls study.stop() when the grid is done; the state is stored
        if "Study.stop" not in str(e):
            raise


def _fail(study, t, reason: str, interrupted: bool = False) -> None:
    """Tell FAIL with the reason (an interrupted trial is queued again by _retry_missing)."""
    from optuna.trial import TrialState
    _annotate(study, t, fail_reason=reason, interrupted=interrupted)
    _tell(study, t.number, state=TrialState.FAIL)


def _retry_missing(study) -> None:
    """Queue once more, with the same params, every interrupted trial not queued again yet (not a
    retry itself). Derived from the study under the ask lock rather than done right after the
    failure, so a worker killed in between loses nothing and nothing is queued twice."""
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if is_interrupted(t) and t.params and "retry_of" not in t.user_attrs and t.number not in queued:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})


def _reap(study, spec, runs_dir, run_state="failed", why=None) -> list[int]:
    """Under the ask lock: finish the RUNNING trials whose worker on this host is gone (a run that
    completed before its worker died still counts: its value is in summary.json; the rest are
    interrupted), let optuna fail those of silent workers elsewhere (database heartbeats), and
    queue interrupted trials again. Returns the numbers of the trials finished here."""
    import optuna
    from optuna.trial import TrialState
    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        if w.get("host") != runs.HOST or pid_alive(w.get("pid"), w.get("start")):
            continue
        run_dir = Path(runs_dir) / t.user_attrs["run_id"] if t.user_attrs.get("run_id") else None
        st = runs.read_json(run_dir / "status.json", {}) if run_dir else {}
        value = (runs.read_json(run_dir / "summary.json", {}) or {}).get(spec.metric) if run_dir else None
        if st.get("state") == "done" and isinstance(value, (int, float)) and math.isfinite(value):
            _tell(study, t.number, values=float(value))
        else:
            reason = why or f"worker pid {w.get('pid')} on {runs.HOST} ended during the trial"
            if run_dir and st.get("state") in runs.ACTIVE:
                runs.set_status(run_dir, state=run_state, ended=time.time(), error=reason)
            _fail(study, t, reason, interrupted=True)
        done.append(t.number)
    if _is_rdb(study_storage(spec, runs_dir)):
        optuna.storages.fail_stale_trials(study)
    _retry_missing(study)
    return done


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
    term = []  # SIGTERM outside a trial (inside one, worker.execute turns it into a cancel)
    before = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        term.append(signum)

    def guard() -> None:  # worker.execute leaves SIG_DFL behind, which would kill us mid-bookkeeping
        signal.signal(signal.SIGTERM, on_term)

    def stopping() -> bool:
        return bool(term) or (d / "STOP").exists()
    ran: list[int] = []
    try:
        while (n_trials is None or len(ran) < n_trials) and not stopping():
            guard()
            with _ask_lock(spec, runs_dir):
                _reap(study, spec, runs_dir)
                if counted_trials(study) >= spec.budget() or stopping():
                    break
                trial = study.ask(spec.distributions())
                trial.set_user_attr("worker", me)
            try:
                with _heartbeat(stor, trial):
                    outcome = _run_trial(study, trial, spec, runs_dir, wait_for_slot, hook, stopping,
                                         guard)
            except BaseException as e:  # this process lives on (Ctrl-C, a bug): leave no stale trial
                with contextlib.suppress(Exception):  # already told: nothing to do
                    _fail(study, trial, f"worker stopped: {type(e).__name__}: {e}", interrupted=True)
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
        with contextlib.suppress(Exception), _ask_lock(spec, runs_dir):
            _retry_missing(study)  # this worker's interrupted trial, if any, at once
        signal.signal(signal.SIGTERM, before)
        (d / "workers" / f"{runs.HOST}-{os.getpid()}.json").unlink(missing_ok=True)
    return ran


def _is_rdb(storage) -> bool:
    from optuna.storages import RDBStorage
    return isinstance(storage, RDBStorage)


def _run_trial(study, trial, spec: SweepSpec, runs_dir, wait_for_slot, user_hook, stopping,
               guard=lambda: None) -> str:
    """One trial as a run folder; returns its outcome: complete | pruned | failed | interrupted |
    ctrl-c. guard() re-installs the worker's SIGTERM handler once worker.execute has reset it."""
    from optuna.trial import TrialState
    from .results import rebuild
    n, params = trial.number, dict(trial.params)
    try:
        cfg = RunConfig.from_dict({**spec.base, **params, "sweep": spec.name,
                                   "name": f"{spec.name} #{n}"}).validate()
    except ConfigError as e:  # e.g. an enqueued point outside what a config allows
        _fail(study, trial, f"invalid config: {e}")
        return "failed"
    run_dir = runs.create_run(cfg, runs_dir)
    trial.set_user_attr("run_id", run_dir.name)
    runs.write_json(run_dir / "sweep.json", {"sweep": spec.name, "trial": n, "params": params})
    why = incompatible(cfg.arch, cfg.encoder)
    if why:
        reason = f"{cfg.arch} with encoder {cfg.encoder} does not build: {why} (not trained)"
        runs.set_status(run_dir, state="failed", ended=time.time(), error=reason)
        _fail(study, trial, reason)
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
        guard()
    except _Pruned as p:
        guard()
        msg = f"pruned by the {spec.pruner} pruner at epoch {p.epoch}"
        runs.set_status(run_dir, state="cancelled", ended=time.time(), error=msg, pruned_at=p.epoch)
        with open(run_dir / "log.txt", "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
        _tell(study, trial, state=TrialState.PRUNED)
        rebuild(runs_dir)
        return "pruned"
    if st["state"] == "done":
        value = (runs.read_json(run_dir / "summary.json", {}) or {}).get(spec.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            _tell(study, trial, values=float(value))
            return "complete"
        _fail(study, trial, f"{spec.metric} is missing from summary.json or not finite ({value})")
        return "failed"
    error = st.get("error") or st["state"]
    if st["state"] == "cancelled":
        ctrl_c = error.startswith("interrupted")  # worker.execute's words for Ctrl-C
        if ctrl_c or stopping():
            _fail(study, trial, error if ctrl_c else f"sweep {spec.name} cancelled", interrupted=True)
            return "ctrl-c" if ctrl_c else "interrupted"
    _fail(study, trial, error)  # a training error, or this one run cancelled by the user
    return "failed"
