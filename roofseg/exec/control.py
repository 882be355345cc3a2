"""Starting and stopping runs as background processes: launch a run folder's worker (once, or once
per seed), cancel it.

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


def seeded(cfg: RunConfig, n: int) -> list[RunConfig]:
    """cfg once per seed: seed, seed+1, ..., seed+n-1. The Train page's Seeds and `train --seeds`
    both repeat a recipe this way, so Compare can pool the runs as seeds of one recipe."""
    if n < 1:
        raise ValueError(f"the number of seeds must be >= 1, got {n}")
    return [cfg.replace(seed=cfg.seed + i) for i in range(n)]


def launch_seeds(cfg: RunConfig, n: int, runs_dir="runs") -> list[Path]:
    """launch() once per seed of seeded(cfg, n); the run folders, in seed order."""
    return [launch(c, runs_dir) for c in seeded(cfg, n)]


# SIGTERM lets a run write its best weights and status before it exits (a 50 MB torch.save and
# interpreter shutdown took 3.5 s on a loaded 2-core machine); SIGKILL only after this long
CANCEL_GRACE_S = 15.0


def cancel(run_dir, grace: float = CANCEL_GRACE_S) -> dict:
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
