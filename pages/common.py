"""What every page shares: where runs and data live, the current dataset, cached loaders.

Session-state keys used across pages:
- "dataset": path (str) of the dataset the user picked on the Data page (default: the demo);
- "train_prefill": a config dict the Runs page clones into the Train form;
- "selected_runs": run ids picked on the Runs page, opened by Compare.
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from roofseg.demo import ensure_demo

ROOT = Path(__file__).resolve().parent.parent


def runs_dir() -> Path:
    d = Path(os.environ.get("ROOFSEG_RUNS_DIR", ROOT / "runs"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def default_dataset() -> Path:
    """ROOFSEG_DATA if set, else the built-in demo (generated on first use into data/demo)."""
    if os.environ.get("ROOFSEG_DATA"):
        return Path(os.environ["ROOFSEG_DATA"])
    return ensure_demo(ROOT / "data" / "demo")


def current_dataset() -> Path:
    if "dataset" not in st.session_state:
        st.session_state["dataset"] = str(default_dataset())
    return Path(st.session_state["dataset"])


def mtime_key(path) -> float:
    """A cache key part that changes when a file or folder changes (st.cache_data on path+mtime)."""
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0.0


def show_error(e: Exception, what: str) -> None:
    """A clear message instead of a traceback: the user sees what failed and why."""
    st.error(f"{what}: {e}")


def data_root() -> Path:
    """Where downloaded and uploaded datasets go: ROOFSEG_DATA_ROOT (tests), else data/ in the repo."""
    return Path(os.environ.get("ROOFSEG_DATA_ROOT", ROOT / "data"))
