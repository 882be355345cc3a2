"""Predict page, time to first overlay on a finished k-fold run's own unlabeled images: before
(every fold model loaded and run again, predict.predict_images) and after (the probabilities the
run saved, matched by content, predict.predict_or_reuse), alternated in one process.

Timed per call: the library call the page makes, then the first overlay the page draws
(overlay.overlay_mask at the run's threshold); images decoded beforehand, as the page has them.
Without --run, a 1-epoch k-fold run of roofseg's default model is trained first (not timed).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import _common
from _common import med, parser, report, resolve_data
from inference import train_tiny

from roofseg.data import overlay
from roofseg.engine import predict
from roofseg.store import runs

NAME = "predict_reuse"


def first_overlay(fn, run_dir, images, threshold):
    t = time.perf_counter()
    out = fn(run_dir, images)
    probs = out[0] if isinstance(out, tuple) else out
    name = next(iter(images))
    overlay.overlay_mask(images[name], probs[name] >= threshold, alpha=0.5)
    return time.perf_counter() - t, out


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--run", help="a finished k-fold run folder (default: train a tiny one first)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    _common.machine()
    keep: list = []
    dataset, what = resolve_data(args.data, keep)
    if args.run:
        run_dir = Path(args.run)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="roofseg-bench-reuse-")
        keep.append(tmp)
        run_dir, _ = train_tiny(dataset, args.folds, Path(tmp.name))
    images = predict.unlabeled_images(runs.read_json(run_dir / "config.json")["data"])
    threshold = float(runs.read_json(run_dir / "config.json")["threshold"])
    n_models = len(runs.checkpoint_paths(run_dir))
    loads = []
    real = predict.load_model
    predict.load_model = lambda *a, **k: (loads.append(1), real(*a, **k))[1]
    before, after, reused = [], [], []
    first_overlay(predict.predict_images, run_dir, images, threshold)  # lazy torch/smp set-up, not timed
    for rep in range(args.reps):
        for arm in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            n0 = len(loads)
            if arm == "before":
                s, _ = first_overlay(predict.predict_images, run_dir, images, threshold)
                before.append((s, len(loads) - n0))
            else:
                s, (_, names) = first_overlay(predict.predict_or_reuse, run_dir, images, threshold)
                after.append((s, len(loads) - n0))
                reused.append(len(names))
    b, a = med([s for s, _ in before]), med([s for s, _ in after])
    result = {"run": str(run_dir), "models": n_models, "images": len(images), "reps": args.reps,
              "before_s": before, "after_s": after, "reused": reused}
    lines = [f"{len(images)} unlabeled images of {what}, a {n_models}-model run, {args.reps} reps each, alternated:",
             "", "| Predict, first overlay | median | models loaded per call |", "|---|---|---|",
             f"| before: predict_images (all fold models run again) | {b:.3f} s | {before[0][1]} |",
             f"| after: predict_or_reuse (saved probabilities, matched by content) | {a:.4f} s | {after[0][1]} |",
             "", f"- speed-up {b / a:.0f}×; images reused per call: {reused[0]} of {len(images)}"]
    report(NAME, "Predict: time to first overlay, recomputed vs reused", lines, result, args.out)


if __name__ == "__main__":
    main()
