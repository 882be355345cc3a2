"""Sweeps: an optuna search over RunConfig fields in which every trial is an ordinary run folder.

runs/sweeps/<name>/ holds sweep.json (the SweepSpec), journal.log (the optuna study, unless
`storage` is a database URL), workers/ (one file per live worker process), worker-<i>.log and STOP
(present while the sweep is cancelled). A trial's run folder sits in runs/ like any other, with
config.sweep = <name> and sweep.json {"sweep", "trial", "params"} beside config.json.

How it behaves:
- Budget: `trials` counts every trial that started except interrupted ones (worker killed, sweep
  cancelled, Ctrl-C). Those are failed in the study and queued again once with the same params.
  Asking for a trial is serialised (a lock file, or a PostgreSQL advisory lock) so that several
  workers never overshoot the budget.
- Pruning: fold 0's per-epoch value of the metric is reported at step = epoch, and only during
  fold 0 can a trial be pruned (never after a holdout run's last epoch: that would save nothing);
  later folds of a trial that survived fold 0 run to the end. Steps then mean the same thing in
  every trial (also when epochs or folds vary), and a bad trial stops at its first chance, which
  is where most of the saving is.
- A pruned trial's run folder ends as state "cancelled" with error "pruned by the <pruner> pruner
  at epoch N" and pruned_at = N: every page already treats "cancelled" as finished, and its
  metrics up to epoch N stay readable.
- An arch/encoder pair smp cannot build fails at once, without training, with the reason.
- Stale trials: a worker that dies leaves its trial RUNNING. Before every ask, a worker finishes
  the RUNNING trials of dead workers on its host (pid + start time); with a database, workers
  also send optuna heartbeats, so trials of dead workers on other hosts fail after 90 s.

This module defines, starts, stops and reads sweeps; the worker loop is worker.py, the trial
bookkeeping both share (ask lock, reaping, retries, budget) trials.py, what the trials say
(isolation, edge warnings, ...) report.py, and the spec itself spec.py. Worker processes are
started and stopped through roofseg.exec.process, like runs.
"""
from __future__ import annotations

import re
import time
import warnings
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pandas as pd

from roofseg.config import ConfigError, RunConfig, incompatible
from roofseg.exec import process
from roofseg.store import pids, runs
# the spec lives in spec.py and the trial bookkeeping in trials.py; their names stay importable here
from roofseg.sweep.spec import (DEFAULT_SPACE, DIRECTIONS, HEARTBEAT_S, METRICS, NAME_RE,  # noqa: F401
                                NEVER_VARIED, PRUNERS, SAMPLERS, SweepError, SweepSpec,
                                default_direction)
from roofseg.sweep.trials import ask_lock, counted_trials, is_interrupted, reap


def default_name() -> str:
    return f"sweep-{datetime.now():%Y%m%d-%H%M%S}"


def sweep_dir(runs_dir, name: str) -> Path:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SweepError(f"{name!r} is not a valid sweep name (letters, digits, '.', '_', '-')")
    return Path(runs_dir) / "sweeps" / name


def load_spec(name: str, runs_dir="runs") -> SweepSpec:
    d = runs.read_json(sweep_dir(runs_dir, name) / "sweep.json")
    if not isinstance(d, dict):
        raise SweepError(f"no sweep {name!r} in {Path(runs_dir) / 'sweeps'}")
    return SweepSpec.from_dict(d)


def list_sweeps(runs_dir="runs") -> list[str]:
    """Sweep names, newest first."""
    specs = [runs.read_json(p) for p in (Path(runs_dir) / "sweeps").glob("*/sweep.json")]
    specs = [s for s in specs if isinstance(s, dict) and "name" in s]
    return [s["name"] for s in sorted(specs, key=lambda s: -float(s.get("created") or 0))]


