"""Tests for roofseg.data.dataset: pairing files, flagging bad pairs, decoding every format, splits,
the Data page's gallery."""
import shutil

import numpy as np
import pytest
from PIL import Image

from roofseg.data import dataset as data
from roofseg.data import overlay
from roofseg.data.dataset import DataError


def save(path, a, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, mode).save(path, **kw) if mode else Image.fromarray(a).save(path, **kw)
    return path


def rgb(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def mask(h=8, w=8):
    m = np.zeros((h, w), np.uint8)
    m[: h // 2] = 255
    return m


def stems(demo):
    return sorted(p.stem for p in (demo / "labels").iterdir())


# ---------------------------------------------------------------------------------------------
# finding pairs
def test_find_pairs_unmatched_label_and_unlabeled_image(tmp_path):
    for s in ("a", "b", "c"):
        save(tmp_path / "images" / f"{s}.png", rgb(seed=ord(s)))
    for s in ("a", "b", "zz"):
        save(tmp_path / "labels" / f"{s}.png", mask())
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / ".hidden.png").write_bytes(b"")  # editors' and OS junk is ignored
    pairs, unlabeled, orphans = data.find_pairs(tmp_path)
    assert [(s, i.name, l.name) for s, i, l in pairs] == [("a", "a.png", "a.png"), ("b", "b.png", "b.png")]
    assert [(s, p.name) for s, p in unlabeled] == [("c", "c.png")]
    assert [p.name for p in orphans] == ["zz.png"]
    rep = data.check_dataset(tmp_path)
    assert (rep.n_images, rep.n_labels, rep.n_pairs) == (3, 3, 2)
    assert rep.unlabeled == ["c"] and rep.orphan_labels == ["zz.png"]
    assert any("label without image: zz.png" in line for line in rep.lines())


def test_find_pairs_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere: dataset folder not found"):
        data.find_pairs(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no images/ folder"):
        data.find_pairs(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no image files"):
        data.find_pairs(tmp_path)
    save(tmp_path / "images" / "a.png", rgb())
    save(tmp_path / "images" / "a.jpg", rgb())
    with pytest.raises(DataError, match="two files share the stem 'a'"):
        data.find_pairs(tmp_path)


# ---------------------------------------------------------------------------------------------
# the gallery (Data page)
def test_gallery_shrinks_overlays_and_captions(tmp_path):
    save(tmp_path / "images" / "big.png", rgb(40, 20))
    save(tmp_path / "labels" / "big.png", mask(40, 20))                  # roof: the top half
    save(tmp_path / "images" / "small.png", rgb(8, 8, seed=1))
    save(tmp_path / "labels" / "small.png", mask(8, 8))
    save(tmp_path / "images" / "nolabel.png", rgb(8, 8, seed=2))
    save(tmp_path / "images" / "wrongsize.png", rgb(8, 8, seed=3))
    save(tmp_path / "labels" / "wrongsize.png", mask(4, 4))              # another size: not usable
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")       # left out: the report says it
    items = data.gallery(tmp_path, max_items=10, size=10, alpha=1.0, flagged={"small"})
    assert [n for n, _, _ in items] == ["big", "nolabel", "small", "wrongsize"]
    pics, captions = {n: p for n, p, _ in items}, [c for _, _, c in items]
    assert captions == ["big", "nolabel · unlabeled", "small · flagged", "wrongsize · no usable label"]
    big = pics["big"]
    assert big.shape == (10, 5, 3) and big.dtype == np.uint8               # longer side 10, aspect kept
    assert (big[:4] == overlay.MASK_COLOR).all() and not (big[6:] == overlay.MASK_COLOR).all(axis=2).any()
    assert pics["small"].shape == (8, 8, 3)                                 # never enlarged
    assert (pics["nolabel"] == rgb(8, 8, seed=2)).all()                     # no mask: the image as is
    assert len(data.gallery(tmp_path, max_items=2)) == 2


def test_gallery_of_a_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        data.gallery(tmp_path / "nowhere")
    assert data.cache_paths(tmp_path) == [tmp_path / "images", tmp_path / "labels"]


# ---------------------------------------------------------------------------------------------
# checking: duplicate labels (DIDA's labels/278.png is a copy of labels/270.png)
def make_duplicate(demo):
    first, _, later = stems(demo)[:3]
    shutil.copyfile(demo / "labels" / f"{first}.png", demo / "labels" / f"{later}.png")
    return first, later


def test_demo_has_nothing_flagged(demo64):
    rep = data.check_dataset(demo64)
    assert rep.ok and rep.flagged == {} and rep.unreadable == {}
    assert (rep.n_images, rep.n_labels, rep.n_pairs, len(rep.unlabeled)) == (12, 10, 10, 2)
    assert rep.sizes == {"64x64": 12} and 0.02 < rep.roof_fraction < 0.6


def test_duplicate_label_flags_the_later_stem(demo_copy):
    first, later = make_duplicate(demo_copy)
    rep = data.check_dataset(demo_copy)
    assert list(rep.flagged) == [later]
    assert first in rep.flagged[later] and "identical" in rep.flagged[later]
    assert rep.ok  # the other pairs are still usable
    assert any(line.startswith(f"flagged {later}:") for line in rep.lines())


def test_load_dataset_excludes_flagged_by_default_and_says_so(demo_copy):
    first, later = make_duplicate(demo_copy)
    d = data.load_dataset(demo_copy)
    assert later not in d.names and first in d.names and len(d.names) == 9
    assert list(d.excluded) == [later]
    assert any(n.startswith(f"excluded {later}:") for n in d.notes)
    assert d.images.shape == (9, 64, 64, 4) and d.masks.shape == (9, 64, 64)
    kept = data.load_dataset(demo_copy, exclude_flagged=False)
    assert later in kept.names and len(kept.names) == 10 and kept.excluded == {}
    i, j = kept.names.index(first), kept.names.index(later)
    np.testing.assert_array_equal(kept.masks[i], kept.masks[j])


def test_label_of_another_size_is_flagged_even_when_flags_are_kept(demo_copy):
    s = stems(demo_copy)[0]
    save(demo_copy / "labels" / f"{s}.png", mask(32, 32))
    rep = data.check_dataset(demo_copy)
    assert "differs" in rep.flagged[s]
    assert s not in data.load_dataset(demo_copy, exclude_flagged=False).names


def test_grey_photo_as_label_is_flagged(demo_copy):
    s = stems(demo_copy)[1]
    save(demo_copy / "labels" / f"{s}.png", np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))
    assert "not a mask" in data.check_dataset(demo_copy).flagged[s]


# ---------------------------------------------------------------------------------------------
# decoding labels
def test_label_0_255_with_antialiased_edges_binarises_at_128(tmp_path):
    a = np.array([[0, 1, 127, 128, 200, 255]], np.uint8)
    out = data.load_label(save(tmp_path / "l.png", a, "L"))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 0, 1, 1, 1]])


