"""End to end in a real browser: `streamlit run app.py` on a 127.0.0.1 port, driven by Playwright in
the system's Chromium, on the 64 px demo with real worker processes.

The tests share one server, one browser tab and one runs folder and build on each other, in file
order (a user's session): Data -> Train (a live run, then a cancelled one) -> Runs -> Compare ->
Predict. Screenshots go to test-artifacts/; with ROOFSEG_UPDATE_DOCS=1 the two used in README.md
are also written, shrunk, to docs/.

Run them with `pytest -m browser tests/test_browser.py`: about a minute on a busy 2-core machine.
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
from roofseg import data, runs

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
    return [t.split()[-1] for t in page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()]


def no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0, \
        page.locator("[data-testid='stException']").first.inner_text()


def nav(page, title: str, ready_text: str) -> None:
    """Click a sidebar link (the page changes without a reload, so session state stays)."""
    page.locator("[data-testid='stSidebarNav'] a", has_text=title).click()
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


# ---------------------------------------------------------------------------------------------
def test_a_deep_link_opens_the_app_before_anything_else(world):
    """Runs first, while the server has served nothing: what a bookmarked URL shows after a restart.
    With pages in a folder named pages/, Streamlit would run pages/train.py on its own (a v1
    multipage app listing every file of pages/); common.ensure_routed sends it through app.py."""
    page = world.page
    bu.open_page(page, world.server.url + "/train", "New run")
    expect(page.locator("[data-testid='stSidebarNav'] a").first).to_be_visible()
    assert app_pages(page) == PAGES + ["Sweeps"], app_pages(page)
    assert page.url.rstrip("/").endswith("/train"), page.url
    no_exception(page)


def test_the_data_page_opens_with_the_dataset_counts(world):
    page = world.page
    bu.open_page(page, world.server.url, "Current dataset")
    metrics = page.locator("[data-testid='stMetric']")
    expect(metrics.first).to_be_visible()
    got = dict(t.split("\n", 1) for t in metrics.all_inner_texts())
    assert {k: v.strip() for k, v in got.items() if k in ("Images", "Labels", "Pairs", "Unlabeled")} == \
        {"Images": "12", "Labels": "10", "Pairs": "10", "Unlabeled": "2"}, got
    expect(page.get_by_text("No problems found.")).to_be_visible()
    expect(page.locator("[data-testid='stImage'] img")).to_have_count(12)  # the gallery
    assert app_pages(page)[:5] == PAGES, app_pages(page)
    bu.shot(page, "data.png")
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
    assert not runs._alive(pid, d), "the worker still runs"
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
    page.wait_for_function("() => document.querySelectorAll('[data-testid=stDataFrame] table[role=grid]').length >= 2")
    diff = grid_text(page, 1)
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
    assert imgs.count() == 4 * min(n_val, 4), imgs.count()  # 4 images a page by default
    captions = " ".join(page.locator("[data-testid='stImageCaption']").all_inner_texts())
    assert "ground truth" in captions and "live · Dice" in captions and "dice · Dice" in captions, captions
    no_exception(page)
    # the whole main area in one picture: it scrolls inside the window, so make the window tall
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.mouse.move(0, 0)  # no hover toolbar over the chart
    page.wait_for_timeout(500)
    save_shot(page, "compare_overlays.png", page.locator("[data-testid='stMainBlockContainer']"))
    page.set_viewport_size({"width": 1400, "height": 1000})


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


def test_the_server_logged_no_traceback(world):
    log = world.server.log_text()
    assert "Traceback" not in log, log
