"""Choosing and comparing runs: the filtered runs table, final metrics side by side, the config
fields that differ, learning curves (mean ± std over folds), per-image tables and overlays, and
the Compare page's paired comparisons (each recipe against a baseline, through store.paired).

Pure functions of run folders (no streamlit): pages cache them on
fingerprint(*cache_paths(run_dirs)), so the run-folder file names are written here, not there.
Runs are labelled by their config `name`, or their id when unnamed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from roofseg.data import dataset as data
from roofseg.data import overlay
from roofseg.store import paired
from roofseg.store import progress
from roofseg.store import runs
from roofseg.config import RunConfig
from roofseg.store.runs import read_per_image

# Final metrics shown side by side: column -> True when higher is better. The first three are
# micro-averaged over the validation pixels, dice_img is the per-image mean (see metrics.py).
METRICS = {"val_dice": True, "val_iou": True, "val_precision": True, "val_recall": True,
           "val_accuracy": True, "val_dice_img": True, "minutes": False}
BOOKKEEPING = ("name", "notes", "sweep")  # never change training; listed last in the config diff


def _dirs(run_dirs) -> list[Path]:
    return [Path(d) for d in run_dirs]


# what the readers below read in a run folder (predictions/val: the masks image_table and panels
# draw); a page's cache key covers exactly these (cache_paths)
RECORDS = ("config.json", "status.json", "metrics.jsonl", "summary.json", "per_image.json")
PREDICTIONS = Path("predictions") / "val"


def cache_paths(run_dirs) -> list[Path]:
    """The files and folders of these runs whose change changes what this module returns: give
    them to store.fingerprint.fingerprint() for a cache key."""
    return [d / f for d in _dirs(run_dirs) for f in (*RECORDS, PREDICTIONS)]


def _config(run_dir: Path) -> dict:
    """config.json over the defaults, so a field added after the run was made still compares (as
    the run trained: runs.saved_config)."""
    return {**RunConfig().to_dict(), **runs.saved_config(run_dir)}


def labels(run_dirs) -> list[str]:
    """One display label per run: its name, or its id; a name used twice gets the id appended."""
    dirs = _dirs(run_dirs)
    names = [_config(d).get("name") or d.name for d in dirs]
    return [f"{n} ({d.name})" if names.count(n) > 1 and n != d.name else n for n, d in zip(names, dirs)]


# ---------------------------------------------------------------------------------------------
# the runs table
def select_runs(table: pd.DataFrame, filters: dict[str, list] | None = None, sort_by: str | None = None,
                ascending: bool = False) -> pd.DataFrame:
    """Rows of results.load()'s table whose columns hold one of the chosen values (an empty list
    keeps every row), sorted by `sort_by` with missing values last; `created` as a datetime."""
    df = table.copy()
    for col, values in (filters or {}).items():
        if values and col in df:
            df = df[df[col].isin(values)]
    if sort_by and sort_by in df:
        df = df.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    if "created" in df:
        df["created"] = pd.to_datetime(df["created"], unit="s", errors="coerce")
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# final metrics and config
def final_metrics(run_dirs) -> pd.DataFrame:
    """One row per run (index = label): status, folds, the METRICS and, for k-fold runs only, the
    std over folds (val_dice_std, val_iou_std; NaN for holdout). A run without summary.json yet
    shows its best epoch so far."""
    dirs = _dirs(run_dirs)
    rows = []
    for d, label in zip(dirs, labels(dirs)):
        s = runs.read_json(d / "summary.json", {}) or {}
        if not s:
            rows_, _ = runs.read_metrics(d)
            s = max(rows_, key=lambda r: r.get("val_dice", -1), default={})
        folds = int(s.get("folds") or _config(d).get("folds") or 1)
        row = {"label": label, "run_id": d.name, "status": runs.status(d).get("state"), "folds": folds}
        for k in METRICS:
            row[k] = s.get(k, np.nan)
        for k in ("val_dice_std", "val_iou_std"):
            row[k] = s.get(k, np.nan) if folds >= 2 else np.nan
        rows.append(row)
    cols = ["label", "run_id", "status", "folds", "val_dice", "val_dice_std", "val_iou", "val_iou_std",
            *[k for k in METRICS if k not in ("val_dice", "val_iou")]]
    return pd.DataFrame(rows, columns=cols).set_index("label")


def best_per_column(df: pd.DataFrame) -> dict[str, list]:
    """For each METRICS column of final_metrics(): the index labels holding its best value
    (highest, or lowest for minutes); ties all count. For highlighting, not ranking."""
    best = {}
    for col, higher in METRICS.items():
        if col in df and df[col].notna().any():
            target = df[col].max() if higher else df[col].min()
            best[col] = list(df.index[np.isclose(df[col].astype(float), target, equal_nan=False)])
    return best


def config_diff(run_dirs) -> pd.DataFrame:
    """Config fields whose values differ between the runs: rows = field, columns = run label.

    Bookkeeping fields (name, notes, sweep) are kept, listed last: they do not change training
    but often say why a run differs (a sweep tag, a note). Values are strings, because one row
    mixes types across runs and one column mixes them across rows.
    """
    dirs = _dirs(run_dirs)
    cfgs = [_config(d) for d in dirs]
    fields = list(dict.fromkeys(k for c in cfgs for k in c))
    differ = [f for f in fields if len({repr(c.get(f)) for c in cfgs}) > 1]
    differ.sort(key=lambda f: f in BOOKKEEPING)  # stable: training fields first, in config order
    out = pd.DataFrame({lab: [_fmt(c.get(f)) for f in differ] for lab, c in zip(labels(dirs), cfgs)},
                       index=pd.Index(differ, name="field"))
    return out


SEED_POOLED = ("val_dice", "val_iou", "val_dice_img")  # pooled over seeds by across_seeds()
SEED_IGNORED = {"seed", *BOOKKEEPING}  # runs differing only in these are seeds of one recipe


def _recipe(cfg: dict) -> str:
    """A key equal for runs whose configs differ only in SEED_IGNORED fields."""
    return repr(sorted((k, repr(v)) for k, v in cfg.items() if k not in SEED_IGNORED))


def seed_groups(run_dirs) -> list[list[Path]]:
    """The runs grouped by recipe (configs that differ only in seed, name, notes, sweep), each
    group and the groups in the order given. Unlike across_seeds, unfinished runs count too."""
    groups: dict[str, list[Path]] = {}
    for d in _dirs(run_dirs):
        groups.setdefault(_recipe(_config(d)), []).append(d)
    return list(groups.values())


def across_seeds(run_dirs) -> pd.DataFrame:
    """Runs whose configs differ only in `seed` (and name, notes, sweep) pooled into one row each:
    `config` (the fields that set the group apart from the other groups, or "all runs"), `runs`,
    `seeds`, and for SEED_POOLED the mean and the sample std over the runs (`<metric>_std`; NaN
    for a single run). A k-fold run counts once, with its mean over folds: the spread between
    seeds is the honest error bar for a choice made on tiny data. Unfinished runs are left out."""
    groups: dict[str, list] = {}
    for d in _dirs(run_dirs):
        s = runs.read_json(d / "summary.json", {}) or {}
        if "val_dice" not in s:
            continue
        cfg = _config(d)
        groups.setdefault(_recipe(cfg), []).append((cfg, s))
    cfgs = [g[0][0] for g in groups.values()]
    differ = [f for f in dict.fromkeys(k for c in cfgs for k in c)
              if f not in SEED_IGNORED and len({repr(c.get(f)) for c in cfgs}) > 1]
    rows = []
    for members in groups.values():
        cfg = members[0][0]
        row = {"config": ", ".join(f"{f}={_fmt(cfg.get(f))}" for f in differ) or "all runs",
               "runs": len(members), "seeds": ", ".join(str(c.get("seed")) for c, _ in members)}
        for k in SEED_POOLED:
            v = np.array([s.get(k, np.nan) for _, s in members], dtype=float)
            row[k] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
            row[f"{k}_std"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() >= 2 else np.nan
        rows.append(row)
    cols = ["config", "runs", "seeds", *[c for k in SEED_POOLED for c in (k, f"{k}_std")]]
    return pd.DataFrame(rows, columns=cols)


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v) if v != "" else "(empty)"


# ---------------------------------------------------------------------------------------------
# learning curves
def curve_metrics(run_dirs) -> list[str]:
    """Numeric per-epoch columns present in any of the runs' metrics.jsonl, val_ first."""
    found = progress.curves_frame(run_dirs)["metric"].unique()
    return sorted(found, key=lambda k: (not k.startswith("val_"), k))


