"""Datasets on disk: find image/label pairs, check them, decode once, split, augment, and the
thumbnails (masks overlaid) the Data page browses.

A dataset is a folder with images/ and labels/; a label belongs to the image with the same stem,
and images without a label form the prediction set. Everything is decoded once into uint8 arrays
(images (N, H, W, 4) RGBA, masks (N, H, W) 0/1) so the training loop never touches the disk.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from roofseg.data import overlay

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MAX_PIXELS = 4096 * 4096  # refuse larger images: a full-res decode would exhaust a laptop's memory
Image.MAX_IMAGE_PIXELS = MAX_PIXELS * 2  # PIL's own bomb check, above our clearer one


class DataError(ValueError):
    """A dataset file or folder is unusable; the message names the path and the problem."""


# ---------------------------------------------------------------------------------------------
# finding and decoding files
def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            if p.stem in out:
                raise DataError(f"{p}: two files share the stem '{p.stem}' ({out[p.stem].name}, {p.name})")
            out[p.stem] = p
    return out


def find_pairs(root) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, Path]], list[Path]]:
    """Return (pairs (stem, image, label), unlabeled (stem, image), labels without an image)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if not (root / "images").is_dir():
        raise DataError(f"{root}: no images/ folder (expected images/ and labels/ inside)")
    images, labels = _files(root / "images"), _files(root / "labels")
    if not images:
        raise DataError(f"{root / 'images'}: no image files ({', '.join(IMAGE_EXTS)})")
    pairs = [(s, images[s], labels[s]) for s in images if s in labels]
    unlabeled = [(s, images[s]) for s in images if s not in labels]
    orphans = [labels[s] for s in labels if s not in images]
    return pairs, unlabeled, orphans


def cache_paths(root) -> list[Path]:
    """The folders whose files everything here reads from a dataset: give them to
    store.fingerprint.fingerprint() for a cache key that changes when an image or label does."""
    return [Path(root) / "images", Path(root) / "labels"]


def _open(path: Path) -> Image.Image:
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        im = Image.open(path)
        if im.width * im.height > MAX_PIXELS:
            raise DataError(f"{path}: {im.width}x{im.height} is larger than the "
                            f"{MAX_PIXELS} pixel limit; tile or downscale it first")
        im.load()
        return im
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def load_image(path) -> np.ndarray:
    """Decode any supported image to (H, W, 4) uint8 RGBA (alpha 255 where the file has none)."""
    path = Path(path)
    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0, 0, 255).astype(np.uint8))
    return np.asarray(im.convert("RGBA"), dtype=np.uint8)


def load_label(path) -> np.ndarray:
    """Decode a mask to (H, W) uint8 0/1.

    8-bit greyscale with anti-aliased edges is binarised at >= 128 (so {0, 128} masks work);
    integer masks whose values all stay below 128 (0/1 masks, class-index masks such as {0, 1, 2})
    count every non-zero value as roof; RGB(A) masks count a pixel as roof when any colour channel
    is >= 128; 16-bit masks are scaled.
    """
    path = Path(path)
    im = _open(path)
    a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., :3].max(axis=2)
    if a.dtype.kind in "biu" and a.max() < 128:  # 0/1 or class indices: any class is roof
        return (a > 0).astype(np.uint8)
    if a.dtype != np.uint8:  # 16-bit or float masks: scale to 0..255 first
        a = a.astype(np.float64)
        a = (a / (65535.0 if a.max() > 255 else max(a.max(), 1.0)) * 255.0)
    return (a >= 128).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# checking a dataset
