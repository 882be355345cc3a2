"""What every bench script shares: --data/--out flags, machine facts, the reference loop, output.

Each script prints a Markdown block (the figures, the machine, the command that reproduces them)
and writes the same facts as JSON to --out (default bench/results/<name>.json, git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # roofseg itself is installed (pip install -e .)

DIDA = Path("/work/shared/data/dida")
START_LOAD = os.getloadavg()  # the machine's load when the script started (it is shared and busy)
RESULTS = ROOT / "bench" / "results"
# environment variables that change the figures: shown in the reproduce command when set
ENV_SHOWN = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ROOFSEG_SLOTS")
# as the user set them when the script started
ENV_GIVEN = {k: os.environ[k] for k in ENV_SHOWN if k in os.environ}


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every script has: --data and --out."""
    p = argparse.ArgumentParser(prog=f"bench/{name}.py", description=doc,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=None,
                   help=f"dataset folder (images/, labels/), or 'demo' for the synthetic demo generated "
                        f"into a temporary folder; default {DIDA} when present, else 'demo'")
    p.add_argument("--out", default=str(RESULTS / f"{name}.json"), help="where the JSON result goes")
    return p


def resolve_data(arg: str | None, keep: list) -> tuple[Path, str]:
    """(dataset folder, a phrase saying which it is). A generated demo lives as long as `keep`."""
    if arg and arg != "demo":
        p = Path(arg)
        return p, ("DIDA (real)" if p.resolve() == DIDA.resolve() else "user-given folder")
    if arg is None and (DIDA / "images").is_dir():
        return DIDA, "DIDA (real, read-only shared copy)"
    from roofseg.data.demo import make_demo
    tmp = tempfile.TemporaryDirectory(prefix="roofseg-bench-demo-")
    keep.append(tmp)
    t = time.perf_counter()
    d = make_demo(Path(tmp.name) / "demo")
    return d, f"synthetic demo (roofseg.data.demo.make_demo defaults, generated in {time.perf_counter() - t:.1f} s)"


_MACHINE: dict = {}


def machine() -> dict:
    """CPU model, cores, torch version and default threads, load average at start; computed on
    the first call (scripts call it before changing torch's thread count)."""
    if _MACHINE:
        return _MACHINE
    import torch
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    _MACHINE.update({"cpu": cpu, "cores": os.cpu_count(), "cores_usable": usable,
                     "torch": torch.__version__, "torch_default_threads": torch.get_num_threads(),
                     "python": platform.python_version(), "platform": platform.platform(),
                     "load_avg_1_5_15_at_start": [round(x, 2) for x in START_LOAD], "git": git_state()})
    return _MACHINE


def git_state() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{head}{' (+ uncommitted changes)' if dirty else ''}" if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def command() -> str:
    """The command line that reproduces this run, from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    env = [f"{k}={v}" for k, v in ENV_GIVEN.items()]
    return shlex.join([*env, ".venv/bin/python", str(script), *sys.argv[1:]])


def reference_epoch_s(dataset, epochs: int = 3, threads: int = 2) -> dict:
    """Seconds per epoch of the reference loop that budgets are expressed in ("reference epochs"):
    smp Unet-resnet18 from scratch, batch 4, the dataset's labelled images as in-memory tensors,
    AdamW, `threads` torch threads; forward + backward + step only. One warm-up epoch, then the
    median of `epochs`. Run in the same session as what it normalises, since these machines differ
    up to 4x in speed from one session to the next."""
    import torch
    import segmentation_models_pytorch as smp
    from roofseg.engine import augment
    from roofseg.data import dataset as data
    d = data.load_dataset(dataset)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        x = augment.normalize(torch.from_numpy(np.ascontiguousarray(d.images[..., :3])), 3)
        y = torch.from_numpy(d.masks)[:, None].float()
        model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()
        times = []
        for e in range(epochs + 1):
            t = time.perf_counter()
            for i in range(0, len(x), 4):
                opt.zero_grad()
                loss_fn(model(x[i:i + 4]), y[i:i + 4]).backward()
                opt.step()
            if e:
                times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return {"median_s": med(times), "epochs_s": times, "images": len(x), "threads": threads}


def train_run(cfg, runs_dir, what: str) -> tuple[Path, float]:
    """Create and train one run in this process, as `python -m roofseg train` does; returns
    (run folder, seconds). Exits naming `what` and the run's log if training fails."""
    from roofseg.exec import worker
    from roofseg.store import runs
    d = runs.create_run(cfg, runs_dir)
    t = time.perf_counter()
    st = worker.execute(d, wait_for_slot=False)
    if st["state"] != "done":
        raise SystemExit(f"training {what} failed: {st.get('error')} (see {d / 'log.txt'})")
    return d, time.perf_counter() - t


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def med(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def machine_lines(m: dict) -> list[str]:
    load = m['load_avg_1_5_15_at_start'][0]
    busy = "busy: other processes compete for the cores" if load > 0.75 * m["cores_usable"] else "quiet"
    return [f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
            f"torch {m['torch']} (default {m['torch_default_threads']} threads), Python {m['python']}; "
            f"load average {load} (1 min) at start ({busy})",
            f"- code: git {m['git']}"]


def report(name: str, title: str, lines: list[str], result: dict, out: str) -> None:
    """Print the Markdown block and write `result` (plus command and machine) as JSON."""
    m = result.setdefault("machine", machine())
    result.setdefault("command", command())
    result["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    block = [f"### {title}", "", f"Command: `{result['command']}`", "", *lines, "",
             *machine_lines(m), f"- load average at end {result['load_avg_at_end'][0]} (1 min)"]
    print("\n" + "\n".join(block) + "\n")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": name, "title": title, "markdown": "\n".join(block), **result},
                              indent=2, default=str))
    print(f"(JSON written to {out})")
