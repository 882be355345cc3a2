"""End to end in a real browser: `streamlit run app.py` on a 127.0.0.1 port, driven by Playwright in
the system's Chromium, on the 64 px demo with real worker processes.

The tests share one server, one browser tab and one runs folder and build on each other, in file
order (a user's session): Data -> Train (a live run, then a cancelled one) -> Runs -> Compare ->
Predict. Screenshots go to test-artifacts/; with ROOFSEG_UPDATE_DOCS=1 the two used in README.md
are also written, shrunk, to docs/.

Run them with `pytest -m browser tests/app/test_browser.py`: about a minute on a busy 2-core machine.
"""
from __future__ import annotations

import io
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import browser_util as bu
from roofseg.data import dataset as data
from roofseg.store import pids, runs

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(bu.chromium_missing() is not None, reason=bu.chromium_missing() or "")]

LIVE_EPOCHS = 10   # the live run: about 1 s an epoch here, so the curve grows for ~10 s
LONG_EPOCHS = 2000  # the run that is cancelled
T = 60_000          # ms: generous, the machine is shared and slow
RUN_T = 120_000     # ms: a tiny run from Start to done, worker start-up included
PROGRESS = "[data-testid='stProgress']"
PAGES = ["Data", "Train", "Runs", "Compare", "Predict"]  # app.py's first pages, in order


class World:
    """What the tests share: server, tab, folders, and the runs they made (name -> run id)."""

    def __init__(self, server, page, runs_dir: Path, data_dir: Path, downloads: Path):
        self.server, self.page, self.runs_dir, self.data, self.downloads = server, page, runs_dir, data_dir, downloads
        self.ids: dict[str, str] = {}

    def run_dir(self, name: str) -> Path:
        if name not in self.ids:
            pytest.skip(f"needs the run {name!r} an earlier test of this file makes")
        return self.runs_dir / self.ids[name]


