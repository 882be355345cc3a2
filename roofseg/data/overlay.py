"""Pure-numpy pictures of masks for the app: mask overlays, TP/FP/FN error colouring,
probability heatmaps, and the per-image agreement numbers shown next to them.

Masks may be bool, 0/1 or 0/255 arrays of shape (H, W) (a trailing channel of 1 is dropped):
uint8 masks whose max is above 1 are read as 0/255 PNGs, true where >= 128 (so JPEG/antialiased
edges split at the midpoint); any other numeric mask is true where > 0. Threshold probabilities
yourself before passing them as masks.
"""
import numpy as np

# Error colours: the Okabe-Ito bluish green and orange plus magenta. The obvious green/orange pair
# collapses to one olive under protanopia (CIELAB distance ~6); these three stay >= ~40 apart
# under simulated protanopia, deuteranopia and tritanopia (Machado 2009), and FN orange is kept
# away from MASK_COLOR yellow so a panel without ground truth is not read as "missed".
TP_COLOR = (0, 158, 115)  # roof found            (bluish green)
FP_COLOR = (255, 0, 255)  # predicted, not roof   (magenta)
FN_COLOR = (230, 159, 0)  # roof missed           (orange)
MASK_COLOR = (255, 255, 0)  # plain mask overlay, when there is no ground truth

TN, TP, FP, FN = 0, 1, 2, 3  # codes returned by error_map

# matplotlib's viridis at 8 evenly spaced points; linear interpolation between them keeps its
# monotone lightness, so brighter always means more confident.
_VIRIDIS_ANCHORS = np.array([(68, 1, 84), (70, 50, 126), (54, 92, 141), (39, 127, 142),
                             (31, 161, 135), (74, 193, 109), (160, 218, 57), (253, 231, 37)], float)
VIRIDIS = np.round(np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, 8), a)
                             for a in _VIRIDIS_ANCHORS.T], 1)).astype(np.uint8)  # (256, 3) LUT


def _check_hw(**arrays) -> None:
    """Raise ValueError naming every shape unless all arrays share their first two dims."""
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    if len({s[:2] for s in shapes.values()}) > 1:
        listed = ", ".join(f"{k} shape {s}" for k, s in shapes.items())
        raise ValueError(f"height/width differ: {listed}")