@dataclass
class DataReport:
    root: str
    n_images: int = 0
    n_labels: int = 0
    n_pairs: int = 0
    unlabeled: list[str] = field(default_factory=list)       # stems: the prediction set
    orphan_labels: list[str] = field(default_factory=list)   # label files with no image
    sizes: dict[str, int] = field(default_factory=dict)      # "WxH" -> count (images)
    modes: dict[str, int] = field(default_factory=dict)      # PIL mode -> count (images)
    label_modes: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # file -> problem
    flagged: dict[str, str] = field(default_factory=dict)    # stem -> why it is excluded by default
    warnings: dict[str, str] = field(default_factory=dict)   # stem -> odd but trained on (empty mask, ...)
    roof_fraction: float = 0.0                               # mean over usable labels (>= 128)

    @property
    def ok(self) -> bool:
        return self.n_pairs - len(self.flagged) > 0 and not self.unreadable

    def lines(self) -> list[str]:
        """Human-readable summary, one finding per line (for the CLI, the log and the app)."""
        out = [f"{self.root}: {self.n_images} images, {self.n_labels} labels, {self.n_pairs} pairs, "
               f"{len(self.unlabeled)} unlabeled (prediction set)"]
        out.append("image sizes: " + ", ".join(f"{k} x{v}" for k, v in self.sizes.items()))
        out.append("image modes: " + ", ".join(f"{k} x{v}" for k, v in self.modes.items()))
        if self.n_labels:
            out.append(f"mean roof fraction: {self.roof_fraction:.1%}")
        if not self.n_pairs:
            out.append("no labelled pairs (labels/ missing, empty, or no label has an image's name): "
                       "prediction-only data; it can be predicted, not trained on")
        out += [f"label without image: {s}" for s in self.orphan_labels]
        out += [f"unreadable: {f}: {why}" for f, why in self.unreadable.items()]
        out += [f"flagged {s}: {why}" for s, why in self.flagged.items()]
        out += [f"warning {s}: {why}" for s, why in self.warnings.items()]
        return out


def check_dataset(root) -> DataReport:
    """Report counts, sizes and modes, and flag pairs that should not be trained on.

    Flags: labels that are not masks (many grey levels, mostly intermediate) and duplicate labels
    (byte-identical label files for images that differ; the later stem is flagged, as in DIDA
    where labels/278.png is a copy of labels/270.png). Warns, but keeps the pair, for masks with
    unusual values (how load_label binarises them is said) and for masks with no roof or all roof
    (a roofless tile is a valid example; an all-roof one is probably a mistake worth a look).
    """
    pairs, unlabeled, orphans = find_pairs(root)
    rep = DataReport(root=str(root), n_images=len(pairs) + len(unlabeled), n_labels=len(pairs) + len(orphans),
                     n_pairs=len(pairs), unlabeled=[s for s, _ in unlabeled],
                     orphan_labels=[p.name for p in orphans])
    sizes, modes, lmodes, fractions = Counter(), Counter(), Counter(), []
    seen: dict[str, str] = {}  # label sha256 -> first stem
    for stem, ip in [(s, i) for s, i, _ in pairs] + unlabeled:
        try:
            im = _open(ip)
            sizes[f"{im.width}x{im.height}"] += 1
            modes[im.mode] += 1
        except DataError as e:
            rep.unreadable[str(ip)] = str(e).split(": ", 1)[-1]
    for stem, ip, lp in pairs:
        if str(ip) in rep.unreadable:
            rep.flagged[stem] = "image unreadable"
            continue
        try:
            lim = _open(lp)
            lmodes[lim.mode] += 1
            raw = np.asarray(lim)
            if raw.ndim == 3:
                raw = raw[..., :3].max(axis=2)
            if lim.size != Image.open(ip).size:
                rep.flagged[stem] = f"label size {lim.width}x{lim.height} differs from the image's"
                continue
        except DataError as e:
            rep.unreadable[str(lp)] = str(e).split(": ", 1)[-1]
            rep.flagged[stem] = "label unreadable"
            continue
        values = np.unique(raw)
        few = len(values) <= 8
        if raw.dtype == np.uint8 and not few:  # many grey levels: anti-aliased edges, or a photo
            mid = np.mean((raw > 0) & (raw < 255))
            if mid > 0.25:
                rep.flagged[stem] = f"label is not a mask ({mid:.0%} of pixels are neither 0 nor 255)"
                continue
        elif raw.dtype.kind in "iu" and not ({0, 255} >= set(values.tolist()) or values.max() <= 1):
            rule = ("every non-zero value" if values.max() < 128 else "values >= 128" if
                    raw.dtype == np.uint8 else "values scaled to 8 bit, then >= 128")
            shown = values.tolist() if few else f"{len(values)} levels up to {values.max()}"
            rep.warnings[stem] = f"mask values {shown}: {rule} counted as roof"
        frac = float(load_label(lp).mean())
        if frac in (0.0, 1.0):  # uniform masks are alike by nature: not copies of each other
            rep.warnings[stem] = "mask has no roof pixels" if frac == 0 else "mask is all roof"
        else:
            digest = hashlib.sha256(lp.read_bytes()).hexdigest()
            if digest in seen:
                rep.flagged[stem] = f"label is identical to labels of {seen[digest]} (a copy; the images differ)"
                continue
            seen[digest] = stem
        fractions.append(frac)
    rep.sizes, rep.modes, rep.label_modes = dict(sizes), dict(modes), dict(lmodes)
    rep.roof_fraction = float(np.mean(fractions)) if fractions else 0.0
    return rep


