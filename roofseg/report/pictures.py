"""Pictures for the report as inline data: URIs (PNG or JPEG): each validation image with its ground truth
and the run's out-of-fold prediction coloured TP/FP/FN, and the unlabeled images with the predicted
roof drawn over them.

Pictures come from the dataset folder (as it is now) and the run's predictions/ folder. A picture
that cannot be drawn (file gone, unreadable, another size) is replaced by the reason in words, so
one damaged file never stops the report.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from roofseg.data import dataset as data
from roofseg.data import overlay

MAX_SIDE = 320      # pictures are shrunk to this longest side: a 25-image run stays a few MB
MAX_IMAGES = 100    # validation images shown per run (worst first); the rest are counted, not drawn
ALPHA = 0.5
JPEG_QUALITY = 90


def data_uri(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 -> a data: URI, shrunk to MAX_SIDE (box filter: a shrunk overlay keeps its
    colours' proportions).

    Flat pictures (masks, at most 256 colours) stay lossless palette PNGs. Photographs and
    overlays on them become JPEG at quality JPEG_QUALITY: as PNG a 5-fold DIDA report weighed 15 MB,
    too heavy to mail; the TP/FP/FN colours stay distinct at this quality (BENCHMARKS.md 6.1).
    """
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if max(im.size) > MAX_SIDE:
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.BOX)
    buf = io.BytesIO()
    if im.getcolors(256) is not None:  # None: more than 256 colours
        im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(buf, format="PNG", optimize=True)
        kind = "png"
    else:
        im.save(buf, format="JPEG", quality=JPEG_QUALITY)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Dataset:
    """One dataset folder's files by stem, each decoded at most once per report (runs share them)."""

    def __init__(self, root: Path | None):
        self.root, self.files, self.error = root, {}, None
        self._images, self._labels, self._uris = {}, {}, {}
        if root is None:
            self.error = "dataset folder not found"
            return
        try:
            pairs, unlabeled, _ = data.find_pairs(root)
            self.files = {s: (ip, lp) for s, ip, lp in pairs} | {s: (ip, None) for s, ip in unlabeled}
        except data.DataError as e:
            self.error = str(e)

    def image(self, name: str) -> np.ndarray:
        """(H, W, 4) RGBA; raises DataError naming the file or the missing stem."""
        if name not in self._images:
            if name not in self.files:
                raise data.DataError(self.error or f"{self.root}: no image named {name!r} any more")
            self._images[name] = data.load_image(self.files[name][0])
        return self._images[name]

    def label(self, name: str) -> np.ndarray | None:
        if name not in self._labels:
            lp = self.files.get(name, (None, None))[1]
            self._labels[name] = data.load_label(lp) if lp is not None else None
        return self._labels[name]

    def image_uri(self, name: str) -> str:
        if name not in self._uris:
            self._uris[name] = data_uri(overlay.to_rgb(self.image(name)))
        return self._uris[name]


def _read_prediction(run_dir: Path, split: str, name: str, threshold: float) -> np.ndarray:
    """(H, W) bool: predictions/<split>/<name>.png (a 0/255 mask), else the probability map
    predictions/<split>_prob/<name>.png thresholded as the run did."""
    mask = run_dir / "predictions" / split / f"{name}.png"
    prob = run_dir / "predictions" / f"{split}_prob" / f"{name}.png"
    if mask.is_file():
        with Image.open(mask) as im:
            return np.asarray(im.convert("L")) >= 128
    if prob.is_file():
        with Image.open(prob) as im:
            return np.asarray(im.convert("L")) >= round(float(threshold) * 255)
    raise FileNotFoundError(f"no predictions/{split}/{name}.png")


def _why(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def validation(r: dict, ds: Dataset) -> dict:
    """{"rows": per validation image, worst Dice first: name, fold, dice, iou, precision, recall,
    image, truth, prediction (data URIs or None), error; "hidden": how many were not drawn}."""
    rows = sorted((x for x in r["per_image"] if "name" in x),
                  key=lambda x: (float(x["dice"]) if isinstance(x.get("dice"), (int, float)) else -1.0,
                                 str(x["name"])))
    out = []
    for x in rows[:MAX_IMAGES]:
        name = str(x["name"])
        row = {k: x.get(k) for k in ("fold", "dice", "iou", "precision", "recall")}
        row.update(name=name, image=None, truth=None, prediction=None, error=None)
        try:
            pred = _read_prediction(r["dir"], "val", name, r["cfg"]["threshold"])
        except (OSError, ValueError) as e:
            row["error"] = f"prediction: {_why(e)}"
            out.append(row)
            continue
        try:
            rgba, gt = ds.image(name), ds.label(name)
            row["image"] = ds.image_uri(name)
            row["truth"] = data_uri(overlay.overlay_mask(rgba, gt, alpha=ALPHA)) if gt is not None else None
            row["prediction"] = data_uri(overlay.overlay_errors(rgba, gt, pred, alpha=ALPHA))
        except (data.DataError, OSError, ValueError) as e:
            # the image is gone or changed: still show what the run predicted, on black
            row["error"] = f"dataset: {_why(e)}"
            row["prediction"] = data_uri(overlay.overlay_mask(np.zeros(pred.shape, np.uint8), pred, alpha=1.0))
        out.append(row)
    return {"rows": out, "hidden": max(0, len(rows) - MAX_IMAGES)}


def unlabeled(r: dict, ds: Dataset) -> dict:
    """{"rows": per predicted unlabeled image (predictions/test/ or test_prob/): name, roof
    (fraction of pixels), image and overlay (data URIs or None), error; "hidden": not drawn}."""
    pred_dir = r["dir"] / "predictions"
    names = sorted({p.stem for sub in ("test", "test_prob") for p in (pred_dir / sub).glob("*.png")})
    out = []
    for name in names[:MAX_IMAGES]:
        row = {"name": name, "roof": None, "image": None, "overlay": None, "error": None}
        try:
            pred = _read_prediction(r["dir"], "test", name, r["cfg"]["threshold"])
            row["roof"] = float(pred.mean()) if pred.size else 0.0
        except (OSError, ValueError) as e:
            row["error"] = f"prediction: {_why(e)}"
            out.append(row)
            continue
        try:
            rgba = ds.image(name)
            row["image"] = ds.image_uri(name)
            row["overlay"] = data_uri(overlay.overlay_mask(rgba, pred, alpha=ALPHA))
        except (data.DataError, OSError, ValueError) as e:
            row["error"] = f"dataset: {_why(e)}"
            row["overlay"] = data_uri(overlay.overlay_mask(np.zeros(pred.shape, np.uint8), pred, alpha=1.0))
        out.append(row)
    return {"rows": out, "hidden": max(0, len(names) - MAX_IMAGES)}


def legend() -> list[dict]:
    """The error colours and the plain-mask colour with their meaning, for swatches."""
    rows = [{"label": lab, "rgb": "rgb(%d, %d, %d)" % c} for lab, c in overlay.legend()]
    return rows + [{"label": "roof (ground truth, or a prediction without ground truth)",
                    "rgb": "rgb(%d, %d, %d)" % overlay.MASK_COLOR}]
