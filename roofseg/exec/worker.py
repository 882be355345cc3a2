"""The process that executes one run folder: waits for a free slot, trains, records the outcome.

`python -m roofseg worker RUN_DIR` runs this (exec.control.launch starts it). Slots are lock files under
runs/.slots: the OS releases a lock when its process dies, so a killed run never blocks the queue.
ROOFSEG_SLOTS (default 1: on a CPU one run at a time is fastest overall) sets how many train at once.
"""
from __future__ import annotations

import fcntl
import os
import time
import traceback
from pathlib import Path

from roofseg.config import ConfigError, RunConfig
from roofseg.exec import process
from roofseg.store import pids, runs


class Cancelled(Exception):
    pass


def _on_sigterm(signum, frame):
    raise Cancelled()


def acquire_slot(runs_dir: Path, poll: float = 0.3):
    """Block until one of ROOFSEG_SLOTS lock files can be held; returns its open file."""
    n = max(1, int(os.environ.get("ROOFSEG_SLOTS", "1")))
    slots = runs_dir / ".slots"
    slots.mkdir(exist_ok=True)
    while True:
        for i in range(n):
            f = open(slots / f"{i}.lock", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except BlockingIOError:
                f.close()
        time.sleep(poll)


def execute(run_dir, hook=None, wait_for_slot: bool = True) -> dict:
    """Run a created run folder to its end state; returns the final status dict.

    Never raises for training errors: they become state 'failed' with the message in status.json
    and the traceback in log.txt, so the app can show them.
    """
    run_dir = Path(run_dir)
    # SIGTERM (a cancel) becomes Cancelled while the run executes; the caller's handler (a sweep
    # worker's, or the default) is back once it ends
    with process.sigterm_handler(_on_sigterm):
        st = _execute(run_dir, hook, wait_for_slot)
    from roofseg.store.results import rebuild
    try:
        rebuild(run_dir.parent)
    except Exception as e:  # the table is derived; a failure here must not change the run's state
        with open(run_dir / "log.txt", "a") as f:
            f.write(f"results table not rebuilt: {e}\n")
    return st


def _execute(run_dir: Path, hook, wait_for_slot: bool) -> dict:
    """execute's body, run while SIGTERM means Cancelled: the run from queued to its end state."""
    log_f = open(run_dir / "log.txt", "a", buffering=1)

    def log(msg: str) -> None:
        log_f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    # pid_start: the CLI trains in its own process, whose command line does not name the run, so
    # runs.status() must recognise this process by its start time instead
    me = {"pid": os.getpid(), "pid_start": pids.process_start(os.getpid()), "host": runs.HOST}
    runs.set_status(run_dir, state="queued", **me)
    slot = None
    try:
        cfg = RunConfig.load(run_dir / "config.json")
        if wait_for_slot:
            slot = acquire_slot(run_dir.parent)
        runs.set_status(run_dir, state="running", started=time.time(), **me)
        log(f"run {run_dir.name} started (pid {os.getpid()})")
        from roofseg.engine.train import fit
        fit(cfg, run_dir, hook=hook, log=log)
        st = runs.set_status(run_dir, state="done", ended=time.time())
        log("done")
    except Cancelled:
        st = runs.set_status(run_dir, state="cancelled", ended=time.time(), error="cancelled by the user")
        log("cancelled")
    except KeyboardInterrupt:
        st = runs.set_status(run_dir, state="cancelled", ended=time.time(), error="interrupted (Ctrl-C)")
        log("interrupted")
    except Exception as e:  # any failure must end up in status.json, not only on a dead stderr
        msg = str(e) if isinstance(e, (ConfigError, ValueError, OSError, RuntimeError)) else repr(e)
        st = runs.set_status(run_dir, state="failed", ended=time.time(), error=f"{type(e).__name__}: {msg}")
        log_f.write(traceback.format_exc())
        log(f"failed: {type(e).__name__}: {msg}")
    finally:
        if slot is not None:
            slot.close()
        log_f.close()
    return st