# ---------------------------------------------------------------------------------------------
# browsing a dataset
def gallery(root, max_items: int = 60, size: int = 256, alpha: float = 0.45,
            flagged=()) -> list[tuple[str, np.ndarray, str]]:
    """The first `max_items` readable images by name as (stem, thumbnail, caption), for browsing.

    thumbnail: (h, w, 3) uint8 RGB at most `size` pixels a side, the roof mask blended over it in
    overlay.MASK_COLOR at `alpha`. caption: the stem, with " · unlabeled" (no label file),
    " · flagged" (stems in `flagged`, e.g. check_dataset's report.flagged) or " · no usable
    label" (unreadable, or another size than its image). Unreadable images are left out:
    check_dataset reports them. Shrinking comes first, so a large dataset costs its decoding only.
    """
    pairs, unlabeled, _ = find_pairs(root)
    items = sorted([(s, i, lp) for s, i, lp in pairs] + [(s, i, None) for s, i in unlabeled])
    flagged = set(flagged)
    out = []
    for stem, ip, lp in items:
        if len(out) >= max_items:
            break
        try:
            img = load_image(ip)
        except DataError:
            continue
        mask = None
        if lp is not None:
            try:
                mask = load_label(lp)
            except DataError:
                pass
            if mask is not None and mask.shape != img.shape[:2]:
                mask = None
        hw = _thumb_hw(img.shape[:2], size)
        small = _resize(img, hw, nearest=False)
        pic = (overlay.to_rgb(small) if mask is None
               else overlay.overlay_mask(small, _resize(mask, hw, nearest=True), alpha=alpha))
        note = ("unlabeled" if lp is None else "flagged" if stem in flagged
                else "no usable label" if mask is None else "")
        out.append((stem, pic, f"{stem} · {note}" if note else stem))
    return out


