"""Paired comparison of runs (issue #12): is recipe B really better than recipe A on this data, or
is the gap inside the noise of a few dozen images?

Two runs trained on the same folds can be compared fold by fold: each fold's validation images
are the same for both, so fold difficulty cancels out of the difference B − A. Runs whose folds
differ (another k, another split seed, other images) can still be compared image by image, on
their out-of-fold per-image scores. `pairing` says which applies and why, in plain words;
`compare_runs` and `compare_images` give the mean difference with a 95% paired t interval, a
signed-rank or exact sign-flip test, wins per side and a one-line verdict; `report` bundles them
(what the CLI prints and a page can show).

Pure functions of run folders (JSON and scipy; no torch, no streamlit). A missing or corrupt
file raises RunError (a ValueError) with one line naming the run and the file.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from roofseg.config import RunConfig
from roofseg.store import runs
from roofseg.store.runs import RunError
from roofseg.store.stats import TIE, p_text, paired_stats

LABELS = {"val_dice": "Dice", "val_iou": "IoU", "dice": "Dice", "iou": "IoU"}
# config fields that never change what a run learns: ignored when checking that a side's runs
# are seeds of one recipe
BOOKKEEPING = ("seed", "name", "notes", "sweep", "device", "num_threads", "amp")


# ---------------------------------------------------------------------------------------------
# reading run folders (strictly: a corrupt file is an error naming it, not an empty result)
def _load(run_dir) -> dict:
    """A run folder as {dir, id, cfg (config.json over the defaults), state, error}."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunError(f"no run folder {d}")
    if not (d / "config.json").is_file():
        raise RunError(f"run {d.name}: config.json is missing (not a run folder?)")
    cfg = runs.read_json_strict(d.name, d / "config.json", required=True)
    if not isinstance(cfg, dict):
        raise RunError(f"run {d.name}: config.json is not a JSON object of config fields")
    st = runs.status(d)  # a dead process shows as failed, as on the Runs page
    # defaults first, so a field added after the run was made still compares
    return {"dir": d, "id": d.name, "cfg": {**RunConfig().to_dict(), **cfg},
            "state": st.get("state", "failed"), "error": st.get("error")}


def _loads(run_dirs, side: str) -> list[dict]:
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    loaded = [_load(d) for d in run_dirs]
    if not loaded:
        raise ValueError(f"side {side}: give at least one run")
    return loaded


def _per_image(r: dict) -> dict[str, dict] | None:
    """name -> per_image.json row, or None when the run has not written it yet."""
    if "per_image" not in r:
        rows = runs.read_json_strict(r["id"], r["dir"] / "per_image.json", required=False)
        if rows is not None and not (isinstance(rows, list) and all(isinstance(x, dict) for x in rows)):
            raise RunError(f"run {r['id']}: per_image.json is not a list of per-image rows")
        r["per_image"] = None if rows is None else {str(x["name"]): x for x in rows if "name" in x}
    return r["per_image"]


def _summary(r: dict) -> dict:
    s = runs.read_json_strict(r["id"], r["dir"] / "summary.json", required=False)
    if s is not None and not isinstance(s, dict):
        raise RunError(f"run {r['id']}: summary.json is not a JSON object")
    return s or {}


def _state_note(side: str, r: dict) -> str | None:
    if r["state"] == "done":
        return None
    why = f": {' '.join(str(r['error']).split())}" if r.get("error") else ""
    return f"{side} run {r['id']} is {r['state']}{why}; using what it recorded so far"


# ---------------------------------------------------------------------------------------------
# can two runs be paired fold by fold?
def _data_path(r: dict) -> str:
    return str(Path(str(r["cfg"]["data"])).expanduser().resolve())


def _k(r: dict) -> int:
    return int(r["cfg"]["folds"]) if int(r["cfg"]["folds"]) >= 2 else 0


def _split_text(r: dict) -> str:
    k = _k(r)
    return f"{k} folds" if k else f"holdout {float(r['cfg']['val_fraction']):g}"


