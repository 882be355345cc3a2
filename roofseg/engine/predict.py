"""Inference: load a run's models, predict probability maps, write masks, build download zips.

A k-fold run predicts each validation image with the model that did not see it (out-of-fold) and
unlabeled images with the mean probability of all fold models.
"""
from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from roofseg.engine import augment
from roofseg.data import dataset as data
from roofseg.model import metrics
from roofseg.model import checkpoint
from roofseg.store import runs
from roofseg.config import RunConfig


def load_model(path, device="cpu") -> tuple[torch.nn.Module, RunConfig]:
    """Rebuild a model from a checkpoint's own config (no weight download) and load its weights."""
    from roofseg.model.factory import create
    ck = checkpoint.load_checkpoint(path)
    cfg = RunConfig.from_saved(ck["config"], source=str(path))
    model = create(cfg.arch, cfg.encoder, cfg.in_channels)
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval(), cfg


def load_run_models(run_dir, device="cpu"):
    """All best*.pt models of a run, and the run's config."""
    paths = runs.checkpoint_paths(run_dir)
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no best*.pt weights (has the run finished?)")
    loaded = [load_model(p, device) for p in paths]
    return [m for m, _ in loaded], loaded[0][1]


# The 8 symmetries of the square (dihedral group D4): k quarter turns, then an optional mirror.
D4 = [(k, flip) for flip in (False, True) for k in range(4)]


def _d4(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(2, 3))
    return x.flip(3) if flip else x


def _d4_inverse(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = x.flip(3) if flip else x
    return torch.rot90(x, -k, dims=(2, 3))


@torch.no_grad()
def predict_probs(models, images: np.ndarray, in_channels: int, device="cpu",
                  batch_size: int = 8, stats=None, tta: bool = False) -> np.ndarray:
    """(N, H, W, 4) uint8 with H, W multiples of 32 -> (N, H, W) float32 mean sigmoid of models.

    stats: (mean, std) the models were trained with (RunConfig.stats()). tta: average each model's
    probabilities over the 8 flips and rotations of the image (each mapped back first); aerial
    roofs have no "up", so every view is an equally valid input, and 8 views cost 8 forwards.
    """
    device = torch.device(device)
    out = np.zeros(images.shape[:3], np.float32)
    views = D4 if tta else [(0, False)]
    for i in range(0, len(images), batch_size):
        # np.array copies: decoded images may be read-only, and torch warns on those
        batch = np.array(images[i:i + batch_size, ..., :in_channels])
        x = augment.normalize(torch.from_numpy(batch).to(device), in_channels, stats)
        p = sum(_d4_inverse(torch.sigmoid(m(_d4(x, k, f)).float()), k, f)
                for m in models for k, f in views) / (len(models) * len(views))
        out[i:i + batch_size] = p[:, 0].cpu().numpy()
    return out


THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.025), 3)


def pooled_dice(probs: list[np.ndarray], masks: list[np.ndarray], thresholds=THRESHOLDS) -> np.ndarray:
    """Dice over all pixels of all images (micro), at each threshold: (len(thresholds),)."""
    p = np.concatenate([a.ravel() for a in probs])
    y = np.concatenate([m.ravel() for m in masks]) > 0
    t = np.asarray(thresholds)[:, None]
    # sort once; counts of predictions >= t come from searchsorted, not a pass per threshold
    ps, ys = np.sort(p), y[np.argsort(p, kind="stable")]
    cum_pos = np.concatenate([[0], np.cumsum(ys[::-1])])[::-1]  # positives at index >= i
    start = np.searchsorted(ps, t[:, 0], side="left")
    tp = cum_pos[start]
    pred = len(p) - start
    return 2 * tp / np.maximum(pred + y.sum(), 1)


def tune_threshold(probs, masks, folds) -> dict:
    """Threshold that maximises pooled out-of-fold Dice, and an honest estimate of what it gives:
    each fold scored at the threshold chosen on the *other* folds' predictions."""
    probs, masks, folds = list(probs), list(masks), np.asarray(folds)
    d = pooled_dice(probs, masks)
    best = float(THRESHOLDS[int(np.argmax(d))])
    tp = pred = pos = 0.0
    for f in np.unique(folds):
        rest = [i for i in range(len(probs)) if folds[i] != f]
        mine = [i for i in range(len(probs)) if folds[i] == f]
        if not rest:
            return {"threshold_oof": best, "oof_dice_tuned": float(d.max()), "oof_dice_tuned_cv": None}
        t = THRESHOLDS[int(np.argmax(pooled_dice([probs[i] for i in rest], [masks[i] for i in rest])))]
        for i in mine:
            b, y = probs[i] >= t, masks[i] > 0
            tp, pred, pos = tp + (b & y).sum(), pred + b.sum(), pos + y.sum()
    return {"threshold_oof": best, "oof_dice_tuned": float(d.max()),
            "oof_dice_tuned_cv": float(2 * tp / max(pred + pos, 1))}