def _thumb_hw(hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) scaled so the longer side is at most `size`, aspect kept; never enlarged."""
    h, w = hw
    if max(h, w) <= size:
        return h, w
    s = size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


# ---------------------------------------------------------------------------------------------
# decoding a whole dataset once
@dataclass
class SegData:
    """A decoded dataset. Arrays share one size (H, W), a multiple of 32."""
    names: list[str]               # labelled stems used for training/validation
    images: np.ndarray             # (N, H, W, 4) uint8 RGBA
    masks: np.ndarray              # (N, H, W) uint8 0/1
    test_names: list[str]          # unlabeled stems (prediction set)
    test_images: np.ndarray        # (M, H, W, 4) uint8
    orig_sizes: dict[str, tuple[int, int]]  # stem -> (H, W) of the file, to restore predictions
    report: DataReport
    excluded: dict[str, str]       # stem -> reason
    notes: list[str]               # what was done to the data (resizing, exclusions)


EXCLUDED_BY_CONFIG = "left out by the run config (exclude), e.g. a label a review flagged"


def excluded_pairs(rep: DataReport, exclude_flagged: bool = True, names=()) -> dict[str, str]:
    """Stem -> reason for the pairs load_dataset leaves out: every flagged pair, or only the ones
    that cannot be used at all (unreadable, label size differs) when exclude_flagged is False, and
    the pairs `names` lists (the user's files are never touched: they are only not trained on)."""
    if exclude_flagged:
        out = dict(rep.flagged)
    else:
        out = {s: r for s, r in rep.flagged.items() if "unreadable" in r or "differs" in r}
    return {**out, **{n: out.get(n, EXCLUDED_BY_CONFIG) for n in names}}


def _resize(a: np.ndarray, hw: tuple[int, int], nearest: bool) -> np.ndarray:
    if a.shape[:2] == hw:
        return a
    im = Image.fromarray(a)
    return np.asarray(im.resize((hw[1], hw[0]), Image.NEAREST if nearest else Image.BILINEAR))


def load_dataset(root, image_size: int = 0, exclude_flagged: bool = True, exclude=()) -> SegData:
    """Decode every usable pair and every unlabeled image once.

    image_size=0 keeps the native size when all images share one that is a multiple of 32;
    otherwise every image is resized (bilinear; masks nearest) to the most common size rounded to
    a multiple of 32, and predictions are resized back to each file's own size.
    """
    rep = check_dataset(root)
    pairs, unlabeled, _ = find_pairs(root)
    excluded = excluded_pairs(rep, exclude_flagged, exclude)
    pairs = [p for p in pairs if p[0] not in excluded]
    unlabeled = [u for u in unlabeled if str(u[1]) not in rep.unreadable]
    imgs = {s: load_image(ip) for s, ip, _ in pairs} | {s: load_image(ip) for s, ip in unlabeled}
    orig = {s: a.shape[:2] for s, a in imgs.items()}
    notes = [f"excluded {s}: {r}" for s, r in excluded.items()]
    notes += [f"warning {s}: {w}" for s, w in rep.warnings.items() if s not in excluded]
    if image_size:
        hw = (image_size, image_size)
    else:
        (h, w), _ = Counter(orig.values()).most_common(1)[0]
        hw = (max(32, round(h / 32) * 32), max(32, round(w / 32) * 32))
    n_resized = sum(1 for v in orig.values() if v != hw)
    if n_resized:
        notes.append(f"resized {n_resized} image(s) to {hw[1]}x{hw[0]} (bilinear; masks nearest); "
                     "predictions are resized back to each file's size")
    empty = np.zeros((0, *hw, 4), np.uint8)
    return SegData(
        names=[s for s, _, _ in pairs],
        images=np.stack([_resize(imgs[s], hw, False) for s, _, _ in pairs]) if pairs else empty,
        masks=(np.stack([_resize(load_label(lp), hw, True) for _, _, lp in pairs]) if pairs
               else np.zeros((0, *hw), np.uint8)),
        test_names=[s for s, _ in unlabeled],
        test_images=np.stack([_resize(imgs[s], hw, False) for s, _ in unlabeled]) if unlabeled else empty,
        orig_sizes=orig, report=rep, excluded=excluded, notes=notes)


# ---------------------------------------------------------------------------------------------
# splits
def holdout_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle 0..n-1 with the seed; the first round(n*val_fraction) (at least 1) validate."""
    if n < 2:
        raise DataError(f"need at least 2 labelled pairs for a train/validation split, have {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def kfold_splits(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k disjoint validation folds covering 0..n-1 once each (sizes differ by at most one)."""
    if k > n:
        raise DataError(f"folds={k} is more than the {n} labelled pairs available")
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), np.sort(f)) for i, f in enumerate(folds)]