def redact(url: str) -> str:
    """A storage URL fit to print: the password, if any, replaced by ***."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url or "") or "journal.log in the sweep folder"


# ---------------------------------------------------------------------------------------------
# storage, samplers, pruners
_STORAGES: dict = {}


def study_storage(spec: SweepSpec, runs_dir, url: str | None = None):
    """The study's optuna storage, one object per process and location (cached: a journal is
    replayed once, a database engine made once)."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend
    url = url or spec.storage
    if not url:
        path = sweep_dir(runs_dir, spec.name) / "journal.log"
        open(path, "ab").close()
        key = (str(path.resolve()), path.stat().st_ino)  # a sweep deleted and made again: new key
        if key not in _STORAGES:
            _STORAGES[key] = JournalStorage(JournalFileBackend(str(path)))
        return _STORAGES[key]
    key = (url, str(Path(runs_dir).resolve()))
    if key not in _STORAGES:
        import optuna
        with warnings.catch_warnings():  # heartbeats are "experimental" in optuna's words
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            _STORAGES[key] = RDBStorage(_driver(url), heartbeat_interval=HEARTBEAT_S,
                                        grace_period=3 * HEARTBEAT_S,
                                        heartbeat_stale_trial_callback=_stale_callback(Path(runs_dir)))
    return _STORAGES[key]


def _driver(url: str) -> str:
    """postgresql://... with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3,
    roofseg's requirements bring psycopg2."""
    m = re.match(r"^postgres(?:ql)?://", url)
    if m:
        import importlib.util
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return "postgresql+psycopg2://" + url[m.end():]
    return url


def open_study(spec: SweepSpec, runs_dir, url=None, sampler=None, pruner=None):
    import optuna
    return optuna.load_study(study_name=spec.name, storage=study_storage(spec, runs_dir, url),
                             sampler=sampler, pruner=pruner)


