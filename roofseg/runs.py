"""The run store: one folder per run under runs/, written atomically, launched and cancelled by pid.

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
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from .config import RunConfig

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")
HOST = socket.gethostname()  # a run's pid means something only on the host that wrote it
_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,120}\Z")
_children: dict[int, subprocess.Popen] = {}  # workers this process launched, reaped via poll()


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


def save_checkpoint(path, obj: dict) -> None:
    """torch.save to a temporary file, then rename: a crash or a full disk never leaves a
    half-written best.pt, and the previous one stays as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as e:  # disk full, folder read-only: say which file, and that nothing was lost
        raise OSError(e.errno, f"could not write {path} ({e.strerror or e}); the previous "
                               f"{path.name}, if any, is unchanged") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path) -> dict:
    """Load with weights_only=True: a checkpoint can never run code on load."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunError(f"{path}: not a readable roofseg checkpoint ({type(e).__name__}: {e})") from None


def checkpoint_paths(run_dir) -> list[Path]:
    """best.pt, or best_fold0.pt, best_fold1.pt, ... in fold order."""
    ps = list(Path(run_dir).glob("best*.pt"))
    return sorted(ps, key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))


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
    import platform
    import segmentation_models_pytorch as smp
    from . import __version__, _tvguard
    commit = None
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=Path(__file__).parent,
                             timeout=5, capture_output=True, text=True)
        commit = out.stdout.strip() if out.returncode == 0 and len(out.stdout.strip()) == 40 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"roofseg": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "smp": smp.__version__, "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torchvision_guard": _tvguard.patched}


# ---------------------------------------------------------------------------------------------
# status and liveness
def process_start(pid: int) -> str | None:
    """Start time (clock ticks after boot) of a live, non-zombie process, else None. With the pid
    it names one process: a recycled pid has another start time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _alive(pid: int, run_dir: Path, start: str | None = None) -> bool:
    """True when pid is a live (not zombie) process that belongs to this run: its recorded start
    time matches (`start`, from status.json's pid_start), else its command line names the run."""
    try:
        if pid in _children and _children[pid].poll() is not None:  # reap our own finished worker
            del _children[pid]
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # pid reuse and zombies: check the process is still this run's worker
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if stat[0] == "Z":
            return False
        if start is not None:
            return stat[19] == str(start)
        return run_dir.name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, IndexError, PermissionError):
        return True


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
            and not _alive(int(st["pid"]), run_dir, st.get("pid_start"))):
        dead = dict(state="failed", ended=time.time(),
                    error=f"the training process (pid {st['pid']}) ended without finishing "
                          "(killed or crashed); metrics so far and log.txt are kept")
        try:
            st = set_status(run_dir, **dead)
        except OSError:  # read-only or full disk: report it all the same; recorded on a later call
            st = {**st, **dead}
    return st


# ---------------------------------------------------------------------------------------------
# processes
def launch(cfg: RunConfig, runs_dir="runs") -> Path:
    """Create the run and start its worker in a new process session; returns at once."""
    d = create_run(cfg, runs_dir)
    log = open(d / "log.txt", "ab")
    # the worker must import this very roofseg, whatever the caller's working directory
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([pkg_root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen([sys.executable, "-m", "roofseg", "worker", str(d.resolve())],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env, cwd=os.getcwd())
    log.close()
    _children[proc.pid] = proc
    set_status(d, pid=proc.pid)
    return d


def _signal(pid: int, sig) -> None:
    """Signal a run's process group when it leads one (runs.launch starts workers in their own
    session); else only the process: a CLI run started from a script shares the script's group."""
    if os.getpgid(pid) == pid:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


def cancel(run_dir, grace: float = 5.0) -> dict:
    """Stop a queued or running run: SIGTERM to its process group, SIGKILL after `grace` s."""
    run_dir = Path(run_dir)
    st = status(run_dir)
    if st.get("state") not in ACTIVE:
        return st
    pid = st.get("pid") if st.get("host", HOST) == HOST else None  # elsewhere: the file says it
    start = st.get("pid_start")
    if pid and _alive(int(pid), run_dir, start):
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            try:
                _signal(int(pid), sig)
            except (ProcessLookupError, PermissionError):
                break
            end = time.time() + wait
            while time.time() < end and _alive(int(pid), run_dir, start):
                time.sleep(0.05)
            if not _alive(int(pid), run_dir, start):
                break
    st = read_json(run_dir / "status.json", {})
    st = st if isinstance(st, dict) else {}
    if st.get("state") in ACTIVE or st.get("state") == "failed":
        st = set_status(run_dir, state="cancelled", ended=time.time(), error="cancelled by the user")
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
