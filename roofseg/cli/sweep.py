"""`python -m roofseg sweep ...` and the internal `sweep-worker` (cli.py routes both here).

Imports nothing heavy at module level: cli.py imports this module on every command.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SWEEP_HELP = """Run a hyperparameter sweep: every trial is a run folder tagged with the sweep.
Without --space the search varies arch [Unet, FPN], loss [bce_dice, dice, focal], lr (log-uniform
1e-4..3e-3) and augment [light, strong], minus any of them fixed by a flag (--arch FPN fixes arch).
--space FILE is JSON: {"field": {"choices": [...]}, "field2": {"low": 1e-4, "high": 1e-2, "log": true}}.
"""


def add_parsers(sub) -> None:
    """The `sweep` and `sweep-worker` subcommands (called by cli.build_parser)."""
    from roofseg.cli.flags import add_config_flags
    from roofseg.sweep.study import DIRECTIONS, METRICS, PRUNERS, SAMPLERS
    s = sub.add_parser("sweep", help="hyperparameter sweep: each trial is a run folder",
                       description=SWEEP_HELP, conflict_handler="resolve",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", help="JSON file of fixed config fields; flags override it")
    s.add_argument("--runs-dir", default="runs")
    add_config_flags(s)
    g = s.add_argument_group("sweep")
    g.add_argument("--name", help="sweep name [sweep-<date>-<time>] (replaces the run-name flag)")
    g.add_argument("--sweep", dest="_no_sweep_tag", help=argparse.SUPPRESS)  # the tag is --name
    g.add_argument("--trials", type=int, default=20, help="budget of trials [20]")
    g.add_argument("--space", help="search-space JSON file (see above)")
    g.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="[tpe]")
    g.add_argument("--sampler-seed", type=int, default=0)
    g.add_argument("--grid-points", type=int, default=3, help="grid: values per numeric range [3]")
    g.add_argument("--metric", choices=METRICS, default="val_dice", help="[val_dice]")
    g.add_argument("--direction", choices=DIRECTIONS,
                   help="[minimize for a loss, else maximize]")
    g.add_argument("--pruner", choices=PRUNERS, default="none", help="[none]")
    g.add_argument("--pruner-startup", type=int, default=2, help="median: trials before pruning [2]")
    g.add_argument("--pruner-warmup", type=int, default=1, help="epochs never pruned [1]")
    g.add_argument("--storage", help="database URL (postgresql://user@host/db) shared by workers on "
                                     "several machines [a journal file in runs/sweeps/<name>]")
    g.add_argument("--workers", type=int, default=1,
                   help="1: run here in the foreground; N > 1: N background workers [1]")
    g.add_argument("--detach", action="store_true", help="with --workers N: return once they start")
    g.add_argument("--no-wait", action="store_true", help="do not wait for a free training slot")
    a = g.add_mutually_exclusive_group()
    a.add_argument("--resume", metavar="NAME", help="run an existing sweep on to its budget")
    a.add_argument("--cancel", metavar="NAME", help="stop a sweep's workers and running trials")
    a.add_argument("--show", metavar="NAME", help="print a sweep's trials summary")
    w = sub.add_parser("sweep-worker")  # internal: sweep.launch_workers starts this
    w.add_argument("name")
    w.add_argument("--runs-dir", default="runs")
    w.add_argument("--storage")
    w.add_argument("--worker-index", type=int, default=0)
    w.add_argument("--n-trials", type=int)
    w.add_argument("--no-wait", action="store_true")


def _quiet_optuna() -> None:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we print our own line per trial


def cmd_sweep(a) -> int:
    from roofseg.sweep import study as sweep
    _quiet_optuna()
    if a.cancel:
        r = sweep.cancel_sweep(a.cancel, a.runs_dir)
        print(f"stopped workers {r['stopped'] or 'none'}; interrupted trials {r['interrupted'] or 'none'}")
        if r["elsewhere"]:
            print(f"{r['elsewhere']} worker(s) on other hosts stop at their next epoch")
        return 0
    if a.show:
        return print_summary(a.show, a.runs_dir, a.storage)
    if a.resume:
        name = a.resume
        spec = sweep.load_spec(name, a.runs_dir)
        done = sweep.progress(name, a.runs_dir)["counted"]
        print(f"resuming sweep {name}: {done}/{spec.budget()} trials so far")
    else:
        spec = spec_from_args(a)
        name = spec.name
        sweep.create_sweep(spec, a.runs_dir, a.storage)
        spec = sweep.load_spec(name, a.runs_dir)
        print(f"sweep {name}: {spec.budget()} trials, {spec.sampler} sampler, pruner {spec.pruner}, "
              f"{spec.direction} {spec.metric}; storage {sweep.redact(spec.storage)}")
        for k, p in spec.space.items():
            rng = p["choices"] if "choices" in p else f"{p['low']:g}..{p['high']:g}" + " (log)" * p["log"]
            print(f"  {k}: {rng}")
    if a.workers > 1:
        pids = sweep.launch_workers(name, a.runs_dir, a.workers, a.storage, wait_for_slot=not a.no_wait)
        print(f"workers {pids} (logs in {sweep.sweep_dir(a.runs_dir, name)}); "
              f"cancel with: python -m roofseg sweep --cancel {name} --runs-dir {a.runs_dir}")
        if a.detach:
            return 0
        _follow(name, a.runs_dir, a.storage)
    else:
        from roofseg.sweep.worker import run_worker
        sweep.resume(name, a.runs_dir)
        run_worker(name, a.runs_dir, a.storage, wait_for_slot=not a.no_wait, hook=_printer())
    return print_summary(name, a.runs_dir, a.storage)


def spec_from_args(a):
    """A SweepSpec from the flags: the fixed config from --config and config flags; the space
    from --space, else the default space minus the fields fixed by a flag."""
    from dataclasses import fields
    from roofseg.cli.flags import config_from_args
    from roofseg.config import RunConfig
    from roofseg.sweep.spec import default_direction
    from roofseg.sweep.study import DEFAULT_SPACE, SweepSpec, default_name
    if a.space:
        try:
            space = json.loads(Path(a.space).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--space {a.space}: {e}") from None
    else:
        fixed = {f.name for f in fields(RunConfig) if getattr(a, f.name, None) is not None}
        space = {k: v for k, v in DEFAULT_SPACE.items() if k not in fixed}
    direction = a.direction or default_direction(a.metric)
    return SweepSpec(name=a.name or default_name(), base=config_from_args(a).to_dict(), space=space,
                     sampler=a.sampler, trials=a.trials, metric=a.metric, direction=direction,
                     pruner=a.pruner, pruner_startup=a.pruner_startup, pruner_warmup=a.pruner_warmup,
                     grid_points=a.grid_points, seed=a.sampler_seed)


def _printer():
    def hook(event, info):
        if event == "epoch":
            print(f"trial {info['trial']} fold {info['fold']} epoch {info['epoch']:>3}  "
                  f"val_dice {info['val_dice']:.4f}  ({info['epoch_s']:.1f}s)", flush=True)
        elif event == "trial":
            print(_trial_line(info), flush=True)
    return hook


def _trial_line(r: dict) -> str:
    import pandas as pd
    value = f" {r['value']:.4f}" if pd.notna(r["value"]) else ""
    why = f" ({r['reason']})" if pd.notna(r.get("reason")) and r.get("reason") else ""
    return f"trial {r['trial']} {r['state']}{value}  run {r['run_id']}{why}"


def _follow(name, runs_dir, storage) -> None:
    """Wait for the background workers, printing each trial as it ends; Ctrl-C leaves them running."""
    from roofseg.sweep import study as sweep
    seen: set[int] = set()
    try:
        while True:
            frame = sweep.trials_frame(name, runs_dir, storage)
            for r in frame[~frame.state.isin(["running", "waiting"])].to_dict("records"):
                if r["trial"] not in seen:
                    seen.add(r["trial"])
                    print(_trial_line(r), flush=True)
            if not sweep.workers(name, runs_dir):
                return
            time.sleep(2)
    except KeyboardInterrupt:
        print(f"\nthe workers keep running; follow with --show {name}, stop with --cancel {name}")
        raise


def print_summary(name, runs_dir, storage=None) -> int:
    """The trials table, the best trial, outcome fractions and edge warnings; exit status 0 when
    at least one trial completed."""
    from roofseg.sweep import study as sweep
    from roofseg.sweep import report as sweep_report
    spec = sweep.load_spec(name, runs_dir)
    frame = sweep.trials_frame(name, runs_dir, storage)
    cols = ["trial", "state", "value", *spec.space, "seconds", "run_id", "reason"]
    print(f"\nsweep {name}: {len(frame)} trials ({spec.metric}, {spec.direction})")
    if len(frame):
        shown = frame[cols].assign(reason=frame["reason"].fillna(""))
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    best = sweep_report.best_trials(frame, spec)
    if len(best):
        b = best.iloc[0]
        params = ", ".join(f"{k}={b[k]:.4g}" if isinstance(b[k], float) else f"{k}={b[k]}"
                           for k in spec.space)
        print(f"best: trial {b['trial']} {spec.metric} {b['value']:.4f} ({params}) run {b['run_id']}")
    o = sweep_report.outcome(frame)
    print(f"complete {o['complete']}, pruned {o['pruned']} ({o['pruned_frac']:.0%}), failed {o['failed']} "
          f"({o['failed_frac']:.0%}), interrupted {o['interrupted']}, running {o['running']}")
    for w in sweep_report.edge_warnings(frame, spec):
        print("warning:", w)
    return 0 if o["complete"] else 1


def cmd_sweep_worker(a) -> int:
    from roofseg.sweep.worker import run_worker
    _quiet_optuna()
    run_worker(a.name, a.runs_dir, a.storage, a.n_trials, worker_index=a.worker_index,
               wait_for_slot=not a.no_wait, hook=_printer())
    return 0
