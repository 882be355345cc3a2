"""Labels to review (issue #13): rank a finished k-fold run's labelled images by how well each
label agrees with the out-of-fold prediction of the model that never saw it, flag the ones whose
disagreement stands out, say why in one line, and draw the picture that shows it.

Reads only run files (config.json, status.json, summary.json, per_image.json,
predictions/val_prob/<name>.png) and the dataset's labels and images: no torch.

Why not cleanlab. cleanlab (`cleanlab.segmentation.rank.get_label_quality_scores`) is AGPL-3.0;
roofseg is embedded in other people's tools, so a hard dependency would pass the AGPL on to them,
and an optional one would make the ranking depend on what happens to be installed (two code
paths, two sets of numbers in tests and benchmarks). What is used here is the standard
confident-learning recipe for two classes, small enough to own:

- per pixel, the self-confidence is the predicted probability of the given label (p for label
  roof, 1 - p for label background);
- per class, the confidence threshold is the mean self-confidence of the pixels labelled with it
  (Northcutt et al., "Confident Learning", 2021), never below 0.5 so that "confident" always means
  past the midpoint;
- a background pixel with p >= t_roof is "roof missing from the label"; a roof pixel with
  1 - p >= t_background (p <= 1 - t_background) is "roof in the label the model rejects".

Pixels the image has no data for (alpha 0: DIDA's redacted boxes) are left out: the model saw
nothing there. Two more choices are ours. cleanlab's default image score, a softmin of the pixel
scores, is dominated by an image's least confident pixels, and every roof edge has pixels near
p = 0.5; so first, slivers thinner than about 3 px are removed from the disagreement (a
morphological opening): edge jitter between label and model does not count, a missing roof or a
12 px shift does. Second, the image score is 1 - (confidently disputed pixels) / (roof pixels in
the label or the prediction, at least 2% of the image): the share of what label and model call
roof that they confidently dispute; 1 = full agreement, 0 = nothing agrees (bench/label_review.py
compares it with the softmin on planted errors). An image is flagged when its disagreement
(1 - score) is a robust outlier among the run's images (above median + 3 x the scaled MAD, that
spread never taken below 0.03) and at least 0.1, with at least one disputed region of a roof's
size, so clean data gets few false alarms.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from roofseg.data import dataset as data
from roofseg.data import overlay
from roofseg.store import runs

NEEDED = "a finished k-fold run on this dataset (train with --folds 5, say)"
PROBS = Path("predictions") / "val_prob"  # each labelled image's out-of-fold probability, 0..255
K_MAD = 3.0         # outlier rule: median + K_MAD x 1.4826 x MAD of the disagreement
MIN_SPREAD = 0.03   # ... with that spread never below this (a near-perfect run has MAD ~ 0)
MIN_BAD = 0.10      # and never flag an image whose label and model dispute < 10% of their roof
UNION_FLOOR = 0.02  # share of the image the roof area is never taken below (roofless tiles)
SHIFT_MAX = 32      # largest label offset (px) the shift hint looks for


class ReviewError(ValueError):
    """The run cannot be reviewed; the message names the run and what a review needs."""


def _fail(run_dir: Path, why: str) -> ReviewError:
    return ReviewError(f"run {run_dir.name}: {why}; a label review needs {NEEDED}")


# ---------------------------------------------------------------------------------------------
# the pure part: thresholds, disagreement, score, reason
def class_thresholds(pairs) -> dict[str, float]:
    """Confident-learning thresholds from (label (H, W) 0/1, prob (H, W) float 0..1[, valid (H, W)
    bool]) tuples: {"roof": mean p over roof-labelled pixels, "background": mean 1 - p over
    background-labelled pixels}, valid pixels only, each at least 0.5 (0.5 when a class has none)."""
    sums = np.zeros(2)
    counts = np.zeros(2)
    for label, prob, *valid in pairs:
        y = np.asarray(label).astype(bool)
        p = np.asarray(prob, dtype=np.float64)
        v = np.asarray(valid[0], bool) if valid and valid[0] is not None else np.ones(y.shape, bool)
        sums += (p[y & v].sum(), (1.0 - p[~y & v]).sum())
        counts += ((y & v).sum(), (~y & v).sum())
    t = [max(0.5, s / c) if c else 0.5 for s, c in zip(sums, counts)]
    return {"roof": float(t[0]), "background": float(t[1])}


def _opening_radius(hw) -> int:
    return max(1, round(min(hw) / 256))  # about 3 px of sliver per 256 px of image


def min_region(hw) -> int:
    """Smallest disputed region (pixels) that counts as a roof: 0.05% of the image, at least 25."""
    return max(25, round(hw[0] * hw[1] * 0.0005))


def _regions(mask: np.ndarray, min_px: int) -> tuple[np.ndarray, list[int]]:
    """(mask of the 8-connected regions of at least min_px pixels, their sizes largest first)."""
    from scipy import ndimage  # here, not at the top: the Data page imports this module on its first paint
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if not n:
        return np.zeros_like(mask, bool), []
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_px) + 1
    return np.isin(lab, keep), sorted(sizes[keep - 1].tolist(), reverse=True)


def disagreement(label, prob, t: dict[str, float], valid=None) -> tuple[np.ndarray, np.ndarray]:
    """(missing, rejected) (H, W) bool: pixels labelled background the model confidently calls
    roof, and pixels labelled roof it confidently calls background; slivers thinner than the
    opening (edge jitter) and regions smaller than min_region() removed. valid (H, W) bool: the
    pixels the image has data for (alpha > 0); elsewhere the model saw nothing (DIDA's redacted
    boxes), so a disagreement there says nothing about the label."""
    y = np.asarray(label).astype(bool)
    p = np.asarray(prob, dtype=np.float64)
    v = np.ones(y.shape, bool) if valid is None else np.asarray(valid, bool)
    from scipy import ndimage  # (see _regions)
    r = _opening_radius(y.shape)
    out = []
    for m in (~y & v & (p >= t["roof"]), y & v & (1.0 - p >= t["background"])):
        m = ndimage.binary_opening(m, structure=np.ones((3, 3), bool), iterations=r)
        out.append(_regions(m, min_region(y.shape))[0])
    return out[0], out[1]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    n = a.sum() + b.sum()
    return 1.0 if n == 0 else float(2 * (a & b).sum() / n)


def label_shift(label, pred, max_shift: int = SHIFT_MAX) -> tuple[int, int, float, float]:
    """(dy, dx, dice at that offset, dice in place): the offset of the label from the predicted
    roofs (dx > 0: the label lies to the right) that makes them agree best, within max_shift px.
    One FFT cross-correlation, zero-padded so no offset wraps around."""
    y, p = np.asarray(label, bool), np.asarray(pred, bool)
    h, w = y.shape
    s = (h + max_shift, w + max_shift)
    corr = np.fft.irfft2(np.conj(np.fft.rfft2(y, s)) * np.fft.rfft2(p, s), s)
    lags = np.r_[0:max_shift + 1, -max_shift:0]  # lag d sits at index d mod size
    window = corr[np.ix_(lags % s[0], lags % s[1])]
    i, j = np.unravel_index(np.argmax(window), window.shape)
    n = y.sum() + p.sum()
    best = float(2 * window[i, j] / n) if n else 1.0
    # corr[d] = sum L[x] P[x + d]: the model's roof sits d from the label's, so the label is off by -d
    return int(-lags[i]), int(-lags[j]), best, _dice(y, p)


def _roofs(n: int) -> str:
    return f"{n} roof{'s' if n != 1 else ''}"


def score_image(label, prob, t: dict[str, float], threshold: float = 0.5, valid=None) -> dict:
    """One image's review: score (1 = label and model agree, 0 = nothing agrees), the disputed
    regions (missing_roofs / missing_px: roof the model finds that the label lacks; rejected_roofs
    / rejected_px: label roof the model rejects), dice (label vs prob >= threshold) and a one-line
    reason. label (H, W) 0/1, prob (H, W) float in [0, 1], valid: see disagreement()."""
    y = np.asarray(label).astype(bool)
    p = np.asarray(prob, dtype=np.float64)
    missing, rejected = disagreement(y, p, t, valid)
    hw, pred = y.shape, p >= threshold
    m_sizes = _regions(missing, 1)[1]
    r_sizes = _regions(rejected, 1)[1]
    union = max(float((y | pred).sum()), UNION_FLOOR * y.size)
    disputed = float(missing.sum() + rejected.sum())
    row = {"score": 1.0 - min(1.0, disputed / union), "missing_roofs": len(m_sizes),
           "missing_px": int(sum(m_sizes)), "rejected_roofs": len(r_sizes), "rejected_px": int(sum(r_sizes)),
           "dice": _dice(y, pred)}
    parts = []
    big = min_region(hw)
    if y.sum() >= big and pred.sum() >= big and (m_sizes or r_sizes):
        dy, dx, best, here = label_shift(y, pred)
        if row["dice"] < 0.4 and best < 0.5:  # no offset rescues it: the label draws other roofs
            parts.append(f"label barely matches the model's roofs (Dice {row['dice']:.2f}), perhaps another image's label")
        elif max(abs(dy), abs(dx)) >= 3 and best - here >= 0.15 and best >= 0.6:
            where = ", ".join(w for w in (f"{abs(dx)} px {'right' if dx > 0 else 'left'}" if dx else "",
                                          f"{abs(dy)} px {'down' if dy > 0 else 'up'}" if dy else "") if w)
            parts.append(f"label looks shifted ({where}; Dice {here:.2f} -> {best:.2f} moved back)")
    if m_sizes:
        parts.append(f"model finds {_roofs(len(m_sizes))} ({sum(m_sizes):,} px) the label lacks")
    if r_sizes:
        parts.append(f"label has {_roofs(len(r_sizes))} ({sum(r_sizes):,} px) the model rejects")
    row["reason"] = "; ".join(parts) or "label agrees with the model"
    return row


def flag_limit(bad) -> float:
    """The disagreement (1 - score) above which an image is flagged: median + K_MAD x the scaled
    MAD (at least MIN_SPREAD), and at least MIN_BAD."""
    b = np.asarray(bad, dtype=np.float64)
    if not b.size:
        return 1.0
    med = float(np.median(b))
    mad = 1.4826 * float(np.median(np.abs(b - med)))
    return max(MIN_BAD, med + K_MAD * max(mad, MIN_SPREAD))


RULE = (f"flagged when 1 - score is above median + {K_MAD:g} x MAD (spread at least {MIN_SPREAD:g}) "
        f"and at least {MIN_BAD:g}, with a disputed region of a roof's size")


# ---------------------------------------------------------------------------------------------
# reading a run
def _read_prob(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def _source(run_dir, dataset=None) -> dict:
    """Check the run can be reviewed; {"cfg", "rows" (out-of-fold per_image rows), "labels"
    {name: label path}, "images" {name: image path}, "not_reviewed" {name: why}}. Raises
    ReviewError naming the run and what is missing."""
    run_dir = Path(run_dir)
    cfg = runs.read_json(run_dir / "config.json")
    if not isinstance(cfg, dict):
        raise _fail(run_dir, f"no readable config.json in {run_dir}")
    state = runs.status(run_dir).get("state")
    if state != "done":
        err = runs.read_json(run_dir / "status.json", {}) or {}
        why = f" ({err['error']})" if state == "failed" and isinstance(err, dict) and err.get("error") else ""
        raise _fail(run_dir, f"it is {state}{why}, not finished")
    folds = int(cfg.get("folds") or 0)
    if folds < 2:
        raise _fail(run_dir, f"it is a holdout run (folds={folds}): most of its labelled images were "
                             "trained on, so no model predicted them unseen")
    rows = [r for r in runs.read_per_image(run_dir) if isinstance(r, dict) and "name" in r]
    if not rows:
        raise _fail(run_dir, "it has no out-of-fold predictions (per_image.json missing or empty)")
    lacking = [r["name"] for r in rows if not (run_dir / PROBS / f"{r['name']}.png").is_file()]
    if lacking:
        raise _fail(run_dir, f"its out-of-fold probability maps are missing ({len(lacking)} of "
                             f"{len(rows)} in {PROBS}/, e.g. {lacking[0]}.png)")
    root = Path(cfg.get("data", ""))
    if dataset is not None and Path(dataset).resolve() != root.resolve():
        raise _fail(run_dir, f"it trained on {root}, not on {dataset}")
    try:
        pairs, _, _ = data.find_pairs(root)
    except data.DataError as e:
        raise _fail(run_dir, f"its dataset has moved or changed ({e})") from None
    labels = {s: lp for s, _, lp in pairs}
    gone = [r["name"] for r in rows if r["name"] not in labels]
    if gone:
        raise _fail(run_dir, f"its dataset has changed: {len(gone)} of the {len(rows)} labelled images it "
                             f"predicted have no label in {root / 'labels'} any more (e.g. {gone[0]})")
    excluded = (runs.read_json(run_dir / "summary.json", {}) or {}).get("excluded") or {}
    seen = {r["name"] for r in rows}
    not_reviewed = {s: (f"left out of the run: {excluded[s]}" if s in excluded
                        else "no out-of-fold prediction (labelled after the run trained?)")
                    for s in labels if s not in seen}
    return {"cfg": cfg, "rows": rows, "labels": labels, "images": {s: ip for s, ip, _ in pairs},
            "not_reviewed": not_reviewed}


def _pair(run_dir: Path, src: dict, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label 0/1, out-of-fold prob, valid: image alpha > 0) of one image; ReviewError when they
    no longer fit together."""
    lp = src["labels"][name]
    try:
        label = data.load_label(lp)
    except data.DataError as e:
        raise _fail(run_dir, f"its dataset has changed ({e})") from None
    try:
        prob = _read_prob(run_dir / PROBS / f"{name}.png")
    except OSError as e:
        raise _fail(run_dir, f"its probability map of {name} cannot be read ({e})") from None
    if label.shape != prob.shape:
        raise _fail(run_dir, f"its dataset has changed: label {lp.name} is {label.shape[1]}x{label.shape[0]}, "
                             f"the run predicted it at {prob.shape[1]}x{prob.shape[0]}")
    return label, prob, _image(run_dir, src, name, label.shape)[..., 3] > 0


