"""Training-loop overhead: roofseg's real epoch vs a plain smp loop vs a notebook-style loop.

Three arms train the same model (smp Unet/resnet18, no encoder weights, 3 channels, one class)
from the same initial weights, with the same loss object (roofseg.model.factory.build_loss('bce_dice')),
AdamW with the same lr and weight decay, batch size 4 and the same train/validation split:

- roofseg: an unmodified `train.fit_fold` call. Its per-epoch hook runs the other arms, so the
  arms alternate epoch by epoch in one process (roofseg, plain, notebook, roofseg, ...). A roofseg
  epoch is timed from the moment the hook returns to its next call, so it holds everything a real
  run does per epoch: train_one_epoch (+ meter, scheduler) + evaluate + keeping the best weights
  when val Dice improved (train.BestKeeper: a copy in memory, written to disk at most every 30 s)
  + runs.append_metrics (fsync) + the log line + the hook call. Its first epoch also
  holds model/loader construction and is a warm-up, like every arm's first epoch(s).
- plain: a minimal hand-written loop over tensors decoded and normalised once (zero_grad, forward,
  loss, backward, step), then a no-grad validation pass computing only the loss.
- notebook: the plain loop, but fed by a DataLoader that re-reads and decodes the PNGs every epoch
  (PIL open -> numpy -> tensor per item), as notebooks typically do.

Same augmentation for every arm of a group (--augment none, optionally light: the same
albumentations pipeline roofseg.engine.augment.build_augment returns, applied to uint8 arrays).
"""
from __future__ import annotations

import tempfile
import time

import _common
from _common import med, parser, peak_rss_mib, report, resolve_data

import numpy as np
import torch
from PIL import Image

import roofseg  # noqa: F401  (torchvision guard before smp)
import segmentation_models_pytorch as smp
from roofseg.engine import augment
from roofseg.data import dataset as data
from roofseg.model import factory as models
from roofseg.model import checkpoint
from roofseg.store import runs
from roofseg.engine import train
from roofseg.config import RunConfig

NAME = "train_overhead"
ARMS = ("roofseg", "plain", "notebook")


# ---------------------------------------------------------------------------------------------
# the comparison arms
def _drop_last(n: int, bs: int) -> bool:
    return n > bs and n % bs == 1  # the rule roofseg's loader uses: no batch of 1 for BatchNorm


def _aug_batch(geo, imgs: np.ndarray, masks: np.ndarray):
    """Apply an albumentations pipeline item by item to uint8 (B, H, W, C) / (B, H, W)."""
    outs = [geo(image=i, mask=m) for i, m in zip(imgs, masks)]
    return np.stack([o["image"] for o in outs]), np.stack([o["mask"] for o in outs])


def _to_tensors(imgs: np.ndarray, masks: np.ndarray):
    x = augment.normalize(torch.from_numpy(np.ascontiguousarray(imgs)), imgs.shape[-1])
    return x, torch.from_numpy(np.ascontiguousarray(masks))[:, None].float()


