"""The real app in a real browser: start `streamlit run app.py` on a free 127.0.0.1 port and drive
it with Playwright in the system's Chromium (never a browser Playwright downloads).

Used by the `browser`-marked tests and by bench/live_latency.py, so it imports no pytest. Nothing
here reaches beyond 127.0.0.1.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots (git-ignored)
CHROMIUM = "/usr/bin/chromium"
# Chromium flags for a container without a GPU or network: no sandbox (root), no GPU process,
# none of the background fetches a fresh profile would try. Playwright adds --headless itself
# and launches with a fresh temporary profile (user-data dir) every time.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
SKIP_REASON = (f"browser tests need Chromium at {CHROMIUM} (Debian/Ubuntu: `apt-get install chromium`) "
               "and the playwright Python package (requirements.txt); Playwright's own browser "
               "download is never used")


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).exists():
        return SKIP_REASON
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return SKIP_REASON
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`streamlit run app.py` (or `script`) in a child process; `url`, `log` (its output) and `stop()`."""

    def __init__(self, runs_dir: Path, data: Path, data_root: Path, log: Path, extra_env=None,
                 script: str = "app.py"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runs_dir, self.log = Path(runs_dir), Path(log)
        env = dict(os.environ, ROOFSEG_RUNS_DIR=str(runs_dir), ROOFSEG_DATA=str(data),
                   ROOFSEG_DATA_ROOT=str(data_root), OMP_NUM_THREADS="1",  # workers inherit it
                   PYTHONUNBUFFERED="1", **(extra_env or {}))
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
                 "--server.port", str(self.port), "--server.address", "127.0.0.1",
                 "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Until /_stcore/health answers ok (a cold start on a busy machine takes several seconds)."""
        end = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.time() > end:
                raise TimeoutError(f"streamlit not healthy after {timeout:.0f} s:\n{self.log_text()}")
            time.sleep(0.3)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Cancel every queued or running run of its runs folder, then end the server's group."""
        cancel_active(self.runs_dir)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)


def cancel_active(runs_dir: Path) -> None:
    from roofseg.exec import control
    from roofseg.store import runs
    for d in runs.list_runs(runs_dir):
        if runs.status(d).get("state") in runs.ACTIVE:
            control.cancel(d, grace=2.0)


@contextlib.contextmanager
def app_server(runs_dir: Path, data: Path, data_root: Path, log: Path, extra_env=None, script="app.py"):
    server = AppServer(runs_dir, data, data_root, log, extra_env, script)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def chromium(viewport=(1400, 1000)):
    """(browser, page): the system Chromium, headless, a fresh profile; closed on exit."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]},
                                    accept_downloads=True)
            yield browser, page
        finally:
            browser.close()


def wait_app_idle(page, timeout: float = 60_000) -> None:
    """Until no script run is under way (best effort: Streamlit shows its 'Running…' status
    widget only a moment after a run starts; wait for the expected content as well)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


# app.py draws its navigation as page links in the sidebar (Streamlit's own sidebar navigation is
# turned off, so pages/'s file names are never listed)
NAV_LINKS = "[data-testid='stSidebar'] [data-testid='stPageLink'] a"
STREAMLIT_NAV = "[data-testid='stSidebarNav']"  # Streamlit's own list: must never appear
PAGE_FILES = ("app", "common", "compare", "data", "predict", "runs", "sweeps", "train")


def nav_labels(page) -> list[str]:
    """The sidebar's page links, icons left out (a Material icon renders as its name's text)."""
    return [t.split()[-1] for t in page.locator(NAV_LINKS).all_inner_texts()]


def open_page(page, url: str, ready_text: str, timeout: float = 60_000) -> None:
    """Load url and wait until ready_text is on the page."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout)
    page.get_by_text(ready_text).first.wait_for(timeout=timeout)


def shot(page, name: str, full_page: bool = False, element=None) -> Path:
    """A PNG in test-artifacts/: the window, or only `element` (a locator) when given."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    if element is not None:
        element.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=full_page)
    return path


def copy_to_docs(src: Path, name: str, max_bytes: int = 300_000, max_width: int = 1400) -> Path:
    """A README-sized PNG copy of a screenshot in docs/: at most max_width wide, and palette-
    reduced (octree: keeps the charts' colours) when the full-colour file is over max_bytes."""
    from PIL import Image
    dst = ROOT / "docs" / name
    dst.parent.mkdir(exist_ok=True)
    img = Image.open(src).convert("RGB")
    while True:
        if img.width > max_width:
            img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
        img.save(dst, optimize=True)
        for colours in (256, 128, 64):
            if dst.stat().st_size <= max_bytes:
                return dst
            img.quantize(colours, method=Image.Quantize.FASTOCTREE).save(dst, optimize=True)
        if dst.stat().st_size <= max_bytes:
            return dst
        max_width = img.width * 4 // 5  # still too big: smaller
