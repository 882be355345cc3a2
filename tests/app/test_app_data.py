"""The Data page, driven with Streamlit's AppTest on the 64 px demo (no browser, no network)."""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
from streamlit.proto.Block_pb2 import Block as BlockProto
from streamlit.testing.v1 import AppTest

from roofseg.data import fetch

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "data.py")


@pytest.fixture
def at(demo64, tmp_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("ROOFSEG_DATA", str(demo64))
    monkeypatch.setenv("ROOFSEG_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ROOFSEG_DATA_ROOT", str(tmp_path / "data_root"))
    return AppTest.from_file(PAGE, default_timeout=30).run()


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def captions(at) -> list[str]:
    return list(at.get("image")[0].captions) if at.get("image") else []


def open_tab(at) -> str:
    """The label of the source tab the page opens on (its tab container's default)."""
    def find(block):
        for child in getattr(block, "children", {}).values():
            proto = getattr(child, "proto", None)
            if isinstance(proto, BlockProto) and proto.HasField("tab_container"):
                labels = [t.label for t in child.children.values()]
                return labels[proto.tab_container.default_tab_index]
            found = find(child)
            if found:
                return found
        return None
    return find(at.main)


def in_use(at) -> str:
    return next(i.value for i in at.info if i.value.startswith("**In use:**"))


def use_folder(at, path) -> AppTest:
    at.text_input(key="data_folder").input(str(path)).run()
    return at.button(key="use_folder").click().run()


def test_renders_the_demo_with_counts_and_a_gallery(at, demo64):
    assert not at.exception
    assert at.session_state["dataset"] == str(demo64)
    # ROOFSEG_DATA is a folder: named above the tabs, which open on Folder, not on the demo's
    assert in_use(at) == f"**In use:** the folder `{demo64}`" and open_tab(at) == "Folder"
    m = metrics(at)
    assert (m["Images"], m["Labels"], m["Pairs"], m["Unlabeled"], m["Flagged"]) == ("12", "10", "10", "2", "0")
    assert len(captions(at)) == 12
    assert sum(c.endswith("· unlabeled") for c in captions(at)) == 2
    at.slider(key="data_alpha").set_value(0.9).run()  # a new opacity redraws without error
    assert not at.exception and len(captions(at)) == 12


def test_a_folder_with_a_duplicate_label_shows_it_flagged(at, demo_copy, tmp_path):
    labels = sorted((demo_copy / "labels").iterdir())
    shutil.copy(labels[0], labels[1])  # DIDA's 278.png-is-270.png problem
    use_folder(at, demo_copy)
    assert not at.exception and not at.error
    assert at.session_state["dataset"] == str(demo_copy.resolve())
    assert metrics(at)["Flagged"] == "1"
    table = at.dataframe[0].value
    assert table.iloc[0, 0] == labels[1].stem and "identical" in table.iloc[0, 1]
    assert f"{labels[1].stem} · flagged" in captions(at)
    at.button(key="use_demo").click().run()  # the built-in demo, not ROOFSEG_DATA's folder
    demo = tmp_path / "data_root" / "demo"
    assert not at.exception and at.session_state["dataset"] == str(demo)
    assert (demo / "images").is_dir() and metrics(at)["Flagged"] == "0"
    assert "built-in demo" in in_use(at) and open_tab(at) == "Built-in demo"


def test_a_bad_path_shows_an_error_and_keeps_the_dataset(at, demo64, tmp_path):
    use_folder(at, tmp_path / "nowhere")
    assert not at.exception
    assert "nowhere" in at.error[0].value and "not found" in at.error[0].value
    assert at.session_state["dataset"] == str(demo64)
    (tmp_path / "flat").mkdir()  # a folder without images/
    use_folder(at, tmp_path / "flat")
    assert "no images/ folder" in at.error[0].value and not at.exception


def test_an_unreadable_current_dataset_is_an_error_not_a_traceback(demo_copy, tmp_path, monkeypatch):
    (demo_copy / "images" / "999.png").write_bytes(b"")  # an empty image file
    monkeypatch.setenv("ROOFSEG_DATA", str(demo_copy))
    monkeypatch.setenv("ROOFSEG_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table.iloc[:, 0].str.endswith("999.png").any() and "empty file" in " ".join(table.iloc[:, 1])
    shutil.rmtree(demo_copy)  # the folder disappears while the app runs
    at.run()
    assert not at.exception and "not found" in at.error[0].value


def zip_of(root: Path, prefix: str = "roofs/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(root.rglob("*.png")):
            z.write(p, prefix + p.relative_to(root).as_posix())
    return buf.getvalue()


def test_a_zip_upload_is_unpacked_and_used_never_overwriting(at, demo64, tmp_path):
    at.file_uploader(key="data_zip").set_value(("My roofs.zip", zip_of(demo64), "application/zip")).run()
    at.button(key="unpack_zip").click().run()
    dest = tmp_path / "data_root" / "uploads" / "My-roofs"
    assert not at.exception and not at.error
    assert at.session_state["dataset"] == str(dest)
    assert len(list((dest / "images").iterdir())) == 12 and metrics(at)["Pairs"] == "10"
    assert "uploaded zip" in in_use(at) and str(dest) in in_use(at) and open_tab(at) == "Upload a zip"
    before = sorted(p.name for p in dest.rglob("*"))
    at.button(key="unpack_zip").click().run()  # the same name again
    assert "already exists" in at.error[0].value
    assert sorted(p.name for p in dest.rglob("*")) == before
    at.text_input(key="data_zip_name").input("second").run()
    at.button(key="unpack_zip").click().run()
    assert at.session_state["dataset"] == str(dest.parent / "second") and not at.error


def test_a_file_that_is_not_a_zip_is_refused(at, demo64, tmp_path):
    at.file_uploader(key="data_zip").set_value(("roofs.zip", b"not a zip", "application/zip")).run()
    at.button(key="unpack_zip").click().run()
    assert not at.exception and "is not a zip file" in at.error[0].value
    assert at.session_state["dataset"] == str(demo64)
    assert not (tmp_path / "data_root" / "uploads" / "roofs").exists()


def test_dida_download_offline_shows_the_fetch_error(at, demo64, monkeypatch):
    real = fetch.fetch_dida
    # a closed local port: the real download code fails the way it does on an offline machine
    monkeypatch.setattr(fetch, "fetch_dida", lambda dest: real(dest, url="http://127.0.0.1:9/dida.zip",
                                                               timeout=2))
    at.button(key="fetch_dida").click().run()
    assert not at.exception
    assert "Could not download the DIDA archive" in at.error[0].value
    assert at.session_state["dataset"] == str(demo64)


# ---------------------------------------------------------------------------------------------
# Labels to review (issue #13): a fake finished k-fold run whose out-of-fold probabilities are the
# true labels, softened; the dataset's label of one image then loses its largest roof
def fake_kfold_run(runs_dir: Path, dataset: Path, folds: int = 5, run_id: str = "20250101-000000-FPN-r18-aaaa") -> Path:
    import json

    import numpy as np
    from PIL import Image
    from scipy import ndimage

    from roofseg.data import dataset as data
    run_dir = runs_dir / run_id
    (run_dir / "predictions" / "val_prob").mkdir(parents=True)
    rows = []
    for i, (name, _, lp) in enumerate(data.find_pairs(dataset)[0]):
        p = 0.03 + 0.94 * ndimage.gaussian_filter(data.load_label(lp).astype(float), 1.0)
        Image.fromarray(np.round(p * 255).astype(np.uint8)).save(run_dir / "predictions" / "val_prob" / f"{name}.png")
        rows.append({"name": name, "fold": i % max(folds, 1), "dice": 0.9, "iou": 0.8})
    (run_dir / "config.json").write_text(json.dumps({"data": str(dataset), "folds": folds, "threshold": 0.5,
                                                     "name": f"{folds}-fold"}))
    (run_dir / "status.json").write_text(json.dumps({"state": "done"}))
    (run_dir / "summary.json").write_text(json.dumps({"excluded": {}, "val_dice": 0.9}))
    (run_dir / "per_image.json").write_text(json.dumps(rows))
    return run_dir


def erase_largest_roof(label_path: Path) -> None:
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    from roofseg.data import dataset as data
    m = data.load_label(label_path)
    comp, _ = ndimage.label(m)
    m[comp == np.argmax(np.bincount(comp.ravel())[1:]) + 1] = 0
    Image.fromarray(m * 255).save(label_path)


def test_labels_to_review_shows_the_ranking_and_the_flagged_label(demo_copy, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("ROOFSEG_DATA", str(demo_copy))
    monkeypatch.setenv("ROOFSEG_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("ROOFSEG_DATA_ROOT", str(tmp_path / "data_root"))
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert any("No finished k-fold run on this dataset" in i.value for i in at.info)
    fake_kfold_run(runs_dir, demo_copy, folds=0, run_id="20250101-000000-FPN-r18-hold")  # holdout: not offered
    run_dir = fake_kfold_run(runs_dir, demo_copy)
    erase_largest_roof(demo_copy / "labels" / "109.png")  # two roofs of ~420 px: one is left
    at.run()
    assert not at.exception and not at.error
    assert "Labels to review" in [h.value for h in at.subheader]
    box = at.selectbox(key="review_run")
    assert box.options == ["5-fold · 5 folds · val Dice 0.900"] and box.value == run_dir.name
    table = at.dataframe[-1].value
    assert table.iloc[0]["image"] == "109" and table.iloc[0]["flagged"] == "⚑"
    assert (table["flagged"] == "⚑").sum() == 1
    assert any(m.value.startswith("**1** of 10 labels flagged") for m in at.markdown)
    pictures = [c for img in at.get("image") for c in img.captions]
    shown = [c for c in pictures if c.startswith("109 · score")]
    assert len(shown) == 1 and "model finds 1 roof (" in shown[0] and "the label lacks" in shown[0]
    at.slider(key="review_alpha").set_value(0.3).run()
    assert not at.exception
    # one click: the next run on Train leaves the flagged label out (the file stays)
    at.button(key="review_exclude").click().run()
    assert at.session_state["train_prefill"]["exclude"] == "109"
    assert (demo_copy / "labels" / "109.png").exists()
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    (demo_copy / "labels" / "104.png").unlink()  # the dataset changes under the run: a message, no traceback
    at.run()
    assert not at.exception
    assert any(f"run {run_dir.name}" in e.value and "a finished k-fold run on this dataset" in e.value
               for e in at.error)
