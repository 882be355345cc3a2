"""Hand-over report: seconds for write_report on a finished 5-fold run (target ≤ 10 s), cold (the
first call in a process: template compiled, vl-convert started) and warm, plus the whole
`python -m roofseg report` command in a fresh process (imports included) and the file's size.

Without --run, the synthetic demo (30 images, 25 labelled, `python -m roofseg data demo`) is written
and a 1-epoch 5-fold run of roofseg's default model trained on it first (not timed); --data DIR
trains on another dataset instead. How well the run learnt does not change what the report draws.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from _common import med, parser, report

from roofseg.store import runs

NAME = "report"


def roofseg_cli(*args: str, timeout: float = 3600) -> tuple[str, float]:
    """Run `python -m roofseg ARGS` in a fresh process; (stdout, wall seconds). Exits on failure."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "roofseg", *args], capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise SystemExit(f"python -m roofseg {' '.join(args)} failed: {p.stderr.strip()[-500:]}")
    return p.stdout, time.perf_counter() - t


def train_run(data: Path, folds: int, runs_dir: Path) -> Path:
    # one torch thread: the machine this runs on is shared, and the run's quality is beside the point
    out, _ = roofseg_cli("train", "--data", str(data), "--runs-dir", str(runs_dir), "--folds", str(folds),
                         "--epochs", "1", "--encoder-weights", "none", "--num-threads", "1", "--no-wait",
                         "--name", f"bench report ({folds}-fold, 1 epoch)")
    m = re.search(r"^run (.+)$", out, re.M)
    if not m:
        raise SystemExit(f"could not find the run folder in the train output:\n{out[-500:]}")
    return Path(m.group(1))


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--run", help="a finished run folder (default: train a 1-epoch 5-fold run first)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3, help="warm repetitions (median reported)")
    args = p.parse_args()
    _common.machine()
    tmp = tempfile.TemporaryDirectory(prefix="roofseg-bench-report-")
    work = Path(tmp.name)
    if args.run:
        run_dir, what = Path(args.run), "the given run"
    else:
        if args.data and args.data != "demo":
            data, what = Path(args.data), f"{args.data}"
        else:
            data = work / "demo"
            roofseg_cli("data", "demo", str(data), "--n-images", "30", "--n-labels", "25")
            what = "the synthetic demo (30 images, 25 labelled, 256 px)"
        t = time.perf_counter()
        run_dir = train_run(data, args.folds, work / "runs")
        print(f"trained {run_dir.name} in {time.perf_counter() - t:.0f} s (not timed)")
    summary = runs.read_json(run_dir / "summary.json", {}) or {}
    n_val = len(runs.read_per_image(run_dir))

    t = time.perf_counter()
    from roofseg.report import write_report  # the import is part of a fresh process's cost
    import_s = time.perf_counter() - t
    out = work / "report.html"
    t = time.perf_counter()
    write_report([run_dir], out)
    cold = time.perf_counter() - t
    warm = []
    for _ in range(args.reps):
        t = time.perf_counter()
        write_report([run_dir], out)
        warm.append(time.perf_counter() - t)
    _, cli_s = roofseg_cli("report", run_dir.name, "--runs-dir", str(run_dir.parent), "--out", str(work / "cli.html"))
    html = out.read_text(encoding="utf-8")
    size_mb = out.stat().st_size / 1e6
    n_img, n_svg = len(re.findall(r"<img\b", html)), len(re.findall(r"<svg\b", html))
    verdict = "met" if cold <= 10 else "missed"
    result = {"run": str(run_dir), "folds": summary.get("folds"), "validation_images": n_val,
              "import_s": import_s, "cold_s": cold, "warm_s": warm, "cli_s": cli_s, "size_mb": size_mb,
              "images": n_img, "svgs": n_svg, "target_s": 10, "target": verdict}
    lines = [f"write_report on a {summary.get('folds')}-fold run of {what}: {n_val} out-of-fold images, "
             f"{n_img} inline pictures (PNG/JPEG), {n_svg} inline SVG charts, {size_mb:.1f} MB file", "",
             "| step | seconds |", "|---|---|",
             f"| `import roofseg.report` (altair, jinja2, pandas, scipy) | {import_s:.2f} |",
             f"| write_report, first call (template compiled, vl-convert started) | {cold:.2f} |",
             f"| write_report, warm (median of {args.reps}) | {med(warm):.2f} |",
             f"| `python -m roofseg report` in a fresh process, end to end | {cli_s:.2f} |", "",
             f"- target ≤ 10 s for write_report: {verdict} ({cold:.1f} s cold)"]
    report(NAME, f"Report: write_report on a {summary.get('folds')}-fold run", lines, result, args.out)
    tmp.cleanup()


if __name__ == "__main__":
    main()
