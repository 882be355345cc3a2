"""Labels to review (issue #13): do planted label errors rank at the top of a k-fold run's label
review, and how many clean labels does the review flag?

On the synthetic demo (30 images, 25 labelled, 256 px; `python -m roofseg data demo`), a copy gets
three planted errors: one label replaced by another image's mask (re-encoded, so the duplicate-file
check does not catch it), one label with its largest roof erased, one label shifted 12 px to the
right. A k-fold run is trained on that copy and another on the clean demo (roofseg.store.runs +
roofseg.exec.worker, a short pretrained recipe); roofseg.store.review.review ranks each. Reported:
the rank of each planted error, precision at k = 3 and 5, what was flagged, and on the clean demo
the number flagged (every one a false alarm). --work DIR keeps the datasets and runs there and
reuses finished runs on a second call (the review alone is then re-measured in seconds).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

import _common
from _common import parser, report

from roofseg.config import RunConfig
from roofseg.data import dataset as data
from roofseg.data.demo import make_demo
from roofseg.store import review, runs

NAME = "label_review"
SHIFT = 12


def _save_mask(mask01: np.ndarray, path: Path) -> None:
    # optimize=True re-encodes: a swapped-in label is not byte-identical to its source (which the
    # data check would flag as a duplicate); the review has to find it from the pixels
    Image.fromarray((mask01 > 0).astype(np.uint8) * 255).save(path, optimize=True)


def plant(root: Path) -> dict[str, str]:
    """Plant the three errors into the dataset at root; {name: what was planted}."""
    pairs, _, _ = data.find_pairs(root)
    names = [s for s, _, _ in pairs]
    labels = {s: lp for s, _, lp in pairs}
    roofs = {s: ndimage.label(data.load_label(labels[s]))[1] for s in names}
    many = [s for s in names if roofs[s] >= 2]  # erase a roof where others remain
    swap, src = names[3], names[17]
    erase = next(s for s in many if s not in (swap, src, names[3]) and names.index(s) >= 8)
    shift = next(s for s in names[12:] if s not in (swap, src, erase) and data.load_label(labels[s]).mean() > 0.03)
    _save_mask(data.load_label(labels[src]), labels[swap])
    m = data.load_label(labels[erase])
    comp, n = ndimage.label(m)
    sizes = np.bincount(comp.ravel())[1:]
    m[comp == int(np.argmax(sizes)) + 1] = 0
    _save_mask(m, labels[erase])
    m = data.load_label(labels[shift])
    moved = np.zeros_like(m)
    moved[:, SHIFT:] = m[:, :-SHIFT]
    _save_mask(moved, labels[shift])
    return {swap: f"swapped: holds {src}'s label", erase: f"erased: largest of its {roofs[erase]} roofs removed",
            shift: f"shifted {SHIFT} px right"}


def softmin_ranking(run_dir: Path) -> list[str]:
    """The run's labelled images ranked by cleanlab's default segmentation score, for comparison:
    the softmin (temperature 0.1) of the pixel self-confidences (p for roof, 1 - p for
    background), lowest first. Computed here with numpy from its published formula; roofseg does
    not use cleanlab (AGPL-3.0; see roofseg/store/review.py)."""
    root = Path(runs.read_json(run_dir / "config.json")["data"])
    labels = {s: lp for s, _, lp in data.find_pairs(root)[0]}
    scores = {}
    for row in runs.read_per_image(run_dir):
        y = data.load_label(labels[row["name"]]).astype(bool)
        with Image.open(run_dir / review.PROBS / f"{row['name']}.png") as im:
            p = np.asarray(im.convert("L"), np.float64) / 255
        sc = np.where(y, p, 1 - p).ravel()
        z = (1 - sc) / 0.1
        w = np.exp(z - z.max())
        scores[row["name"]] = float((sc * w).sum() / w.sum())
    return sorted(scores, key=lambda n: (scores[n], n))


def train(dataset: Path, runs_dir: Path, name: str, args) -> tuple[Path, float]:
    """A finished k-fold run named `name` in runs_dir: found again when present, else trained."""
    for d in runs.list_runs(runs_dir):
        cfg = runs.read_json(d / "config.json", {}) or {}
        if cfg.get("name") == name and runs.status(d).get("state") == "done":
            return d, float((runs.read_json(d / "summary.json", {}) or {}).get("minutes", 0)) * 60
    cfg = RunConfig(data=str(dataset), folds=args.folds, encoder=args.encoder, encoder_weights=args.weights,
                    epochs=args.epochs, num_threads=args.threads, name=name).validate()
    print(f"training {name} in {runs_dir}", flush=True)
    return _common.train_run(cfg, runs_dir, name)


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--work", help="folder for the datasets and runs, kept and reused (default: a temporary one)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--encoder", default="timm-tf_efficientnet_lite0")
    p.add_argument("--weights", default="imagenet", help="encoder weights")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--no-clean", action="store_true", help="skip the clean-demo run (no false-alarm figure)")
    args = p.parse_args()
    _common.machine()
    keep = []
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        keep.append(tempfile.TemporaryDirectory(prefix="roofseg-bench-review-"))
        work = Path(keep[0].name)
    clean = work / "demo"
    if not (clean / "images").is_dir():
        make_demo(clean, n_images=30, n_labels=25, size=256, seed=0)
    planted_dir = work / "planted"
    if not (planted_dir / "PLANTED.txt").is_file():
        shutil.rmtree(planted_dir, ignore_errors=True)
        shutil.copytree(clean, planted_dir)
        planted = plant(planted_dir)
        (planted_dir / "PLANTED.txt").write_text("\n".join(f"{k}\t{v}" for k, v in planted.items()))
    planted = dict(line.split("\t", 1) for line in (planted_dir / "PLANTED.txt").read_text().splitlines())
    flagged_by_check = data.check_dataset(planted_dir).flagged
    runs_dir = work / "runs"
    recipe = (f"FPN-{args.encoder} ({args.weights}), {args.epochs} epochs, {args.folds} folds, "
              f"{args.threads} thread(s)")
    run_p, secs_p = train(planted_dir, runs_dir, f"bench label review: planted ({recipe})", args)
    t = time.perf_counter()
    rev_p = review.review(run_p)
    review_s = time.perf_counter() - t
    ranked = [r["name"] for r in rev_p["images"]]
    rank = {s: ranked.index(s) + 1 if s in ranked else None for s in planted}
    prec = {k: sum(s in planted for s in ranked[:k]) / k for k in (3, 5)}
    flagged_p = [r for r in rev_p["images"] if r["flagged"]]
    rev_c, run_c, secs_c = None, None, 0.0
    if not args.no_clean:
        run_c, secs_c = train(clean, runs_dir, f"bench label review: clean ({recipe})", args)
        rev_c = review.review(run_c)
    dice = lambda d: (runs.read_json(d / "summary.json", {}) or {}).get("val_dice", float("nan"))  # noqa: E731
    lines = [f"Synthetic demo, 30 images / 25 labelled, 256 px; recipe {recipe}. Planted run: val Dice "
             f"{dice(run_p):.3f}, trained in {secs_p / 60:.1f} min; review of its {len(ranked)} labels "
             f"in {review_s:.2f} s. The data check flagged {len(flagged_by_check)} planted pair(s) "
             f"({', '.join(flagged_by_check) or 'none'}).", "",
             "| planted error | image | rank (of %d) | score | flagged | reason |" % len(ranked), "|---|---|---|---|---|---|"]
    by_name = {r["name"]: r for r in rev_p["images"]}
    for s, what in planted.items():
        r = by_name.get(s, {})
        lines.append(f"| {what} | {s} | {rank[s]} | {r.get('score', float('nan')):.3f} | "
                     f"{'yes' if r.get('flagged') else 'no'} | {r.get('reason', '')} |")
    soft = softmin_ranking(run_p)
    soft_rank = {s: soft.index(s) + 1 for s in planted}
    soft_prec = {k: sum(s in planted for s in soft[:k]) / k for k in (3, 5)}
    clean_in_p = [r for r in flagged_p if r["name"] not in planted]
    lines += ["", f"- precision at 3: {prec[3]:.2f}; precision at 5: {prec[5]:.2f}",
              f"- for comparison, cleanlab's default score (softmin of pixel self-confidences, T = 0.1) on the "
              f"same maps: planted ranks " + ", ".join(f"{planted[s].split(':')[0]} {soft_rank[s]}" for s in planted)
              + f"; precision at 3: {soft_prec[3]:.2f}, at 5: {soft_prec[5]:.2f}",
              f"- flagged in the planted run: {len(flagged_p)} "
              f"({sum(r['name'] in planted for r in flagged_p)} planted, "
              f"{len(clean_in_p)} of the {len(ranked) - len(planted)} unplanted, a false-alarm rate of "
              f"{len(clean_in_p) / max(1, len(ranked) - len(planted)):.0%}: "
              + (", ".join(f"{r['name']} ({r['reason']})" for r in flagged_p if r["name"] not in planted) or "none") + ")",
              f"- top 5: " + ", ".join(f"{r['name']} {r['score']:.3f}" for r in rev_p["images"][:5])]
    if rev_c is not None:
        fc = [r for r in rev_c["images"] if r["flagged"]]
        lines += [f"- clean demo (val Dice {dice(run_c):.3f}, trained in {secs_c / 60:.1f} min): "
                  f"{len(fc)} of {len(rev_c['images'])} flagged, false-alarm rate {len(fc) / len(rev_c['images']):.0%}"
                  + (": " + "; ".join(f"{r['name']} ({r['reason']})" for r in fc) if fc else ""),
                  f"- clean demo, lowest scores: " + ", ".join(f"{r['name']} {r['score']:.3f}" for r in rev_c["images"][:5])]
    lines.append(f"- flag rule: {review.RULE}; thresholds (planted run): roof p >= "
                 f"{rev_p['thresholds']['roof']:.3f}, background p <= {1 - rev_p['thresholds']['background']:.3f}")
    result = {"planted": planted, "rank": rank, "precision": prec, "softmin_rank": soft_rank,
              "softmin_precision": soft_prec, "review_planted": rev_p, "review_clean": rev_c,
              "runs": [str(run_p), str(run_c)], "train_s": [secs_p, secs_c], "review_s": review_s}
    report(NAME, "Labels to review: planted errors and false alarms", lines, result, args.out)


if __name__ == "__main__":
    main()
