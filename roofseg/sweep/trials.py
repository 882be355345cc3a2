"""Trial bookkeeping in a sweep's optuna study, shared by the workers (worker.py) and by
cancel_sweep (study.py): the ask lock, telling and failing trials, finishing the trials of dead
workers, queueing interrupted trials again, and what counts in the budget.

It sits below study.py and worker.py so that neither imports the other's internals; what it needs
of the study (its storage object, its folder) is passed in.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import re
import time
from pathlib import Path

from roofseg.exec import process
from roofseg.store import runs
from roofseg.sweep.spec import SweepSpec


@contextlib.contextmanager
def ask_lock(spec: SweepSpec, storage, folder):
    """One worker at a time counts the trials and asks for the next: the budget stays exact.
    A PostgreSQL advisory lock across hosts (storage: the study's RDBStorage), else a lock file
    in the sweep folder (both are released by the OS or the server when their holder dies)."""
    if re.match(r"^postgres(ql)?[+:]", spec.storage):
        import sqlalchemy as sa
        key = int.from_bytes(hashlib.blake2b(f"roofseg-sweep:{spec.name}".encode(), digest_size=8)
                             .digest(), "big", signed=True)
        with storage.engine.connect() as c:
            c.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                c.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    else:
        with open(Path(folder) / ".ask.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def is_interrupted(t) -> bool:
    """A failed trial that says nothing about its params: its worker was killed or stopped (a
    trial failed by optuna's heartbeat check carries no reason of ours)."""
    from optuna.trial import TrialState
    return t.state == TrialState.FAIL and (t.user_attrs.get("interrupted")
                                           or "fail_reason" not in t.user_attrs)


def counted_trials(study) -> int:
    """Trials that use the budget: every one that started, except interrupted ones."""
    from optuna.trial import TrialState
    return sum(t.state != TrialState.WAITING and not is_interrupted(t)
               for t in study.get_trials(deepcopy=False))


def _annotate(study, t, **attrs) -> None:
    # optuna has no public call to annotate another process's trial; its own retry callback
    # uses the storage the same way
    for k, v in attrs.items():
        study._storage.set_trial_user_attr(t._trial_id, k, v)


def tell(study, trial, **kw) -> None:
    """study.tell, where the end of a grid is not an error."""
    try:
        study.tell(trial, **kw)
    except RuntimeError as e:  # GridSampler calls study.stop() when the grid is done; the state is stored
        if "Study.stop" not in str(e):
            raise


def fail(study, t, reason: str, interrupted: bool = False) -> None:
    """Tell FAIL with the reason (an interrupted trial is queued again by retry_missing)."""
    from optuna.trial import TrialState
    _annotate(study, t, fail_reason=reason, interrupted=interrupted)
    tell(study, t.number, state=TrialState.FAIL)


def retry_missing(study) -> None:
    """Queue once more, with the same params, every interrupted trial not queued again yet (not a
    retry itself). Derived from the study under the ask lock rather than done right after the
    failure, so a worker killed in between loses nothing and nothing is queued twice."""
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if is_interrupted(t) and t.params and "retry_of" not in t.user_attrs and t.number not in queued:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})


def reap(study, spec: SweepSpec, runs_dir, run_state="failed", why=None) -> list[int]:
    """Under the ask lock: finish the RUNNING trials whose worker on this host is gone (a run that
    completed before its worker died still counts: its value is in summary.json; the rest are
    interrupted), let optuna fail those of silent workers elsewhere (database heartbeats), and
    queue interrupted trials again. Returns the numbers of the trials finished here."""
    import optuna
    from optuna.trial import TrialState
    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = t.user_attrs.get("worker") or {}
        if w.get("host") != runs.HOST or process.alive(w.get("pid"), w.get("start")):
            continue
        run_dir = Path(runs_dir) / t.user_attrs["run_id"] if t.user_attrs.get("run_id") else None
        st = runs.read_json(run_dir / "status.json", {}) if run_dir else {}
        value = (runs.read_json(run_dir / "summary.json", {}) or {}).get(spec.metric) if run_dir else None
        if st.get("state") == "done" and isinstance(value, (int, float)) and math.isfinite(value):
            tell(study, t.number, values=float(value))
        else:
            reason = why or f"worker pid {w.get('pid')} on {runs.HOST} ended during the trial"
            if run_dir and st.get("state") in runs.ACTIVE:
                runs.set_status(run_dir, state=run_state, ended=time.time(), error=reason)
            fail(study, t, reason, interrupted=True)
        done.append(t.number)
    if spec.storage:  # a database URL: its storage keeps optuna heartbeats (study.study_storage)
        optuna.storages.fail_stale_trials(study)
    retry_missing(study)
    return done