def _image(run_dir: Path, src: dict, name: str, hw) -> np.ndarray:
    """The (H, W, 4) RGBA image `name`; ReviewError when unreadable or no longer its label's size."""
    try:
        image = data.load_image(src["images"][name])
    except data.DataError as e:
        raise _fail(run_dir, f"its dataset has changed ({e})") from None
    if image.shape[:2] != tuple(hw):
        raise _fail(run_dir, f"its dataset has changed: image {name} is no longer its label's size")
    return image


def review(run_dir, dataset=None) -> dict:
    """The label review of a finished k-fold run.

    Returns {"run": run id, "data": dataset folder, "thresholds": {"roof", "background"}
    (class_thresholds), "limit": flag_limit over the images, "rule": how images are flagged,
    "flagged": count, "images": rows worst first, "not_reviewed": {name: why} (labelled images
    without an out-of-fold prediction, e.g. ones the run left out)}. Each row: rank, name, fold,
    score, flagged, reason, missing_roofs, missing_px, rejected_roofs, rejected_px, dice.
    dataset: when given, the run must have trained on this folder. Raises ReviewError (a
    ValueError) naming the run and what a review needs.
    """
    run_dir = Path(run_dir)
    src = _source(run_dir, dataset)
    threshold = float(src["cfg"].get("threshold", 0.5))
    # two passes, so a large dataset never holds all its maps at once: thresholds, then scores
    pairs = [_pair(run_dir, src, r["name"]) for r in src["rows"]]  # read once: thresholds, then scores
    t = class_thresholds(pairs)
    out = []
    for r, (label, prob, valid) in zip(src["rows"], pairs):
        row = score_image(label, prob, t, threshold, valid)
        out.append({"name": r["name"], "fold": r.get("fold"), **row})
    limit = flag_limit([1.0 - r["score"] for r in out])
    for r in out:
        r["flagged"] = bool(1.0 - r["score"] > limit and (r["missing_roofs"] or r["rejected_roofs"]))
    out.sort(key=lambda r: (r["score"], str(r["name"])))
    keys = ("rank", "name", "fold", "score", "flagged", "reason", "missing_roofs", "missing_px",
            "rejected_roofs", "rejected_px", "dice")
    images = [{k: ({"rank": i + 1} | r)[k] for k in keys} for i, r in enumerate(out)]
    return {"run": run_dir.name, "data": str(src["cfg"].get("data", "")), "thresholds": t, "limit": limit,
            "rule": RULE, "flagged": sum(r["flagged"] for r in images), "images": images,
            "not_reviewed": src["not_reviewed"]}


