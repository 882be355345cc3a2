"""Torch CPU threads on a shared machine: roofseg epochs at 1 thread vs torch's default, alternated.

One process, one model, one loader: train.train_one_epoch + train.evaluate (what every roofseg
epoch runs) alternately with torch.set_num_threads(1) and with --threads (default: torch's own
default, one per core, which is what a run with num_threads=0 gets). The OpenMP wait policy
cannot change inside a process, so run it twice to see its effect:

    .venv/bin/python bench/threads.py                            # libgomp's default (spins first)
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/threads.py    # waiting threads sleep at once
"""
from __future__ import annotations

import os
import time

# read before anything loads torch (libgomp reads it once, when it loads)
POLICY = os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins before sleeping)")

import _common  # noqa: E402
from _common import med, parser, report, resolve_data  # noqa: E402

import torch  # noqa: E402

import roofseg.model  # noqa: F401  (the torchvision guard runs before timm/smp import)
from roofseg.data import dataset as data
from roofseg.model import factory as models
from roofseg.engine import train
from roofseg.config import RunConfig

NAME = "threads"


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="the thread count compared with 1 (default: torch's default here)")
    p.add_argument("--epochs-per-arm", type=int, default=4, help="timed epochs per setting (after 1 warm-up)")
    p.add_argument("--train-images", type=int, default=8, help="training images per epoch (a subset keeps it short)")
    args = p.parse_args()
    _common.machine()  # before any change to torch's threads
    keep: list = []
    dataset, what = resolve_data(args.data, keep)
    print(f"data: {dataset} — {what}")
    d = data.load_dataset(dataset)
    tr, va = data.holdout_split(len(d.names), 0.2, 0)
    tr = tr[:args.train_images]
    cfg = RunConfig(data=str(dataset), augment="none", epochs=100, device="cpu").validate()
    train.seed_everything(0)
    model = models.build_model(cfg, log=lambda m: None)
    dl, vl = train.make_loader(d, tr, cfg, True, 0), train.make_loader(d, va, cfg, False, 0)
    loss_fn = models.build_loss(cfg.loss)
    opt = models.build_optimizer(cfg, model.parameters())
    sched = models.build_scheduler(cfg, opt, len(dl))
    dev = torch.device("cpu")
    settings = [1, args.threads]
    wall = {n: [] for n in settings}
    cpu = {n: [] for n in settings}
    for rnd in range(1 + args.epochs_per_arm):
        for n in (settings if rnd % 2 == 0 else settings[::-1]):
            torch.set_num_threads(n)
            t, c = time.perf_counter(), time.process_time()
            train.train_one_epoch(model, dl, loss_fn, opt, sched, dev, cfg)
            train.evaluate(model, vl, loss_fn, dev, cfg)
            if rnd:  # round 0 is the warm-up
                wall[n].append(time.perf_counter() - t)
                cpu[n].append(time.process_time() - c)
            print(f"  round {rnd} threads {n}: {time.perf_counter() - t:.2f} s wall, "
                  f"{time.process_time() - c:.2f} s CPU", flush=True)
    policy = POLICY
    lines = [f"- data: {dataset} ({what}); an epoch = train_one_epoch over {len(tr)} images + evaluate "
             f"over {len(va)}, Unet/resnet18, batch 4; OMP_WAIT_POLICY={policy}",
             f"- 1 warm-up round, then {args.epochs_per_arm} rounds; the order alternates each round",
             "", "| torch threads | median s/epoch (wall) | min–max | median CPU s/epoch |", "|---|---|---|---|"]
    for n in settings:
        lines.append(f"| {n} | {med(wall[n]):.2f} | {min(wall[n]):.2f}–{max(wall[n]):.2f} | {med(cpu[n]):.2f} |")
    ratio = med(wall[args.threads]) / med(wall[1])
    lines += ["", f"- {args.threads} threads ÷ 1 thread, wall time per epoch: **{ratio:.2f}** "
                  "(> 1: more threads are slower on this machine now)"]
    report(NAME, f"Torch threads: 1 vs {args.threads} on a shared machine", lines,
           {"wall_s": wall, "cpu_s": cpu, "ratio": ratio, "omp_wait_policy": policy,
            "data": str(dataset)}, args.out)


if __name__ == "__main__":
    main()
