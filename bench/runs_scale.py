"""Run-store scale: results.parquet rebuilds and the Runs / Compare pages with 1000 finished runs.

Writes N synthetic finished run folders into a temporary runs dir, laid out as train.fit and
worker.execute leave them: config.json (RunConfig, varied arch/encoder/loss/lr/seed; 20% k-fold),
status.json (done), metrics.jsonl (30 epoch rows with every key train.fit_fold writes: 30 epochs
for holdout runs, 5 folds x 6 epochs for k-fold runs), summary.json (made by train.summarize
itself), per_image.json, env.json and log.txt; no weights (best*.pt is not read by either page).
The runs point at --data, and the 10 runs opened on the Compare page also get predictions/
(val, val_prob, test, test_prob PNGs at the dataset's size, made from its labels with errors added).

Then it times, each as the median of --reps repetitions:
- results.rebuild(full=True): every row re-read from the folders;
- results.rebuild(): incremental with nothing changed; and after one run gains a metrics line;
- the Runs page (pages/runs.py) through streamlit.testing AppTest: at.run() on a fresh AppTest;
- the Compare page (pages/compare.py) with session_state["selected_runs"] = 10 run ids, with its
  st.cache_data cleared before each repetition (cold) and kept (warm).
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import _common
from _common import ROOT, med, parser, peak_rss_mib, report, resolve_data

import numpy as np
from PIL import Image

import roofseg.model  # noqa: F401  (the torchvision guard runs before timm/smp import)
from roofseg.data import dataset as data
from roofseg.model import metrics
from roofseg.store import results
from roofseg.store import runs
from roofseg.engine import train
from roofseg.config import ARCHS, ENCODERS, LOSSES, OPTIMIZERS, RunConfig, incompatible

NAME = "runs_scale"
ROWS = 30  # metrics lines per run
KFOLD_SHARE = 0.2
N_COMPARE = 10


# ---------------------------------------------------------------------------------------------
# synthetic run folders
def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2))


def _epoch_rows(rng, folds: int, epochs: int, t0: float, lr: float, quality: float) -> list[dict]:
    """Plausible curves: losses fall, Dice rises towards `quality` with noise; keys as train.py."""
    rows, t = [], t0
    for fold in range(max(folds, 1)):
        best = -1.0
        for epoch in range(1, epochs + 1):
            p = epoch / epochs
            row = {"fold": fold, "epoch": epoch}
            for prefix, lift in (("train", 0.04), ("val", 0.0)):
                dice = float(np.clip(quality * (1 - 0.7 * math.exp(-4 * p)) + lift + rng.normal(0, 0.02), 0, 1))
                iou = dice / (2 - dice)
                prec = float(np.clip(dice + rng.normal(0, 0.03), 0, 1))
                rec = float(np.clip(dice + rng.normal(0, 0.03), 0, 1))
                row.update({f"{prefix}_loss": float(1.1 - dice + rng.normal(0, 0.02)),
                            f"{prefix}_dice": dice, f"{prefix}_iou": iou,
                            f"{prefix}_precision": prec, f"{prefix}_recall": rec,
                            f"{prefix}_accuracy": float(0.85 + 0.14 * dice),
                            f"{prefix}_dice_img": float(np.clip(dice - 0.02, 0, 1)),
                            f"{prefix}_iou_img": float(np.clip(iou - 0.02, 0, 1))})
                if prefix == "train":
                    row["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p)))
            row["epoch_s"] = float(rng.uniform(6, 14))
            t += row["epoch_s"]
            row["time"] = t
            best = max(best, row["val_dice"])
            row["best_val_dice"] = best
            rows.append(row)
    assert set(rows[0]) >= {f"val_{m}" for m in metrics.METRICS}, "keep in step with metrics.METRICS"
    return rows


def _per_image(rng, names, splits, quality) -> list[dict]:
    out = []
    for fold, (_, va) in enumerate(splits):
        for i in va:
            dice = float(np.clip(quality + rng.normal(0, 0.08), 0, 1))
            tp = int(rng.integers(4000, 12000))
            fn = fp = int(tp * (1 - dice) / max(dice, 1e-3) / 2)
            out.append({"name": names[i], "fold": fold, "dice": dice, "iou": dice / (2 - dice),
                        "precision": tp / (tp + fp), "recall": tp / (tp + fn),
                        "tp": tp, "fp": fp, "fn": fn, "tn": 65536 - tp - fp - fn})
    return out


def make_runs(runs_dir: Path, n: int, dataset: Path, seed: int = 0) -> list[Path]:
    """n finished run folders, named and stamped like runs.create_run's, oldest first."""
    rng = np.random.default_rng(seed)
    pairs, unlabeled, _ = data.find_pairs(dataset)
    flagged = data.check_dataset(dataset).flagged  # e.g. DIDA's duplicate label: runs exclude it
    names = [s for s, _, _ in pairs if s not in flagged]
    notes = [f"excluded {s}: {r}" for s, r in flagged.items()]
    env = runs.environment()
    combos = [(a, e) for a in ARCHS for e in ENCODERS if not incompatible(a, e)]
    base = time.time() - n * 3600
    out = []
    for i in range(n):
        arch, enc = combos[rng.integers(len(combos))]
        kfold = rng.random() < KFOLD_SHARE
        folds, epochs = (5, ROWS // 5) if kfold else (0, ROWS)
        lr = float(10 ** rng.uniform(-4, -2.5))
        cfg = RunConfig(data=str(dataset), arch=arch, encoder=enc, loss=str(rng.choice(LOSSES)),
                        optimizer=str(rng.choice(OPTIMIZERS)), lr=lr, seed=int(rng.integers(5)),
                        folds=folds, epochs=epochs, augment=str(rng.choice(["none", "light", "strong"])),
                        name=f"trial {i}" if i % 3 else "", sweep="scale-test" if i % 4 == 0 else "",
                        notes="synthetic run for bench/runs_scale.py").validate()
        created = base + i * 3600
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{arch}-{enc}").strip("-")[:40]  # as runs.create_run
        d = runs_dir / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(created))}-{slug}-{i:04x}"
        d.mkdir()
        cfg.save(d / "config.json")
        quality = float(rng.uniform(0.55, 0.9))
        rows = _epoch_rows(rng, folds, epochs, created + 5, lr, quality)
        minutes = sum(r["epoch_s"] for r in rows) / 60
        _write(d / "status.json", {"state": "done", "created": created, "started": created + 2,
                                   "pid": 100000 + i, "ended": created + 5 + minutes * 60})
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        splits = (data.kfold_splits(len(names), folds, cfg.seed) if folds
                  else [data.holdout_split(len(names), cfg.val_fraction, cfg.seed)])
        per_img = _per_image(rng, names, splits, quality)
        _write(d / "per_image.json", per_img)
        bests = []
        for f in range(max(folds, 1)):
            fr = [r for r in rows if r["fold"] == f]
            bests.append(dict(max(fr, key=lambda r: r["val_dice"])))
        dd = SimpleNamespace(names=names, excluded=dict(flagged), notes=notes)
        _write(d / "summary.json", train.summarize(cfg, bests, per_img, dd, minutes * 60, "cpu"))
        _write(d / "env.json", env)
        (d / "log.txt").write_text(f"run {d.name} started\n" + "".join(
            f"fold {r['fold']} epoch {r['epoch']}/{epochs}: val_dice {r['val_dice']:.4f}\n" for r in rows) + "done\n")
        out.append(d)
    return out


