"""Cache keys for the app: one fingerprint of files and folders, so a page's st.cache_data entry is
refreshed exactly when what it read changed.

A folder's own mtime changes only when entries are added or removed, not when a file inside is
rewritten in place (a run's summary.json, a re-exported label); so the key lists every file's
name, size and modification time (nanoseconds), one level down for folders. Reading stats costs
microseconds per file, where hashing image bytes on every rerun would cost the page its speed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fingerprint(*paths) -> str:
    """A short hex key over files and the files directly inside folders; missing paths count too."""
    h = hashlib.blake2b(digest_size=12)
    for p in paths:
        p = Path(p)
        h.update(str(p).encode())
        try:
            st = os.stat(p)
        except OSError:
            h.update(b"\0missing")
            continue
        if not p.is_dir():
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            continue
        try:
            entries = sorted(os.scandir(p), key=lambda e: e.name)
        except OSError:
            h.update(b"\0unreadable")
            continue
        for e in entries:
            try:
                s = e.stat()
            except OSError:
                continue
            h.update(f"{e.name}:{s.st_size}:{s.st_mtime_ns};".encode())
    return h.hexdigest()
