"""What a sweep's trials say: best trials, the metric against each varied field, isolation plots,
parallel coordinates, edge warnings and outcome counts.

Pure pandas on a frame shaped like sweep.trials_frame() plus the SweepSpec (for each field's range
and scale, and the direction); no optuna and no plotting, so tests can feed hand-made frames.
Only complete trials carry a final value; pruned and failed ones are counted, never ranked.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from roofseg.sweep.study import SweepSpec


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials that finished with a finite value."""
    f = frame[(frame["state"] == "complete") & frame["value"].notna()]
    return f[np.isfinite(f["value"].astype(float))]


def best_trials(frame: pd.DataFrame, spec: SweepSpec, k: int = 1) -> pd.DataFrame:
    """The k best complete trials, best first."""
    return complete(frame).sort_values("value", ascending=spec.direction == "minimize").head(k)


def outcome(frame: pd.DataFrame) -> dict:
    """Counts per outcome and the failed / pruned fractions of the trials that ended (a high
    failed fraction says the space holds configs that do not train: narrow it)."""
    s, interrupted = frame["state"], frame["interrupted"].astype(bool)
    n = {"complete": int((s == "complete").sum()), "pruned": int((s == "pruned").sum()),
         "failed": int(((s == "fail") & ~interrupted).sum()), "interrupted": int(interrupted.sum()),
         "running": int((s == "running").sum()), "waiting": int((s == "waiting").sum())}
    ended = n["complete"] + n["pruned"] + n["failed"]
    n["failed_frac"] = n["failed"] / ended if ended else 0.0
    n["pruned_frac"] = n["pruned"] / ended if ended else 0.0
    return n


def kind(spec: SweepSpec, param: str) -> str:
    """choice | log | linear: how a field's values are laid out on an axis."""
    p = spec.space[param]
    return "choice" if "choices" in p else "log" if p.get("log") else "linear"


def position(spec: SweepSpec, param: str, values) -> np.ndarray:
    """Values of a varied field mapped to [0, 1] over the searched range: log-aware for log
    ranges; a choice's index over (number of choices - 1), in the spec's order."""
    p, values = spec.space[param], list(values)
    if "choices" in p:
        idx = {str(c): i for i, c in enumerate(p["choices"])}
        n = len(p["choices"])
        return np.array([idx.get(str(v), np.nan) / (n - 1) if n > 1 else 0.5 for v in values], float)
    lo, hi, x = float(p["low"]), float(p["high"]), np.asarray(values, float)
    if p.get("log"):
        lo, hi, x = math.log(lo), math.log(hi), np.log(x)
    return (x - lo) / (hi - lo)