def _pairing(ra: dict, rb: dict) -> tuple[str, str]:
    """('fold' | 'image' | 'none', reason): fold by fold, per image only, or not at all."""
    if _data_path(ra) != _data_path(rb):
        return "none", (f"different data (A: {_data_path(ra)}, B: {_data_path(rb)}): the runs saw "
                        "different images, so nothing pairs")
    differ = []
    ka, kb = _k(ra), _k(rb)
    if ka != kb:
        differ.append(f"different k (A: {_split_text(ra)}, B: {_split_text(rb)})")
    elif ka == 0 and float(ra["cfg"]["val_fraction"]) != float(rb["cfg"]["val_fraction"]):
        differ.append(f"different holdout fraction (A: {ra['cfg']['val_fraction']:g}, "
                      f"B: {rb['cfg']['val_fraction']:g})")
    # The images actually used: a k-fold run's per_image.json lists every one (each is predicted
    # once, out of fold); a holdout run lists only its validation images, so use the count.
    pa, pb = _per_image(ra), _per_image(rb)
    na, nb = _summary(ra).get("pairs"), _summary(rb).get("pairs")
    if ka and kb and pa is not None and pb is not None and set(pa) != set(pb):
        only_a, only_b = sorted(set(pa) - set(pb)), sorted(set(pb) - set(pa))
        differ.append(f"different labelled images (A: {len(pa)}, B: {len(pb)}; only in A: "
                      f"{_few(only_a)}; only in B: {_few(only_b)})")
    elif na is not None and nb is not None and na != nb:
        differ.append(f"different labelled images (A used {na}, B {nb})")
    elif (bool(ra["cfg"]["exclude_flagged"]) != bool(rb["cfg"]["exclude_flagged"])
          and (pa is None or pb is None) and (na is None or nb is None)):
        # nothing on disk yet says which images were used; the filter may change them
        differ.append(f"possibly different images (exclude_flagged A: {ra['cfg']['exclude_flagged']}, "
                      f"B: {rb['cfg']['exclude_flagged']}; not written yet to check)")
    sa, sb = ra["cfg"]["seed"], rb["cfg"]["seed"]
    if sa != sb:
        # in roofseg the seed draws the folds (data.kfold_splits / holdout_split), not only init
        differ.append(f"different split seed (A: {sa}, B: {sb}; the seed also draws the folds)")
    if differ:
        return "image", f"{' and '.join(differ)}: folds differ, compared per image only"
    if pa is not None and pb is not None:
        # same settings, other folds or validation images: the dataset (or the split code)
        # changed between the runs
        moved = sorted(n for n in set(pa) ^ set(pb)) + sorted(
            n for n in set(pa) & set(pb) if pa[n].get("fold") != pb[n].get("fold"))
        if moved:
            return "image", (f"same settings but {len(moved)} image(s) validate in different folds "
                             f"({_few(moved)}; data changed between the runs?): compared per image only")
    n = len(pa) if ka and pa is not None else na
    imgs = f", {n} labelled images" if n is not None else ""
    split = f"the same {ka} folds" if ka else f"the same holdout split ({ra['cfg']['val_fraction']:g})"
    return "fold", f"same data ({_data_path(ra)}{imgs}), {split}, same split seed {sa}: paired fold by fold"


def pairing(run_a, run_b) -> tuple[bool, str]:
    """(ok, reason): whether two run folders share their folds and can be paired fold by fold,
    with the reason in plain words either way (e.g. "different split seed (A: 0, B: 1; ...):
    folds differ, compared per image only")."""
    level, reason = _pairing(_load(run_a), _load(run_b))
    return level == "fold", reason


def _few(names: list, k: int = 3) -> str:
    if not names:
        return "none"
    return ", ".join(map(str, names[:k])) + (f" and {len(names) - k} more" if len(names) > k else "")


# ---------------------------------------------------------------------------------------------
# verdicts
def _num(x: float, signed: bool = False) -> str:
    s = f"{x:+.3f}" if signed else f"{x:.3f}"
    return s.replace("-", "−")  # a true minus sign, as in the verdicts on the pages


