"""Inference latency: predict a dataset's unlabeled images with a trained run and zip the masks.

What the Predict page does for a download: predict.predict_images (load the run's best*.pt
models, predict each image at its own size) -> predict.mask_png per image -> predict.zip_pngs.
Timed from the call to the zip bytes; the images are decoded beforehand (not timed: the page has
them from the upload or the dataset). Two figures, alternated cold/warm in one process:
- cold: predict_images as it is, which loads the models from disk on every call;
- warm: the same call with the models already loaded (predict.load_run_models answered from
  memory for the duration, so exactly the same code runs minus the loading).
Both are timed for each --threads setting (default: torch's default, which the app gets, and 1),
the settings alternating rep by rep. The first call of the process (lazy torch/smp
initialisation) is reported on its own.

Without --run, a tiny 1-epoch run (or --folds k models) is trained first into a temporary runs
dir; that training is not timed. Predictions do not depend on how well the model is trained.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import _common
from _common import med, parser, peak_rss_mib, report, resolve_data

import roofseg.model  # noqa: F401  (the torchvision guard runs before timm/smp import)
import torch
from roofseg.data import dataset as data
from roofseg.engine import predict
from roofseg.store import runs
from roofseg.config import RunConfig

NAME = "inference"
TARGET_S = 2.0


@contextlib.contextmanager
def models_in_memory(loaded):
    """predict.load_run_models returns `loaded` instead of reading the checkpoints."""
    real = predict.load_run_models
    predict.load_run_models = lambda run_dir, device="cpu": loaded
    try:
        yield
    finally:
        predict.load_run_models = real


def masks_zip(run_dir, images: dict, threshold: float) -> tuple[bytes, dict, float]:
    """(zip bytes, {stem: mask PNG bytes}, seconds spent in predict_images) for the images."""
    t = time.perf_counter()
    probs = predict.predict_images(run_dir, images)
    t_pred = time.perf_counter() - t
    pngs = {s: predict.mask_png(p, threshold) for s, p in probs.items()}
    return predict.zip_pngs(pngs), pngs, t_pred


def train_tiny(dataset: Path, folds: int, runs_dir: Path) -> tuple[Path, float]:
    # the default model (what a user gets), trained one epoch: inference time does not depend on
    # how well it learnt
    cfg = RunConfig(data=str(dataset), encoder_weights="none", epochs=1, folds=folds,
                    augment="none", name="bench inference (1 epoch)").validate()
    return _common.train_run(cfg, runs_dir, "the tiny run")


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--run", help="a finished run folder (default: train a tiny 1-epoch run first)")
    p.add_argument("--folds", type=int, default=0,
                   help="folds of the tiny run (0 = holdout, one model; k = k models averaged)")
    p.add_argument("--reps", type=int, default=5, help="cold and warm repetitions each (median reported)")
    p.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                   help="torch thread settings to time, alternated (0 = torch's default, as the app); "
                        "e.g. --threads 0 1")
    args = p.parse_args()
    _common.machine()  # before any change to torch's threads
    if len(args.threads) > 2:
        p.error("--threads takes one or two settings")

    keep: list = []
    dataset, what = resolve_data(args.data, keep)
    print(f"data: {dataset} — {what}")
    _, unlabeled, _ = data.find_pairs(dataset)
    if not unlabeled:
        p.error(f"{dataset} has no unlabeled images to predict")
    t = time.perf_counter()
    images = {stem: data.load_image(path) for stem, path in unlabeled}
    decode_s = time.perf_counter() - t

    train_s = None
    if args.run:
        run_dir = Path(args.run)
        if not runs.checkpoint_paths(run_dir):
            p.error(f"--run {run_dir}: no best*.pt weights there (a finished run folder is needed)")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="roofseg-bench-runs-")
        keep.append(tmp)
        print(f"training a tiny {'holdout' if args.folds < 2 else f'{args.folds}-fold'} 1-epoch run "
              "(not timed)...", flush=True)
        run_dir, train_s = train_tiny(dataset, args.folds, Path(tmp.name))
    n_models = len(runs.checkpoint_paths(run_dir))
    threshold = float(runs.read_json(run_dir / "config.json", {}).get("threshold", 0.5))

    default_threads = torch.get_num_threads()
    settings = list(dict.fromkeys(n or default_threads for n in args.threads))
    torch.set_num_threads(settings[0])
    t = time.perf_counter()
    first_zip, first_pngs, first_pred = masks_zip(run_dir, images, threshold)
    first = time.perf_counter() - t
    keys = ("cold", "warm", "cold_predict", "warm_predict", "load_models")
    by = {n: {k: [] for k in keys} for n in settings}
    for rep in range(args.reps):
        for n in (settings if rep % 2 == 0 else settings[::-1]):  # alternate the thread settings
            torch.set_num_threads(n)
            r = by[n]
            t = time.perf_counter()
            _, pngs, tp = masks_zip(run_dir, images, threshold)
            r["cold"].append(time.perf_counter() - t)
            r["cold_predict"].append(tp)
            assert pngs == first_pngs, "masks must not change between calls"  # (zips hold timestamps)
            t = time.perf_counter()
            loaded = predict.load_run_models(run_dir)
            r["load_models"].append(time.perf_counter() - t)
            with models_in_memory(loaded):
                t = time.perf_counter()
                _, pngs, tp = masks_zip(run_dir, images, threshold)
                r["warm"].append(time.perf_counter() - t)
                r["warm_predict"].append(tp)
            assert pngs == first_pngs, "warm masks must equal cold ones"
            print(f"  rep {rep + 1}/{args.reps}, {n} thread(s): cold {r['cold'][-1]:.3f} s, "
                  f"warm {r['warm'][-1]:.3f} s", flush=True)
    sizes = sorted({f"{a.shape[1]}x{a.shape[0]}" for a in images.values()})
    res = {"run": str(run_dir), "models": n_models, "images": list(images), "image_sizes": sizes,
           "data": str(dataset), "data_kind": what, "threads": settings, "torch_default_threads": default_threads,
           "train_tiny_s": train_s, "decode_s": decode_s, "first_call_s": first, "first_call_threads": settings[0],
           "by_threads": {str(n): v for n, v in by.items()}, "zip_bytes": len(first_zip),
           "peak_rss_mib": peak_rss_mib()}

    def ok(v):
        return "met" if v <= TARGET_S else "NOT met"

    def tn(n):
        return f"{n} thread{'s' if n > 1 else ''}" + (" (torch default, as the app)" if n == default_threads else "")

    lines = [f"- {len(images)} unlabeled images ({', '.join(sizes)}) of {dataset} ({what}); run "
             f"{run_dir.name}: {n_models} model(s) (" + ("tiny 1-epoch run trained by this script"
                                                         if train_s is not None else "given with --run") + ")",
             f"- timed: predict.predict_images + predict.mask_png per image + predict.zip_pngs "
             f"(zip of {len(first_zip) / 1024:.0f} KiB); images decoded beforehand "
             f"({decode_s * 1000:.0f} ms, not timed); medians of {args.reps} cold/warm pairs"
             + (", thread settings alternated" if len(settings) > 1 else ""),
             "", "| torch threads | figure | median s | min–max s | of which predict_images | target |",
             "|---|---|---|---|---|---|"]
    for n, r in by.items():
        for k, label in (("cold", "cold (models loaded from disk in the call)"),
                         ("warm", "warm (models already in memory)")):
            v = r[k]
            lines.append(f"| {tn(n)} | {label} | {med(v):.3f} | {min(v):.3f}–{max(v):.3f} | "
                         f"{med(r[k + '_predict']):.3f} | ≤ {TARGET_S:g} s: {ok(med(v))} |")
    lines.append(f"| {tn(settings[0])} | first call in the process (cold + lazy init) | {first:.3f} | | "
                 f"{first_pred:.3f} | ≤ {TARGET_S:g} s: {ok(first)} |")
    lines.append("")
    for n, r in by.items():
        lines.append(f"- {tn(n)}: loading the {n_models} model(s) alone (predict.load_run_models) median "
                     f"{med(r['load_models']):.3f} s; cold ÷ warm = {med(r['cold']) / med(r['warm']):.2f}")
    if len(settings) == 2:
        a, b = settings
        lines.append(f"- {a} ÷ {b} threads, warm median: **{med(by[a]['warm']) / med(by[b]['warm']):.2f}** "
                     f"(cold {med(by[a]['cold']) / med(by[b]['cold']):.2f})")
    lines.append(f"- peak RSS {res['peak_rss_mib']:.0f} MiB")
    report(NAME, f"Inference: {len(images)} images -> masks zip ({n_models} model(s))", lines, res, args.out)


if __name__ == "__main__":
    main()
