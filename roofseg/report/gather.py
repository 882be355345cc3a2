"""Reading run folders for the report, strictly: what each section shows, as plain dicts.

A file a run's state promises (summary.json, per_image.json and metrics.jsonl of a finished run;
config.json of any run) that is missing or corrupt raises RunError with one line naming the run
and the file: a report that silently leaves a table out would hand over a wrong picture. A run
that failed, was cancelled or is still going is not an error: it is shown with what it recorded.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from roofseg import config
from roofseg.config import RunConfig
from roofseg.data import dataset as data
from roofseg.store import compare, progress, runs
from roofseg.store.runs import RunError

LOG_LINES = 15  # log.txt lines shown for a run that did not finish: where it stopped and why


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def load_run(run_dir) -> dict:
    """Everything the report shows about one run folder.

    Keys: dir, id, cfg (config.json over the defaults), state, status, error, done, summary ({}
    when not written), per_image (list), metrics (rows), env ({} when not written), log_tail
    (unfinished runs only), notes (what was skipped or is missing, in words), data_dir (the
    dataset folder if it still exists, else None), progress (store.progress.progress)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunError(f"no run folder {d}")
    rid = d.name
    cfg = runs.read_json_strict(rid, d / "config.json", required=True)
    if not isinstance(cfg, dict):
        raise RunError(f"run {rid}: config.json is not a JSON object of config fields")
    st = runs.status(d)  # a dead training process shows as failed, as on the Runs page
    state = st.get("state", "failed")
    done = state == "done"
    notes = []
    summary = runs.read_json_strict(rid, d / "summary.json", required=done)
    if summary is not None and not isinstance(summary, dict):
        raise RunError(f"run {rid}: summary.json is not a JSON object")
    per_image = runs.read_json_strict(rid, d / "per_image.json", required=done)
    if per_image is not None and not (isinstance(per_image, list) and all(isinstance(r, dict) for r in per_image)):
        raise RunError(f"run {rid}: per_image.json is not a list of per-image rows")
    if done and not (d / "metrics.jsonl").is_file():
        raise RunError(f"run {rid}: metrics.jsonl is missing")
    try:
        rows, bad = runs.read_metrics(d)
    except OSError as e:
        raise RunError(f"run {rid}: cannot read metrics.jsonl: {e.strerror or e}") from None
    if bad and not rows:
        raise RunError(f"run {rid}: metrics.jsonl is corrupt ({bad} unreadable line(s), none readable)")
    if bad:  # a line cut short by a crash: the others still hold
        notes.append(f"{bad} unreadable line(s) in metrics.jsonl skipped")
    env = runs.read_json_strict(rid, d / "env.json", required=done)
    if env is not None and not isinstance(env, dict):
        raise RunError(f"run {rid}: env.json is not a JSON object")
    if env is None:
        notes.append("env.json was not written: versions and device unknown")
    full = {**RunConfig().to_dict(), **cfg}  # defaults first: a field added later still shows
    return {"dir": d, "id": rid, "cfg": full, "state": state, "status": st, "error": st.get("error"),
            "done": done, "summary": summary or {}, "per_image": per_image or [], "metrics": rows,
            "env": env or {}, "log_tail": "" if done else progress.log_tail(d, LOG_LINES),
            "notes": notes, "data_dir": find_data(full.get("data"), d), "progress": progress.progress(d)}


def find_data(path, run_dir: Path) -> Path | None:
    """The run's dataset folder if it still exists: as written in config.json (relative to the
    working directory, as training read it), else relative to the folder holding runs/, so a
    report made from elsewhere still finds data/demo next to runs/."""
    if not path:
        return None
    p = Path(str(path)).expanduser()
    for cand in ([p] if p.is_absolute() else [p, run_dir.parent.parent / p]):
        if cand.is_dir():
            return cand
    return None


def load_runs(run_dirs) -> list[dict]:
    """load_run for each folder, each given a display label (compare.labels: name, else id)."""
    loaded = [load_run(d) for d in run_dirs]
    if not loaded:
        raise ValueError("give at least one run to report on")
    for r, label in zip(loaded, compare.labels([r["dir"] for r in loaded])):
        r["label"] = label
    return loaded


# ---------------------------------------------------------------------------------------------
# sections
def overview(r: dict) -> dict:
    """One row of the runs table: state, model, progress, times, the error if any."""
    st, p, s = r["status"], r["progress"], r["summary"]

    def when(t):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if _finite(t) else None
    return {"label": r["label"], "id": r["id"], "state": r["state"], "error": r["error"],
            "model": f"{r['cfg'].get('arch')} / {r['cfg'].get('encoder')}",
            "validation": f"{r['cfg']['folds']} folds" if int(r["cfg"]["folds"] or 0) >= 2
            else f"holdout {float(r['cfg']['val_fraction']):g}",
            "epochs": f"{p['done']} of {p['total']}", "started": when(st.get("started")),
            "ended": when(st.get("ended")), "minutes": s.get("minutes")}