def _verdict(st: dict, label: str, over: str, unit: str = "pairs") -> str:
    m, lo, hi = st["diff"], st["ci_low"], st["ci_high"]
    if st["n"] == 0:
        return "nothing to compare"
    if st["n"] == 1:
        lead = "B" if m > TIE else "A" if m < -TIE else None
        return (f"{lead} is ahead by {_num(abs(m))} {label} {over}, but one pair gives no interval: "
                "use k-fold or several seeds" if lead else f"A and B tie {over} (one pair, no interval)")
    if lo > 0:
        text = f"B beats A by {_num(m)} {label} [{_num(lo)}, {_num(hi)}] {over}"
    elif hi < 0:
        text = f"A beats B by {_num(-m)} {label} [{_num(-hi)}, {_num(-lo)}] {over}"
    else:
        text = f"no difference this data can show ({_num(m, True)} [{_num(lo)}, {_num(hi)}]) {over}"
    # The interval decides; when the rank test could decide too and says otherwise, say so.
    if st["test"] == "wilcoxon":
        p = st["p_value"]
        if (lo > 0 or hi < 0) and p >= 0.05:
            text += f"; the Wilcoxon test does not confirm it (p{p_text(p)}): a few large differences carry the mean"
        elif not (lo > 0 or hi < 0) and p < 0.05:
            w = st["wins"]
            side, most = ("B", w["b"]) if w["b"] > w["a"] else ("A", w["a"])
            text += (f"; {side} wins {most} of {st['n']} {unit} (Wilcoxon p{p_text(p)}), but a few large "
                     "differences the other way leave the mean gap uncertain")
    return text


# ---------------------------------------------------------------------------------------------
# fold by fold
def _fold_values(r: dict, metric: str, epoch: str, side: str, notes: list) -> dict[int, float]:
    """fold -> the metric at the fold's last epoch (epoch='last') or at its best-val_dice epoch
    ('best': the epoch training kept, so IoU is read at the epoch Dice chose)."""
    path = r["dir"] / "metrics.jsonl"
    if not path.is_file():
        if r["state"] == "done":
            raise RunError(f"run {r['id']}: metrics.jsonl is missing")
        notes.append(f"{side} run {r['id']} has no epochs yet (no metrics.jsonl)")
        return {}
    try:
        rows, bad = runs.read_metrics(r["dir"])
    except OSError as e:
        raise RunError(f"run {r['id']}: cannot read metrics.jsonl: {e.strerror or e}") from None
    if bad and not rows:
        raise RunError(f"run {r['id']}: metrics.jsonl is corrupt ({bad} unreadable line(s), none readable)")
    if bad:  # a line cut short by a crash or power loss: the rest is still good
        notes.append(f"{side} run {r['id']}: {bad} unreadable line(s) in metrics.jsonl skipped")
    by_fold: dict[int, dict[int, dict]] = {}
    for row in rows:
        try:
            f, e = int(row.get("fold", 0)), int(row["epoch"])
        except (KeyError, TypeError, ValueError):
            continue
        by_fold.setdefault(f, {})[e] = row  # a repeated epoch: the later line wins
    planned = int(r["cfg"]["epochs"])
    out = {}
    for f, epochs in sorted(by_fold.items()):
        last = epochs[max(epochs)]
        if epoch == "best":  # strict > in training keeps the earliest of equal scores
            cands = [epochs[e] for e in sorted(epochs) if _finite(epochs[e].get("val_dice"))]
            row = max(cands, key=lambda x: float(x["val_dice"])) if cands else last
        else:
            row = last
        if not _finite(row.get(metric)):
            notes.append(f"{side} run {r['id']}: fold {f} has no {metric}; left out")
            continue
        if max(epochs) < planned:
            notes.append(f"{side} run {r['id']}: fold {f} {'is at' if r['state'] == 'running' else 'stopped at'} "
                         f"epoch {max(epochs)} of {planned}")
        out[f] = float(row[metric])
    return out


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _recipe_note(side: str, rs: list[dict]) -> str | None:
    """A side's runs should be seeds of one recipe; say which fields make them more than that."""
    cfgs = [r["cfg"] for r in rs]
    differ = [k for k in cfgs[0] if k not in BOOKKEEPING and len({repr(c.get(k)) for c in cfgs}) > 1]
    return (f"side {side}'s runs differ in more than the seed ({', '.join(differ)}): pooled as one side anyway"
            if differ else None)


def _by_seed(side: str, rs: list[dict], notes: list) -> dict:
    out = {}
    for r in rs:
        s = r["cfg"]["seed"]
        if s in out:
            notes.append(f"side {side} has two runs with seed {s} ({out[s]['id']}, {r['id']}): "
                         f"{r['id']} left out, it would pair with the same folds twice")
            continue
        out[s] = r
    return out