class PlainArm:
    """A minimal smp loop over tensors in memory; validation computes the loss only."""

    def __init__(self, cfg: RunConfig, d: data.SegData, tr, va):
        torch.manual_seed(cfg.seed)  # the same initial weights as roofseg's fold 0
        self.model = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None,
                                      in_channels=cfg.in_channels, classes=1)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.loss_fn = models.build_loss(cfg.loss)
        self.bs, self.gen = cfg.batch_size, torch.Generator().manual_seed(cfg.seed)
        self.geo, _ = augment.build_augment(cfg.augment, cfg.seed)
        c = cfg.in_channels
        self.imgs, self.masks = d.images[tr][..., :c], d.masks[tr]  # uint8, for augmentation
        self.x, self.y = _to_tensors(self.imgs, self.masks)  # decoded and normalised once
        self.xv, self.yv = _to_tensors(d.images[va][..., :c], d.masks[va])

    def batches(self):
        n = len(self.x)
        perm = torch.randperm(n, generator=self.gen)
        stop = n - 1 if _drop_last(n, self.bs) else n
        for i in range(0, stop, self.bs):
            idx = perm[i:i + self.bs]
            if self.geo is None:
                yield self.x[idx], self.y[idx]
            else:
                yield _to_tensors(*_aug_batch(self.geo, self.imgs[idx.numpy()], self.masks[idx.numpy()]))

    def val_batches(self):
        for i in range(0, len(self.xv), self.bs):
            yield self.xv[i:i + self.bs], self.yv[i:i + self.bs]

    def epoch(self) -> dict:
        self.model.train()
        total, n = 0.0, 0
        for x, y in self.batches():
            self.opt.zero_grad()
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.opt.step()
            total, n = total + loss.item() * len(x), n + len(x)
        self.model.eval()
        vtotal, vn = 0.0, 0
        with torch.no_grad():
            for x, y in self.val_batches():
                vtotal, vn = vtotal + self.loss_fn(self.model(x), y).item() * len(x), vn + len(x)
        return {"train_loss": total / n, "val_loss": vtotal / vn}