@pytest.fixture(scope="module")
def world(demo64, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    runs_dir = tmp / "runs"
    with bu.app_server(runs_dir, demo64, tmp / "data_root", tmp / "server.log") as server, \
            bu.chromium(viewport=(1400, 1000)) as (_, page):
        page.set_default_timeout(T)
        yield World(server, page, runs_dir, demo64, tmp / "downloads")
    # app_server cancelled every queued or running run before stopping the server
    assert not [d.name for d in runs.list_runs(runs_dir) if runs.status(d)["state"] in runs.ACTIVE]


def expect(locator):
    from playwright.sync_api import expect as pw_expect
    return pw_expect(locator)


def app_pages(page) -> list[str]:
    """The sidebar's page links, icons left out."""
    return bu.nav_labels(page)


def no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, \
        page.locator("[data-testid='stException']").first.inner_text()


def nav(page, title: str, ready_text: str) -> None:
    """Click a sidebar link (the page changes without a reload, so session state stays)."""
    page.locator(bu.NAV_LINKS, has_text=title).click()
    page.get_by_text(ready_text, exact=False).first.wait_for(timeout=T)


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    expect(box).to_have_value(str(value))


def set_text(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")


def choose(page, container, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label` inside container. A rerun that lands while
    the list is open closes it, so open it again until the option can be clicked."""
    from playwright.sync_api import TimeoutError as PwTimeout
    box = container.get_by_role("combobox", name=label, exact=True)
    for _ in range(5):
        bu.wait_app_idle(page)
        box.click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=5_000)
            break
        except PwTimeout:
            page.keyboard.press("Escape")
    expect(box).to_have_value(option)


def grid_text(page, index: int = 0) -> str:
    """Text of a dataframe's cells. st.dataframe draws on a canvas; its accessible twin (a hidden
    <table role=grid>) holds the text of the rows it shows."""
    grid = page.locator("[data-testid='stDataFrame']").nth(index).locator("table[role='grid']")
    return grid.text_content() or ""


def started_run(world, name: str) -> Path:
    """The run folder the sidebar's 'Started <id>' message names."""
    msg = world.page.locator("[data-testid='stSidebar'] [data-testid='stAlertContentSuccess']",
                             has_text="Started")
    expect(msg).to_be_visible(timeout=T)
    run_id = msg.inner_text().split("Started", 1)[1].strip()
    d = runs.resolve(world.runs_dir, run_id)
    assert runs.read_json(d / "config.json")["name"] == name
    world.ids[name] = run_id
    return d


def start_run(world, name: str, epochs: int, loss: str | None = None) -> Path:
    page = world.page
    set_number(page, "Epochs", epochs)
    set_text(page, "Run name", name)
    if loss:
        choose(page, page.locator("[data-testid='stSidebar']"), "Loss", loss)
    bu.wait_app_idle(page)
    page.get_by_role("button", name="Start").click()
    return started_run(world, name)


def wait_finished(d: Path, timeout: float = RUN_T / 1000) -> str:
    """Poll status.json until the run is no longer queued or running; returns its state."""
    end = time.time() + timeout
    while runs.status(d)["state"] in runs.ACTIVE and time.time() < end:
        time.sleep(0.3)
    return runs.status(d)["state"]


def epoch_of(text: str) -> int | None:
    m = re.match(r"epoch (\d+)/(\d+)", text)
    return int(m.group(1)) if m else None


def save_shot(page, name: str, element=None) -> Path:
    path = bu.shot(page, name, element=element)
    if os.environ.get("ROOFSEG_UPDATE_DOCS") == "1":
        bu.copy_to_docs(path, name)
    return path


CHARTS = "[data-testid='stVegaLiteChart']"
X_TICKS = "g.role-axis[aria-label^='X-axis'] g.role-axis-label text"  # Vega's SVG: the x axis's labels


def x_ticks(chart) -> list[str]:
    """The tick labels of a chart's x axis (the charts render as SVG, so the texts are there), in
    numeric order: Vega reuses label elements when the axis changes, so the DOM's order is not."""
    texts = chart.locator(X_TICKS).all_text_contents()
    try:
        return sorted(texts, key=lambda t: float(t.replace("\u2212", "-")))  # Vega's minus sign
    except ValueError:
        return texts


def scroll_top(page) -> float:
    """How far the page is scrolled. Streamlit scrolls its main area ([data-testid=stMain]), not
    the window, so both count."""
    return page.evaluate("() => window.scrollY + (document.querySelector('[data-testid=stMain]')?.scrollTop || 0)")


def centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def until(fn, timeout: float = T / 1000, every: float = 0.1):
    """fn()'s first truthy value, polled; its last value after `timeout` seconds."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > end:
            return v
        time.sleep(every)


# ---------------------------------------------------------------------------------------------
def test_a_deep_link_opens_the_app_before_anything_else(world):
    """Runs first, while the server has served nothing: what a bookmarked URL shows after a restart.
    With pages in a folder named pages/, Streamlit would run pages/train.py on its own (a v1
    multipage app listing every file of pages/); common.ensure_routed sends it through app.py."""
    page = world.page
    bu.open_page(page, world.server.url + "/train", "New run")
    expect(page.locator(bu.NAV_LINKS).first).to_be_visible()
    assert app_pages(page) == PAGES + ["Sweeps"], app_pages(page)
    assert page.url.rstrip("/").endswith("/train"), page.url
    no_exception(page)


def test_first_load_of_a_fresh_server_shows_the_real_navigation(world, demo64, tmp_path):
    """A new user's first look: `/` on a server that has just become healthy. From the first paint
    to the Data page, the sidebar never lists pages/'s file names (Streamlit's pages-folder mode),
    only the app's own navigation, with Material icons (no emoji, which need a font)."""
    with bu.app_server(tmp_path / "runs", demo64, tmp_path / "data_root", tmp_path / "s.log") as server:
        page = world.page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url, wait_until="commit")
        seen_nav = []
        end = time.time() + T / 1000
        while time.time() < end:
            assert page.locator(bu.STREAMLIT_NAV).count() == 0, page.locator(bu.STREAMLIT_NAV).inner_text()
            labels = bu.nav_labels(page)
            assert not set(labels) & set(bu.PAGE_FILES), labels
            if labels:
                seen_nav.append(labels)
            # both on screen (the sidebar's links may land a frame after the page's heading)
            if labels and page.get_by_text("Current dataset").count():
                break
            time.sleep(0.05)
        assert page.get_by_text("Current dataset").count(), "the Data page never appeared"
        assert seen_nav and seen_nav[-1] == PAGES + ["Sweeps"], seen_nav[-1:]
        icons = page.locator(bu.NAV_LINKS).locator("[data-testid='stIconMaterial']")
        assert icons.count() == len(PAGES) + 1
        no_exception(page)
        page.close()


def test_the_data_page_opens_with_the_dataset_counts(world):
    page = world.page
    bu.open_page(page, world.server.url, "Current dataset")
    metrics = page.locator("[data-testid='stMetric']")
    expect(metrics.first).to_be_visible(timeout=T)  # after the report: seconds on a busy machine
    got = dict(t.split("\n", 1) for t in metrics.all_inner_texts())
    assert {k: v.strip() for k, v in got.items() if k in ("Images", "Labels", "Pairs", "Unlabeled")} == \
        {"Images": "12", "Labels": "10", "Pairs": "10", "Unlabeled": "2"}, got
    expect(page.get_by_text("No problems found.")).to_be_visible()
    expect(page.locator("[data-testid='stImage'] img")).to_have_count(12)  # the gallery
    assert app_pages(page)[:5] == PAGES, app_pages(page)
    bu.shot(page, "data.png")
    no_exception(page)


def test_the_data_page_names_the_folder_in_use_and_opens_on_its_tab(world):
    """Issue #14: with a folder in use (ROOFSEG_DATA here), the source tabs opened on "Built-in demo"
    and its "Use the built-in demo" button, read as "the demo is loaded". The page names the folder
    above the tabs and opens on the Folder tab."""
    page = world.page
    bu.open_page(page, world.server.url, "Current dataset")
    in_use = page.locator("[data-testid='stAlertContentInfo']", has_text="In use:")
    expect(in_use).to_be_visible()
    text = in_use.inner_text()
    assert f"the folder {world.data}" in " ".join(text.split()), text
    assert "built-in demo" not in text, text
    expect(page.get_by_role("tab", selected=True)).to_have_text("Folder")
    expect(page.get_by_role("button", name="Use this folder")).to_be_visible()
    expect(page.get_by_role("button", name="Use the built-in demo")).to_be_hidden()
    no_exception(page)


def test_the_curve_grows_live_until_the_run_finishes(world):
    page = world.page
    nav(page, "Train", "New run")
    page.evaluate("window.__roofseg_no_reload = true")  # gone if the page reloads
    d = start_run(world, "live", LIVE_EPOCHS)
    bar = page.locator(PROGRESS)
    points = page.locator("[data-testid='stVegaLiteChart']").first.locator("g.mark-symbol.role-mark path")
    seen: list[tuple[float, int, int]] = []  # (seconds, epoch in the bar, points in the loss chart)
    shot_taken = False
    t0, end = time.time(), time.time() + RUN_T / 1000
    while time.time() < end:
        texts = bar.all_inner_texts()
        if not texts and runs.status(d)["state"] == "done":
            break
        k = epoch_of(texts[0]) if texts else None
        if k is not None:
            n = points.count()
            seen.append((round(time.time() - t0, 1), k, n))
            if not shot_taken and LIVE_EPOCHS // 2 <= k < LIVE_EPOCHS and n >= 2 * k - 2:
                save_shot(page, "train_live.png")
                shot_taken = True
        page.wait_for_timeout(250)
    assert runs.status(d)["state"] == "done", (seen, (d / "log.txt").read_text())
    epochs = [k for _, k, _ in seen]
    assert epochs == sorted(epochs), seen  # never goes back
    # The bar moved through several epochs (here about one a second: ~10 fragment updates; a
    # fast machine trains the tiny model several times faster, hence only >= 2 demanded)
    assert len({k for k in epochs if k > 0}) >= 2, seen
    # the curve grew point by point (0 while vega redraws the chart: left out)
    counts = [n for _, _, n in seen if n]
    assert counts == sorted(counts) and len(set(counts)) >= 2, seen
    if os.environ.get("ROOFSEG_UPDATE_DOCS") == "1":
        assert shot_taken, f"no mid-run moment for docs/train_live.png: {seen}"
    assert page.evaluate("window.__roofseg_no_reload === true"), "the page reloaded"
    # finished: the live part empties and the run is listed with its metrics
    expect(page.get_by_text("No run is queued or running")).to_be_visible()
    expect(page.get_by_text("Recently finished")).to_be_visible()
    page.wait_for_function("() => document.querySelector('[data-testid=stDataFrame] table[role=grid]')")
    table = grid_text(page)
    assert d.name in table and "done" in table and "live" in table, table
    no_exception(page)


def test_a_long_run_is_cancelled_from_the_page(world):
    page = world.page
    d = start_run(world, "long", LONG_EPOCHS)
    # wait until it trains (an epoch done), so Cancel stops a worker in the middle of its work
    expect(page.locator(PROGRESS)).to_have_text(re.compile(rf"epoch [1-9]\d*/{LONG_EPOCHS}"), timeout=RUN_T)
    pid = runs.status(d)["pid"]
    assert runs.status(d)["state"] == "running"
    cancel = page.get_by_role("button", name="Cancel", exact=True)
    expect(cancel).to_have_count(1)  # the one active run's
    cancel.click()
    expect(page.get_by_text("No run is queued or running")).to_be_visible(timeout=T)
    expect(page.locator(PROGRESS)).to_have_count(0)
    st = runs.read_json(d / "status.json")
    assert st["state"] == "cancelled" and st["error"] == "cancelled by the user", st
    assert not pids.alive(pid, cmdline_has=d.name), "the worker still runs"
    page.wait_for_function(f"() => [...document.querySelectorAll('[data-testid=stDataFrame] table[role=grid]')]"
                           f".some(t => t.textContent.includes('{d.name}'))")
    table = grid_text(page)
    assert "cancelled" in table, table
    rows, _ = runs.read_metrics(d)
    assert 1 <= len(rows) < LONG_EPOCHS
    bu.shot(page, "train_cancelled.png")
    no_exception(page)


def test_two_runs_compared_show_curves_config_diff_and_overlays(world):
    page = world.page
    live = world.run_dir("live")
    other = start_run(world, "dice", 3, loss="dice")  # a second finished run, another loss
    assert wait_finished(other) == "done", (other / "log.txt").read_text()
    # the page follows: the run listed as finished (Streamlit keeps showing the old elements
    # until a rerun replaces them, so wait for the new run's id in the table, not for a caption)
    page.wait_for_function(f"() => [...document.querySelectorAll('[data-testid=stDataFrame] table[role=grid]')]"
                           f".some(t => t.textContent.includes('{other.name}'))", timeout=T)
    expect(page.get_by_text("No run is queued or running")).to_be_visible()

    nav(page, "Runs", "runs shown")
    expect(page.get_by_text("3 of 3 runs shown")).to_be_visible()
    page.wait_for_function("() => document.querySelector('[data-testid=stDataFrame] table[role=grid]')")
    # tick the two rows' boxes: the grid is a canvas; rows (and the header) are equally tall
    order = [r.text_content() for r in page.locator(
        "[data-testid='stDataFrame'] table[role='grid'] tbody tr").all()]
    canvas = page.locator("[data-testid='stDataFrame'] [data-testid='data-grid-canvas']")
    box = canvas.bounding_box()
    row_h = box["height"] / (len(order) + 1)
    caption = page.get_by_text(re.compile(r"runs shown · \d+ selected"))
    for n, rid in enumerate((live.name, other.name), start=1):
        i = next(i for i, t in enumerate(order) if rid in t)
        page.mouse.click(box["x"] + row_h / 2, box["y"] + row_h * (i + 1.5))
        expect(caption).to_contain_text(f"{n} selected", timeout=T)  # the rerun it caused is done
    assert live.name in caption.inner_text() and other.name in caption.inner_text()
    bu.shot(page, "runs_selected.png")
    page.get_by_role("button", name="Compare selected").click()

    page.get_by_role("heading", name="Compare runs").wait_for(timeout=T)
    expect(page.get_by_text("Validation images")).to_be_visible(timeout=T)
    # learning curves: one line per run, a point per epoch
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    expect(chart.locator("g.mark-symbol.role-mark path")).to_have_count(LIVE_EPOCHS + 3, timeout=T)
    # config differences: the loss and the epochs, and the names (listed last)
    # (the page's tables: final metrics, the paired comparison, then the config differences)
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stDataFrame] table[role=grid]')]"
                           ".some(t => t.textContent.includes('epochs') && t.textContent.includes('bce_dice'))")
    n_grids = page.locator("[data-testid='stDataFrame']").count()
    diff = next(t for t in (grid_text(page, i) for i in range(n_grids)) if "epochs" in t and "bce_dice" in t)
    for s in ("loss", "bce_dice", "dice", "epochs", str(LIVE_EPOCHS), "name", "live"):
        assert s in diff, diff
    # overlays: per shared validation image, image | ground truth | one overlay per run
    imgs = page.locator("[data-testid='stImage'] img")
    expect(imgs.first).to_be_visible(timeout=T)
    page.wait_for_function("() => { const i = [...document.querySelectorAll('[data-testid=stImage] img')];"
                           " return i.length >= 4 && i.every(x => x.complete && x.naturalWidth > 0); }",
                           timeout=T)
    expander = page.get_by_text(re.compile(r"Per-image table \(\d+ images\)")).inner_text()
    n_val = int(re.search(r"\((\d+) images", expander).group(1))
    # (the paired comparison's "most disagreement" overlays sit in an expander above)
    in_expanders = page.locator("[data-testid='stExpander'] [data-testid='stImage'] img").count()
    assert imgs.count() - in_expanders == 4 * min(n_val, 4), (imgs.count(), in_expanders)  # 4 images a page
    captions = " ".join(page.locator("[data-testid='stImageCaption']").all_inner_texts())
    assert "ground truth" in captions and "live · Dice" in captions and "dice · Dice" in captions, captions
    no_exception(page)
    # the whole main area in one picture: it scrolls inside the window, so make the window tall
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.mouse.move(0, 0)  # no hover toolbar over the chart
    page.wait_for_timeout(500)
    save_shot(page, "compare_overlays.png", page.locator("[data-testid='stMainBlockContainer']"))
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_the_mouse_wheel_over_the_learning_curves_scrolls_the_page(world):
    """Issue #14: a plain wheel over the learning curves zoomed them (epochs -160..260) instead of
    scrolling the page. Now the page scrolls and the axis stays; shift+wheel zooms and a
    double-click resets."""
    page = world.page
    world.run_dir("live"), world.run_dir("dice")  # the two runs on the Compare page
    expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
    chart = page.locator(CHARTS).first
    chart.locator(X_TICKS).first.wait_for(timeout=T)
    page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollTo(0, 0)")
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    ticks = x_ticks(chart)
    assert ticks and all(t.isdigit() for t in ticks), ticks  # whole epochs, none negative
    assert 1 <= int(ticks[0]) and int(ticks[-1]) <= LIVE_EPOCHS, ticks  # within the logged epochs
    top = scroll_top(page)
    page.mouse.move(*centre(chart))
    page.mouse.wheel(0, 600)
    page.wait_for_timeout(300)
    page.mouse.wheel(0, 600)
    assert until(lambda: scroll_top(page) > top + 500, timeout=5), (top, scroll_top(page))
    assert x_ticks(chart) == ticks, x_ticks(chart)
    # the explicit gesture still zooms, without scrolling the page; a double-click resets
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    top = scroll_top(page)
    page.mouse.move(*centre(chart))
    page.keyboard.down("Shift")
    page.mouse.wheel(0, -400)
    page.keyboard.up("Shift")
    assert until(lambda: x_ticks(chart) != ticks, timeout=5), "shift+wheel did not zoom"
    assert scroll_top(page) == top
    page.mouse.dblclick(*centre(chart))
    assert until(lambda: x_ticks(chart) == ticks, timeout=5), x_ticks(chart)
    no_exception(page)


def test_predict_downloads_the_masks_of_the_unlabeled_images(world):
    page = world.page
    live = world.run_dir("live")
    nav(page, "Predict", "Predict")
    main = page.locator("[data-testid='stMain']")
    choose(page, main, "Run", next(o for o in _run_options(page, main) if o.startswith("live ·")))
    # the page shows the old run's elements until the rerun replaces them: wait for the new one's
    expect(page.get_by_text(f"Predicted by {live.name}")).to_be_visible(timeout=T)
    expect(page.get_by_text("2 unlabeled image(s)")).to_be_visible(timeout=T)
    button = page.get_by_role("button", name=re.compile(r"Download 2 mask\(s\)"))
    expect(button).to_be_visible(timeout=T)
    expect(page.locator("[data-testid='stImage'] img")).to_have_count(6, timeout=T)  # 2 x 3 pictures
    bu.shot(page, "predict.png")
    with page.expect_download(timeout=T) as info:
        button.click()
    dl = info.value
    assert dl.suggested_filename == f"{live.name}_masks.zip"
    world.downloads.mkdir(exist_ok=True)
    path = world.downloads / dl.suggested_filename
    dl.save_as(path)
    _, unlabeled, _ = data.find_pairs(world.data)
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert sorted(z.namelist()) == sorted(f"{stem}.png" for stem, _ in unlabeled)
        for stem, img_path in unlabeled:
            mask = Image.open(io.BytesIO(z.read(f"{stem}.png")))
            assert mask.format == "PNG" and mask.mode == "L"
            with Image.open(img_path) as img:
                assert mask.size == img.size
            assert set(np.unique(np.asarray(mask))) <= {0, 255}
    no_exception(page)


def _run_options(page, main) -> list[str]:
    """The Run selectbox's options, read by opening it (and closing it again)."""
    main.get_by_role("combobox", name="Run", exact=True).click()
    page.get_by_role("option").first.wait_for(timeout=T)
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return options


def test_the_live_charts_count_whole_epochs_from_the_first_one(world):
    """Issue #14: while a run's first epoch was on screen, the live charts' x axis read "1.000000"."""
    import signal
    page = world.page
    nav(page, "Train", "New run")
    d = start_run(world, "ticks", LONG_EPOCHS)
    until(lambda: runs.read_metrics(d)[0], timeout=RUN_T / 1000, every=0.02)
    # Pause the worker's process group right after its first epoch so that the page shows exactly
    # one: a fast machine would otherwise be past it before the page's next refresh (1 s).
    pgid = os.getpgid(int(runs.status(d)["pid"]))
    assert pgid not in (os.getpgrp(), os.getpgid(world.server.proc.pid))  # the worker's own session
    os.killpg(pgid, signal.SIGSTOP)
    try:
        assert len(runs.read_metrics(d)[0]) == 1, "paused after its second epoch"
        charts = page.locator(CHARTS)
        expect(charts).to_have_count(2, timeout=T)  # loss, Dice / IoU
        expect(charts.first.locator("g.mark-symbol.role-mark path")).to_have_count(2, timeout=T)  # 2 losses
        ticks = until(lambda: [x_ticks(c) for c in charts.all()] if all(x_ticks(c) for c in charts.all())
                      else None, timeout=T / 1000)
        assert ticks, "no tick labels"
        assert not [t for axis in ticks for t in axis if "." in t], ticks
        assert ticks == [["1"], ["1"]], ticks
        no_exception(page)
    finally:
        os.killpg(pgid, signal.SIGCONT)
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.get_by_text("No run is queued or running")).to_be_visible(timeout=T)


def test_the_report_opens_offline_with_every_section(world):
    """The hand-over file: written for the two compared runs, opened from disk in Chromium with
    every network request refused; nothing is asked of any server, and each section is there."""
    from roofseg.report import write_report
    world.downloads.mkdir(parents=True, exist_ok=True)
    out = write_report([world.run_dir("live"), world.run_dir("dice")], world.downloads / "report.html")
    page = world.page.context.browser.new_page(viewport={"width": 1200, "height": 1000})
    asked = []

    def refuse(route):
        asked.append(route.request.url)
        route.abort()
    page.route(re.compile(r"^(?!file:|data:).*"), refuse)
    page.goto(out.as_uri(), wait_until="load")
    headings = page.locator("h2").all_inner_texts()
    assert headings[:9] == ["Runs", "Dataset check", "Recipe", "Curves", "Cross-validation",
                            "Paired comparison", "Out-of-fold predictions", "Unlabeled images",
                            "Environment"], headings
    assert page.locator("svg").count() >= 1 and page.locator("img").count() >= 4
    broken = page.evaluate("() => [...document.images].filter(i => !i.complete || !i.naturalWidth).length")
    assert broken == 0 and asked == [], asked
    save_shot(page, "report.png")
    page.close()


def test_the_server_logged_no_traceback(world):
    log = world.server.log_text()
    assert "Traceback" not in log, log
