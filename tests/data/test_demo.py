"""Tests for roofseg.data.demo: the built-in synthetic dataset is DIDA-shaped, deterministic and safe."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from roofseg.data.demo import MARKER, ensure_demo, make_demo
from roofseg.data.scene import render_scene


def _digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pairs(folder):
    """(RGBA image, L label) arrays for every labelled stem."""
    for lab in sorted((folder / "labels").glob("*.png")):
        yield np.array(Image.open(folder / "images" / lab.name)), np.array(Image.open(lab))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # one default-sized generation shared by the read-only checks (keeps the file fast)
    return make_demo(tmp_path_factory.mktemp("demo") / "demo")


def test_layout_like_dida(demo):
    images = sorted((demo / "images").glob("*.png"))
    labels = sorted((demo / "labels").glob("*.png"))
    assert len(images) == 30 and len(labels) == 25
    # the labelled ones are the first 25 names; the last 5 are the unlabeled prediction set
    assert [p.name for p in labels] == [p.name for p in images[:25]]
    assert all(len(p.stem) == 3 and p.stem.isdigit() for p in images)
    for p in images:
        im = Image.open(p)
        assert im.mode == "RGBA" and im.size == (256, 256)
    for p in labels:
        im = Image.open(p)
        assert im.mode == "L" and im.size == (256, 256)
    note = (demo / MARKER).read_text()
    assert "roofseg.data.demo" in note and "seed: 0" in note


def test_labels_have_dida_roof_fractions_and_soft_edges(demo):
    for _, lab in _pairs(demo):
        assert 0.03 <= (lab >= 128).mean() <= 0.40
        assert ((lab > 0) & (lab < 255)).any()  # anti-aliased boundary, not strictly binary


def test_redactions_are_black_and_transparent(demo):
    redacted = 0
    for p in sorted((demo / "images").glob("*.png")):
        rgba = np.array(Image.open(p))
        hole = rgba[..., 3] == 0
        assert set(np.unique(rgba[..., 3])) <= {0, 255}
        assert (rgba[hole][:, :3] == 0).all()
        assert hole.mean() < 0.5  # never most of the image
        redacted += bool(hole.any())
    assert 10 <= redacted < 30  # most images, as in DIDA (24 of 30), but not all


def test_roofs_look_different_from_the_rest(demo):
    # the task must be learnable: roof pixels differ in colour from their surroundings
    for rgba, lab in _pairs(demo):
        seen = rgba[..., 3] > 0
        rgb = rgba[..., :3].astype(float)
        inside, outside = rgb[(lab >= 128) & seen].mean(0), rgb[(lab == 0) & seen].mean(0)
        assert np.linalg.norm(inside - outside) > 10


def test_same_seed_same_bytes_other_seed_differs(demo, tmp_path):
    again = make_demo(tmp_path / "again")
    assert _digests(again) == _digests(demo)
    a = make_demo(tmp_path / "a", n_images=3, n_labels=2, size=64, seed=1)
    b = make_demo(tmp_path / "b", n_images=3, n_labels=2, size=64, seed=2)
    da, db = _digests(a), _digests(b)
    assert all(da[k] != db[k] for k in da.keys() & db.keys() if k.endswith(".png"))


@pytest.mark.parametrize("size", [64, 96, 128])
def test_small_sizes(size):
    for i in range(4):
        rgba, mask = render_scene(np.random.default_rng([0, i]), size)
        assert rgba.shape == (size, size, 4) and rgba.dtype == np.uint8
        assert mask.shape == (size, size) and mask.dtype == np.uint8
        assert 0.03 <= (mask >= 128).mean() <= 0.40


def test_small_demo_folder(tmp_path):
    out = make_demo(tmp_path / "small", n_images=4, n_labels=3, size=64)
    assert len(list((out / "images").glob("*.png"))) == 4
    assert len(list((out / "labels").glob("*.png"))) == 3
    assert Image.open(next((out / "images").glob("*.png"))).size == (64, 64)


def test_refuses_foreign_folder_and_leaves_it_alone(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my data")
    with pytest.raises(FileExistsError, match="mine"):
        make_demo(mine, n_images=2, n_labels=1, size=64)
    assert (mine / "notes.txt").read_text() == "my data"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_existing_demo_needs_overwrite(tmp_path):
    out = make_demo(tmp_path / "demo", n_images=4, n_labels=3, size=64)
    with pytest.raises(FileExistsError):
        make_demo(out, n_images=2, n_labels=1, size=64)
    make_demo(out, n_images=2, n_labels=1, size=64, overwrite=True)
    # the earlier, larger demo leaves no stale files behind
    assert len(list((out / "images").glob("*.png"))) == 2
    assert len(list((out / "labels").glob("*.png"))) == 1


def test_ensure_demo_is_idempotent(tmp_path):
    out = ensure_demo(tmp_path / "nested" / "demo", n_images=3, n_labels=2, size=64)
    assert out == tmp_path / "nested" / "demo"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert ensure_demo(out, n_images=3, n_labels=2, size=64) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