def _over(pairs: list[dict], k: int) -> str:
    seeds = list(dict.fromkeys(p["seed"] for p in pairs))
    if not k:
        return "on one holdout split" if len(seeds) == 1 else f"over {len(seeds)} seeds (one holdout split each)"
    full = all(sum(p["seed"] == s for p in pairs) == k for s in seeds)
    if full:
        return f"over {k} folds" + (f" × {len(seeds)} seeds" if len(seeds) > 1 else "")
    return f"over {len(pairs)} fold pairs" + (f" from {len(seeds)} seeds" if len(seeds) > 1 else "")


def compare_runs(a_dirs, b_dirs, metric: str = "val_dice", epoch: str = "last") -> dict:
    """Recipe B against recipe A, fold by fold; each side one run or several seeds of one recipe.

    Runs pair seed with seed (the seed draws the folds), then fold with fold; a fold's value is the
    metric at its last epoch (epoch='last', the honest figure) or at its best epoch ('best', chosen
    on that same fold, so optimistic). Returns {metric, label, epoch, a, b, states, paired,
    pairing, pairs: [{seed, fold, a, b, diff, run_a, run_b}], mean_a, mean_b, n, diff, sd, ci_low,
    ci_high, test, p_value, test_why, wins, verdict, notes}; diff is B − A.
    """
    if epoch not in ("last", "best"):
        raise ValueError(f"epoch must be 'last' or 'best', got {epoch!r}")
    A, B = _loads(a_dirs, "A"), _loads(b_dirs, "B")
    label = LABELS.get(metric, metric)
    notes = [n for side, rs in (("A", A), ("B", B)) for r in rs for n in [_state_note(side, r)] if n]
    notes += [n for n in (_recipe_note("A", A), _recipe_note("B", B)) if n]
    sa, sb = _by_seed("A", A, notes), _by_seed("B", B, notes)
    common = [s for s in sa if s in sb]
    reasons, pairs = [], []
    if not common:
        if len(sa) == 1 and len(sb) == 1:
            reasons.append(_pairing(next(iter(sa.values())), next(iter(sb.values())))[1])
        else:
            reasons.append(f"no seed in common (A: seeds {_few(list(sa), 9)}; B: seeds {_few(list(sb), 9)}): "
                           "the seed draws the folds, so nothing pairs fold by fold; compared per image only")
    for s in common:
        ra, rb = sa[s], sb[s]
        level, reason = _pairing(ra, rb)
        reasons.append(reason)
        if level != "fold":
            continue
        va = _fold_values(ra, metric, epoch, "A", notes)
        vb = _fold_values(rb, metric, epoch, "B", notes)
        for f in sorted(set(va) | set(vb)):
            if f in va and f in vb:
                pairs.append({"seed": s, "fold": f, "a": va[f], "b": vb[f], "diff": vb[f] - va[f],
                              "run_a": ra["id"], "run_b": rb["id"]})
            else:
                notes.append(f"seed {s} fold {f} only in {'A' if f in va else 'B'} ({'A' if f not in va else 'B'} "
                             "has not reached it): left out")
    for side, only in (("A", [s for s in sa if s not in sb]), ("B", [s for s in sb if s not in sa])):
        if only and common:
            notes.append(f"seed(s) {_few(only, 9)} only in {side}: left out, their folds have no partner")
    st = paired_stats([p["diff"] for p in pairs], unit="pairs")
    k = _k(sa[common[0]]) if common else _k(A[0])
    over = _over(pairs, k) if pairs else ""
    pairing_text = "; ".join(dict.fromkeys(reasons))
    verdict = (_verdict(st, label, over) if pairs else f"cannot compare fold by fold: {pairing_text}")
    if pairs and any(r["state"] != "done" for r in [*A, *B]):
        verdict += " (partly from unfinished runs)"
    if len(pairs) >= 2 and k:
        # folds share most training images and seeds share all images: pairs are correlated
        notes.append("fold pairs are not independent (folds share training images), so the interval "
                     "is somewhat narrower than the truth")
    return {"metric": metric, "label": label, "epoch": epoch,
            "a": [r["id"] for r in A], "b": [r["id"] for r in B],
            "states": {r["id"]: r["state"] for r in [*A, *B]},
            "paired": bool(pairs), "pairing": pairing_text, "pairs": pairs,
            "mean_a": float(np.mean([p["a"] for p in pairs])) if pairs else math.nan,
            "mean_b": float(np.mean([p["b"] for p in pairs])) if pairs else math.nan,
            **st, "verdict": verdict, "notes": list(dict.fromkeys(notes))}