def datasets(loaded: list[dict]) -> list[dict]:
    """One entry per dataset folder the runs trained on: the check of the folder as it is now
    (data.check_dataset, when it still exists) and, per run, what training used and left out."""
    groups: dict[str, dict] = {}
    for r in loaded:
        key = str(Path(str(r["cfg"].get("data"))).expanduser())
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"path": key, "found": r["data_dir"], "check": None, "check_lines": [],
                               "error": None, "runs": []}
            if r["data_dir"] is None:
                g["error"] = "the folder no longer exists (or is not reachable from here): only what the runs recorded is shown"
            else:
                try:
                    rep = data.check_dataset(r["data_dir"])
                    # counts, sizes, modes and roof fraction go in a table; the findings stay lines
                    g["check"] = rep
                    g["check_lines"] = [ln for ln in rep.lines()[1:] if not ln.startswith(
                        ("image sizes:", "image modes:", "mean roof fraction:"))]
                except data.DataError as e:
                    g["error"] = str(e)
        s = r["summary"]
        g["runs"].append({"label": r["label"], "pairs": s.get("pairs"),
                          "excluded": s.get("excluded") or {}, "data_notes": s.get("data_notes") or [],
                          "exclude_flagged": r["cfg"].get("exclude_flagged"),
                          "recorded": bool(s)})
    return list(groups.values())


def recipe(r: dict) -> list[dict]:
    """The run's config field by field: value, what the field is (its comment in config.py), why
    this value (config.about for the value, else for the field) and whether it is the default."""
    helps, defaults = config.field_help(), RunConfig().to_dict()
    rows = []
    for field, value in r["cfg"].items():
        why = (config.about(field, value) if isinstance(value, str) else "") or config.about(field)
        rows.append({"field": field, "value": "(empty)" if value == "" else value,
                     "what": helps.get(field, ""), "why": why,
                     "changed": field in defaults and value != defaults[field]
                     and field not in ("norm_mean", "norm_std")})  # those two are always written out
    return rows


CV_COLUMNS = [  # (title, mean key, std key, what it means)
    ("Dice, last epoch", "val_dice_last", "val_dice_last_std",
     "each fold's model at its final epoch: the honest figure"),
    ("Dice, best epoch", "val_dice", "val_dice_std",
     "each fold at its best epoch, chosen on that fold's own validation images: optimistic"),
    ("IoU, last epoch", "val_iou_last", "val_iou_last_std", "as Dice, last epoch"),
    ("IoU, best epoch", "val_iou", "val_iou_std", "at the epoch Dice chose"),
    ("OOF Dice", "oof_dice", None,
     "every labelled image predicted once by the model that never saw it, pixels pooled"),
    ("OOF Dice without TTA", "oof_dice_no_tta", None, "the same fold models, one view: what TTA gained"),
    ("OOF threshold", "threshold_oof", None, "the threshold that maximises OOF Dice (Predict's default)"),
    ("OOF Dice, tuned threshold (CV)", "oof_dice_tuned_cv", None,
     "each fold scored at the threshold tuned on the other folds: an honest estimate of tuning"),
    ("Dice per image (OOF mean)", "oof_dice_img", None, "mean of the per-image Dice"),
]


def cv_table(loaded: list[dict]) -> dict:
    """Mean ± std over folds (last and best epoch) and out-of-fold figures, a row per run; only
    the columns some run recorded. Holdout runs (one model) show no std."""
    cols = [c for c in CV_COLUMNS if any(_finite(r["summary"].get(c[1])) for r in loaded)]
    rows = []
    for r in loaded:
        s = r["summary"]
        folds = int(s.get("folds") or 0)
        cells = []
        for _, mean, std, _ in cols:
            m = s.get(mean)
            sd = s.get(std) if std and folds >= 2 else None
            cells.append({"mean": m if _finite(m) else None, "std": sd if _finite(sd) else None})
        rows.append({"label": r["label"], "state": r["state"], "folds": folds or None, "cells": cells})
    return {"columns": [{"title": t, "what": w} for t, _, _, w in cols], "rows": rows}


def fold_table(r: dict) -> list[dict]:
    """Per fold, from metrics.jsonl (so a run that stopped early shows its folds too): epochs
    trained, best epoch by val Dice, Dice and IoU at that epoch and at the last one."""
    by_fold: dict[int, dict[int, dict]] = {}
    for row in r["metrics"]:
        try:
            by_fold.setdefault(int(row.get("fold", 0)), {})[int(row["epoch"])] = row
        except (KeyError, TypeError, ValueError):
            continue
    out = []
    for f, epochs in sorted(by_fold.items()):
        last = epochs[max(epochs)]
        scored = [epochs[e] for e in sorted(epochs) if _finite(epochs[e].get("val_dice"))]
        best = max(scored, key=lambda x: float(x["val_dice"])) if scored else last  # earliest of ties
        out.append({"fold": f, "epochs": len(epochs), "best_epoch": best.get("epoch"),
                    "dice_best": best.get("val_dice"), "iou_best": best.get("val_iou"),
                    "dice_last": last.get("val_dice"), "iou_last": last.get("val_iou")})
    return out


def environment(r: dict) -> list[tuple[str, str]]:
    """env.json's facts and the device the summary recorded, as (key, value)."""
    rows = [(k, "—" if v is None else str(v)) for k, v in r["env"].items()]
    if r["summary"].get("device"):
        rows.append(("device used", str(r["summary"]["device"])))
    return rows