def curves(run_dirs, metric: str) -> pd.DataFrame:
    """One row per (run, epoch): label, run_id, epoch, value, std, lo, hi, n_folds.

    value is the metric for a holdout run and the mean over folds for a k-fold run (over the folds
    that reached this epoch, while one is still training); std is the sample std over folds (NaN
    with fewer than two), and lo/hi = value -/+ std bound the band drawn around a k-fold curve.
    Runs keep the order given; a run without this metric has no rows.
    """
    long = progress.curves_frame(run_dirs, [metric])
    out = (long.groupby(["run_id", "label", "epoch"], sort=False)["value"]
           .agg(value="mean", std="std", n_folds="count").reset_index())
    order = {Path(d).name: i for i, d in enumerate(run_dirs)}
    out = out.sort_values(["run_id", "epoch"], key=lambda c: c.map(order) if c.name == "run_id" else c,
                          kind="stable").reset_index(drop=True)
    out["lo"], out["hi"] = out["value"] - out["std"], out["value"] + out["std"]
    return out[["label", "run_id", "epoch", "value", "std", "lo", "hi", "n_folds"]]


# ---------------------------------------------------------------------------------------------
# per validation image
def _pred_path(run_dir: Path, name: str) -> Path:
    return run_dir / PREDICTIONS / f"{name}.png"