def make_sampler(spec: SweepSpec, offset: int):
    """The sampler of one worker. Seeds differ per worker and per resume (offset), or parallel
    random/TPE workers would propose the same points; QMC must share one seed to split its
    sequence between workers."""
    import optuna
    s = optuna.samplers
    seed = spec.seed + offset
    with warnings.catch_warnings():  # multivariate TPE is "experimental" in name only
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if spec.sampler == "tpe":
            return s.TPESampler(seed=seed, n_startup_trials=max(2, min(10, spec.budget() // 3)),
                                multivariate=True, constant_liar=True)
        if spec.sampler == "random":
            return s.RandomSampler(seed=seed)
        if spec.sampler == "qmc":
            return s.QMCSampler(seed=spec.seed, scramble=True, independent_sampler=s.RandomSampler(seed),
                                warn_independent_sampling=False, warn_asynchronous_seeding=False)
        return s.GridSampler(spec.grid(), seed=seed)


def make_pruner(spec: SweepSpec):
    import optuna
    p = optuna.pruners
    if spec.pruner == "median":  # step = epoch (1-based): the earliest prune is at warmup + 1
        return p.MedianPruner(n_startup_trials=spec.pruner_startup, n_warmup_steps=spec.pruner_warmup + 1)
    if spec.pruner == "halving":
        return p.SuccessiveHalvingPruner(min_resource=spec.pruner_warmup + 1, reduction_factor=3)
    return p.NopPruner()


# ---------------------------------------------------------------------------------------------
# creating and starting
def create_sweep(spec: SweepSpec, runs_dir="runs", storage: str | None = None) -> Path:
    """Check the spec against its data and smp, make runs/sweeps/<name>/ and the study."""
    import optuna
    from roofseg.engine.train import preflight
    spec = replace(spec, storage=storage or spec.storage, created=time.time()).validate()
    preflight(_extreme_config(spec))
    _check_weights(spec)
    d = sweep_dir(runs_dir, spec.name)
    d.parent.mkdir(parents=True, exist_ok=True)
    try:
        d.mkdir()
    except FileExistsError:
        raise SweepError(f"sweep {spec.name!r} already exists in {d.parent}; resume it or choose "
                         "another name") from None
    try:
        optuna.create_study(study_name=spec.name, storage=study_storage(spec, runs_dir),
                            direction=spec.direction)
    except optuna.exceptions.DuplicatedStudyError:
        _remove(d)
        raise SweepError(f"{redact(spec.storage)} already holds a study named {spec.name!r}; "
                         "choose another name") from None
    except BaseException:
        _remove(d)
        raise
    runs.write_json(d / "sweep.json", spec.to_dict())  # last: a sweep.json always has its study
    return d


def _check_weights(spec: SweepSpec) -> None:
    """With ImageNet weights, every encoder the sweep may pick must have them here (installed,
    cached, or a reachable hub): otherwise each of its trials would fail at its start, one by one."""
    if spec.base.get("encoder_weights", RunConfig.encoder_weights) != "imagenet":
        return
    encs = spec.space.get("encoder", {}).get("choices") or [spec.base.get("encoder", RunConfig.encoder)]
    from roofseg.model.weights import PACKAGED, packaged_file, unavailable
    bad = unavailable(encs)
    if bad:
        offline = [e for e in PACKAGED if packaged_file(e) is not None]
        raise SweepError(f"sweep {spec.name!r} uses ImageNet weights, but " + "; ".join(f"{e}: {why}" for e, why in bad.items())
                         + ". Vary only encoders whose weights are installed"
                         + (f" ({', '.join(offline)})" if offline else "")
                         + ", or set the encoder weights to none.")


def _remove(d: Path) -> None:
    import shutil
    shutil.rmtree(d, ignore_errors=True)


def _extreme_config(spec: SweepSpec) -> RunConfig:
    """The base with the first choice of each varied field (a buildable arch/encoder pair) and the
    top of each range (the largest batch size and fold count): what preflight should see."""
    pick = {k: p["high"] for k, p in spec.space.items() if "high" in p}
    pick.update({k: p["choices"][0] for k, p in spec.space.items() if "choices" in p})
    cfg = RunConfig.from_dict({**spec.base, **pick})
    archs = spec.space.get("arch", {}).get("choices", [cfg.arch])
    encs = spec.space.get("encoder", {}).get("choices", [cfg.encoder])
    pairs = [(a, e) for a in archs for e in encs if not incompatible(a, e)]
    if not pairs:
        raise ConfigError(f"sweep {spec.name!r}: no arch/encoder pair of the space builds "
                          f"({incompatible(archs[0], encs[0])})")
    return cfg.replace(arch=pairs[0][0], encoder=pairs[0][1])


def start_sweep(spec: SweepSpec, runs_dir="runs", n_workers: int = 1,
                storage: str | None = None) -> list[int]:
    """create_sweep, then launch_workers: returns the worker pids at once (the app's Start)."""
    create_sweep(spec, runs_dir, storage)
    return launch_workers(spec.name, runs_dir, n_workers)


def launch_workers(name: str, runs_dir="runs", n_workers: int = 1, storage: str | None = None,
                   wait_for_slot: bool = True) -> list[int]:
    """Start n background `python -m roofseg sweep-worker` processes, each in its own session;
    also the way to resume a cancelled or interrupted sweep. Returns their pids at once."""
    load_spec(name, runs_dir)
    d = sweep_dir(runs_dir, name)
    (d / "STOP").unlink(missing_ok=True)
    first = len(workers(name, runs_dir))  # indices (and so sampler seeds) differ from live workers'
    started = []
    for i in range(first, first + max(1, int(n_workers))):
        args = ["sweep-worker", name, "--runs-dir", str(Path(runs_dir).resolve()), "--worker-index", str(i)]
        args += ["--storage", storage] if storage else []  # else sweep.json's: no password in `ps`
        args += [] if wait_for_slot else ["--no-wait"]
        pid = process.spawn(args, d / f"worker-{i}.log")
        register_worker(d, pid, i)
        started.append(pid)
    return started


def enqueue(name: str, runs_dir="runs", params: dict | None = None) -> None:
    """Queue a point to try next (every varied field, e.g. a known good config); it counts in the
    budget like any trial."""
    spec = load_spec(name, runs_dir)
    missing = sorted(set(spec.space) - set(params or {}))
    if missing:
        raise SweepError(f"enqueue: give every varied field; missing {missing}")
    open_study(spec, runs_dir).enqueue_trial(dict(params))


def resume(name: str, runs_dir="runs") -> None:
    """Lift a cancel (remove STOP) so workers may run again; launch_workers does this itself."""
    load_spec(name, runs_dir)
    (sweep_dir(runs_dir, name) / "STOP").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# worker processes
def register_worker(d: Path, pid: int, index: int) -> Path:
    (d / "workers").mkdir(exist_ok=True)
    p = d / "workers" / f"{runs.HOST}-{pid}.json"
    runs.write_json(p, {"host": runs.HOST, "pid": pid, "start": pids.process_start(pid),
                        "index": index, "since": time.time()})
    return p


def workers(name: str, runs_dir="runs") -> list[dict]:
    """The sweep's registered worker processes that are alive (those on other hosts are listed
    as alive: only their host can tell); files of dead local workers are removed."""
    out = []
    for p in sorted((sweep_dir(runs_dir, name) / "workers").glob("*.json")):
        w = runs.read_json(p)
        if not isinstance(w, dict):
            continue
        if w.get("host") == runs.HOST and not process.alive(w.get("pid"), w.get("start")):
            p.unlink(missing_ok=True)
            continue
        out.append(w)
    return out


def cancel_sweep(name: str, runs_dir="runs", grace: float = 10.0) -> dict:
    """Stop the sweep: STOP for every worker (those on other hosts stop at their next epoch),
    SIGTERM then SIGKILL to the local ones, and their unfinished trials failed as interrupted
    (re-run on resume). Returns {"stopped": pids, "elsewhere": n, "interrupted": trial numbers}."""
    from optuna.trial import TrialState
    spec = load_spec(name, runs_dir)
    d = sweep_dir(runs_dir, name)
    study = open_study(spec, runs_dir)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    (d / "STOP").write_text(f"cancelled at {time.ctime()}\n")
    local = [w for w in workers(name, runs_dir) if w.get("host") == runs.HOST]
    starts = {int(w["pid"]): w.get("start") for w in local}  # a recycled pid is never signalled
    process.terminate(list(starts), lambda p: process.alive(p, starts[p]), grace, kill_wait=3.0)
    with ask_lock(spec, study_storage(spec, runs_dir), d):  # trials of workers that died before telling theirs
        reap(study, spec, runs_dir, run_state="cancelled", why=f"sweep {name} cancelled")
    trials = study.get_trials(deepcopy=False)
    return {"stopped": [w["pid"] for w in local], "elsewhere": len(workers(name, runs_dir)),
            "interrupted": [n for n in running if is_interrupted(trials[n])]}


def _stale_callback(runs_dir: Path):
    """For optuna's heartbeat check (database storage): a trial whose worker went silent on any
    host is failed by optuna; mark its run folder (the next ask queues its params again)."""
    def callback(study, t) -> None:
        if t.user_attrs.get("run_id"):
            d = runs_dir / t.user_attrs["run_id"]
            if (runs.read_json(d / "status.json", {}) or {}).get("state") in runs.ACTIVE:
                runs.set_status(d, state="failed", ended=time.time(),
                                error="its sweep worker stopped sending heartbeats")
    return callback


# ---------------------------------------------------------------------------------------------
# reading
TRIAL_COLUMNS = ["trial", "state", "value", "run_id", "run_state", "seconds", "last_epoch", "reason",
                 "interrupted", "retry_of"]


def trials_frame(name: str, runs_dir="runs", storage: str | None = None) -> pd.DataFrame:
    """One row per trial: TRIAL_COLUMNS, then one column per varied field (named as the field).

    state: complete | pruned | fail | running | waiting; value: the metric (complete trials; a
    pruned one shows its last reported value); run_state: the run folder's state; seconds: the
    trial's duration so far; last_epoch: the last epoch it reported (fold 0); reason: why it
    failed or was pruned; interrupted: failed by a killed or stopped worker (not in the budget).
    """
    spec = load_spec(name, runs_dir)
    study = open_study(spec, runs_dir, storage)
    now = datetime.now()
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("run_id")
        st = runs.status(Path(runs_dir) / run_id) if run_id else {}
        end = t.datetime_complete or (now if t.datetime_start else None)
        rows.append({
            "trial": t.number, "state": t.state.name.lower(), "value": t.value, "run_id": run_id,
            "run_state": st.get("state"),
            "seconds": (end - t.datetime_start).total_seconds() if end and t.datetime_start else None,
            "last_epoch": t.last_step, "interrupted": is_interrupted(t),
            "reason": t.user_attrs.get("fail_reason")
            or (st.get("error") if t.state.name == "PRUNED" else None),
            "retry_of": t.user_attrs.get("retry_of"),
            **(t.params or t.system_attrs.get("fixed_params", {}))})  # a waiting trial: its queued point
    return pd.DataFrame(rows, columns=[*TRIAL_COLUMNS, *spec.space]).sort_values("trial", ignore_index=True)


def progress(name: str, runs_dir="runs") -> dict:
    """Counted trials against the budget, live workers, whether cancelled."""
    spec = load_spec(name, runs_dir)
    return {"counted": counted_trials(open_study(spec, runs_dir)), "budget": spec.budget(),
            "workers": workers(name, runs_dir), "stopped": (sweep_dir(runs_dir, name) / "STOP").exists()}
