"""The hand-over report as one self-contained HTML file: `write_report(run_dirs, out_path)`.

Sections: runs, dataset check, recipe (each choice with its reason), curves, cross-validation
table, paired comparison (each run against the first), out-of-fold overlays worst first,
predictions for the unlabeled images, environment. Charts are inline SVG and pictures inline
PNG data: URIs, the CSS sits in the page: the file opens from file:// with no request to any
server. The page is rendered whole before anything is written, then written to a temporary file
beside the target and renamed over it, so a failure leaves no partial report.
"""
from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path

import jinja2

from roofseg import __version__
from roofseg.report import charts, gather, pictures
from roofseg.store import compare, paired, stats

TEMPLATE = "report.html"
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("roofseg.report", "templates"),
                          autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)


class ReportError(OSError):
    """The report cannot be written where asked; the message names the folder or file."""


def _num(v, digits: int = 3) -> str:
    """A metric as shown: fixed digits, a true minus sign, '—' for missing or NaN."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "—"
    return f"{x:.{digits}f}".replace("-", "−") if math.isfinite(x) else "—"


def _signed(v) -> str:
    s = _num(v)
    return s if s == "—" or s.startswith("−") else "+" + s


def _pm(cell: dict) -> str:
    if cell["mean"] is None:
        return "—"
    return _num(cell["mean"]) + (f" ± {_num(cell['std'])}" if cell["std"] is not None else "")


def _pct(v) -> str:
    return "—" if v is None else f"{100 * float(v):.1f}%"


_ENV.filters.update(num=_num, signed=_signed, pm=_pm, pct=_pct, p_text=stats.p_text)


def _comparisons(loaded: list[dict]) -> list[dict]:
    """store.paired.report of every run after the first against the first (A = the first)."""
    if len(loaded) < 2:
        return []
    first = loaded[0]
    out = []
    for r in loaded[1:]:
        rep = paired.report([first["dir"]], [r["dir"]], epoch="last", top=5)
        rep["a_label"], rep["b_label"] = first["label"], r["label"]
        # when nothing pairs fold by fold, the verdict only repeats the pairing reason: say it once
        rep["fold_skipped"] = (not rep["dice"]["paired"]
                               and rep["dice"]["verdict"].endswith(rep["dice"]["pairing"]))
        rep["all_notes"] = list(dict.fromkeys(n for k in ("dice", "iou", "images") for n in rep[k]["notes"]))
        out.append(rep)
    return out


def _differ(loaded: list[dict]) -> list[dict]:
    """Config fields whose values differ between the runs (compare.config_diff), as rows."""
    if len(loaded) < 2:
        return []
    df = compare.config_diff([r["dir"] for r in loaded])
    return [{"field": f, "cells": list(df.loc[f])} for f in df.index]


def context(run_dirs) -> dict:
    """Everything the template shows, from the run folders (RunError on a missing/corrupt file)."""
    loaded = gather.load_runs(run_dirs)
    datasets: dict[str, pictures.Dataset] = {}  # decoded once per folder, shared by the runs
    for i, r in enumerate(loaded):
        key = str(r["data_dir"])
        ds = datasets.setdefault(key, pictures.Dataset(r["data_dir"]))
        r["overview"] = gather.overview(r)
        r["recipe"] = gather.recipe(r)
        r["folds_table"] = gather.fold_table(r)
        r["env_rows"] = gather.environment(r)
        r["curves"] = charts.run_curves(r["dir"], prefix=f"run{i}")
        r["validation"] = pictures.validation(r, ds)
        r["unlabeled"] = pictures.unlabeled(r, ds)
        r["anchor"] = f"run-{i}"
    return {"title": "roofseg report: " + ", ".join(r["label"] for r in loaded),
            "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "version": __version__,
            "runs": loaded, "datasets": gather.datasets(loaded), "cv": gather.cv_table(loaded),
            "compare_svg": charts.compare_curves([r["dir"] for r in loaded], prefix="all"),
            "comparisons": _comparisons(loaded), "differ": _differ(loaded), "legend": pictures.legend(),
            "max_images": pictures.MAX_IMAGES}


def render(run_dirs) -> str:
    """The report's HTML text."""
    return _ENV.get_template(TEMPLATE).render(**context(run_dirs))


def write_report(run_dirs, out_path) -> Path:
    """Write the report of `run_dirs` (run folders; the first is the reference the others are
    compared with) to `out_path` and return its path. Raises RunError naming the run and file
    when a run folder is missing or corrupt, ReportError when the folder cannot be written."""
    out = Path(out_path)
    folder = out.parent
    # where it goes is checked first: a typo in --out should not cost a whole rendering
    if out.is_dir():
        raise ReportError(f"{out} is a folder; give a file name for the report, e.g. {out / 'report.html'}")
    for p in (folder, *folder.parents):
        if p.exists() and not p.is_dir():
            raise ReportError(f"cannot write the report into {folder}: {p} is a file, not a folder")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write the report into {folder}: the folder is not writable")
    html = render([Path(d) for d in run_dirs])  # everything read and drawn before a byte is written
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the folder {folder} for the report: {e.strerror or e}") from None
    tmp = folder / f".{out.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp"
    try:
        # os.open with 0o666: the umask applies, so the report gets the usual file permissions
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as e:
        raise ReportError(f"cannot write the report into {folder}: {e.strerror or e}; "
                          "check that the folder is writable and the disk is not full") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out
