"""Starting and stopping runs as background processes: launch a run folder's worker, cancel it.

The run folder itself (creation, status.json, liveness as seen by readers) is roofseg.store.runs;
this module adds the processes, through roofseg.exec.process like sweep workers.
"""
from __future__ import annotations

import time
from pathlib import Path

from roofseg.config import RunConfig
from roofseg.exec import process
from roofseg.store import runs


def launch(cfg: RunConfig, runs_dir="runs") -> Path:
    """Create the run and start its worker (`python -m roofseg worker RUN_DIR`) in a new process
    session; returns the run folder at once."""
    d = runs.create_run(cfg, runs_dir)
    pid = process.spawn(["worker", str(d.resolve())], d / "log.txt")
    runs.set_status(d, pid=pid)
    return d


def cancel(run_dir, grace: float = 5.0) -> dict:
    """Stop a queued or running run: SIGTERM to its process group, SIGKILL after `grace` s; it
    ends 'cancelled'. A run that is not active (finished, or found dead: 'failed') is left as is."""
    run_dir = Path(run_dir)
    st = runs.status(run_dir)
    if st.get("state") not in runs.ACTIVE:
        return st
    pid = st.get("pid") if st.get("host", runs.HOST) == runs.HOST else None  # elsewhere: the file says it
    if pid:
        start = st.get("pid_start")
        # the same test as runs.status(): a recycled pid is never signalled
        process.terminate([int(pid)], lambda p: process.alive(p, start, run_dir.name), grace, 2.0)
    st = runs.read_json(run_dir / "status.json", {})
    st = st if isinstance(st, dict) else {}
    # 'failed': a reader's runs.status() may have found the killed process gone first
    if st.get("state") in runs.ACTIVE or st.get("state") == "failed":
        st = runs.set_status(run_dir, state="cancelled", ended=time.time(), error="cancelled by the user")
    return st