def as_bool_mask(mask, name: str = "mask") -> np.ndarray:
    """(H, W) or (H, W, 1) bool / 0-1 / 0-255 array -> (H, W) bool (rules in the module doc)."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W), got {m.shape}")
    if m.dtype == bool:
        return m
    if m.dtype.kind not in "uif":
        raise ValueError(f"{name} must be bool or numeric, got dtype {m.dtype}")
    if m.dtype == np.uint8 and m.size and m.max() > 1:
        return m >= 128
    return m > 0


def to_rgb(image) -> np.ndarray:
    """(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA uint8 -> (H, W, 3) uint8 (a new array).

    Alpha is dropped; fully transparent pixels become black because aerial tiles use alpha 0
    for no-data, whose RGB is arbitrary.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {img.dtype}")
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {img.shape}")
    rgb = img[..., :3].copy()
    if img.shape[2] == 4:
        rgb[img[..., 3] == 0] = 0
    return rgb


def _paint(rgb: np.ndarray, codes: np.ndarray, colors, alpha: float) -> np.ndarray:
    """Blend colors[k] at `alpha` over pixels with code k; colors[0] is None (left unchanged).

    rgb (H, W, 3) uint8, codes (H, W) uint8 < len(colors) -> (H, W, 3) uint8. One lookup table
    per channel indexed by (code, value) avoids float maths on the whole image (~3x faster).
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    v = np.arange(256, dtype=np.float64)[:, None]
    lut = np.empty((len(colors), 256, 3), np.uint8)
    lut[0] = v
    for k, color in enumerate(colors[1:], start=1):
        c = np.asarray(color, dtype=np.float64)
        if c.shape != (3,) or c.min() < 0 or c.max() > 255:
            raise ValueError(f"colour must be 3 values in 0..255, got {color}")
        lut[k] = np.round((1 - alpha) * v + alpha * c)
    index = codes.astype(np.uint16) << 8  # row of the (code, value) table, flattened
    out = np.empty_like(rgb)
    for ch in range(3):
        out[..., ch] = lut[:, :, ch].ravel()[index | rgb[..., ch]]
    return out


def overlay_mask(image, mask, color=MASK_COLOR, alpha: float = 0.5) -> np.ndarray:
    """Blend `color` (RGB 0..255) at `alpha` over mask pixels of image -> (H, W, 3) uint8."""
    _check_hw(image=image, mask=mask)
    m = as_bool_mask(mask)
    return _paint(to_rgb(image), m.view(np.uint8), [None, color], alpha)


def error_map(gt, pred) -> np.ndarray:
    """(H, W) masks -> (H, W) uint8 codes: 0 = TN, 1 = TP, 2 = FP, 3 = FN."""
    _check_hw(gt=gt, pred=pred)
    g, p = as_bool_mask(gt, "gt"), as_bool_mask(pred, "pred")
    # index = 2*gt + pred: (0,0) TN, (0,1) FP, (1,0) FN, (1,1) TP
    return np.array([TN, FP, FN, TP], np.uint8)[2 * g.view(np.uint8) + p.view(np.uint8)]


def overlay_errors(image, gt, pred, alpha: float = 0.5) -> np.ndarray:
    """Colour TP/FP/FN pixels of image, TN left unchanged -> (H, W, 3) uint8.

    With gt None there are no errors to show, so the prediction is drawn in MASK_COLOR.
    """
    if gt is None:
        return overlay_mask(image, pred, MASK_COLOR, alpha)
    _check_hw(image=image, gt=gt, pred=pred)
    return _paint(to_rgb(image), error_map(gt, pred), [None, TP_COLOR, FP_COLOR, FN_COLOR], alpha)


def prob_to_rgb(prob) -> np.ndarray:
    """(H, W) float probabilities in [0, 1] or uint8 0..255 -> (H, W, 3) uint8 viridis."""
    p = np.asarray(prob)
    if p.ndim != 2:
        raise ValueError(f"prob must have shape (H, W), got {p.shape}")
    # np.take along axis 0 gathers whole (3,) rows ~7x faster than VIRIDIS[p] fancy indexing
    if p.dtype == np.uint8:
        return np.take(VIRIDIS, p, axis=0)
    if p.dtype.kind != "f":
        raise ValueError(f"prob must be float in [0, 1] or uint8, got dtype {p.dtype}")
    # Refuse rather than clip: values outside [0, 1] mean logits were passed, not probabilities.
    if p.size and not (p.min() >= 0.0 and p.max() <= 1.0):  # also false for NaN
        raise ValueError(f"prob must lie in [0, 1], got range [{p.min()}, {p.max()}]")
    return np.take(VIRIDIS, (p * 255 + 0.5).astype(np.uint8), axis=0)  # +0.5: round, p >= 0


def _counts(gt, pred) -> tuple[int, int, int]:  # (|gt & pred|, |gt|, |pred|) in pixels
    _check_hw(gt=gt, pred=pred)
    g, p = as_bool_mask(gt, "gt"), as_bool_mask(pred, "pred")
    return np.count_nonzero(g & p), np.count_nonzero(g), np.count_nonzero(p)


def dice(gt, pred) -> float:
    """Dice over the pixels of one image; 1.0 when both masks are empty (nothing to find)."""
    inter, ng, np_ = _counts(gt, pred)
    return 1.0 if ng + np_ == 0 else 2.0 * inter / (ng + np_)


def iou(gt, pred) -> float:
    """IoU over the pixels of one image; 1.0 when both masks are empty."""
    inter, ng, np_ = _counts(gt, pred)
    union = ng + np_ - inter
    return 1.0 if union == 0 else inter / union


def disagreement(preds: list) -> float:
    """Fraction of pixels where the (H, W) predictions do not all agree; 0.0 for < 2 preds."""
    if len(preds) < 2:
        return 0.0
    _check_hw(**{f"preds[{i}]": p for i, p in enumerate(preds)})
    stack = np.stack([as_bool_mask(p, f"preds[{i}]") for i, p in enumerate(preds)])
    split = stack.any(axis=0) & ~stack.all(axis=0)
    return float(np.count_nonzero(split)) / split.size if split.size else 0.0


def legend() -> list[tuple[str, tuple[int, int, int]]]:
    """(label, RGB colour) pairs of the error colours, in the order the UI should list them."""
    return [("true positive (roof found)", TP_COLOR),
            ("false positive (predicted, not roof)", FP_COLOR),
            ("false negative (roof missed)", FN_COLOR)]


# ---------------------------------------------------------------------------------------------
# label review (issue #13): where a run's out-of-fold prediction confidently disagrees with a label.
# The colours keep Compare's meaning: magenta = the model says roof where the label has none,
# orange = the label has roof where the model says none; the prediction itself is a light
# bluish-green fill and the label a yellow outline, so the three error colours' tested
# colour-blind spacing (see above) still holds.
PRED_COLOR = TP_COLOR        # the out-of-fold prediction (p >= threshold)
MISSING_COLOR = FP_COLOR     # roof the model finds that the label lacks
REJECTED_COLOR = FN_COLOR    # roof in the label that the model rejects
OUTLINE_COLOR = MASK_COLOR   # the label's outline


def outline(mask) -> np.ndarray:
    """(H, W) mask -> (H, W) bool: mask pixels with a 4-neighbour outside the mask (the image
    border counts as outside, so a roof cut by the edge is closed)."""
    m = as_bool_mask(mask)
    p = np.pad(m, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def overlay_review(image, label, prob, missing, rejected, threshold: float = 0.5,
                   alpha: float = 0.5) -> np.ndarray:
    """The label-review picture -> (H, W, 3) uint8.

    The out-of-fold prediction (`prob` >= threshold; prob float in [0, 1] or uint8 0..255) is a
    PRED_COLOR fill at half `alpha`; the `missing` and `rejected` masks (confident disagreement)
    are painted over it in MISSING_COLOR and REJECTED_COLOR at `alpha`, so they stand out from
    the plain prediction; the label's outline goes on top, opaque, so it is never hidden.
    """
    _check_hw(image=image, label=label, prob=prob, missing=missing, rejected=rejected)
    p = np.asarray(prob)
    if p.dtype == np.uint8:
        p = p.astype(np.float32) / 255.0
    pred = as_bool_mask(p >= threshold, "prob >= threshold")
    miss, rej = as_bool_mask(missing, "missing"), as_bool_mask(rejected, "rejected")
    rgb = _paint(to_rgb(image), pred.view(np.uint8), [None, PRED_COLOR], alpha / 2)
    codes = np.zeros(pred.shape, np.uint8)
    codes[miss], codes[rej] = 1, 2
    rgb = _paint(rgb, codes, [None, MISSING_COLOR, REJECTED_COLOR], alpha)
    rgb[outline(label)] = OUTLINE_COLOR
    return rgb


def review_legend() -> list[tuple[str, tuple[int, int, int]]]:
    """(label, RGB colour) pairs of the label-review picture, in the order the UI lists them."""
    return [("label outline", OUTLINE_COLOR), ("out-of-fold prediction", PRED_COLOR),
            ("roof missing from the label", MISSING_COLOR),
            ("roof in the label the model rejects", REJECTED_COLOR)]