class DiskDataset(torch.utils.data.Dataset):
    """Notebook style: every item re-opens and decodes its PNGs (PIL -> numpy -> tensor)."""

    def __init__(self, pairs, in_channels: int, geo=None):
        self.pairs, self.c, self.geo = pairs, in_channels, geo
        self.mean = torch.tensor(augment.MEAN[:in_channels]).view(-1, 1, 1)
        self.std = torch.tensor(augment.STD[:in_channels]).view(-1, 1, 1)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        ip, lp = self.pairs[i]
        img = np.array(Image.open(ip).convert("RGBA"))[..., :self.c]
        mask = (np.array(Image.open(lp).convert("L")) >= 128).astype(np.uint8)
        if self.geo is not None:
            out = self.geo(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std, torch.from_numpy(np.ascontiguousarray(mask))[None].float()


class NotebookArm(PlainArm):
    """The plain loop fed by DataLoaders that decode the files from disk every epoch."""

    def __init__(self, cfg: RunConfig, d: data.SegData, tr, va, paths: dict):
        super().__init__(cfg, d, tr, va)
        self.x = self.y = self.xv = self.yv = None  # nothing kept in memory
        tr_pairs = [paths[d.names[i]] for i in tr]
        va_pairs = [paths[d.names[i]] for i in va]
        self.train_dl = torch.utils.data.DataLoader(
            DiskDataset(tr_pairs, cfg.in_channels, self.geo), batch_size=self.bs, shuffle=True,
            generator=self.gen, drop_last=_drop_last(len(tr_pairs), self.bs))
        self.val_dl = torch.utils.data.DataLoader(DiskDataset(va_pairs, cfg.in_channels),
                                                  batch_size=self.bs)

    def batches(self):
        return iter(self.train_dl)

    def val_batches(self):
        return iter(self.val_dl)


def memory_format(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "NCHW (contiguous)"
    return "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "strided"


def input_formats(others: dict, cfg: RunConfig, d: data.SegData, tr) -> dict:
    """The memory layout of the first training batch each arm feeds the model (it changes CPU
    conv speed: channels_last inputs run faster here)."""
    ds = augment.SegDataset(d.images[tr[:cfg.batch_size]], d.masks[tr[:cfg.batch_size]], cfg.in_channels)
    x, _ = train.prepare_batch(augment.collate([ds[i] for i in range(len(ds))]), torch.device("cpu"), cfg)
    out = {"roofseg": memory_format(x)}
    for k, arm in others.items():
        out[k] = memory_format(next(iter(arm.batches()))[0])
    return out


def decode_seconds(pairs) -> float:
    """Time to decode every pair once the notebook way (median of 3): its extra cost per epoch."""
    ds = DiskDataset(pairs, 3)
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        ts.append(time.perf_counter() - t)
    return med(ts)


def median_ci(xs, coverage: float = 0.9) -> tuple[float, float]:
    """A distribution-free confidence interval for the median: order statistics x(k), x(n+1-k)
    with the largest k whose binomial coverage is still >= `coverage` (n=8: x(2)..x(7), 93%)."""
    from math import comb
    xs, n = sorted(xs), len(xs)
    k = 1
    while k + 1 <= n // 2 and 1 - 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n >= coverage:
        k += 1
    return xs[k - 1], xs[n - k]


def verdict(ci: tuple[float, float], target: float) -> str:
    if ci[0] >= target:
        return "met"
    if ci[1] < target:
        return "NOT met"
    return "not resolved at this noise level (the interval spans the target)"


# ---------------------------------------------------------------------------------------------
def run_group(aug: str, args, d: data.SegData, tr, va, paths, runs_dir) -> dict:
    n_epochs = args.warmup + args.epochs_per_arm
    cfg = RunConfig(data=str(args.data_dir), augment=aug, arch="Unet", encoder="resnet18",
                    encoder_weights="none", in_channels=3, loss="bce_dice", optimizer="adamw",
                    lr=args.lr, batch_size=args.batch_size, epochs=n_epochs, folds=0,
                    seed=args.seed, device="cpu", num_threads=args.threads).validate()
    run_dir = runs.create_run(cfg, runs_dir)

    # the plain arm must start from roofseg's initial weights (fit_fold seeds with seed + fold 0)
    train.seed_everything(cfg.seed)
    ref = models.build_model(cfg, log=lambda m: None)
    others = {"plain": PlainArm(cfg, d, tr, va)}
    if not args.no_notebook:
        others["notebook"] = NotebookArm(cfg, d, tr, va, paths)
    for arm in others.values():
        same = all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                       arm.model.state_dict().values()))
        assert same, "the comparison arms must start from roofseg's initial weights"
    del ref

    formats = input_formats(others, cfg, d, tr)
    wall = {k: [] for k in ARMS}
    cpu = {k: [] for k in ARMS}
    mark = {"wall": time.perf_counter(), "cpu": time.process_time()}
    log_f = open(run_dir / "log.txt", "a", buffering=1)

    def log(msg):  # what worker.execute's log does
        log_f.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    def hook(event, info):
        if event != "epoch":
            return
        # roofseg's epoch ends here: from the previous hook's return to this call
        wall["roofseg"].append(time.perf_counter() - mark["wall"])
        cpu["roofseg"].append(time.process_time() - mark["cpu"])
        order = list(others)
        if info["epoch"] % 2 == 0:
            order.reverse()  # neither comparison arm always runs right after roofseg
        for k in order:
            t, c = time.perf_counter(), time.process_time()
            others[k].epoch()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
        tag = "warm-up" if info["epoch"] <= args.warmup else "timed"
        print(f"  [{aug}] epoch {info['epoch']}/{n_epochs} ({tag}): "
              + ", ".join(f"{k} {wall[k][-1]:.2f} s" for k in wall if wall[k]), flush=True)
        mark["wall"], mark["cpu"] = time.perf_counter(), time.process_time()

    # time the two run-store writes fit_fold makes, by wrapping them (they still run unchanged)
    io = {"save_checkpoint": [], "append_metrics": []}
    real = {k: getattr(runs, k) for k in io}

    def timed_call(name):
        def call(*a, **kw):
            t = time.perf_counter()
            real[name](*a, **kw)
            io[name].append(time.perf_counter() - t)
        return call
    for k in io:
        setattr(runs, k, timed_call(k))
    t0 = time.perf_counter()
    try:
        train.fit_fold(cfg, d, tr, va, 0, run_dir, torch.device("cpu"), hook, log)
    finally:
        for k in io:
            setattr(runs, k, real[k])
    log_f.close()
    total_s = time.perf_counter() - t0

    rows, _ = runs.read_metrics(run_dir)
    w = args.warmup
    timed = {k: v[w:] for k, v in wall.items() if v}
    # roofseg's own epoch_s covers train_one_epoch + evaluate; the rest is its bookkeeping
    bookkeeping = [t - r["epoch_s"] for t, r in zip(wall["roofseg"][w:], rows[w:])]
    saves, best = [], -1.0
    for r in rows:
        saves.append(r["val_dice"] > best)
        best = max(best, r["val_dice"])
    ck = next(iter(runs.checkpoint_paths(run_dir)), None)
    res = {"augment": aug, "config": cfg.to_dict(), "run_dir": str(run_dir), "total_s": total_s,
           "wall_s": wall, "cpu_s": cpu, "timed_epochs": args.epochs_per_arm,
           "median_s": {k: med(v) for k, v in timed.items()},
           "median_cpu_s": {k: med(v[w:]) for k, v in cpu.items() if v},
           "roofseg_bookkeeping_s": bookkeeping, "roofseg_bookkeeping_median_s": med(bookkeeping),
           "checkpoint_saved_epochs": int(sum(saves[w:])),
           "save_checkpoint_s": io["save_checkpoint"], "append_metrics_s": io["append_metrics"],
           "checkpoint_mib": ck.stat().st_size / 2**20 if ck else None,
           "val_dice_last": rows[-1]["val_dice"] if rows else None, "input_memory_format": formats}
    for k in ("plain", "notebook"):
        if k in timed:
            per = [a / b for a, b in zip(timed[k], timed["roofseg"])]
            per_cpu = [a / b for a, b in zip(cpu[k][w:], cpu["roofseg"][w:])]
            q1, q3 = (float(np.percentile(per, q)) for q in (25, 75))
            res[f"{k}_over_roofseg"] = {"ratio_of_medians": res["median_s"][k] / res["median_s"]["roofseg"],
                                        "median_of_epoch_ratios": med(per), "epoch_ratios_iqr": [q1, q3],
                                        "median_ci_90": list(median_ci(per)),
                                        "cpu_median_of_epoch_ratios": med(per_cpu),
                                        "cpu_median_ci_90": list(median_ci(per_cpu)), "cpu_epoch_ratios": per_cpu,
                                        "ratio_of_minimums": min(timed[k]) / min(timed["roofseg"]),
                                        "cpu_ratio_of_medians": res["median_cpu_s"][k] / res["median_cpu_s"]["roofseg"],
                                        "epoch_ratios": per}
    return res


