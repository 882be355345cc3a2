"""Checkpoint files (best.pt, best_fold<k>.pt): weights with the run's config inside, written atomically.

Where they are in a run folder is the store's business (store.runs.checkpoint_paths); reading and
writing them needs torch, so it lives here.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from roofseg.store.runs import RunError


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
