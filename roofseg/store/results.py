"""runs/results.parquet: one row per run, derived from the run folders and rebuilt at will.

A row holds the run id, its state and times, every config field (flat) and the summary metrics
(val_dice, val_dice_std, ...; for a run still going, the best so far). Rebuilding is incremental:
a run whose files have not changed since the last table keeps its row. Writers hold a file lock
and write a temporary file then rename it, so two runs finishing at once both land and a reader
never sees half a table.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pandas as pd

from roofseg.store import runs
from roofseg.config import RunConfig

TABLE = "results.parquet"
_STAMPED = ("config.json", "status.json", "summary.json", "metrics.jsonl")


def _stamp(run_dir: Path) -> int:
    s = 0
    for name in _STAMPED:
        try:
            st = os.stat(run_dir / name)
            s = max(s, st.st_mtime_ns) + st.st_size  # size too: two writes in one mtime tick
        except FileNotFoundError:
            pass
    return s


def run_row(run_dir: Path) -> dict:
    """The table row of one run folder (never raises for a damaged run: it says so instead)."""
    run_dir = Path(run_dir)
    st = runs.status(run_dir)
    cfg = _object(runs.read_json(run_dir / "config.json"))
    known = {k: cfg.get(k) for k in RunConfig().to_dict()}
    summary = _object(runs.read_json(run_dir / "summary.json"))
    row = {"run_id": run_dir.name, "status": st.get("state", "failed"),
           "created": st.get("created"), "started": st.get("started"), "ended": st.get("ended"),
           "error": st.get("error"), **known}
    rows, _ = runs.read_metrics(run_dir)
    row["epochs_done"] = len(rows)
    if summary:
        for k, v in summary.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in row:
                row[k] = v
    elif rows:  # still running (or died): the best epoch so far
        best = max(rows, key=lambda r: r.get("val_dice", -1))
        row.update({k: v for k, v in best.items() if k.startswith("val_")})
    row["_stamp"] = _stamp(run_dir)
    return row


def _object(v) -> dict:
    """A JSON file's content when it is an object, else {} (missing, damaged, hand-edited)."""
    return v if isinstance(v, dict) else {}


def table_path(runs_dir) -> Path:
    return Path(runs_dir) / TABLE


def rebuild(runs_dir="runs", full: bool = False) -> pd.DataFrame:
    """Bring results.parquet up to date with the run folders and return it as a DataFrame."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = {} if full else _cached_rows(runs_dir)
        rows = []
        for d in runs.list_runs(runs_dir):
            prev = old.get(d.name)
            # active rows are always re-read: their process may have died since (status())
            if prev is not None and prev.get("_stamp") == _stamp(d) and prev.get("status") not in runs.ACTIVE:
                rows.append(prev)
            else:
                rows.append(run_row(d))
        df = _frame(rows)
        tmp = runs_dir / f".{TABLE}.{os.getpid()}.tmp"
        try:
            df.to_parquet(tmp, index=False)
            os.replace(tmp, table_path(runs_dir))
        finally:
            tmp.unlink(missing_ok=True)
    return df.drop(columns=["_stamp"], errors="ignore")


def read_table(path, **kw) -> pd.DataFrame:
    """pd.read_parquet through one open file: given a path, pyarrow opens the file twice (schema,
    then data) and a rebuild replacing it in between makes the read fail as if it were corrupt."""
    with open(path, "rb") as f:
        return pd.read_parquet(f, **kw)


def _cached_rows(runs_dir: Path) -> dict[str, dict]:
    try:
        df = read_table(table_path(runs_dir))
    except Exception:  # missing or damaged (power cut): rebuild every row
        return {}
    return {r["run_id"]: {k: v for k, v in r.items() if not _isna(v)} for r in df.to_dict("records")}


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["run_id", "status", *RunConfig().to_dict(), "_stamp"])
    for c in ("created", "started", "ended"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def load(runs_dir="runs") -> tuple[pd.DataFrame, str | None]:
    """The table, rebuilt incrementally; plus a warning when it had to be recreated or could not
    be saved (read-only folder, full disk: the rows are then read from the run folders only)."""
    warning = None
    p = table_path(runs_dir)
    if p.exists():
        try:
            read_table(p, columns=["run_id"])
        except Exception as e:
            warning = f"{p} was unreadable ({type(e).__name__}); rebuilt it from the run folders"
    try:
        return rebuild(runs_dir), warning
    except OSError as e:
        rows = [run_row(d) for d in runs.list_runs(runs_dir)]
        return _frame(rows).drop(columns=["_stamp"]), (
            f"could not update {p} ({e.strerror or e}); showing the runs read from their folders")
