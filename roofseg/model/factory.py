"""Build the model, loss, optimizer and LR schedule a RunConfig names; clear errors on bad names.

Every loss works on logits (the model has no final activation): smp.losses take logits with
from_logits=True, and BCE is the with-logits form.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import segmentation_models_pytorch as smp

from roofseg import choices
from roofseg.config import ARCHS, ENCODERS, SCHEDULES, RunConfig, incompatible


class ModelError(ValueError):
    """An architecture/encoder pair or weights source cannot be used; the message says why."""


def compatible_encoders(arch: str) -> list[str]:
    return [e for e in ENCODERS if not incompatible(arch, e)]


def create(arch: str, encoder: str, in_channels: int) -> torch.nn.Module:
    """A 1-class smp model with random weights; a clear ModelError when the pair does not build."""
    if arch not in ARCHS:
        raise ModelError(f"unknown architecture {arch!r}; choose one of {ARCHS}")
    if encoder not in smp.encoders.get_encoder_names() and not encoder.startswith("tu-"):
        raise ModelError(f"unknown encoder {encoder!r}; encoders that work with {arch}: "
                         f"{compatible_encoders(arch)} (or any smp encoder name)")
    try:
        return smp.create_model(arch, encoder_name=encoder, encoder_weights=None,
                                in_channels=in_channels, classes=1)
    except Exception as e:  # smp raises KeyError/ValueError/RuntimeError/AttributeError variously
        raise ModelError(f"{arch} with encoder {encoder} does not build ({type(e).__name__}: {e}); "
                         f"encoders that work with {arch}: {compatible_encoders(arch)}") from None


def build_model(cfg: RunConfig, log=print) -> torch.nn.Module:
    """A 1-class smp model on the CPU, with encoder weights or an earlier run's weights loaded."""
    pretrained = cfg.encoder_weights != "none"
    # Pretrained weights are for 3 channels: load them into an RGB model, then let smp widen the
    # first conv (it reuses the RGB filters for the extra channel) when the run uses alpha too.
    model = create(cfg.arch, cfg.encoder, 3 if pretrained else cfg.in_channels)
    if pretrained:
        from roofseg.model import weights
        if cfg.encoder_weights == "imagenet":
            sd, source = weights.imagenet_state_dict(cfg.encoder), f"ImageNet weights for {cfg.encoder}"
        else:
            sd, source = weights.local_state_dict(cfg.encoder_weights), cfg.encoder_weights
        rep = weights.load_into_encoder(model.encoder, sd, source)
        if cfg.encoder_weights == "imagenet" and rep["missing"]:  # never a half-random encoder
            raise ModelError(f"{source}: {len(rep['missing'])} encoder tensors have no ImageNet weights "
                             f"(e.g. {rep['missing'][0]}); refusing to train a half-initialised encoder")
        log(f"encoder weights: {rep['loaded']} tensors from {source}"
            + (f"; {len(rep['missing'])} encoder tensors left at random init" if rep["missing"] else ""))
        if cfg.in_channels != 3:
            model.encoder.set_in_channels(cfg.in_channels, pretrained=True)
    if cfg.init_from:
        init_from_run(model, cfg, log)
    if cfg.freeze_bn and not cfg.freezes_bn():
        log("freeze_bn: not applied: the encoder starts from random weights, so its BatchNorm "
            "statistics are learned (nothing pretrained to keep)")
    return model


def init_from_run(model: torch.nn.Module, cfg: RunConfig, log=print) -> None:
    """Fine-tune: load the best weights of an earlier run (same arch, encoder and channels)."""
    from roofseg.model.checkpoint import load_checkpoint
    from roofseg.store.runs import checkpoint_paths
    paths = checkpoint_paths(Path(cfg.init_from))
    if not paths:
        raise ModelError(f"init_from={cfg.init_from}: no best*.pt weights in that run folder")
    ck = load_checkpoint(paths[0])
    src = ck["config"]
    for k in ("arch", "encoder", "in_channels"):
        if src.get(k) != getattr(cfg, k):
            raise ModelError(f"init_from={cfg.init_from}: that run used {k}={src.get(k)!r}, "
                             f"this run has {k}={getattr(cfg, k)!r}; they must match to fine-tune")
    model.load_state_dict(ck["state_dict"])
    log(f"initialised from {paths[0]} (epoch {ck.get('epoch')}, val_dice {ck.get('val_dice', float('nan')):.4f})")


def param_groups(model: torch.nn.Module, cfg: RunConfig) -> list[dict]:
    """Optimizer parameter groups: the encoder at lr x encoder_lr_mult, the rest (decoder, head) at lr.
    A pretrained encoder already holds useful features; on 20 images a full lr can wash them out."""
    enc = list(model.encoder.parameters())
    ids = {id(p) for p in enc}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": enc, "lr": cfg.lr * cfg.encoder_lr_mult, "name": "encoder"},
            {"params": rest, "lr": cfg.lr, "name": "decoder"}]


def set_train_mode(model: torch.nn.Module, cfg: RunConfig, epoch: int) -> None:
    """model.train(), then what the fine-tuning fields ask for this epoch (1-based):
    freeze_encoder_epochs fixes the encoder's weights and BatchNorm statistics; freeze_bn keeps the
    encoder's BatchNorm statistics (running mean/var) as loaded, while still training its weights
    (only when some were loaded: RunConfig.freezes_bn)."""
    model.train()
    frozen = epoch <= cfg.freeze_encoder_epochs
    for p in model.encoder.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        model.encoder.eval()
    elif cfg.freezes_bn():
        for m in model.encoder.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def build_loss(name: str):
    """Loss on (N, 1, H, W) logits and (N, 1, H, W) float 0/1 targets (roofseg.choices.LOSSES)."""
    return _choice(choices.LOSSES, name).build()


def build_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    """The optimizer cfg.optimizer names (roofseg.choices.OPTIMIZERS), over params or param groups."""
    return _choice(choices.OPTIMIZERS, cfg.optimizer).build(cfg, params)


def _choice(registry, name):
    try:
        return registry.get_choice(name)
    except ValueError as e:
        raise ModelError(str(e)) from None


def build_scheduler(cfg: RunConfig, optimizer, steps_per_epoch: int):
    """A per-step LR schedule: call .step() after every optimizer step."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    if cfg.schedule == "cosine":
        warm = min(cfg.warmup_epochs * steps_per_epoch, total - 1)

        def f(s):
            if s < warm:
                return (s + 1) / (warm + 1)
            t = (s - warm) / max(1, total - warm)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, f)
    if cfg.schedule == "onecycle":
        # OneCycleLR cycles momentum by default, which fails for optimizers without one (adagrad)
        cycle = "momentum" in optimizer.defaults or "betas" in optimizer.defaults
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=total + 1,
                                                   cycle_momentum=cycle)
    raise ModelError(f"unknown schedule {cfg.schedule!r}; choose one of {SCHEDULES}")
