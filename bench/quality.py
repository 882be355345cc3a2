"""k-fold quality: train each config with k-fold cross-validation and report Dice/IoU over folds.

Each config is RunConfig's defaults, then `data` (--data) and `folds` (5), then the config's own
fields, then --set overrides, then --epochs/--folds when given. Runs train one after another in
this process, exactly as `python -m roofseg train` does (runs.create_run + worker.execute, waiting
for a free training slot), into --runs-dir (default runs/, so they also show in the app).

Reported per config, from its summary.json (train.summarize): val Dice and IoU as mean ± sample
std over folds (each fold's best epoch by val Dice, so slightly optimistic: the epoch is chosen on
the same fold it is scored on), the out-of-fold per-image Dice mean (oof_dice_img: every labelled
image predicted by the fold model that did not train on it), and minutes of training.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import _common  # first: puts the repo root on sys.path
from _common import ROOT, parser, peak_rss_mib, report, resolve_data

import roofseg  # noqa: F401
from roofseg import runs, train, worker
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
    args = p.parse_args()
    _common.machine()  # before any change to torch's threads

    keep: list = []
    dataset, what = resolve_data(args.data, keep)
    print(f"data: {dataset} — {what}")
    sets = parse_sets(args.set)
    cfgs = []
    for c in load_configs(args.config) or DEFAULT_CONFIGS:
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
                  "minutes", "folds", "epochs", "best_epoch", "pairs", "excluded"):
            row[k] = s.get(k)
        rows.append(row)
        if st["state"] != "done":
            print(f"  run {st['state']}: {st.get('error')} (see {d / 'log.txt'})", flush=True)

    def f(v, spec=".4f"):
        return "—" if v is None else format(v, spec)
    lines = [f"- data: {dataset} ({what}); runs in {args.runs_dir} (sweep tag '{args.sweep}')",
             "- val Dice/IoU: pixels pooled over each fold's validation images at its best epoch (by "
             "val Dice), then mean ± sample std over folds; OOF Dice/img: mean per-image Dice of the "
             "out-of-fold predictions",
             "", "| config (changed from defaults) | folds × epochs | val Dice | val IoU | OOF Dice/img "
             "| minutes | run |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["state"] != "done":
            lines.append(f"| {r['changed']} | {r['config']['folds']} × {r['config']['epochs']} | "
                         f"{r['state']}: {r['error']} | | | {r['wall_minutes']:.1f} | {Path(r['run']).name} |")
            continue
        lines.append(f"| {r['changed']} | {r['folds']} × {r['epochs']} | {f(r['val_dice'])} ± "
                     f"{f(r['val_dice_std'])} | {f(r['val_iou'])} ± {f(r['val_iou_std'])} | "
                     f"{f(r['oof_dice_img'])} | {f(r['minutes'], '.1f')} | {Path(r['run']).name} |")
    pairs = next((r["pairs"] for r in rows if r.get("pairs")), None)
    excl = next((r["excluded"] for r in rows if r.get("excluded")), None)
    if pairs:
        lines.append("")
        lines.append(f"- {pairs} labelled pairs" + (f"; excluded: {', '.join(f'{k} ({v})' for k, v in excl.items())}"
                                                     if excl else ""))
    lines.append(f"- peak RSS {peak_rss_mib():.0f} MiB")
    report(NAME, "k-fold quality", lines, {"data": str(dataset), "data_kind": what, "runs": rows}, args.out)


if __name__ == "__main__":
    main()
