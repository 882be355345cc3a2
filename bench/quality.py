"""k-fold quality: train each config with k-fold cross-validation and report Dice/IoU over folds.

Each config is RunConfig's defaults, then `data` (--data) and `folds` (5), then the config's own
fields, then --set overrides, then --epochs/--folds when given. Runs train one after another in
this process, exactly as `python -m roofseg train` does (runs.create_run + worker.execute, waiting
for a free training slot), into --runs-dir (default runs/, so they also show in the app).

Reported per config and seed, from its summary.json (train.summarize, predict.write_predictions):
- val Dice at the **last** epoch (the honest figure) and at each fold's best epoch (chosen on the
  fold it is scored on, so optimistic), as mean ± sample std over folds;
- out-of-fold Dice, pooled over all pixels of the labelled images, each predicted by the fold model
  that did not train on it: at threshold 0.5 without TTA, with TTA (when the config asks for it),
  and at a threshold tuned on the other folds' out-of-fold predictions;
- minutes, and "reference epochs": the wall time of the whole k-fold run divided by one epoch of
  the reference loop (_common.reference_epoch_s) timed in the same session, before and after.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import _common
from _common import ROOT, parser, peak_rss_mib, report, resolve_data

import numpy as np

import roofseg  # noqa: F401
from roofseg.store import runs
from roofseg.engine import train
from roofseg.exec import worker
from roofseg.config import RunConfig

NAME = "quality"
# the plain baseline (Unet-resnet18 from scratch with roofseg's first defaults), then RunConfig's
# defaults (the best CPU recipe found)
DEFAULT_CONFIGS = [{"name": "unet-resnet18-baseline", "arch": "Unet", "encoder": "resnet18",
                    "batch_size": 4, "lr": 1e-3, "epochs": 30},
                   {"name": "roofseg-defaults"}]


def load_configs(items: list[str]) -> list[dict]:
    """Each --config is a JSON object, or a path to a .json file holding an object or a list."""
    out = []
    for it in items:
        text = Path(it).read_text() if not it.lstrip().startswith(("{", "[")) and Path(it).is_file() else it
        try:
            v = json.loads(text)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--config {it!r}: not a JSON object, list or .json file ({e})") from None
        vs = v if isinstance(v, list) else [v]
        if not all(isinstance(x, dict) for x in vs):
            raise SystemExit(f"--config {it!r}: expected a JSON object (or a list of objects)")
        out.extend(vs)
    return out


def parse_sets(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise SystemExit(f"--set {it!r}: expected key=value")
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def changed(cfg: RunConfig) -> str:
    """The fields that differ from RunConfig's defaults (data and name left out), as k=v."""
    d, base = cfg.to_dict(), RunConfig().to_dict()
    return ", ".join(f"{k}={v}" for k, v in d.items() if v != base[k] and k not in ("data", "name", "sweep"))


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=[],
                   help="a config as JSON (e.g. '{\"arch\":\"Unet\",\"encoder\":\"resnet18\",\"epochs\":40}') "
                        "or a .json file with one or a list; repeat for several. "
                        f"Default: {json.dumps(DEFAULT_CONFIGS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field in every config (repeatable), e.g. --set augment=strong")
    p.add_argument("--folds", type=int, default=None, help="k for every config [5 unless a config sets it]")
    p.add_argument("--epochs", type=int, default=None, help="epochs for every config (e.g. 1 for a smoke test)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs"), help="where the run folders go")
    p.add_argument("--sweep", default="bench-quality", help="sweep tag written into each run's config")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="run every config once per seed")
    p.add_argument("--ref-threads", type=int, default=2, help="torch threads of the reference loop")
    args = p.parse_args()
    _common.machine()  # before any change to torch's threads

    keep: list = []
    dataset, what = resolve_data(args.data, keep)
    print(f"data: {dataset} — {what}")
    sets = parse_sets(args.set)
    cfgs = []
    given = load_configs(args.config) or DEFAULT_CONFIGS
    if args.seeds:
        given = [{**c, "seed": s} for c in given for s in args.seeds]
    for c in given:
        d = {**RunConfig().to_dict(), "data": str(dataset), "folds": 5, "sweep": args.sweep,
             **c, **sets}
        if args.folds is not None:
            d["folds"] = args.folds
        if args.epochs is not None:
            d["epochs"] = args.epochs
        try:
            cfg = RunConfig.from_dict(d, source=f"config {c}").validate(source=f"config {c}")
            if cfg.folds < 2:
                raise ValueError(f"config {c}: folds must be >= 2 for a k-fold quality figure")
            train.preflight(cfg)  # fail before any training on a config that cannot run
        except (ValueError, FileNotFoundError) as e:  # ConfigError, DataError, ModelError too
            p.error(" ".join(str(e).split()))
        cfgs.append(cfg)

    ref = [_common.reference_epoch_s(dataset, threads=args.ref_threads)]
    print(f"reference epoch: {ref[0]['median_s']:.2f} s", flush=True)
    rows = []
    for i, cfg in enumerate(cfgs, 1):
        d = runs.create_run(cfg, args.runs_dir)
        print(f"[{i}/{len(cfgs)}] {d} — {changed(cfg)}", flush=True)

        def hook(event, info, cfg=cfg):
            if event == "epoch" and (info["epoch"] == cfg.epochs or info["epoch"] % 10 == 0):
                print(f"  fold {info['fold']} epoch {info['epoch']}/{cfg.epochs}: val_dice "
                      f"{info['val_dice']:.4f} ({info['epoch_s']:.1f} s/epoch)", flush=True)
        t = time.perf_counter()
        st = worker.execute(d, hook=hook)
        wall = time.perf_counter() - t
        s = runs.read_json(d / "summary.json", {}) or {}
        row = {"run": str(d), "config": cfg.to_dict(), "changed": changed(cfg), "state": st["state"],
               "error": st.get("error"), "wall_minutes": wall / 60}
        for k in ("val_dice", "val_dice_std", "val_iou", "val_iou_std", "oof_dice_img", "oof_iou_img",
                  "val_dice_last", "val_dice_last_std", "val_iou_last", "val_iou_last_std", "oof_dice",
                  "oof_dice_no_tta", "threshold_oof", "oof_dice_tuned", "oof_dice_tuned_cv",
                  "minutes", "folds", "epochs", "best_epoch", "pairs", "excluded"):
            row[k] = s.get(k)
        rows.append(row)
        if st["state"] != "done":
            print(f"  run {st['state']}: {st.get('error')} (see {d / 'log.txt'})", flush=True)

    ref.append(_common.reference_epoch_s(dataset, threads=args.ref_threads))
    ref_s = float(np.mean([r["median_s"] for r in ref]))
    for r in rows:
        r["reference_epochs"] = r["wall_minutes"] * 60 / ref_s

    def f(v, spec=".3f"):
        return "—" if v is None else format(v, spec)
    lines = [f"- data: {dataset} ({what}); runs in {args.runs_dir} (sweep tag '{args.sweep}')",
             "- val Dice: pixels pooled over each fold's validation images, at the last epoch and at "
             "the fold's best epoch (by val Dice), then mean ± sample std over folds",
             "- OOF Dice: pixels pooled over all out-of-fold predictions; 0.5 = threshold 0.5 without "
             "TTA; TTA = the 8 flips/rotations averaged (when the config has tta); tuned = each fold at "
             "the threshold that maximised the other folds' OOF Dice (the tuned threshold over all folds "
             "in brackets)",
             f"- reference epoch (smp Unet-resnet18, batch 4, {ref[0]['images']} images in memory, "
             f"{args.ref_threads} threads): {ref[0]['median_s']:.2f} s before, {ref[1]['median_s']:.2f} s after; "
             "ref. epochs = wall time of the whole k-fold run / their mean",
             "", "| config (changed from defaults) | seed | folds × epochs | val Dice last | val Dice best "
             "| OOF 0.5 | OOF TTA | OOF tuned [thr] | minutes | ref. epochs | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ch = changed(RunConfig.from_dict({**r["config"], "seed": 0}))
        if r["state"] != "done":
            lines.append(f"| {ch} | {r['config']['seed']} | {r['config']['folds']} × {r['config']['epochs']} | "
                         f"{r['state']}: {r['error']} | | | | | {r['wall_minutes']:.1f} | | {Path(r['run']).name} |")
            continue
        tta = r["config"]["tta"]
        plain = r["oof_dice_no_tta"] if tta else r["oof_dice"]
        lines.append(f"| {ch} | {r['config']['seed']} | {r['folds']} × {r['epochs']} | {f(r['val_dice_last'])} ± "
                     f"{f(r['val_dice_last_std'])} | {f(r['val_dice'])} ± {f(r['val_dice_std'])} | {f(plain)} | "
                     f"{f(r['oof_dice']) if tta else '—'} | {f(r['oof_dice_tuned_cv'])} [{f(r['threshold_oof'], '.3g')}] | "
                     f"{f(r['wall_minutes'], '.1f')} | {f(r['reference_epochs'], '.0f')} | {Path(r['run']).name} |")
    pairs = next((r["pairs"] for r in rows if r.get("pairs")), None)
    excl = next((r["excluded"] for r in rows if r.get("excluded")), None)
    if pairs:
        lines.append("")
        lines.append(f"- {pairs} labelled pairs" + (f"; excluded: {', '.join(f'{k} ({v})' for k, v in excl.items())}"
                                                     if excl else ""))
    lines.append(f"- peak RSS {peak_rss_mib():.0f} MiB")
    report(NAME, "k-fold quality", lines, {"data": str(dataset), "data_kind": what, "reference": ref,
                                           "runs": rows}, args.out)


if __name__ == "__main__":
    main()
