"""First paint: how long a new user waits for the app on a fresh server, and for a page after a click.

Set-up: the 64 px demo and an empty runs folder in a temporary directory; `streamlit run app.py`
started fresh (bench/browser_util.AppServer) --n times. For each: from the moment /_stcore/health
answers ok, open / in Chromium and poll the DOM every 20 ms until the first meaningful paint: the
app's navigation (the sidebar's page links) and the Data page's "Current dataset" heading are
both on screen. While polling, check that Streamlit's own pages-folder sidebar (the file names
app, common, compare, ...) never appears. Then, on the same server, click each sidebar link in turn
and time until that page's own text is on screen (a warm server, as a user clicking around).

Side by side, alternating with those servers, the same is timed for a **reference app**: a bare
Streamlit script with the same page config, the same six titles as sidebar page links and the same
headings, and nothing else (no roofseg import). Its figures are what Streamlit and Chromium cost on
this machine today; roofseg's own cost is the difference, and the ratio travels between machines.
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
# the reference app: Streamlit alone, with roofseg's navigation and headings but none of its work
REFERENCE_APP = """
import streamlit as st

st.set_page_config(page_title="reference", layout="wide")
HEADINGS = {HEADINGS!r}


def page(title):
    def show():
        (st.header if title == "Data" else st.title)(HEADINGS[title])
    show.__name__ = title.lower()
    return show


PAGES = [st.Page(page(t), title=t, default=t == "Data") for t in HEADINGS]
nav = st.navigation(PAGES, position="hidden")
with st.sidebar:
    for p in PAGES:
        st.page_link(p)
nav.run()
"""
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


def measure(server_ctx, label: str, i: int) -> tuple[float, float, bool, dict]:
    """(health s, first paint s, file-name sidebar seen, {page: click s}) on one fresh server."""
    t_start = time.perf_counter()
    clicks = {}
    with server_ctx as server, bu.chromium() as (_, page):
        health = time.perf_counter() - t_start
        s, seen = first_paint(page, server.url)
        print(f"{label} {i}: healthy after {health:.2f} s, first paint {s:.2f} s", flush=True)
        # two tours of the pages: the first starts the moment the Data page is painted (while
        # roofseg's background preload may still run), the second is a warm server
        for tour in ("first", "again"):
            for title, text in [*[kv for kv in READY.items() if kv[0] != "Data"], ("Data", READY["Data"])]:
                t = time.perf_counter()
                page.locator(bu.NAV_LINKS, has_text=title).click()
                page.get_by_role("heading", name=text, exact=title != "Data").first.wait_for(timeout=60_000)
                clicks[(tour, title)] = time.perf_counter() - t
                print(f"  {tour} {title}: {clicks[(tour, title)]:.3f} s", flush=True)
    return health, s, seen, clicks


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3, help="fresh servers started per app (one first paint each)")
    args = p.parse_args()
    if bu.chromium_missing():
        sys.exit(bu.chromium_missing())
    _common.machine()
    fig = {app: {"health": [], "paint": [], "clicks": {}} for app in ("reference", "roofseg")}
    files_seen = 0
    with tempfile.TemporaryDirectory(prefix="roofseg-bench-paint-") as tmp:
        tmp = Path(tmp)
        data = make_demo(tmp / "demo64", n_images=12, n_labels=10, size=64, seed=0)
        ref = tmp / "reference_app.py"
        ref.write_text(REFERENCE_APP.replace("{HEADINGS!r}", repr(READY)))
        for i in range(args.n):
            for app, script in (("reference", str(ref)), ("roofseg", "app.py")):
                ctx = bu.app_server(tmp / f"runs-{app}{i}", data, tmp / "data_root",
                                    tmp / f"server-{app}{i}.log", script=script)
                health, paint, seen, clicks = measure(ctx, app, i)
                f = fig[app]
                f["health"].append(health)
                f["paint"].append(paint)
                for k, v in clicks.items():
                    f["clicks"].setdefault(k, []).append(v)
                if app == "roofseg":
                    files_seen += seen
    r, b = fig["roofseg"], fig["reference"]

    def tour(f, which):
        return [x for (t, _), xs in f["clicks"].items() if t == which for x in xs]

    def row(name, xs, ys, target=""):
        return (f"| {name} | {med(xs):.2f} s (max {max(xs):.2f}) | {med(ys):.2f} s (max {max(ys):.2f}) | "
                f"{med(xs) / med(ys):.2f} | {target} |")
    result = {"n": args.n, "targets": TARGETS, "file_name_sidebar_seen": files_seen,
              **{app: {"health_s": f["health"], "first_paint_s": f["paint"],
                       "click_s": {f"{t} {k}": v for (t, k), v in f["clicks"].items()}}
                 for app, f in fig.items()}}
    lines = [f"Fresh `streamlit run` ×{args.n} per app, alternating (64 px demo), Chromium headless. "
             "Reference: a bare Streamlit script with the same navigation and headings. Each page "
             "is clicked twice: a first tour the moment the Data page is painted, then again.", "",
             "| figure | roofseg, median | reference, median | ratio | target (roofseg) |",
             "|---|---|---|---|---|",
             row("server start -> /_stcore/health ok", r["health"], b["health"]),
             row("health ok -> navigation + Data page painted", r["paint"], b["paint"],
                 f"≤ {TARGETS['first_paint_s']} s"),
             row("click -> page content, first tour (all pages)", tour(r, "first"), tour(b, "first"),
                 f"≤ {TARGETS['click_s']} s"),
             row("click -> page content, again (all pages)", tour(r, "again"), tour(b, "again"),
                 f"≤ {TARGETS['click_s']} s"),
             *[row(f"{t} click -> {k}", r["clicks"][(t, k)], b["clicks"][(t, k)]) for t, k in r["clicks"]],
             "", f"- pages/ file-name sidebar seen during roofseg's first paint: {files_seen} of {args.n} loads",
             f"- roofseg's own cost over the reference, first paint: {med(r['paint']) - med(b['paint']):+.2f} s; "
             f"a click, first tour: {med(tour(r, 'first')) - med(tour(b, 'first')):+.2f} s; "
             f"again: {med(tour(r, 'again')) - med(tour(b, 'again')):+.2f} s"]
    report(NAME, "First paint and page clicks", lines, result, args.out)


if __name__ == "__main__":
    main()