def param_effects(frame: pd.DataFrame, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    """Per varied field: its complete trials as (trial, x, value, run_id), for a plot of the metric
    against that field (kind() says whether x is a choice, a log or a linear axis)."""
    f = complete(frame)
    out = {}
    for p in spec.space:
        part = f[["trial", p, "value", "run_id"]].rename(columns={p: "x"})
        out[p] = part.assign(x=part["x"].astype(str)) if kind(spec, p) == "choice" else part
    return out


def isolation(frame: pd.DataFrame, spec: SweepSpec, param: str, bins: int = 5) -> pd.DataFrame:
    """The tuning playbook's isolation plot: for each value of the "scientific" field `param`, the
    best trial over everything else that varied (the nuisance fields optimised away).

    Columns: group (the value, or a bin of a numeric range with more than `bins` distinct values,
    equal-width on the range's scale), order (for sorting), best (the best value), trial, run_id,
    n (complete trials in the group), then the other varied fields of that best trial.
    """
    f = complete(frame).copy()
    others = [p for p in spec.space if p != param]
    cols = ["group", "order", "best", "trial", "run_id", "n", *others]
    if f.empty:
        return pd.DataFrame(columns=cols)
    if kind(spec, param) == "choice":
        f["group"] = f[param].astype(str)
        f["order"] = position(spec, param, f[param])
    elif f[param].nunique() <= bins:
        f["group"] = f[param].map(lambda v: f"{v:.3g}")
        f["order"] = f[param].astype(float)
    else:
        # bins are [a, b); the 1e-9 keeps a value on an edge (1e-3 in 1e-4..1e-2) out of rounding's way
        i = np.clip(np.floor(position(spec, param, f[param]) * bins + 1e-9), 0, bins - 1).astype(int)
        p = spec.space[param]
        edges = (np.geomspace if p.get("log") else np.linspace)(p["low"], p["high"], bins + 1)
        f["group"] = [f"{edges[j]:.3g}–{edges[j + 1]:.3g}" for j in i]
        f["order"] = i
    ascending = spec.direction == "minimize"
    rows = []
    for _, g in f.groupby("group", sort=False):
        b = g.sort_values("value", ascending=ascending).iloc[0]
        rows.append({"group": b["group"], "order": b["order"], "best": b["value"], "trial": b["trial"],
                     "run_id": b["run_id"], "n": len(g), **{p: b[p] for p in others}})
    return pd.DataFrame(rows, columns=cols).sort_values("order", ignore_index=True)


def parallel_coordinates(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Long frame for a parallel-coordinates plot of the complete trials: one row per trial and
    axis (each varied field, then the metric), with pos in [0, 1] (fields: position(); metric:
    min-max over the trials), label (the raw value) and value (the trial's metric, for colour)."""
    f = complete(frame)
    rows = []
    if f.empty:
        return pd.DataFrame(columns=["trial", "axis", "order", "pos", "label", "value"])
    v = f["value"].astype(float)
    span = v.max() - v.min()
    axes = [(p, position(spec, p, f[p]), f[p]) for p in spec.space]
    axes.append((spec.metric, (v - v.min()) / span if span else v * 0 + 0.5, v))
    for order, (axis, pos, raw) in enumerate(axes):
        for t, ps, r, val in zip(f["trial"], pos, raw, v):
            rows.append({"trial": t, "axis": axis, "order": order, "pos": float(ps),
                         "label": f"{r:.3g}" if isinstance(r, float) else str(r), "value": val})
    return pd.DataFrame(rows)


def edge_warnings(frame: pd.DataFrame, spec: SweepSpec, edge: float = 0.1) -> list[str]:
    """For each numeric range: a warning when the best trial's value lies in the outer `edge` of
    the range (on its log scale for a log range): the optimum may lie outside, so widen it."""
    best = best_trials(frame, spec)
    if best.empty:
        return []
    b = best.iloc[0]
    out = []
    for p, r in spec.space.items():
        if "choices" in r or pd.isna(b[p]):
            continue
        pos = float(position(spec, p, [b[p]])[0])
        side = "lowest" if pos <= edge else "highest" if pos >= 1 - edge else None
        if side:
            scale = " (log scale)" if r.get("log") else ""
            out.append(f"{p}: the best trial (#{int(b['trial'])}, {spec.metric} {b['value']:.4f}) used "
                       f"{b[p]:.3g}, in the {side} {edge:.0%} of the searched range "
                       f"[{r['low']:.3g}, {r['high']:.3g}]{scale}; the optimum may lie "
                       f"{'below' if side == 'lowest' else 'above'} it: widen the range "
                       f"{'downward' if side == 'lowest' else 'upward'}")
    return out


def overview(name: str, runs_dir="runs", scientific: str | None = None, top: int = 5) -> dict:
    """Everything the Sweeps page shows, in one call: spec, frame, progress, best (top trials),
    outcome, effects, isolation (for `scientific`, default the first varied field), parallel,
    warnings."""
    from roofseg.sweep import study as sweep
    spec = sweep.load_spec(name, runs_dir)
    frame = sweep.trials_frame(name, runs_dir)
    scientific = scientific if scientific in spec.space else next(iter(spec.space))
    return {"spec": spec, "frame": frame, "progress": sweep.progress(name, runs_dir),
            "best": best_trials(frame, spec, top), "outcome": outcome(frame),
            "effects": param_effects(frame, spec), "scientific": scientific,
            "isolation": isolation(frame, spec, scientific),
            "parallel": parallel_coordinates(frame, spec), "warnings": edge_warnings(frame, spec)}