def add_predictions(run_dir: Path, dataset: Path, rng) -> int:
    """predictions/{val,val_prob,test,test_prob}/*.png for a run, as predict.write_predictions
    lays them out: the label with a few pixels flipped (masks) and a blurred version (probs)."""
    from roofseg.engine import predict
    pairs, unlabeled, _ = data.find_pairs(dataset)
    val = {r["name"] for r in json.loads((run_dir / "per_image.json").read_text())}
    n = 0
    for sub in ("val", "val_prob", "test", "test_prob"):
        (run_dir / "predictions" / sub).mkdir(parents=True, exist_ok=True)
    for stem, _, lp in pairs:
        if stem not in val:
            continue
        lab = data.load_label(lp).astype(np.float32)
        prob = np.clip(lab * 0.9 + rng.random(lab.shape, dtype=np.float32) * 0.35, 0, 1)
        (run_dir / "predictions" / "val" / f"{stem}.png").write_bytes(predict.mask_png(prob, 0.5))
        (run_dir / "predictions" / "val_prob" / f"{stem}.png").write_bytes(predict.prob_png(prob))
        n += 1
    for stem, ip in unlabeled:
        with Image.open(ip) as im:
            prob = rng.random((im.height, im.width), dtype=np.float32)
        (run_dir / "predictions" / "test" / f"{stem}.png").write_bytes(predict.mask_png(prob, 0.5))
        (run_dir / "predictions" / "test_prob" / f"{stem}.png").write_bytes(predict.prob_png(prob))
    return n