# ---------------------------------------------------------------------------------------------
# image by image
def compare_images(a_dir, b_dir, metric: str = "dice", top: int = 5) -> dict:
    """Out-of-fold per-image scores of B against A (per_image.json), matched by image name.

    a_dir / b_dir: a run folder, or several (seeds of one recipe: each image's score is averaged
    over the side's runs). Works across k and split seeds (every image is scored by a model that
    did not train on it), not across datasets. Returns {metric, label, a, b, states, paired,
    pairing, n, mean_a, mean_b, diff, ci_low, ci_high, test, p_value, test_why, wins, verdict,
    disagree: the `top` images with the largest |B − A| as [{name, a, b, diff}], notes}.
    """
    A, B = _loads(a_dir, "A"), _loads(b_dir, "B")
    label = LABELS.get(metric, metric)
    notes = [n for side, rs in (("A", A), ("B", B)) for r in rs for n in [_state_note(side, r)] if n]
    base = {"metric": metric, "label": label, "a": [r["id"] for r in A], "b": [r["id"] for r in B],
            "states": {r["id"]: r["state"] for r in [*A, *B]}}
    datas = {_data_path(r) for r in [*A, *B]}
    if len(datas) > 1:
        reason = (_pairing(A[0], B[0])[1] if len(A) == len(B) == 1
                  else f"different data ({', '.join(sorted(datas))}): nothing pairs")
        return {**base, "paired": False, "pairing": reason, "mean_a": math.nan, "mean_b": math.nan,
                **paired_stats([], unit="images"), "verdict": f"cannot compare per image: {reason}",
                "disagree": [], "notes": notes}
    reason = (_pairing(A[0], B[0])[1] if len(A) == len(B) == 1
              else "several runs per side: each image's out-of-fold score averaged over the side's seeds")
    sides = []
    for side, rs in (("A", A), ("B", B)):
        vals: dict[str, list[float]] = {}
        for r in rs:
            rows = _per_image(r)
            if rows is None:
                if r["state"] == "done":
                    raise RunError(f"run {r['id']}: per_image.json is missing")
                notes.append(f"{side} run {r['id']} has no per_image.json yet (written when training ends)")
                continue
            for name, row in rows.items():
                if _finite(row.get(metric)):
                    vals.setdefault(name, []).append(float(row[metric]))
        sides.append({n: float(np.mean(v)) for n, v in vals.items()})
    va, vb = sides
    names = sorted(set(va) & set(vb))
    left = len(set(va) ^ set(vb))
    if left:
        notes.append(f"{left} image(s) scored by only one side left out")
    keeps = {r["cfg"].get("keep") for r in [*A, *B]}
    if len(keeps) > 1:  # per-image scores come from the weights each run kept
        notes.append("the runs keep different weights (keep: best vs last), and per-image scores "
                     "come from the kept weights")
    diffs = [vb[n] - va[n] for n in names]
    st = paired_stats(diffs, unit="images")
    order = sorted(range(len(names)), key=lambda i: (-abs(diffs[i]), names[i]))[:max(0, int(top))]
    disagree = [{"name": names[i], "a": va[names[i]], "b": vb[names[i]], "diff": diffs[i]} for i in order]
    verdict = _verdict(st, f"{label} per image", f"over {len(names)} images", "images") if names else \
        "no image scored by both sides"
    return {**base, "paired": bool(names), "pairing": reason,
            "mean_a": float(np.mean([va[n] for n in names])) if names else math.nan,
            "mean_b": float(np.mean([vb[n] for n in names])) if names else math.nan,
            **st, "verdict": verdict, "disagree": disagree, "notes": list(dict.fromkeys(notes))}


# ---------------------------------------------------------------------------------------------
def report(a_dirs, b_dirs, epoch: str = "last", top: int = 5) -> dict:
    """Everything one comparison shows: {a, b, states, dice, iou (compare_runs), images
    (compare_images on Dice)}, JSON-ready (NaN as None)."""
    out = {"dice": compare_runs(a_dirs, b_dirs, "val_dice", epoch),
           "iou": compare_runs(a_dirs, b_dirs, "val_iou", epoch),
           "images": compare_images(a_dirs, b_dirs, "dice", top)}
    head = {k: out["dice"][k] for k in ("a", "b", "states")}
    return jsonable({**head, **out})


def jsonable(obj):
    """numpy scalars to Python, NaN and infinities to None: strict JSON for --format json."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
