"""The one process lifecycle of runs and sweeps: spawn a `python -m roofseg` worker, check it is
still ours, terminate it with a grace period, and hand SIGTERM to the code running inside one.

Background workers lead their own session (so a cancel reaches the whole process group, data
loader processes included, and closing the app's terminal does not kill them). Their Popen
objects are remembered so that finished ones are reaped instead of lingering as zombies.
The liveness test itself is roofseg.store.pids, which the store uses too.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from roofseg.store import pids

_children: dict[int, subprocess.Popen] = {}  # workers this process spawned, reaped via poll()


def spawn(args: list[str], log_path) -> int:
    """Start `python -m roofseg *args` in a new session with stdin closed and stdout and stderr
    appended to log_path; returns its pid at once. roofseg is an installed package (pip install
    -e .), so the worker imports it from any working directory without a PYTHONPATH patch."""
    reap()
    with open(Path(log_path), "ab") as log:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "roofseg", *map(str, args)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    _children[proc.pid] = proc
    return proc.pid


def reap() -> None:
    """Collect the exit status of spawned workers that have ended, so none stays a zombie."""
    for pid, proc in list(_children.items()):
        with contextlib.suppress(OSError):
            if proc.poll() is None:
                continue
        del _children[pid]


def alive(pid, start: str | None = None, cmdline_has: str | None = None) -> bool:
    """pid (on this host) is still the process meant: its start time is `start` when recorded,
    else its command line contains `cmdline_has` (see store.pids.alive). Reaps ended children."""
    reap()
    return pids.alive(pid, start, cmdline_has)


def _signal(pid: int, sig) -> None:
    """Signal pid's process group when it leads one (spawn starts workers in their own session);
    else only the process: a foreground CLI run or sweep shares its shell's group."""
    if os.getpgid(pid) == pid:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


def terminate(pid_list: Iterable[int], is_alive: Callable[[int], bool] | None = None,
              grace: float = 5.0, kill_wait: float = 2.0, poll: float = 0.05) -> list[int]:
    """Stop processes: SIGTERM (each group, see _signal), SIGKILL to those alive after `grace` s,
    then wait up to `kill_wait` s. is_alive(pid) says whether pid is still the process meant
    (default: it exists), so a recycled pid is never signalled. Returns the pids still alive
    (those that could not be signalled, e.g. another user's, are not waited for)."""
    is_alive = is_alive or alive
    live = [int(p) for p in pid_list if is_alive(int(p))]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        sent = []
        for pid in live:
            try:
                _signal(pid, sig)
                sent.append(pid)
            except (ProcessLookupError, PermissionError):
                pass  # gone already, or not ours to stop: waiting would change nothing
        live = sent
        end = time.monotonic() + wait
        while True:
            live = [p for p in live if is_alive(p)]
            if not live or time.monotonic() >= end:
                break
            time.sleep(poll)
        if not live:
            break
    return live


@contextlib.contextmanager
def sigterm_handler(handler):
    """Install `handler` for SIGTERM for the block and put the previous one back afterwards, so
    nested users (a sweep worker around a run's execute) each keep their own. Main thread only,
    as for signal.signal."""
    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        # None: the previous handler was not installed from Python; the default is the safe guess
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)