def review_labels(run_dir, top: int | None = None, dataset=None) -> list[dict]:
    """review()'s ranked rows (worst label first), the first `top` of them when given."""
    rows = review(run_dir, dataset)["images"]
    return rows if top is None else rows[:max(0, int(top))]


def review_picture(run_dir, name: str, thresholds: dict | None = None, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: image `name` with its label outline, out-of-fold prediction and confident
    disagreement (overlay.overlay_review). thresholds: review()'s, else computed again."""
    run_dir = Path(run_dir)
    src = _source(run_dir)
    if name not in src["labels"] or name not in {r["name"] for r in src["rows"]}:
        raise _fail(run_dir, f"it has no out-of-fold prediction of {name!r}")
    t = thresholds or class_thresholds(_pair(run_dir, src, r["name"]) for r in src["rows"])
    label, prob, valid = _pair(run_dir, src, name)
    image = _image(run_dir, src, name, label.shape)
    missing, rejected = disagreement(label, prob, t, valid)
    return overlay.overlay_review(image, label, prob, missing, rejected,
                                  float(src["cfg"].get("threshold", 0.5)), alpha)


def cache_paths(run_dir) -> list[Path]:
    """The files review() reads from a run (the dataset's: data.cache_paths): for a cache key."""
    run_dir = Path(run_dir)
    return [run_dir / f for f in ("config.json", "status.json", "summary.json", "per_image.json")] + [run_dir / PROBS]


def reviewable_runs(runs_dir, dataset) -> list[dict]:
    """Finished k-fold runs trained on `dataset`, newest first: [{"run_id", "label" (name or id,
    folds, val Dice)}], the runs a label review of this dataset can use."""
    want = Path(dataset).resolve()
    out = []
    for d in reversed(runs.list_runs(runs_dir)):
        cfg = runs.read_json(d / "config.json")
        if not isinstance(cfg, dict) or int(cfg.get("folds") or 0) < 2:
            continue
        if Path(str(cfg.get("data", ""))).resolve() != want or runs.status(d).get("state") != "done":
            continue
        dice = (runs.read_json(d / "summary.json", {}) or {}).get("val_dice")
        label = f"{cfg.get('name') or d.name} · {cfg['folds']} folds"
        out.append({"run_id": d.name, "label": label + (f" · val Dice {dice:.3f}" if isinstance(dice, float) else "")})
    return out
