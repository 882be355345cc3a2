"""What every page shares: where runs and data live, the current dataset, cached loaders.

Session-state keys used across pages:
- "dataset": path (str) of the dataset the user picked on the Data page (default: the demo);
- "train_prefill": a config dict the Runs page clones into the Train form;
- "selected_runs": run ids picked on the Runs page, opened by Compare.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from roofseg.data.demo import ensure_demo

if TYPE_CHECKING:  # annotations only: altair loads where a chart is drawn
    import altair as alt

ROOT = Path(__file__).resolve().parent.parent


def runs_dir() -> Path:
    d = Path(os.environ.get("ROOFSEG_RUNS_DIR", ROOT / "runs"))
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. under a read-only parent: say so instead of a traceback
        st.error(f"The runs folder {d} cannot be created ({e.strerror or e}). "
                 "Point ROOFSEG_RUNS_DIR at a writable folder.")
        st.stop()
    return d


def demo_dir() -> Path:
    """Where the built-in demo lives: <data root>/demo (data/demo in the repo)."""
    return data_root() / "demo"


def demo_dataset() -> Path:
    """The built-in demo, generated on first use (a few seconds)."""
    return ensure_demo(demo_dir())


def default_dataset() -> Path:
    """ROOFSEG_DATA if set, else the built-in demo."""
    if os.environ.get("ROOFSEG_DATA"):
        return Path(os.environ["ROOFSEG_DATA"])
    return demo_dataset()


def current_dataset() -> Path:
    if "dataset" not in st.session_state:
        st.session_state["dataset"] = str(default_dataset())
    return Path(st.session_state["dataset"])


def show_error(e: Exception, what: str) -> None:
    """A clear message instead of a traceback: the user sees what failed and why."""
    st.error(f"{what}: {e}")


def data_root() -> Path:
    """Where downloaded and uploaded datasets go: ROOFSEG_DATA_ROOT (tests), else data/ in the repo."""
    return Path(os.environ.get("ROOFSEG_DATA_ROOT", ROOT / "data"))


GOTO = "roofseg_goto"  # session key: the page a deep link asked for, before app.py had run
_app_ran = False        # app.py has run its navigation in this process (see mark_app_ran)


def mark_app_ran() -> None:
    global _app_ran
    _app_ran = True


_preloading = None      # the thread that imports the other pages' modules (see preload)
# What the pages after the first one import, lightest first: charts, the results table, optuna for
# Sweeps, then torch, smp and timm for Train and Predict (seconds on a busy CPU)
PRELOAD = ("altair", "roofseg.store.results", "roofseg.store.compare", "roofseg.store.review", "scipy.stats",
           "optuna", "roofseg.sweep.study", "roofseg.sweep.report", "roofseg.model.weights",
           "roofseg.engine.predict", "roofseg.engine.train")


def preload() -> None:
    """Once per server process, import what the other pages need in a background thread, after the
    first page has been drawn.

    The Data page, drawn first, imports neither charts nor optuna nor torch, so the app opens
    without them; but a user's first click to Sweeps, Train or Predict would otherwise wait for
    those imports. Started here, they are usually done by the time anyone clicks (Python's import
    lock makes an early click wait for the thread rather than import twice).
    """
    global _preloading
    if _preloading is None:
        import importlib
        import threading

        def load():
            for name in PRELOAD:
                try:
                    importlib.import_module(name)
                except Exception:  # the page that needs it imports it again and shows the error
                    pass

        _preloading = threading.Thread(target=load, name="roofseg-preload", daemon=True)
        _preloading.start()


def ensure_routed(page_file: str) -> None:
    """Send a page that runs outside app.py's navigation through app.py first.

    The pages live in a folder named pages/, so until app.py has called st.navigation once in the
    server process, Streamlit runs a deep link (a bookmarked /train after a restart) as a v1
    multipage app: pages/train.py on its own, without the wide layout and with a sidebar listing
    every file in pages/. Then remember the page, switch to app.py, and app.py switches on to it.
    (AppTest turns that mode back on before every run; the pages it has already routed once through
    app.py are left alone, as in the server.)
    """
    from streamlit.runtime.pages_manager import PagesManager  # Streamlit's own flag for that mode
    if PagesManager.uses_pages_directory and not _app_ran:
        st.session_state[GOTO] = f"pages/{Path(page_file).name}"
        st.switch_page("app.py")


# Charts. The mouse wheel belongs to the page: a chart that zooms on a plain wheel stops the page
# from scrolling as soon as the pointer passes over it (issue #14). So zooming takes shift+wheel;
# dragging pans and a double-click resets (Vega-Lite's defaults for scale-bound selections).
ZOOM_GESTURE = "wheel![event.shiftKey]"


def zoomable(chart, encodings=("x",)):
    """chart with shift+wheel zoom and drag pan on the `encodings` axes (continuous ones only)."""
    import altair as alt  # here, not at the top: the Data page (the first one drawn) has no chart
    return chart.add_params(alt.selection_interval(bind="scales", encodings=list(encodings),
                                                   zoom=ZOOM_GESTURE))


def epoch_x(field: str, title: str, epochs) -> alt.X:
    """An x encoding for epochs (whole numbers, 1-based).

    Ticks are integers ("1", never "1.000000" while one epoch is logged) and the axis spans exactly
    the logged epochs (`epochs`, any iterable), not a "nice" range that reaches 0 or below; a few
    pixels of padding keep the first and last points whole (zoomable charts clip their marks).
    """
    import altair as alt  # (see zoomable)
    values = [float(e) for e in epochs]
    lo, hi = (min(values), max(values)) if values else (1.0, 1.0)
    # a single epoch has no extent: half an epoch each side keeps its one integer tick in the middle
    domain = [lo, hi] if hi > lo else [lo - 0.5, hi + 0.5]
    return alt.X(f"{field}:Q", title=title, axis=alt.Axis(format="d", tickMinStep=1),
                 scale=alt.Scale(domain=domain, nice=False, padding=8))


def report_button(run_dirs: list, key: str, label: str = "Download report") -> None:
    """A download button for the one-file HTML report of `run_dirs` (the first is the reference).
    The report is written only when the button is clicked (a deferred callable), so showing the
    page costs nothing; a run folder that cannot be read gives a report file that says why."""
    def html() -> str:
        from roofseg.report.html import render  # altair/vl-convert/jinja2: only when clicked
        from roofseg.store.runs import RunError
        try:
            return render(run_dirs)
        except (RunError, OSError, ValueError) as e:
            return f"<!doctype html><meta charset='utf-8'><title>roofseg report</title><p>No report: {e}</p>"
    names = "_".join(Path(d).name for d in run_dirs[:2]) + ("_etc" if len(run_dirs) > 2 else "")
    st.download_button(label, html, file_name=f"roofseg_report_{names}.html", mime="text/html",
                       on_click="ignore", key=key, disabled=not run_dirs, icon=":material/description:",
                       help="One self-contained HTML file (opens offline): dataset check, each run's "
                            "recipe and why, curves, CV table, paired comparison, out-of-fold and "
                            "unlabeled overlays, environment.")
