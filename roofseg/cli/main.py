"""Command line: `python -m roofseg train|predict|runs|cancel|data ...` (same run folders as the app).

Bad input exits non-zero with a one-line error; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roofseg.cli import compare as compare_cli
from roofseg.cli import report as report_cli
from roofseg.cli import review as review_cli
from roofseg.cli import sweep as sweep_cli
from roofseg.cli.flags import add_config_flags, config_from_args

def cmd_train(a) -> int:
    from roofseg.engine import train
    from roofseg.exec import control
    cfg = config_from_args(a)
    if a.exclude_flagged_from:
        from roofseg.store import review, runs
        flagged = [r["name"] for r in review.review_labels(runs.resolve(a.runs_dir, a.exclude_flagged_from))
                   if r["flagged"]]
        cfg = cfg.replace(exclude=",".join(dict.fromkeys(cfg.excluded_names() + flagged)))
        print(f"leaving out the {len(flagged)} label(s) the review of {a.exclude_flagged_from} flags: "
              f"{', '.join(flagged) or 'none'}")
    train.preflight(cfg)
    if a.seeds < 1:  # checked here too, to name the flag
        raise ValueError(f"--seeds must be >= 1, got {a.seeds}")
    failed = 0
    for c in control.seeded(cfg, a.seeds):  # one run each, in turn (--background: launched)
        failed += _train_one(c, a)
    return 1 if failed else 0


def _train_one(cfg, a) -> int:
    from roofseg.exec import control, worker
    from roofseg.store import runs
    if a.background:
        d = control.launch(cfg, a.runs_dir)
        print(d)
        return 0
    d = runs.create_run(cfg, a.runs_dir)
    print(f"run {d}")

    def hook(event, info):
        if event == "epoch":
            print(f"fold {info['fold']} epoch {info['epoch']:>3}/{cfg.epochs}  "
                  f"train_loss {info['train_loss']:.4f}  val_loss {info['val_loss']:.4f}  "
                  f"val_dice {info['val_dice']:.4f}  val_iou {info['val_iou']:.4f}  "
                  f"lr {info['lr']:.2e}  {info['epoch_s']:.1f}s", flush=True)
        elif event == "end":
            std = f" ± {info['val_dice_std']:.4f}" if info["folds"] > 1 else ""
            print(f"val_dice {info['val_dice']:.4f}{std}  val_iou {info['val_iou']:.4f}  "
                  f"({info['minutes']:.1f} min)")
    st = worker.execute(d, hook=hook, wait_for_slot=not a.no_wait)
    if st["state"] != "done":
        print(f"error: run {st['state']}: {st.get('error', '')} (see {d / 'log.txt'})", file=sys.stderr)
        return 1
    return 0


def cmd_predict(a) -> int:
    import numpy as np
    from roofseg.data import dataset as data
    from roofseg.engine import predict
    from roofseg.store import runs
    run_dir = runs.resolve(a.runs_dir, a.run)
    src = Path(a.images)
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in data.IMAGE_EXTS) if src.is_dir() else []
    if not files:
        raise data.DataError(f"{src}: no images ({', '.join(data.IMAGE_EXTS)}) found")
    out = Path(a.out)
    clash = [f.stem + ".png" for f in files if (out / (f.stem + ".png")).exists()]
    if clash and not a.overwrite:
        raise FileExistsError(f"{out} already has {clash[:3]}{'...' if len(clash) > 3 else ''}; "
                              "pass --overwrite or choose another --out")
    tuned = (runs.read_json(run_dir / "summary.json", {}) or {}).get("threshold_oof")
    threshold = (a.threshold if a.threshold is not None else tuned if tuned is not None
                 else runs.read_json(run_dir / "config.json")["threshold"])
    probs, reused = predict.predict_or_reuse(run_dir, {f.stem: data.load_image(f) for f in files}, tta=a.tta)
    if reused:
        print(f"{len(reused)} of {len(probs)} image(s) were predicted by the run already: read from {run_dir}")
    out.mkdir(parents=True, exist_ok=True)
    for name, p in probs.items():
        (out / f"{name}.png").write_bytes(predict.mask_png(p, threshold))
        if a.probs:
            (out / f"{name}_prob.png").write_bytes(predict.prob_png(p))
        print(f"{out / (name + '.png')}  roof {float(np.mean(p >= threshold)):.1%}")
    return 0


def cmd_runs(a) -> int:
    from roofseg.store import results
    df, warning = results.load(a.runs_dir)
    if warning:
        print("warning:", warning, file=sys.stderr)
    if a.format == "json":
        print(df.to_json(orient="records", indent=1))
    elif a.format == "csv":
        print(df.to_csv(index=False), end="")
    else:
        cols = [c for c in ["run_id", "status", "arch", "encoder", "loss", "folds", "epochs_done",
                            "val_dice", "val_dice_std", "val_iou", "minutes"] if c in df]
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(df) else "no runs")
    return 0


def cmd_cancel(a) -> int:
    from roofseg.exec import control
    from roofseg.store import runs
    st = control.cancel(runs.resolve(a.runs_dir, a.run))
    print(st["state"])
    return 0


def cmd_data(a) -> int:
    from roofseg.data import dataset as data
    if a.data_cmd == "demo":
        from roofseg.data.demo import make_demo
        print(make_demo(a.dir, n_images=a.n_images, n_labels=a.n_labels, size=a.size, seed=a.seed))
    elif a.data_cmd == "check":
        rep = data.check_dataset(a.dir)
        print("\n".join(rep.lines()))
        return 0 if rep.ok else 1
    elif a.data_cmd == "fetch-dida":
        from roofseg.data.fetch import DIDA_URL, fetch_dida
        print(fetch_dida(a.dir, url=a.url or DIDA_URL))
    elif a.data_cmd == "review":
        return review_cli.cmd_review(a)
    return 0


def cmd_worker(a) -> int:
    from roofseg.exec.worker import execute
    return 0 if execute(a.run_dir)["state"] == "done" else 1


def build_parser(weights_notes: dict[str, str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m roofseg", description="Roof segmentation experiments.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a run (holdout or k-fold) into a new run folder")
    t.add_argument("--config", help="JSON file of config fields; flags override it")
    t.add_argument("--runs-dir", default="runs")
    t.add_argument("--background", action="store_true", help="start the run in its own process and return")
    t.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="train N runs with seeds seed, seed+1, ... (one after another; with "
                        "--background all are launched and queue for the training slots)")
    t.add_argument("--no-wait", action="store_true", help="do not wait for a free training slot")
    t.add_argument("--exclude-flagged-from", metavar="RUN",
                   help="leave out the labels `data review RUN` flags (added to --exclude; files untouched)")
    add_config_flags(t, weights_notes)
    pr = sub.add_parser("predict", help="predict masks for a folder of images with a finished run")
    pr.add_argument("run", help="run id (folder name under --runs-dir) or run folder")
    pr.add_argument("--images", required=True, help="folder of images")
    pr.add_argument("--out", required=True, help="folder for <name>.png masks (0/255, input size)")
    pr.add_argument("--runs-dir", default="runs")
    pr.add_argument("--threshold", type=float,
                    help="probability threshold [the one the run tuned on its out-of-fold predictions "
                         "(k-fold runs), else the run's threshold]")
    pr.add_argument("--tta", action="store_true",
                    help="test-time augmentation: average the 8 flips and rotations (8x slower)")
    pr.add_argument("--probs", action="store_true", help="also write <name>_prob.png probability maps")
    pr.add_argument("--overwrite", action="store_true", help="replace existing masks in --out")
    r = sub.add_parser("runs", help="the results table (rebuilt from the run folders)")
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--format", choices=["table", "csv", "json"], default="table")
    c = sub.add_parser("cancel", help="stop a queued or running run")
    c.add_argument("run")
    c.add_argument("--runs-dir", default="runs")
    d = sub.add_parser("data", help="datasets: make the demo, check a folder, fetch DIDA, review labels")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    dm = dsub.add_parser("demo", help="write the synthetic demo dataset")
    dm.add_argument("dir")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--size", type=int, default=256)
    dm.add_argument("--n-images", type=int, default=30)
    dm.add_argument("--n-labels", type=int, default=25)
    dc = dsub.add_parser("check", help="report counts, sizes, modes and flagged pairs")
    dc.add_argument("dir")
    df = dsub.add_parser("fetch-dida", help="download and extract the public DIDA archive")
    df.add_argument("dir")
    df.add_argument("--url", help="archive URL (default: dida.do's)")
    review_cli.add_parser(dsub)  # data review
    w = sub.add_parser("worker")  # internal: exec.control.launch starts this
    w.add_argument("run_dir")
    sweep_cli.add_parsers(sub)  # sweep, sweep-worker
    compare_cli.add_parser(sub)  # compare
    report_cli.add_parser(sub)  # report
    return p


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "runs": cmd_runs, "cancel": cmd_cancel,
            "data": cmd_data, "worker": cmd_worker, "compare": compare_cli.cmd_compare,
            "sweep": sweep_cli.cmd_sweep, "sweep-worker": sweep_cli.cmd_sweep_worker,
            "report": report_cli.cmd_report}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    notes = None
    if argv[:1] == ["train"] and ("-h" in argv or "--help" in argv):
        # only now: where each encoder's ImageNet weights are costs an smp (torch) import
        from roofseg.config import ENCODERS
        from roofseg.model.weights import availability_notes
        notes = availability_notes(ENCODERS)
    a = build_parser(notes).parse_args(argv)
    try:
        return COMMANDS[a.cmd](a)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if a.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