def main() -> None:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--epochs-per-arm", type=int, default=8,
                   help="timed epochs per arm (after warm-up); more narrow the spread of the ratios")
    p.add_argument("--warmup", type=int, default=1, help="untimed first epochs per arm")
    p.add_argument("--augment", nargs="+", default=["none"], choices=["none", "light"],
                   help="one comparison group per preset (e.g. --augment none light)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=RunConfig().lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every arm (0 = torch's default, one per core). 1 by default: "
                        "on a shared 2-core machine two spinning OpenMP threads make epochs several "
                        "times slower and far noisier (see bench/threads.py)")
    p.add_argument("--no-notebook", action="store_true", help="skip the notebook-style arm")
    args = p.parse_args()
    _common.machine()  # before any change to torch's threads
    if args.epochs_per_arm < 1 or args.warmup < 1:
        p.error("--epochs-per-arm and --warmup must be >= 1 (the first epoch builds the model)")
    if args.threads:
        torch.set_num_threads(args.threads)

    keep: list = []
    args.data_dir, what = resolve_data(args.data, keep)
    print(f"data: {args.data_dir} — {what}")
    d = data.load_dataset(args.data_dir)
    pairs, _, _ = data.find_pairs(args.data_dir)
    paths = {s: (ip, lp) for s, ip, lp in pairs}
    if d.images.shape[1:3] != np.asarray(Image.open(paths[d.names[0]][0])).shape[:2]:
        p.error("the notebook arm reads files at their own size: use a dataset whose images are "
                "all one size, a multiple of 32 (DIDA and the demo are 256x256)")
    tr, va = data.holdout_split(len(d.names), RunConfig().val_fraction, args.seed)
    runs_tmp = tempfile.TemporaryDirectory(prefix="roofseg-bench-runs-")
    print(f"{len(d.names)} pairs ({len(d.excluded)} excluded), {len(tr)} train / {len(va)} val, "
          f"{d.images.shape[2]}x{d.images.shape[1]}; arms alternate epoch by epoch; "
          f"{args.warmup} warm-up + {args.epochs_per_arm} timed epochs per arm", flush=True)
    groups = [run_group(aug, args, d, tr, va, paths, runs_tmp.name) for aug in args.augment]
    dec = decode_seconds([paths[d.names[i]] for i in np.concatenate([tr, va])])
    rss = peak_rss_mib()
    runs_tmp.cleanup()

    lines = [f"- data: {args.data_dir} ({what}); {len(d.names)} pairs used"
             + (f" ({', '.join(d.excluded)} excluded: duplicate label)" if d.excluded else "")
             + f", {d.images.shape[2]}x{d.images.shape[1]}, holdout split {len(tr)} train / {len(va)} val",
             f"- model: smp Unet/resnet18, encoder_weights none, 3 channels; loss bce_dice "
             f"(roofseg.model.factory.build_loss); AdamW lr {args.lr:g} wd {RunConfig().weight_decay:g}; "
             f"batch size {args.batch_size}; same initial weights in every arm; "
             f"torch threads {torch.get_num_threads()}",
             f"- schedule: arms alternate epoch by epoch in one process; per arm {args.warmup} warm-up "
             f"+ {args.epochs_per_arm} timed epochs; a ratio pairs each arm's epoch with the roofseg "
             "epoch next to it (same load on the machine), and the median over pairs is the figure",
             "- roofseg epoch = unmodified train.fit_fold loop body: train_one_epoch + evaluate + "
             "best weights kept when val Dice improved (in memory; on disk at most every 30 s) + "
             "append_metrics (fsync) + log line + hook; "
             "plain = zero_grad/forward/loss/backward/step over tensors decoded once + validation loss; "
             "notebook = plain fed by a DataLoader decoding the PNGs every epoch",
             "",
             "| augment | arm | median s/epoch | min–max s | median CPU s/epoch |",
             "|---|---|---|---|---|"]
    label = {"roofseg": "roofseg (train.fit_fold)", "plain": "plain smp loop",
             "notebook": "notebook loop (decodes PNGs every epoch)"}
    for g in groups:
        for k, v in g["wall_s"].items():
            if v:
                t = v[args.warmup:]
                lines.append(f"| {g['augment']} | {label[k]} | {g['median_s'][k]:.2f} | "
                             f"{min(t):.2f}–{max(t):.2f} | {g['median_cpu_s'][k]:.2f} |")
    lines.append("")
    for g in groups:
        a = g["augment"]
        r = g["plain_over_roofseg"]
        ci = r["median_ci_90"]
        lines.append(f"- [{a}] speed ratio plain/roofseg (plain s ÷ roofseg s, median of the per-epoch "
                     f"ratios of adjacent epochs): **{r['median_of_epoch_ratios']:.3f}** (≥90% CI of the "
                     f"median {ci[0]:.3f}–{ci[1]:.3f}); target ≥ 0.97: {verdict(ci, 0.97)}. "
                     f"In CPU time (1 thread: far less sensitive to the other processes): "
                     f"**{r['cpu_median_of_epoch_ratios']:.3f}** (CI {r['cpu_median_ci_90'][0]:.3f}–"
                     f"{r['cpu_median_ci_90'][1]:.3f}): {verdict(r['cpu_median_ci_90'], 0.97)}. "
                     f"Spread: interquartile {r['epoch_ratios_iqr'][0]:.3f}–{r['epoch_ratios_iqr'][1]:.3f}, "
                     f"range {min(r['epoch_ratios']):.3f}–{max(r['epoch_ratios']):.3f}; ratio of the "
                     f"median epochs {r['ratio_of_medians']:.3f}, of the fastest epochs "
                     f"{r['ratio_of_minimums']:.3f}, of median CPU time {r['cpu_ratio_of_medians']:.3f}")
        if "notebook_over_roofseg" in g:
            r = g["notebook_over_roofseg"]
            ci = r["median_ci_90"]
            lines.append(f"- [{a}] roofseg vs the notebook loop (notebook s ÷ roofseg s, same pairing): "
                         f"roofseg **{r['median_of_epoch_ratios']:.3f}x** as fast (≥90% CI "
                         f"{ci[0]:.3f}–{ci[1]:.3f}); target ≥ 1.15x: {verdict(ci, 1.15)}. In CPU time "
                         f"**{r['cpu_median_of_epoch_ratios']:.3f}x** (CI {r['cpu_median_ci_90'][0]:.3f}–"
                         f"{r['cpu_median_ci_90'][1]:.3f}): {verdict(r['cpu_median_ci_90'], 1.15)}. "
                         f"Spread: interquartile {r['epoch_ratios_iqr'][0]:.3f}–{r['epoch_ratios_iqr'][1]:.3f}, "
                         f"range {min(r['epoch_ratios']):.3f}–{max(r['epoch_ratios']):.3f}; ratio of the "
                         f"median epochs {r['ratio_of_medians']:.3f}, of the fastest epochs "
                         f"{r['ratio_of_minimums']:.3f}, of median CPU time {r['cpu_ratio_of_medians']:.3f}")
        lines.append(f"- [{a}] roofseg bookkeeping per epoch (best weights, metrics line, "
                     f"log, hook; = epoch time − its own train+eval epoch_s): median "
                     f"{g['roofseg_bookkeeping_median_s'] * 1000:.0f} ms; val Dice improved on "
                     f"{g['checkpoint_saved_epochs']} of {args.epochs_per_arm} timed epochs, "
                     f"{len(g['save_checkpoint_s'])} checkpoint file(s) written in the whole run "
                     f"({g['checkpoint_mib']:.0f} MiB each; checkpoint.save_checkpoint median "
                     f"{med(g['save_checkpoint_s']) * 1000:.0f} ms, runs.append_metrics with fsync median "
                     f"{med(g['append_metrics_s']) * 1000:.0f} ms)")
    med_epoch = med([g["median_s"]["roofseg"] for g in groups])
    lines.append(f"- decoding the {len(tr) + len(va)} PNG pairs the notebook way costs {dec:.3f} s "
                 f"per epoch ({dec / med_epoch:.1%} of a median roofseg epoch): the most in-memory "
                 "decoding can save here")
    lines.append("- input memory layout per arm: " + ", ".join(
        f"{k} {v}" for k, v in groups[0]["input_memory_format"].items())
        + " (augment.normalize permutes NHWC uint8 to a channels_last float batch; CPU convs run "
          "faster on it, so part of any gap to the notebook loop is layout, not decoding)")
    lines.append(f"- peak RSS of the process (all arms; ru_maxrss): {rss:.0f} MiB")
    result = {"data": str(args.data_dir), "data_kind": what, "pairs": len(d.names),
              "excluded": d.excluded, "train": len(tr), "val": len(va), "args": {
                  k: v for k, v in vars(args).items() if k != "data_dir"},
              "groups": groups, "decode_s_per_epoch": dec, "peak_rss_mib": rss}
    report(NAME, "Training-loop overhead: roofseg vs plain smp loop vs notebook loop", lines,
           result, args.out)


if __name__ == "__main__":
    main()
