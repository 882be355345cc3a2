"""First paint: how long a new user waits for the app on a fresh server, and for a page after a click.

Set-up: the 64 px demo and an empty runs folder in a temporary directory; `streamlit run app.py`
started fresh (bench/browser_util.AppServer) --n times. For each: from the moment /_stcore/health
answers ok, open / in Chromium and poll the DOM every 20 ms until the first meaningful paint: the
app's navigation (the sidebar's page links) and the Data page's "Current dataset" heading are
both on screen. While polling, check that Streamlit's own pages-folder sidebar (the file names
app, common, compare, ...) never appears. Then, on the same server, click each sidebar link in turn
and time until that page's own text is on screen (a warm server, as a user clicking around).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import _common
from _common import med, parser, report

import browser_util as bu

from roofseg.data.demo import make_demo

NAME = "first_paint"
TARGETS = {"first_paint_s": 2.0, "click_s": 0.5}
# what each page shows once its content is there
READY = {"Train": "Train", "Runs": "Runs", "Compare": "Compare runs", "Predict": "Predict",
         "Sweeps": "Sweeps", "Data": "Current dataset"}


def first_paint(page, url: str, timeout: float = 60.0) -> tuple[float, bool]:
    """(seconds from now until nav + Data page are shown, whether a file-name sidebar was seen)."""
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    seen_files = False
    while time.perf_counter() - t0 < timeout:
        if page.locator(bu.STREAMLIT_NAV).count():
            seen_files = True
        if bu.nav_labels(page) and page.get_by_text("Current dataset").count():
            return time.perf_counter() - t0, seen_files
        page.wait_for_timeout(20)
    raise TimeoutError("the Data page never appeared")


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3, help="fresh servers started (one first paint each)")
    args = p.parse_args()
    if bu.chromium_missing():
        sys.exit(bu.chromium_missing())
    _common.machine()
    paints, health, clicks, files_seen = [], [], {k: [] for k in READY if k != "Data"}, 0
    with tempfile.TemporaryDirectory(prefix="roofseg-bench-paint-") as tmp:
        tmp = Path(tmp)
        data = make_demo(tmp / "demo64", n_images=12, n_labels=10, size=64, seed=0)
        for i in range(args.n):
            t_start = time.perf_counter()
            with bu.app_server(tmp / f"runs{i}", data, tmp / "data_root", tmp / f"server{i}.log") as server, \
                    bu.chromium() as (_, page):
                health.append(time.perf_counter() - t_start)
                s, seen = first_paint(page, server.url)
                paints.append(s)
                files_seen += seen
                print(f"server {i}: healthy after {health[-1]:.2f} s, first paint {s:.2f} s", flush=True)
                for title, text in READY.items():
                    if title == "Data":
                        continue
                    t = time.perf_counter()
                    page.locator(bu.NAV_LINKS, has_text=title).click()
                    page.get_by_role("heading", name=text, exact=True).first.wait_for(timeout=60_000)
                    clicks[title].append(time.perf_counter() - t)
                    print(f"  {title}: {clicks[title][-1]:.3f} s", flush=True)
    click_all = [x for xs in clicks.values() for x in xs]
    result = {"n": args.n, "targets": TARGETS, "health_s": health, "first_paint_s": paints,
              "file_name_sidebar_seen": files_seen, "click_s": clicks}
    lines = [f"Fresh `streamlit run app.py` ×{args.n} (64 px demo), Chromium headless:", "",
             "| figure | median | max | target |", "|---|---|---|---|",
             f"| server start -> /_stcore/health ok | {med(health):.2f} s | {max(health):.2f} s | — |",
             f"| health ok -> navigation + Data page painted | {med(paints):.2f} s | {max(paints):.2f} s | "
             f"≤ {TARGETS['first_paint_s']} s |",
             f"| sidebar click -> page content (all pages) | {med(click_all):.2f} s | {max(click_all):.2f} s | "
             f"≤ {TARGETS['click_s']} s |",
             *[f"| click -> {k} | {med(v):.2f} s | {max(v):.2f} s | |" for k, v in clicks.items()],
             "", f"- pages/ file-name sidebar seen during first paint: {files_seen} of {args.n} loads"]
    report(NAME, "First paint and page clicks", lines, result, args.out)


if __name__ == "__main__":
    main()
