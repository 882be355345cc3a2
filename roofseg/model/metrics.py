"""Segmentation metrics from confusion counts (smp.metrics), with the reduction spelled out.

Two reductions, named in every key:
- micro: counts summed over all pixels of all images, then the score (`dice`, `iou`, ...);
- per image: the score of each image, then the mean (`dice_img`, `iou_img`). An image with no
  roof that the model also leaves empty scores 1 (zero_division=1).
"""
from __future__ import annotations

import math

import torch
import segmentation_models_pytorch as smp

METRICS = ("dice", "iou", "precision", "recall", "accuracy", "dice_img", "iou_img")


def confusion(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5):
    """(N, 1, H, W) logits and 0/1 target -> tp, fp, fn, tn as (N, 1) int64 tensors on the CPU."""
    probs = torch.sigmoid(logits.detach().float())
    tp, fp, fn, tn = smp.metrics.get_stats(probs, target.detach().long(), mode="binary",
                                           threshold=threshold)
    return tp.cpu(), fp.cpu(), fn.cpu(), tn.cpu()


def scores(tp, fp, fn, tn) -> dict[str, float]:
    """Per-epoch scores from stacked per-image counts (N, 1)."""
    if len(tp) == 0:
        return {}
    m = smp.metrics

    def micro(metric, zero_division=1.0):
        # smp ignores zero_division for reduction="micro" and returns NaN for 0/0 (e.g. precision
        # of a model that predicts no roof yet); apply it here, like the per-image reduction does
        v = float(metric(tp, fp, fn, tn, reduction="micro"))
        return zero_division if math.isnan(v) else v
    return {
        "dice": micro(m.f1_score),
        "iou": micro(m.iou_score),
        "precision": micro(m.precision),
        "recall": micro(m.recall),
        "accuracy": micro(m.accuracy),
        "dice_img": float(m.f1_score(tp, fp, fn, tn, reduction="micro-imagewise", zero_division=1.0)),
        "iou_img": float(m.iou_score(tp, fp, fn, tn, reduction="micro-imagewise", zero_division=1.0)),
    }


def per_image(tp, fp, fn, tn) -> list[dict[str, float]]:
    """One dict of scores per image (counts (N, 1)), for the per-image table of a run."""
    out = []
    for i in range(len(tp)):
        t, p, n, z = tp[i:i + 1], fp[i:i + 1], fn[i:i + 1], tn[i:i + 1]
        s = scores(t, p, n, z)
        out.append({"dice": s["dice_img"], "iou": s["iou_img"], "precision": s["precision"],
                    "recall": s["recall"], "tp": int(t), "fp": int(p), "fn": int(n), "tn": int(z)})
    return out


class Meter:
    """Accumulates loss (weighted by batch size) and per-image confusion counts over an epoch."""

    def __init__(self, threshold: float = 0.5):
        self.threshold, self.loss, self.n, self.stats = threshold, 0.0, 0, []

    def update(self, loss: float, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.loss += loss * len(logits)
        self.n += len(logits)
        self.stats.append(confusion(logits, target, self.threshold))

    def counts(self):
        return [torch.cat(c) for c in zip(*self.stats)] if self.stats else [torch.zeros(0, 1)] * 4

    def result(self, prefix: str) -> dict[str, float]:
        out = {"loss": self.loss / max(self.n, 1), **scores(*self.counts())}
        return {f"{prefix}_{k}": v for k, v in out.items()}
