"""The training loop: train_one_epoch / evaluate return dicts, fit() runs holdout or k-fold.

fit(config, run_dir, hook) writes everything a run folder holds except status.json (runs.py owns
that): metrics.jsonl (one row per epoch, flushed), best weights per fold, per-image metrics,
predicted masks and probability maps, summary.json. `hook(event, info)` is the single progress
callback; the CLI prints from it, the app reads the run folder instead.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from roofseg.engine import augment
from roofseg.data import dataset as data
from roofseg.model import metrics
from roofseg.engine import predict
from roofseg.model import checkpoint
from roofseg.store import runs
from roofseg.config import RunConfig
from roofseg.model.factory import build_loss, build_model, build_optimizer, build_scheduler, param_groups, set_train_mode


def pick_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but no CUDA device is available")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(device: torch.device, amp: bool):
    # bf16 needs no loss scaler; on CPU autocast brings nothing for these convs, so it stays off
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def prepare_batch(batch, device, cfg):
    imgs, masks = batch
    x = augment.normalize(imgs.to(device, non_blocking=True), cfg.in_channels, cfg.stats())
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, masks.to(device, non_blocking=True).float()


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, device, cfg: RunConfig, epoch: int = 1) -> dict:
    """One pass over the loader; returns train_loss, train_dice, ..., lr (the decoder's, at the
    epoch's end). `epoch` (1-based) decides what freeze_encoder_epochs keeps fixed."""
    set_train_mode(model, cfg, epoch)
    meter = metrics.Meter(cfg.threshold)
    for batch in loader:
        x, y = prepare_batch(batch, device, cfg)
        with _autocast(device, cfg.amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} (diverged); try a lower lr than {cfg.lr}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        meter.update(loss.item(), logits, y)
    return {**meter.result("train"), "lr": optimizer.param_groups[-1]["lr"]}


@torch.no_grad()
def evaluate(model, loader, loss_fn, device, cfg: RunConfig, prefix: str = "val") -> dict:
    """Loss and metrics over a loader without augmentation; keys are prefixed (val_dice, ...)."""
    model.eval()
    meter = metrics.Meter(cfg.threshold)
    for batch in loader:
        x, y = prepare_batch(batch, device, cfg)
        with _autocast(device, cfg.amp):
            logits = model(x)
        meter.update(loss_fn(logits.float(), y).item(), logits, y)
    return meter.result(prefix)


def make_loader(d: data.SegData, idx, cfg: RunConfig, train: bool, seed: int):
    ds = augment.SegDataset(d.images[idx], d.masks[idx], cfg.in_channels,
                            cfg.augment if train else "none", seed, cfg.crop_size if train else 0)
    g = torch.Generator().manual_seed(seed)
    # drop_last avoids a batch of 1, which BatchNorm cannot train on
    drop = train and len(ds) > cfg.batch_size and len(ds) % cfg.batch_size == 1
    return torch.utils.data.DataLoader(ds, batch_size=min(cfg.batch_size, len(ds)), shuffle=train,
                                       generator=g, collate_fn=augment.collate, num_workers=0,
                                       drop_last=drop)


CHECKPOINT_EVERY_S = 30.0  # a new best is written at most this often, and always at the fold's end


class BestKeeper:
    """The best weights so far: held in memory (a CPU copy, tens of ms) on every improvement and
    written to disk at most every CHECKPOINT_EVERY_S seconds and at flush() — a 50 MB torch.save
    each time val Dice improves would cost a few percent of a short epoch. A crash or Cancel flushes
    what it holds (fit_fold's finally), so the file on disk is never older than that."""

    def __init__(self, path: Path, cfg: RunConfig, fold: int, every_s: float = CHECKPOINT_EVERY_S):
        self.path, self.cfg, self.fold, self.every_s = path, cfg, fold, every_s
        self.pending: dict | None = None
        self.last_write = -float("inf")  # the first best is written at once

    def update(self, model, epoch: int, val_dice: float) -> None:
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.pending = {"config": self.cfg.to_dict(), "state_dict": state, "fold": self.fold,
                        "epoch": epoch, "val_dice": val_dice}
        if time.monotonic() - self.last_write >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None:
            checkpoint.save_checkpoint(self.path, self.pending)
            self.pending, self.last_write = None, time.monotonic()


def fit_fold(cfg, d, train_idx, val_idx, fold, run_dir, device, hook, log) -> dict:
    """Train one model; keep the weights with the best val Dice. Returns that epoch's row."""
    seed_everything(cfg.seed + fold)
    model = build_model(cfg, log).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train_dl = make_loader(d, train_idx, cfg, True, cfg.seed + fold)
    val_dl = make_loader(d, val_idx, cfg, False, cfg.seed + fold)
    loss_fn = build_loss(cfg.loss)
    opt = build_optimizer(cfg, param_groups(model, cfg))
    sched = build_scheduler(cfg, opt, len(train_dl))
    best = None
    keeper = BestKeeper(run_dir / (f"best_fold{fold}.pt" if cfg.folds >= 2 else "best.pt"), cfg, fold)
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            row = {"fold": fold, "epoch": epoch,
                   **train_one_epoch(model, train_dl, loss_fn, opt, sched, device, cfg, epoch),
                   **evaluate(model, val_dl, loss_fn, device, cfg)}
            row["epoch_s"] = time.perf_counter() - t0
            row["time"] = time.time()
            if best is None or row["val_dice"] > best["val_dice"]:
                best = dict(row)
                if cfg.keep == "best":
                    keeper.update(model, epoch, row["val_dice"])
            if cfg.keep == "last":
                keeper.update(model, epoch, row["val_dice"])
            row["best_val_dice"] = best["val_dice"]
            runs.append_metrics(run_dir, row)
            log(f"fold {fold} epoch {epoch}/{cfg.epochs}: train_loss {row['train_loss']:.4f} "
                f"val_loss {row['val_loss']:.4f} val_dice {row['val_dice']:.4f} ({row['epoch_s']:.1f}s)")
            hook("epoch", row)
    finally:  # done, cancelled or failed: the best weights so far are on disk
        keeper.flush()
    return {**best, "last": {k: v for k, v in row.items() if k.startswith("val_")}}


def fit(cfg: RunConfig, run_dir, hook=None, log=print) -> dict:
    """Train (holdout or k-fold), predict, and write the run folder; returns the summary dict."""
    cfg = cfg.resolved().validate()  # normalisation written out, so checkpoints record it
    hook = hook or (lambda event, info: None)
    run_dir = Path(run_dir)
    t_start = time.time()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    d = data.load_dataset(cfg.data, cfg.image_size, cfg.exclude_flagged, cfg.excluded_names())
    for line in d.notes:
        log(line)
    n = len(d.names)
    if cfg.folds >= 2:
        splits = data.kfold_splits(n, cfg.folds, cfg.seed)
    else:
        splits = [data.holdout_split(n, cfg.val_fraction, cfg.seed)]
    if cfg.batch_size > len(splits[0][0]):
        raise data.DataError(f"batch_size={cfg.batch_size} is larger than the {len(splits[0][0])} "
                             "training images of a split; lower it")
    log(f"device {device}, {n} labelled pairs, {len(d.test_names)} unlabeled, "
        f"{len(splits)} split(s), image size {d.images.shape[2]}x{d.images.shape[1]}")
    hook("start", {"pairs": n, "splits": len(splits), "epochs": cfg.epochs, "device": str(device)})
    bests = []
    for fold, (tr, va) in enumerate(splits):
        best = fit_fold(cfg, d, tr, va, fold, run_dir, device, hook, log)
        bests.append(best)
        log(f"fold {fold}: best val_dice {best['val_dice']:.4f} at epoch {best['epoch']}")
        hook("fold_end", best)
    models, _ = predict.load_run_models(run_dir, device)
    per_img, oof = predict.write_predictions(run_dir, d, splits, models, cfg, device)
    summary = {**summarize(cfg, bests, per_img, d, time.time() - t_start, str(device)), **oof}
    runs.write_json(run_dir / "summary.json", summary)
    hook("end", summary)
    return summary


def summarize(cfg, bests, per_img, d, seconds, device) -> dict:
    """Best row per fold, mean and std over folds (val_dice: at each fold's best epoch, chosen on
    that fold, so optimistic; val_dice_last: at the last epoch, the honest figure), out-of-fold
    per-image means, data exclusions."""
    keys = [k for k in bests[0] if k.startswith("val_")]
    s = {"folds": len(bests), "epochs": cfg.epochs, "minutes": seconds / 60, "device": device,
         "pairs": len(d.names), "excluded": d.excluded, "data_notes": d.notes, "keep": cfg.keep,
         "tta": cfg.tta, "best_epoch": [b["epoch"] for b in bests],
         "per_fold": [{k: v for k, v in b.items() if k != "last"} for b in bests]}
    for k in keys:
        for suffix, rows in (("", bests), ("_last", [b.get("last", b) for b in bests])):
            vals = np.array([r[k] for r in rows], dtype=float)
            s[k + suffix] = float(vals.mean())
            s[k + suffix + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    if per_img:
        s["oof_dice_img"] = float(np.mean([r["dice"] for r in per_img]))
        s["oof_iou_img"] = float(np.mean([r["iou"] for r in per_img]))
    return json.loads(json.dumps(s))  # plain JSON types only


def preflight(cfg: RunConfig) -> data.DataReport:
    """Check a config against its data and smp before a run folder is made; raise on the first
    problem with a message that names it (the CLI and the app call this before launching)."""
    from roofseg.model.factory import create
    from roofseg.config import incompatible
    cfg.validate()
    rep = data.check_dataset(cfg.data)
    labelled = {s for s, _, _ in data.find_pairs(cfg.data)[0]}
    unknown = [n for n in cfg.excluded_names() if n not in labelled]
    if unknown:
        raise data.DataError(f"exclude={cfg.exclude!r}: {', '.join(unknown)} is not a labelled image of "
                             f"{cfg.data}; name images by their file stem (e.g. 278)")
    usable = rep.n_pairs - len(data.excluded_pairs(rep, cfg.exclude_flagged, cfg.excluded_names()))
    if not rep.n_pairs:
        raise data.DataError(f"{cfg.data}: no image has a label (labels/ missing, empty, or no file "
                             "names match): prediction-only data; training needs at least 2 pairs")
    if usable < 2:
        raise data.DataError(f"{cfg.data}: {usable} usable labelled pair(s); training needs at least 2")
    if cfg.folds > usable:
        raise data.DataError(f"folds={cfg.folds} is more than the {usable} usable labelled pairs in {cfg.data}")
    # the very splits fit() will make: k-fold folds differ in size by one, so use the smallest
    splits = (data.kfold_splits(usable, cfg.folds, cfg.seed) if cfg.folds >= 2
              else [data.holdout_split(usable, cfg.val_fraction, cfg.seed)])
    n_train = min(len(tr) for tr, _ in splits)
    if cfg.batch_size > n_train:
        raise data.DataError(f"batch_size={cfg.batch_size} is larger than the {n_train} training images "
                             f"of a split of {cfg.data}; lower it")
    why = incompatible(cfg.arch, cfg.encoder)
    if why:
        from roofseg.model.factory import ModelError, compatible_encoders
        raise ModelError(f"{cfg.arch} with encoder {cfg.encoder} does not build: {why}; encoders that "
                         f"work with {cfg.arch}: {compatible_encoders(cfg.arch)}")
    _dry_run(create(cfg.arch, cfg.encoder, cfg.in_channels), cfg, rep)
    if cfg.encoder_weights not in ("none", "imagenet") and not Path(cfg.encoder_weights).is_file():
        raise FileNotFoundError(f"encoder_weights={cfg.encoder_weights}: file not found")
    if cfg.init_from and not runs.checkpoint_paths(cfg.init_from):
        raise FileNotFoundError(f"init_from={cfg.init_from}: no best*.pt weights in that folder")
    return rep


def _dry_run(model, cfg: RunConfig, rep: data.DataReport) -> None:
    """One forward pass at the size training will use: some architectures (PAN below 128 px) build
    but cannot run on small inputs, which would otherwise fail only inside the worker."""
    from roofseg.model.factory import ModelError
    if cfg.image_size:
        h = w = cfg.image_size
    else:  # as load_dataset: the most common image size, rounded to multiples of 32
        w, h = (int(v) for v in max(rep.sizes, key=rep.sizes.get).split("x"))
        h, w = max(32, round(h / 32) * 32), max(32, round(w / 32) * 32)
    if 0 < cfg.crop_size < min(h, w):
        h = w = cfg.crop_size
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, cfg.in_channels, h, w))
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"{cfg.arch} with encoder {cfg.encoder} cannot run on {w}x{h} inputs "
                         f"({str(e).splitlines()[0]}); use a larger image_size or crop_size") from None