def _read_mask(path: Path) -> np.ndarray:
    """A predicted 0/255 PNG -> (H, W) bool."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) >= 128


def _dice_by_name(run_dir: Path) -> dict[str, float]:
    return {r["name"]: float(r["dice"]) for r in read_per_image(run_dir) if "name" in r and "dice" in r}


def image_table(run_dirs, sort: str = "disagreement") -> pd.DataFrame:
    """One row per validation image predicted by every run: name, `dice <label>` per run (from
    per_image.json), worst_dice, mean_dice, and disagreement (overlay.disagreement: the fraction
    of pixels where the runs' predicted masks differ; NaN when their sizes differ).

    sort: "disagreement" (most first), "worst_dice" (lowest first) or "name".
    """
    dirs = _dirs(run_dirs)
    labs = labels(dirs)
    dice = [_dice_by_name(d) for d in dirs]
    names = sorted(set.intersection(*[{n for n in dc if _pred_path(d, n).is_file()}
                                      for d, dc in zip(dirs, dice)])) if dirs else []
    rows = []
    for n in names:
        row = {"name": n, **{f"dice {lab}": dc[n] for lab, dc in zip(labs, dice)}}
        per_run = [dc[n] for dc in dice]
        row["worst_dice"], row["mean_dice"] = min(per_run), float(np.mean(per_run))
        try:
            row["disagreement"] = overlay.disagreement([_read_mask(_pred_path(d, n)) for d in dirs])
        except ValueError:  # runs trained at different sizes on different data
            row["disagreement"] = np.nan
        rows.append(row)
    cols = ["name", *[f"dice {lab}" for lab in labs], "worst_dice", "mean_dice", "disagreement"]
    df = pd.DataFrame(rows, columns=cols)
    by = {"disagreement": ("disagreement", False), "worst_dice": ("worst_dice", True), "name": ("name", True)}
    if sort not in by:
        raise ValueError(f"sort must be one of {list(by)}, got {sort!r}")
    col, asc = by[sort]
    return df.sort_values([col, "name"], ascending=[asc, True], na_position="last").reset_index(drop=True)


def dataset_of(run_dirs) -> Path | None:
    """The dataset folder the first run trained on (config `data`), or None."""
    dirs = _dirs(run_dirs)
    return Path(_config(dirs[0])["data"]) if dirs else None


def panels(run_dirs, dataset_dir, name: str, alpha: float = 0.5) -> dict:
    """Pictures of one validation image for side-by-side display.

    Returns {"name", "image": (H, W, 3) uint8 RGB, "ground_truth": the label drawn over the image
    in overlay.MASK_COLOR (None without a label), "runs": [{"label", "run_id", "overlay": TP/FP/FN
    colours over the image (or None), "dice": per_image.json's Dice (NaN if absent), "error": why
    there is no overlay, or None}]}. dataset_dir None means the first run's own dataset.
    """
    dirs = _dirs(run_dirs)
    root = Path(dataset_dir) if dataset_dir is not None else dataset_of(dirs)
    pairs, unlabeled, _ = data.find_pairs(root)
    files = {s: (ip, lp) for s, ip, lp in pairs} | {s: (ip, None) for s, ip in unlabeled}
    if name not in files:
        raise data.DataError(f"{root}: no image named {name!r}")
    ip, lp = files[name]
    rgba = data.load_image(ip)
    gt = data.load_label(lp) if lp is not None else None
    out = {"name": name, "image": overlay.to_rgb(rgba),
           "ground_truth": overlay.overlay_mask(rgba, gt, alpha=alpha) if gt is not None else None,
           "runs": []}
    for d, label in zip(dirs, labels(dirs)):
        entry = {"label": label, "run_id": d.name, "overlay": None,
                 "dice": _dice_by_name(d).get(name, np.nan), "error": None}
        p = _pred_path(d, name)
        try:
            entry["overlay"] = overlay.overlay_errors(rgba, gt, _read_mask(p), alpha=alpha)
        except FileNotFoundError:
            entry["error"] = "no validation prediction for this image (not in this run's validation set)"
        except (ValueError, OSError) as e:
            entry["error"] = f"cannot draw {p.name}: {e}"
        out["runs"].append(entry)
    return out


# ---------------------------------------------------------------------------------------------
# is the difference real? (issue #12: the Compare page's paired comparisons)
TEST_NAMES = {"wilcoxon": "Wilcoxon signed-rank", "sign-flip": "exact sign-flip"}  # paired's test ids
PAIRED_ROWS = {"dice": "Dice, fold by fold", "iou": "IoU, fold by fold", "images": "Dice per image"}
PAIRED_COLUMNS = ["compared", "n", "mean A", "mean B", "B − A", "95% low", "95% high",
                  "A wins", "B wins", "ties", "test", "p"]


def paired_comparisons(run_dirs, baseline, epoch: str = "last", top: int = 3) -> list[dict]:
    """Every other recipe among run_dirs against the baseline's recipe, by paired.report.

    Runs that differ only in their seed (seed_groups) form one side: the baseline and its seeds
    are side A, and each other group is one side B, in the order given. One dict per side B:
    {a, b: run ids (the baseline first); dirs: the run folders, A's then B's; a_label, b_label;
    report: paired.report's dict, or None when it could not be made; error: why not in one line
    (a missing or corrupt file), else None; unfinished: one sentence per run that is not done
    (failed, cancelled, running, queued) saying what of it the comparison uses; table: the
    figures, one row per comparison made (PAIRED_COLUMNS; empty without a report)}.
    An empty list when every run is a seed of the baseline's recipe.
    """
    dirs = _dirs(run_dirs)
    base = Path(baseline)
    if base not in dirs:
        raise ValueError(f"the baseline {base.name} is not one of the runs compared")
    label = dict(zip(dirs, labels(dirs)))
    groups = seed_groups(dirs)
    group_a = next(g for g in groups if base in g)
    side_a = [base, *[d for d in group_a if d != base]]
    out = []
    for side_b in (g for g in groups if g is not group_a):
        entry = {"a": [d.name for d in side_a], "b": [d.name for d in side_b],
                 "dirs": [str(d) for d in (*side_a, *side_b)],
                 "a_label": _side_label(side_a, label), "b_label": _side_label(side_b, label),
                 "report": None, "error": None, "table": pd.DataFrame(columns=PAIRED_COLUMNS),
                 "unfinished": [n for side, ds in (("A", side_a), ("B", side_b)) for d in ds
                                for n in [_unfinished(side, d, label[d])] if n]}
        try:
            entry["report"] = paired.report(side_a, side_b, epoch=epoch, top=top)
        except (ValueError, OSError) as e:  # RunError: a missing or corrupt file, named
            entry["error"] = str(e)
        else:
            entry["table"] = _paired_table(entry["report"])
        out.append(entry)
    return out


def _side_label(side: list[Path], label: dict) -> str:
    if len(side) == 1:
        return label[side[0]]
    seeds = ", ".join(str(_config(d).get("seed")) for d in side)
    return f"{label[side[0]]} + {len(side) - 1} more (seeds {seeds})"


def _unfinished(side: str, run_dir: Path, label: str) -> str | None:
    st = runs.status(run_dir)  # a dead process shows as failed, as everywhere else
    state = st.get("state", "failed")
    if state == "done":
        return None
    why = f" ({' '.join(str(st['error']).split())})" if st.get("error") else ""
    uses = {"running": "compared on the epochs it has logged so far; its per-image scores come "
                       "when it ends",
            "queued": "it has recorded nothing yet"}.get(state, "compared on what it recorded before it stopped")
    return f"{side} run {label} is {state}{why}: {uses}."


def _paired_table(rep: dict) -> pd.DataFrame:
    rows = []
    for key, what in PAIRED_ROWS.items():
        r = rep[key]
        if not r["paired"]:
            continue
        num = {k: np.nan if r[k] is None else float(r[k])
               for k in ("mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value")}
        rows.append({"compared": what, "n": r["n"], "mean A": num["mean_a"], "mean B": num["mean_b"],
                     "B − A": num["diff"], "95% low": num["ci_low"], "95% high": num["ci_high"],
                     "A wins": r["wins"]["a"], "B wins": r["wins"]["b"], "ties": r["wins"]["tie"],
                     "test": TEST_NAMES.get(r["test"], "none"), "p": num["p_value"]})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