def test_label_0_1(tmp_path):
    a = np.array([[0, 1, 1, 0]], np.uint8)
    np.testing.assert_array_equal(data.load_label(save(tmp_path / "l.png", a, "L")), a)


def test_label_all_background(tmp_path):
    out = data.load_label(save(tmp_path / "l.png", np.zeros((4, 4), np.uint8), "L"))
    assert out.sum() == 0 and out.shape == (4, 4)


def test_label_rgb_and_rgba(tmp_path):
    a = np.zeros((2, 3, 3), np.uint8)
    a[0, 0] = (255, 0, 0)      # red roof
    a[0, 1] = (255, 255, 255)  # white roof
    a[1, 2] = (100, 100, 100)  # dark grey: background
    np.testing.assert_array_equal(data.load_label(save(tmp_path / "rgb.png", a)), [[1, 1, 0], [0, 0, 0]])
    rgba = np.concatenate([a, np.full((2, 3, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(data.load_label(save(tmp_path / "rgba.png", rgba, "RGBA")),
                                  [[1, 1, 0], [0, 0, 0]])


def test_label_bilevel_and_16bit(tmp_path):
    b = Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1")
    b.save(tmp_path / "b.png")
    np.testing.assert_array_equal(data.load_label(tmp_path / "b.png"), [[0, 1, 0]])
    Image.fromarray(np.array([[0, 65535, 30000]], np.uint16)).save(tmp_path / "w.png")
    np.testing.assert_array_equal(data.load_label(tmp_path / "w.png"), [[0, 1, 0]])


# ---------------------------------------------------------------------------------------------
# decoding images
def test_images_of_every_mode_load_as_rgba(tmp_path):
    yy, xx = np.mgrid[0:16, 0:24]
    x = np.stack([yy * 15, xx * 10, 255 - yy * 10], axis=2).astype(np.uint8)  # smooth: JPEG keeps it
    alpha = np.full((16, 24, 1), 255, np.uint8)
    alpha[:4] = 0
    cases = {
        "rgba.png": (save(tmp_path / "rgba.png", np.concatenate([x, alpha], 2), "RGBA"), alpha[..., 0]),
        "rgb.png": (save(tmp_path / "rgb.png", x), 255),
        "grey.png": (save(tmp_path / "grey.png", x[..., 0], "L"), 255),
        "photo.jpg": (save(tmp_path / "photo.jpg", x, quality=95), 255),
        "photo.tif": (save(tmp_path / "photo.tif", x), 255),
    }
    for name, (path, want_alpha) in cases.items():
        a = data.load_image(path)
        assert a.shape == (16, 24, 4) and a.dtype == np.uint8, name
        np.testing.assert_array_equal(a[..., 3], np.broadcast_to(want_alpha, (16, 24)), err_msg=name)
    np.testing.assert_array_equal(data.load_image(cases["rgb.png"][0])[..., :3], x)
    grey = data.load_image(cases["grey.png"][0])
    np.testing.assert_array_equal(grey[..., 0], x[..., 0])
    np.testing.assert_array_equal(grey[..., 2], x[..., 0])
    assert np.abs(data.load_image(cases["photo.jpg"][0])[..., :3].astype(int) - x).mean() < 8


def test_16bit_grey_image_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).save(tmp_path / "w.png")
    a = data.load_image(tmp_path / "w.png")
    assert a.shape == (1, 3, 4)
    assert list(a[0, :, 0]) == [0, 127, 255]


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a PNG\n"],
                         ids=["zero-bytes", "text-named-png"])
@pytest.mark.parametrize("loader", [data.load_image, data.load_label])
def test_broken_file_gives_data_error_naming_it(tmp_path, content, loader):
    p = tmp_path / "broken.png"
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        loader(p)
    assert str(p) in str(e.value)


def test_broken_files_are_reported_and_left_out(demo_copy):
    names = stems(demo_copy)
    (demo_copy / "images" / f"{names[0]}.png").write_bytes(b"")       # a labelled image
    (demo_copy / "labels" / f"{names[1]}.png").write_text("oops")      # a label
    unl = sorted(p.stem for p in (demo_copy / "images").iterdir() if p.stem not in names)
    (demo_copy / "images" / f"{unl[0]}.png").write_bytes(b"")         # an unlabeled image
    rep = data.check_dataset(demo_copy)
    assert not rep.ok and len(rep.unreadable) == 3
    assert rep.flagged[names[0]] == "image unreadable" and rep.flagged[names[1]] == "label unreadable"
    assert any("empty file (0 bytes)" in why for why in rep.unreadable.values())
    d = data.load_dataset(demo_copy, exclude_flagged=False)
    assert len(d.names) == 8 and names[0] not in d.names and names[1] not in d.names
    assert d.test_names == unl[1:]


def test_load_dataset_resizes_odd_sizes_and_remembers_them(demo_copy):
    s = stems(demo_copy)[0]
    img = Image.open(demo_copy / "images" / f"{s}.png")
    img.resize((70, 50)).save(demo_copy / "images" / f"{s}.png")
    Image.open(demo_copy / "labels" / f"{s}.png").resize((70, 50), Image.NEAREST).save(
        demo_copy / "labels" / f"{s}.png")
    d = data.load_dataset(demo_copy)
    assert d.images.shape[1:3] == (64, 64)  # the most common size
    assert d.orig_sizes[s] == (50, 70) and d.orig_sizes[stems(demo_copy)[1]] == (64, 64)
    assert any("resized 1 image" in n for n in d.notes)
    assert set(np.unique(d.masks)) <= {0, 1}
    small = data.load_dataset(demo_copy, image_size=32)
    assert small.images.shape[1:3] == (32, 32) and small.test_images.shape[1:3] == (32, 32)


def test_load_dataset_arrays(demo64):
    d = data.load_dataset(demo64)
    assert d.images.shape == (10, 64, 64, 4) and d.images.dtype == np.uint8
    assert d.masks.shape == (10, 64, 64) and set(np.unique(d.masks)) == {0, 1}
    assert d.test_images.shape == (2, 64, 64, 4) and len(d.test_names) == 2
    assert d.names == stems(demo64) and not set(d.names) & set(d.test_names)


# ---------------------------------------------------------------------------------------------
# splits
@pytest.mark.parametrize("n, frac, n_val", [(10, 0.2, 2), (2, 0.2, 1), (10, 0.95, 9), (25, 0.3, 8)])
def test_holdout_split(n, frac, n_val):
    tr, va = data.holdout_split(n, frac, seed=3)
    assert len(va) == n_val and len(tr) == n - n_val
    assert not set(tr) & set(va) and sorted([*tr, *va]) == list(range(n))
    tr2, va2 = data.holdout_split(n, frac, seed=3)
    assert list(va) == list(va2) and list(tr) == list(tr2)


def test_holdout_split_depends_on_seed_and_needs_two():
    assert any(list(data.holdout_split(20, 0.25, 0)[1]) != list(data.holdout_split(20, 0.25, s)[1])
               for s in range(1, 4))
    with pytest.raises(DataError, match="at least 2"):
        data.holdout_split(1, 0.2, 0)


@pytest.mark.parametrize("n, k", [(10, 3), (10, 10), (24, 5), (2, 2)])
def test_kfold_splits(n, k):
    folds = data.kfold_splits(n, k, seed=1)
    assert len(folds) == k
    vals = np.concatenate([va for _, va in folds])
    assert sorted(vals) == list(range(n))  # every index validated exactly once
    for tr, va in folds:
        assert not set(tr) & set(va) and sorted([*tr, *va]) == list(range(n))
    sizes = [len(va) for _, va in folds]
    assert max(sizes) - min(sizes) <= 1
    again = data.kfold_splits(n, k, seed=1)
    assert all(list(a[1]) == list(b[1]) for a, b in zip(folds, again))


def test_kfold_more_folds_than_pairs():
    with pytest.raises(DataError, match="folds=11 is more than the 10"):
        data.kfold_splits(10, 11, 0)
