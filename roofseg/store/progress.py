"""Live progress of runs, read from their folders: how far, how long, what the curves look like.

The app polls these while a worker process trains; nothing here talks to that process. Every
function tolerates folders that are half written (a run just created, a metrics line cut short).
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pandas as pd

from roofseg.store import runs

FINISHED = ("done", "failed", "cancelled")
# metrics.jsonl columns that are bookkeeping, not curves
_NOT_METRICS = {"fold", "epoch", "epoch_s", "time", "step"}


def _config(run_dir: Path) -> dict:
    """config.json as a dict; {} while it is missing or when it is not a JSON object."""
    cfg = runs.read_json(run_dir / "config.json")
    return cfg if isinstance(cfg, dict) else {}


def progress(run_dir) -> dict:
    """Where a run stands, for a progress bar.

    Keys: run_id, name (config name, else the run id), state, done (epochs finished over all
    folds), total (epochs x max(folds, 1)), fraction (done / total, 0..1), fold (0-based fold
    being trained), folds (number of models, >= 1), elapsed_s (since training started; 0 while
    queued), eta_s (mean epoch_s x epochs left while running; 0 when finished; None when
    unknown), last (the last metrics row, {} before the first epoch), error (None unless
    failed/cancelled), bad_lines (unreadable metrics lines skipped).
    """
    run_dir = Path(run_dir)
    st = runs.status(run_dir)
    cfg = _config(run_dir)
    rows, bad = runs.read_metrics(run_dir)
    epochs, folds = int(cfg.get("epochs") or 0), max(int(cfg.get("folds") or 0), 1)
    total = epochs * folds
    done = min(len(rows), total) if total else len(rows)
    last = rows[-1] if rows else {}
    fold = int(last.get("fold", 0))
    if last and last.get("epoch", 0) >= epochs and fold + 1 < folds:
        fold += 1  # the last fold finished its epochs: the next one is training now
    state = st.get("state", "failed")
    started = st.get("started")
    end = st.get("ended") if state in FINISHED else None
    elapsed = max(0.0, (end or time.time()) - started) if started else 0.0
    if state in FINISHED:
        eta = 0.0
    else:
        secs = [r["epoch_s"] for r in rows if isinstance(r.get("epoch_s"), (int, float))]
        eta = sum(secs) / len(secs) * (total - done) if secs and total else None
    return {"run_id": run_dir.name, "name": cfg.get("name") or run_dir.name, "state": state,
            "done": done, "total": total, "fraction": done / total if total else 0.0,
            "fold": fold, "folds": folds, "elapsed_s": elapsed, "eta_s": eta, "last": last,
            "error": st.get("error") if state in ("failed", "cancelled") else None,
            "bad_lines": bad}


def curves_frame(run_dirs, metrics=None) -> pd.DataFrame:
    """Every run's metrics.jsonl as one long frame for plotting.

    Columns: run_id, label (config name, else the run id; the id is added when two runs share a
    name), fold, epoch (1-based within the fold), step (1-based epoch index across folds), metric,
    value. `metrics` picks columns (e.g. ["train_loss", "val_loss"]); None takes every numeric one.
    """
    run_dirs = [Path(d) for d in run_dirs]
    names = {d: _config(d).get("name") or d.name for d in run_dirs}
    repeated = {n for n, c in Counter(names.values()).items() if c > 1}
    records = []
    for d in run_dirs:
        label = f"{names[d]} ({d.name})" if names[d] in repeated else names[d]
        rows, _ = runs.read_metrics(d)
        for step, row in enumerate(rows, start=1):  # rows are appended in training order
            keys = metrics if metrics is not None else [k for k in row if k not in _NOT_METRICS]
            for k in keys:
                v = row.get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    records.append((d.name, label, int(row.get("fold", 0)), int(row.get("epoch", step)),
                                    step, k, float(v)))
    return pd.DataFrame.from_records(
        records, columns=["run_id", "label", "fold", "epoch", "step", "metric", "value"])


def _by_creation(runs_dir, states) -> list[Path]:
    """Run folders in one of `states`, oldest first. Ids start with the creation second only, so
    two runs started in the same second are ordered by status.json's 'created' time."""
    found = []
    for d in runs.list_runs(runs_dir):
        st = runs.status(d)
        if st.get("state") in states:
            found.append((st.get("created") or 0.0, d.name, d))
    return [d for _, _, d in sorted(found)]


def active_runs(runs_dir) -> list[Path]:
    """Run folders that are queued or running, oldest first (a dead worker counts as failed)."""
    return _by_creation(runs_dir, runs.ACTIVE)


def finished_runs(runs_dir, n: int = 5) -> list[Path]:
    """The n most recently created runs that are done, failed or cancelled, newest first."""
    return _by_creation(runs_dir, FINISHED)[::-1][:n]


def log_tail(run_dir, lines: int = 20) -> str:
    """The last `lines` lines of the run's log.txt ('' when there is none)."""
    try:
        text = (Path(run_dir) / "log.txt").read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