def fit_to_32(img: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize an (H, W, 4) image so both sides are multiples of 32; returns it and the old (H, W)."""
    h, w = img.shape[:2]
    hw = (max(32, round(h / 32) * 32), max(32, round(w / 32) * 32))
    if hw == (h, w):
        return img, (h, w)
    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR)), (h, w)


def resize_prob(prob: np.ndarray, hw) -> np.ndarray:
    if prob.shape == tuple(hw):
        return prob
    return np.asarray(Image.fromarray(prob.astype(np.float32), mode="F").resize((hw[1], hw[0]), Image.BILINEAR))


def mask_png(prob: np.ndarray, threshold: float) -> bytes:
    # >= like smp.metrics.get_stats, so a saved mask is exactly what the metrics counted
    return _png(((prob >= threshold) * 255).astype(np.uint8))


def prob_png(prob: np.ndarray) -> bytes:
    return _png(np.clip(np.round(prob * 255), 0, 255).astype(np.uint8))


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def zip_pngs(named: dict[str, bytes]) -> bytes:
    """{stem: png bytes} -> zip bytes holding stem.png files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for stem, b in named.items():
            z.writestr(f"{stem}.png", b)
    return buf.getvalue()


def zip_masks(probs: dict[str, np.ndarray], threshold: float) -> bytes:
    """{stem: (H, W) probability} -> zip of stem.png binary masks (0/255, each at its own size)."""
    return zip_pngs({stem: mask_png(p, threshold) for stem, p in probs.items()})


def zip_probs(probs: dict[str, np.ndarray]) -> bytes:
    """{stem: (H, W) probability} -> zip of stem.png greyscale probability maps (0..255)."""
    return zip_pngs({stem: prob_png(p) for stem, p in probs.items()})


def unlabeled_images(dataset_dir) -> dict[str, np.ndarray]:
    """The dataset's images without a label (its prediction set): {stem: (H, W, 4) uint8}."""
    _, unlabeled, _ = data.find_pairs(dataset_dir)
    return {stem: data.load_image(path) for stem, path in unlabeled}


def decode_uploads(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """{file name: bytes} (browser uploads) -> {stem: (H, W, 4) uint8}.

    Decoded by data.load_image from a temporary copy, so uploads get the same checks (size limit,
    16-bit scaling, a clear error naming the file) as dataset files.
    """
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fname, b in files.items():
            name = Path(fname).name
            if not Path(name).stem or name in (".", ".."):
                raise data.DataError(f"{fname!r}: not a usable file name")
            if Path(name).stem in out:
                raise data.DataError(f"{name}: two uploads share the name '{Path(name).stem}'")
            path = Path(tmp) / name
            path.write_bytes(b)
            try:
                out[path.stem] = data.load_image(path)
            except data.DataError as e:
                raise data.DataError(str(e).replace(str(path), name)) from None
    return out


SAVED_PROBS = "predictions/test_prob.npz"       # float32 probabilities of the unlabeled images
SAVED_INPUTS = "predictions/test_inputs.json"   # {"tta": bool, "images": {name: image_key}}


def image_key(img: np.ndarray) -> str:
    """Content identity of a decoded image (shape and pixels), independent of its file name."""
    h = hashlib.sha256(repr((img.shape, str(img.dtype))).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def saved_predictions(run_dir, images: dict[str, np.ndarray], tta: bool = False) -> dict[str, np.ndarray]:
    """The probabilities the run already computed for any of `images` ({name: (H, W, C) uint8}):
    matched by content (image_key), so a renamed copy is reused and a changed file is not, and
    only when they were made with the same `tta` setting."""
    run_dir = Path(run_dir)
    meta = runs.read_json(run_dir / SAVED_INPUTS)
    if not isinstance(meta, dict) or bool(meta.get("tta")) != bool(tta):
        return {}
    by_key = {k: name for name, k in (meta.get("images") or {}).items()}
    wanted = {name: by_key.get(image_key(img)) for name, img in images.items()}
    if not any(wanted.values()):
        return {}
    try:
        with np.load(run_dir / SAVED_PROBS) as z:
            return {name: z[src].astype(np.float32) for name, src in wanted.items()
                    if src is not None and src in z.files and z[src].shape == images[name].shape[:2]}
    except (OSError, ValueError, KeyError):  # missing or damaged: recompute instead
        return {}


def predict_or_reuse(run_dir, images: dict[str, np.ndarray], device="cpu",
                     tta: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """({name: (H, W) float32 probability}, names reused from the run folder). Only images the run
    has not predicted (uploads, changed files, another TTA setting) load its models and run them."""
    reused = saved_predictions(run_dir, images, tta)
    rest = {n: img for n, img in images.items() if n not in reused}
    computed = predict_images(run_dir, rest, device, tta) if rest else {}
    return {n: reused[n] if n in reused else computed[n] for n in images}, list(reused)


def predict_images(run_dir, images: dict[str, np.ndarray], device="cpu", tta: bool = False) -> dict[str, np.ndarray]:
    """{name: (H, W, 3|4) uint8} -> {name: (H, W) float32 probability}, each at its own size."""
    models, cfg = load_run_models(run_dir, device)
    out = {}
    for name, img in images.items():
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=2)
        if img.shape[2] == 3:
            img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
        x, hw = fit_to_32(img)
        out[name] = resize_prob(predict_probs(models, x[None], cfg.in_channels, device, stats=cfg.stats(),
                                              tta=tta)[0], hw)
    return out


def write_predictions(run_dir, d, splits, models, cfg: RunConfig, device) -> tuple[list[dict], dict]:
    """Write predictions/{val,val_prob,test,test_prob}/*.png and per_image.json.

    Returns (per-image rows, out-of-fold figures): pooled OOF Dice at the config's threshold, and,
    for k-fold runs, the threshold tuned on the OOF predictions (tune_threshold)."""
    run_dir = Path(run_dir)
    for sub in ("val", "val_prob", "test", "test_prob"):
        (run_dir / "predictions" / sub).mkdir(parents=True, exist_ok=True)
    rows, oof_p, oof_y, oof_f = [], [], [], []
    norm = cfg.stats()
    for fold, (_, va) in enumerate(splits):
        model = models[fold] if len(models) == len(splits) else models[0]
        probs = predict_probs([model], d.images[va], cfg.in_channels, device, stats=norm, tta=cfg.tta)
        oof_p += list(probs)
        oof_y += list(d.masks[va])
        oof_f += [fold] * len(va)
        t = torch.from_numpy(probs)[:, None]
        logits = torch.logit(t.clamp(1e-6, 1 - 1e-6))
        stats = metrics.confusion(logits, torch.from_numpy(d.masks[va])[:, None], cfg.threshold)
        for j, (i, s) in enumerate(zip(va, metrics.per_image(*stats))):
            name = d.names[i]
            p = resize_prob(probs[j], d.orig_sizes[name])
            _write(run_dir / "predictions" / "val" / f"{name}.png", mask_png(p, cfg.threshold))
            _write(run_dir / "predictions" / "val_prob" / f"{name}.png", prob_png(p))
            rows.append({"name": name, "fold": fold, **s})
    oof = {"oof_dice": float(pooled_dice(oof_p, oof_y, [cfg.threshold])[0])}
    if cfg.tta:  # what TTA gained on this run: the same fold models, one view only
        plain = [predict_probs([models[f] if len(models) == len(splits) else models[0]],
                               d.images[va], cfg.in_channels, device, stats=norm)
                 for f, (_, va) in enumerate(splits)]
        oof["oof_dice_no_tta"] = float(pooled_dice([p for b in plain for p in b], oof_y, [cfg.threshold])[0])
    if len(splits) >= 2:
        oof.update(tune_threshold(oof_p, oof_y, oof_f))
    if len(d.test_names):
        probs = predict_probs(models, d.test_images, cfg.in_channels, device, stats=norm, tta=cfg.tta)
        saved = {}
        for name, p in zip(d.test_names, probs):
            p = saved[name] = resize_prob(p, d.orig_sizes[name])
            _write(run_dir / "predictions" / "test" / f"{name}.png", mask_png(p, cfg.threshold))
            _write(run_dir / "predictions" / "test_prob" / f"{name}.png", prob_png(p))
        # kept at full precision with the inputs' content keys, so Predict can reuse them
        np.savez_compressed(run_dir / SAVED_PROBS, **saved)
        keys = {}
        for name, path in data.find_pairs(cfg.data)[1]:
            if name in saved:  # only what was predicted: files load_dataset skipped are not re-read
                keys[name] = image_key(data.load_image(path))
        runs.write_json(run_dir / SAVED_INPUTS, {"tta": cfg.tta, "images": keys})
    runs.write_json(run_dir / "per_image.json", rows)
    return rows, oof


def _write(path: Path, b: bytes) -> None:
    path.write_bytes(b)