# ---------------------------------------------------------------------------------------------
# timings
def timed(fn, reps: int, before=None) -> tuple[list[float], object]:
    ts, out = [], None
    for _ in range(reps):
        if before:
            before()
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return ts, out


def page_times(page: Path, reps: int, selected: list[str] | None, clear_cache: bool) -> dict:
    """at.run() of a fresh AppTest per repetition; the first is also reported on its own."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    import streamlit.logger
    streamlit.logger.set_log_level("error")  # bare-mode chatter ("missing ScriptRunContext") on every run

    def once():
        at = AppTest.from_file(str(page), default_timeout=300)
        if selected is not None:
            at.session_state["selected_runs"] = selected
        if clear_cache:
            st.cache_data.clear()
        t = time.perf_counter()
        at.run()
        return time.perf_counter() - t, at

    first, at = once()
    ts = []
    for _ in range(reps):
        t, at = once()
        ts.append(t)
    errors = [str(e.value) if hasattr(e, "value") else str(e) for e in at.exception]
    return {"first_s": first, "times_s": ts, "median_s": med(ts), "exceptions": errors,
            "images": len(at.get("image")), "dataframes": len(at.dataframe)}


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="number of synthetic finished runs")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per figure (median reported)")
    p.add_argument("--runs-dir", help="write the runs here (must be empty or absent) instead of a temporary folder")
    p.add_argument("--no-pages", action="store_true", help="time the table only, not the pages")
    args = p.parse_args()
    _common.machine()  # before any change to torch's threads

    keep: list = []
    dataset, what = resolve_data(args.data, keep)
    print(f"data: {dataset} — {what}")
    tmp = None
    if args.runs_dir:
        rdir = Path(args.runs_dir)
        rdir.mkdir(parents=True, exist_ok=True)
        if any(rdir.iterdir()):
            p.error(f"--runs-dir {rdir} is not empty")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="roofseg-bench-runs-")
        rdir = Path(tmp.name)

    t = time.perf_counter()
    dirs = make_runs(rdir, args.n, dataset)
    rng = np.random.default_rng(1)
    kfold = [d for d in dirs if json.loads((d / "config.json").read_text())["folds"] >= 2]
    chosen = (kfold + [d for d in dirs if d not in kfold])[:N_COMPARE]
    n_pred = [add_predictions(d, dataset, rng) for d in chosen]
    gen_s = time.perf_counter() - t
    print(f"{args.n} runs written to {rdir} in {gen_s:.1f} s; predictions for {len(chosen)} runs", flush=True)

    res = {"n_runs": args.n, "reps": args.reps, "data": str(dataset), "data_kind": what,
           "generate_s": gen_s}
    full, df = timed(lambda: results.rebuild(rdir, full=True), args.reps)
    assert len(df) == args.n and (df["status"] == "done").all(), "every synthetic run must load as done"
    res["rebuild_full_s"] = full
    inc, _ = timed(lambda: results.rebuild(rdir), args.reps)
    res["rebuild_unchanged_s"] = inc
    victims = iter(dirs[::max(1, len(dirs) // (args.reps + 1))])

    def touch():  # one run gains a metrics line (as a reader sees a new epoch)
        d = next(victims)
        rows, _ = runs.read_metrics(d)
        runs.append_metrics(d, {**rows[-1], "epoch": rows[-1]["epoch"] + 1, "time": time.time()})

    tch, df2 = timed(lambda: results.rebuild(rdir), args.reps, before=touch)
    res["rebuild_one_touched_s"] = tch
    ld, _ = timed(lambda: results.load(rdir), args.reps)
    res["load_s"] = ld
    res["table_mib"] = results.table_path(rdir).stat().st_size / 2**20
    res["table_columns"] = len(df.columns)
    print(f"rebuild full {med(full):.3f} s, unchanged {med(inc):.3f} s, one touched {med(tch):.3f} s", flush=True)

    pages = {}
    if not args.no_pages:
        os.environ["ROOFSEG_RUNS_DIR"] = str(rdir)
        os.environ["ROOFSEG_DATA"] = str(dataset)
        specs = [("runs", ROOT / "pages" / "runs.py", None, False),
                 ("compare_cold", ROOT / "pages" / "compare.py", [d.name for d in chosen], True),
                 ("compare_warm", ROOT / "pages" / "compare.py", [d.name for d in chosen], False)]
        for key, page, sel, clear in specs:
            if not page.is_file():
                print(f"skipped {key}: {page.relative_to(ROOT)} does not exist yet")
                pages[key] = {"skipped": f"{page.relative_to(ROOT)} not found"}
                continue
            pages[key] = page_times(page, args.reps, sel, clear)
            print(f"{key}: first {pages[key]['first_s']:.2f} s, median {pages[key]['median_s']:.2f} s"
                  + (f"; EXCEPTION {pages[key]['exceptions']}" if pages[key]["exceptions"] else ""), flush=True)
    res["pages"] = pages
    res["compare_runs"] = [d.name for d in chosen]
    res["compare_val_images"] = n_pred
    res["peak_rss_mib"] = peak_rss_mib()

    def fig(label, ts, target):
        ok = "met" if med(ts) <= target else "NOT met"
        return (f"| {label} | {med(ts):.3f} | {min(ts):.3f}–{max(ts):.3f} | ≤ {target:g} s: {ok} |")

    kinds = f"{args.n - len(kfold)} holdout × 30 epochs, {len(kfold)} 5-fold × 6 epochs"
    lines = [f"- {args.n} synthetic finished runs ({kinds}; 30 metrics rows each, summary.json from "
             f"train.summarize, per_image.json) in a temporary runs dir, generated in {gen_s:.0f} s; "
             f"results.parquet {res['table_mib']:.1f} MiB, {res['table_columns']} columns",
             f"- medians of {args.reps} repetitions; the OS file cache is warm (the runs were just written)",
             "", "| figure | median s | min–max s | target |", "|---|---|---|---|",
             fig("results.rebuild(full=True)", full, 1.0),
             fig("results.rebuild() incremental, nothing changed", inc, 1.0),
             fig("results.rebuild() after one run gained a metrics line", tch, 1.0),
             fig("results.load() (what the pages call)", ld, 1.0)]
    for key, label in (("runs", "Runs page, AppTest at.run()"),
                       ("compare_cold", f"Compare page, {N_COMPARE} runs, st.cache_data cleared"),
                       ("compare_warm", f"Compare page, {N_COMPARE} runs, caches warm")):
        pg = pages.get(key)
        if pg is None:
            continue
        if "skipped" in pg:
            lines.append(f"| {label} | skipped: {pg['skipped']} | | |")
            continue
        lines.append(fig(label, pg["times_s"], 2.0)
                     + (f" **exception: {pg['exceptions'][0][:120]}**" if pg["exceptions"] else ""))
    lines.append("")
    for key in ("runs", "compare_cold"):
        pg = pages.get(key)
        if pg and "first_s" in pg:
            lines.append(f"- {key}: first at.run() in the process (imports, cold caches) {pg['first_s']:.2f} s; "
                         f"{pg['images']} images and {pg['dataframes']} dataframes rendered")
    if chosen:
        lines.append(f"- Compare: {N_COMPARE} runs ({sum(1 for d in chosen if d in kfold)} of them 5-fold), "
                     f"{min(n_pred)} shared validation images with predictions at the dataset's size; "
                     f"dataset {dataset} ({what})")
    lines.append(f"- peak RSS {res['peak_rss_mib']:.0f} MiB")
    report(NAME, f"Run store at scale: {args.n} runs", lines, res, args.out)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
