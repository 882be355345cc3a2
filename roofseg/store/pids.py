"""Is this pid still the process we recorded? The OS-level liveness primitive, nothing else.

It sits in the store layer because runs.status() must tell a dead run from a live one, and the
store may not import exec (which starts and stops processes, and builds on this). Linux /proc
gives a process's start time; with the pid it names one process even after pid reuse. No
roofseg imports, no reaping of children: a zombie reads as dead.
"""
from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str | None:
    """Start time (clock ticks after boot) of a live, non-zombie process, else None. With the pid
    it names one process: a recycled pid has another start time."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
    return None if fields[0] == "Z" else fields[19]


def alive(pid, start: str | None = None, cmdline_has: str | None = None) -> bool:
    """True when pid is a live (not zombie) process that is the one meant: its start time equals
    `start` when that is known, else (when given) its command line contains `cmdline_has`.

    When /proc cannot tell (another user's process, no /proc at all), a process that exists
    counts as alive: wrongly calling a live run dead would fail it, a stale 'alive' only waits.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:  # 0 and negative pids name process groups in kill(), never one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if stat[0] == "Z":
            return False
        if start is not None:
            return stat[19] == str(start)
        if cmdline_has is not None:
            return cmdline_has in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:  # it ended since kill(); or this system has no /proc to ask
        return not Path("/proc/self").exists()
    except (OSError, IndexError):
        pass
    return True
