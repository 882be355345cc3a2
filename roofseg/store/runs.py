"""The run store: one folder per run under runs/, written atomically; a run's process is told
dead or alive by its recorded pid (roofseg.exec.control launches and cancels those processes).

A run folder holds config.json, status.json (queued / running / done / failed / cancelled, pid,
times, error; host and pid_start when the process is not `roofseg worker RUN_DIR`, such as a
sweep worker that trains one run after another), metrics.jsonl (a row per epoch, flushed),
summary.json, best*.pt (weights with the config inside), per_image.json, predictions/, log.txt
and env.json. It is the source of truth; results.parquet (results.py) is derived from it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from roofseg.config import SAVED_DEFAULTS, RunConfig
from roofseg.store import pids

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
HOST = socket.gethostname()  # a run's pid means something only on the host that wrote it
_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,120}\Z")


class RunError(ValueError):
    """A run id/folder is invalid, missing, or in a state that forbids the action."""


# ---------------------------------------------------------------------------------------------
# atomic files
def write_json(path, obj) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def saved_config(run_dir) -> dict:
    """A run's config.json as a dict, with the fields older runs did not record filled in as those
    runs trained (config.SAVED_DEFAULTS): what a clone of the run starts from. {} when unreadable."""
    d = read_json(Path(run_dir) / "config.json", {})
    return {**SAVED_DEFAULTS, **d} if isinstance(d, dict) and d else {}


def read_json_strict(run_id: str, path: Path, required: bool):
    """A run file's JSON, strictly: missing (when required), unreadable or corrupt -> a RunError
    naming the run and the file (read_json instead forgives all three, for live views)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise RunError(f"run {run_id}: {path.name} is missing") from None
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"run {run_id}: cannot read {path.name}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise RunError(f"run {run_id}: {path.name} is not valid JSON (corrupt or half-written)") from None


def checkpoint_paths(run_dir) -> list[Path]:
    """best.pt, or best_fold0.pt, best_fold1.pt, ... in fold order."""
    ps = list(Path(run_dir).glob("best*.pt"))
    return sorted(ps, key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))


def read_per_image(run_dir) -> list[dict]:
    p = Path(run_dir) / "per_image.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def append_metrics(run_dir, row: dict) -> None:
    """Append one JSON line and flush it to disk so a reader sees the epoch at once."""
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir) -> tuple[list[dict], int]:
    """Rows of metrics.jsonl and the number of unreadable lines skipped (e.g. after a power cut)."""
    rows, bad = [], 0
    try:
        text = (Path(run_dir) / "metrics.jsonl").read_text(errors="replace")
    except FileNotFoundError:
        return [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            rows.append(r) if isinstance(r, dict) else None
            bad += not isinstance(r, dict)
        except json.JSONDecodeError:
            bad += 1
    return rows, bad


# ---------------------------------------------------------------------------------------------
# creating and resolving runs
def resolve(runs_dir, run_id: str) -> Path:
    """runs_dir/run_id for a plain id; anything that could leave runs_dir is refused."""
    run_id = str(run_id)
    p = Path(run_id)
    if p.is_absolute() or len(p.parts) > 1:  # a path given directly (CLI): must sit in runs_dir
        if p.parent.resolve() != Path(runs_dir).resolve():
            raise RunError(f"{run_id!r} is not a folder in {runs_dir}; give a run id, or pass "
                           "--runs-dir for runs kept elsewhere")
        run_id = p.name
    if not _ID_RE.match(run_id) or run_id in (".", ".."):
        raise RunError(f"{run_id!r} is not a valid run id (letters, digits, '.', '_', '-')")
    d = Path(runs_dir) / run_id
    if not (d / "config.json").is_file():
        raise RunError(f"no run {run_id!r} in {runs_dir}")
    return d


def create_run(cfg: RunConfig, runs_dir="runs") -> Path:
    """Make a new run folder (unique even when two start in the same second) with its config
    (its normalisation written out, so the folder says what inputs the weights expect)."""
    cfg = cfg.resolved().validate()
    runs_dir, d = Path(runs_dir), None
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{cfg.arch}-{cfg.encoder}").strip("-")[:40]
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        while d is None:
            d = runs_dir / f"{datetime.now():%Y%m%d-%H%M%S}-{slug}-{secrets.token_hex(2)}"
            try:
                d.mkdir()
            except FileExistsError:
                d = None
        cfg.save(d / "config.json")
        write_json(d / "status.json", {"state": "queued", "created": time.time()})
        write_json(d / "env.json", environment())
    except OSError as e:  # read-only folder, full disk: no half-made run folder is left behind
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)
        raise RunError(f"cannot create a run folder in {runs_dir}: {e.strerror or e}; "
                       "check that it is writable and the disk is not full") from None
    return d


def environment() -> dict:
    """Versions and machine facts for env.json. Read from package metadata, so creating a run
    imports no torch; CUDA and the torchvision guard are reported when torch is already loaded."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from roofseg import __version__

    def ver(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None
    torch = sys.modules.get("torch")
    guard = sys.modules.get("roofseg.model.tvguard")
    commit = None
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=Path(__file__).parent,
                             timeout=5, capture_output=True, text=True)
        commit = out.stdout.strip() if out.returncode == 0 and len(out.stdout.strip()) == 40 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"roofseg": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": ver("torch"), "smp": ver("segmentation-models-pytorch"), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None,
            "torchvision_guard": guard.patched if guard is not None else None}


# ---------------------------------------------------------------------------------------------
# status and liveness
def set_status(run_dir, **fields) -> dict:
    st = read_json(Path(run_dir) / "status.json", {}) or {}
    if "pid" in fields and "pid_start" not in fields:
        st.pop("pid_start", None)  # it described the previous pid
    st.update(fields)
    write_json(Path(run_dir) / "status.json", st)
    return st


def status(run_dir) -> dict:
    """status.json, with a run whose process died (killed, crashed) turned into 'failed'."""
    run_dir = Path(run_dir)
    st = read_json(run_dir / "status.json")
    if not isinstance(st, dict):  # missing, half-written or hand-edited into a non-object
        st = {"state": "failed", "error": "status.json missing or unreadable"}
    if (st.get("state") in ACTIVE and st.get("pid") and st.get("host", HOST) == HOST
            and not pids.alive(st["pid"], st.get("pid_start"), cmdline_has=run_dir.name)):
        dead = dict(state="failed", ended=time.time(),
                    error=f"the training process (pid {st['pid']}) ended without finishing "
                          "(killed or crashed); metrics so far and log.txt are kept")
        try:
            st = set_status(run_dir, **dead)
        except OSError:  # read-only or full disk: report it all the same; recorded on a later call
            st = {**st, **dead}
    return st


def list_runs(runs_dir="runs") -> list[Path]:
    d = Path(runs_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        try:  # creation order: the folder name has one-second resolution, config.json's mtime ns
            found.append((os.stat(p / "config.json").st_mtime_ns, p.name, p))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return [p for _, _, p in sorted(found)]


def delete_run(run_dir) -> None:
    run_dir = Path(run_dir)
    if status(run_dir).get("state") in ACTIVE:
        raise RunError(f"{run_dir.name} is still {status(run_dir)['state']}; cancel it first")
    shutil.rmtree(run_dir)
