"""AppTest of the Predict page: predict the demo's unlabeled images (and an upload) with a
finished run and check the downloads.

AppTest keeps a download button's bytes in the in-memory media store of the run; the tests
record that store (wrapping the MemoryMediaFileStorage class AppTest instantiates) and read the
zip behind the button's URL, i.e. exactly what the browser would download.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest
import streamlit.testing.v1.app_test as app_test_module

from roofseg.data import dataset as data
from roofseg.engine import predict

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "predict.py")


@pytest.fixture
def media(monkeypatch) -> list[MemoryMediaFileStorage]:
    stores = []

    class Recording(MemoryMediaFileStorage):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            stores.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", Recording)
    return stores


@pytest.fixture
def page(finished_runs, demo64, monkeypatch, media) -> AppTest:
    monkeypatch.setenv("ROOFSEG_RUNS_DIR", str(finished_runs))
    monkeypatch.setenv("ROOFSEG_DATA", str(demo64))
    return AppTest.from_file(PAGE, default_timeout=60)


def download(at: AppTest, media, key: str) -> zipfile.ZipFile:
    url = at.download_button(key=key).proto.url
    return zipfile.ZipFile(io.BytesIO(media[-1].get_file(url.rsplit("/", 1)[-1]).content))


def pngs(z: zipfile.ZipFile) -> dict[str, np.ndarray]:
    return {n: np.asarray(Image.open(io.BytesIO(z.read(n)))) for n in z.namelist()}


def test_predicts_unlabeled_images_and_zips_masks(page, media, demo64):
    at = page.run()
    assert not at.exception, at.exception
    run_id = at.selectbox(key="predict_run").value  # the newest finished run, by default
    assert any(c.value.startswith(f"Predicted by {run_id}") for c in at.caption), at.caption
    _, unlabeled, _ = data.find_pairs(demo64)
    sizes = {f"{s}.png": Image.open(p).size[::-1] for s, p in unlabeled}
    masks = pngs(download(at, media, "predict_dl_masks"))
    assert set(masks) == set(sizes) and len(sizes) == 2  # stem.png for each unlabeled input
    for name, m in masks.items():
        assert m.shape == sizes[name] and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 255}
    probs = pngs(download(at, media, "predict_dl_probs"))
    assert set(probs) == set(sizes) and all(p.shape == sizes[n] for n, p in probs.items())
    # masks are the probability maps at the run's threshold (0.5; the PNGs round to 1/255)
    for n in masks:
        sure = np.abs(probs[n].astype(int) - 127.5) > 1
        assert np.array_equal(masks[n][sure] == 255, probs[n][sure] > 127.5)
    assert len(at.get("image")) == 3 * len(sizes)  # image | overlay | probability, per input
    # a lower threshold marks at least as many pixels as roof
    before = sum(int((m == 255).sum()) for m in masks.values())
    at.slider(key=next(s.key for s in at.slider if s.key.startswith("predict_thr_"))).set_value(0.05).run()
    assert not at.exception, at.exception
    after = sum(int((m == 255).sum()) for m in pngs(download(at, media, "predict_dl_masks")).values())
    assert after >= before


def test_the_runs_own_predictions_are_reused_and_sliders_never_recompute(page, monkeypatch):
    """Opening Predict on the run's own unlabeled images loads no model (the run folder holds their
    probabilities); the threshold slider only redraws; asking for TTA computes, once."""
    loads = []
    real = predict.load_model
    monkeypatch.setattr(predict, "load_model", lambda *a, **k: (loads.append(a[0]), real(*a, **k))[1])
    at = page.run()
    assert not at.exception, at.exception
    assert any("2 of 2 read from the run folder (no model loaded" in c.value for c in at.caption), at.caption
    at.slider(key=next(s.key for s in at.slider if s.key.startswith("predict_thr_"))).set_value(0.3).run()
    at.slider(key="predict_alpha").set_value(0.8).run()
    assert loads == []
    at.checkbox(key=next(c.key for c in at.checkbox if c.key.startswith("predict_tta_"))).check().run()
    assert not at.exception, at.exception
    assert len(loads) == 1 and any(c.value.endswith("with TTA") for c in at.caption)  # holdout: 1 model
    at.slider(key="predict_alpha").set_value(0.2).run()
    assert len(loads) == 1


def test_uploads_keep_their_names_and_sizes(page, media):
    at = page.run()
    at.radio(key="predict_source").set_value("Upload images").run()
    assert not at.exception and at.info  # asks for files
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(buf, "JPEG")
    at.file_uploader(key="predict_uploads").set_value([("tile 7.jpg", buf.getvalue(), "image/jpeg")]).run()
    assert not at.exception, at.exception
    masks = pngs(download(at, media, "predict_dl_masks"))
    assert list(masks) == ["tile 7.png"] and masks["tile 7.png"].shape == (45, 70)
    assert set(np.unique(masks["tile 7.png"])) <= {0, 255}


def test_a_bad_upload_is_reported(page):
    at = page.run()
    at.radio(key="predict_source").set_value("Upload images").run()
    at.file_uploader(key="predict_uploads").set_value([("broken.png", b"not a png", "image/png")]).run()
    assert not at.exception
    assert "broken.png" in at.error[0].value and "not a readable image" in at.error[0].value


def test_decode_uploads_and_zip_masks():
    """The library side of the page: uploads decode like dataset files; zips are named stem.png."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(buf, "PNG")
    imgs = predict.decode_uploads({"a.png": buf.getvalue()})
    assert list(imgs) == ["a"] and imgs["a"].shape == (5, 7, 4)
    with pytest.raises(data.DataError, match="share the name"):
        predict.decode_uploads({"a.png": buf.getvalue(), "a.jpg": buf.getvalue()})
    z = zipfile.ZipFile(io.BytesIO(predict.zip_masks({"a": np.array([[0.2, 0.7]], np.float32)}, 0.5)))
    assert z.namelist() == ["a.png"]
    assert np.asarray(Image.open(io.BytesIO(z.read("a.png")))).tolist() == [[0, 255]]
