"""The run config: one flat, typed dataclass, plus the choice lists the CLI and the app offer.

A config is saved as config.json in the run folder and inside every checkpoint, so a run and its
weights explain themselves. `validate()` is the single place that checks values, for the CLI, the
app and hand-edited config.json files alike.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from roofseg import choices

# --- the names each field accepts: declared once, in roofseg.choices (which also builds them) ---
ARCHS = choices.ARCHS.names()
# A curated set of encoders that construct offline and suit 256 px inputs on a laptop; any other
# smp encoder name is accepted too (model.factory.build_model says clearly when a pair does not build).
ENCODERS = choices.ENCODERS.names()
# Pairs smp refuses to build (checked against smp 0.6.0 by tests/model/test_models.py::test_compat_table).
_NOT_WITH = {
    "mit_": ({"UnetPlusPlus", "Linknet"}, "Mix Transformer encoders have no stride-2 stem features"),
    "densenet": ({"DeepLabV3", "DeepLabV3Plus", "PAN"}, "DenseNet encoders cannot be dilated"),
    "vgg": ({"DeepLabV3", "DeepLabV3Plus", "PAN"}, "VGG encoders cannot be dilated"),
}


def incompatible(arch: str, encoder: str) -> str | None:
    """Why smp cannot build this pair, or None when it can (for the curated encoders)."""
    if arch == "DPT" and not encoder.startswith("tu-"):
        return "DPT works only with timm universal encoders (names starting with 'tu-')"
    for prefix, (archs, why) in _NOT_WITH.items():
        if encoder.startswith(prefix) and arch in archs:
            return why
    return None


# Input normalisation. RGB statistics an encoder was pretrained with (ImageNet's unless listed);
# scratch training uses them too, as a plain standardisation. Runs saved before norm_mean/norm_std
# existed used IMAGENET_STATS for every encoder, and keep predicting with it (RunConfig.from_saved).
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
ENCODER_STATS = {f"timm-tf_efficientnet_lite{i}": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) for i in range(5)}


def encoder_stats(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of RGB in 0..1 that `encoder`'s pretrained weights expect."""
    return ENCODER_STATS.get(encoder, IMAGENET_STATS)


def _fmt(v) -> str:
    return ",".join(f"{x:g}" for x in v)


def parse_stats(text: str, field: str = "norm_mean") -> tuple[float, float, float]:
    try:
        v = tuple(float(x) for x in text.split(","))
    except ValueError:
        v = ()
    if len(v) != 3 or not all(math.isfinite(x) for x in v):
        raise ConfigError(f"{field}={text!r}: expected three numbers 'r,g,b' in 0..1")
    return v


LOSSES = choices.LOSSES.names()
OPTIMIZERS = choices.OPTIMIZERS.names()
SCHEDULES = choices.SCHEDULES.names()
AUGMENTS = choices.AUGMENTS.names()
KEEP = choices.KEEP.names()
CHANNELS = [3, 4]  # RGB, or RGB + alpha (DIDA's alpha 0 marks redacted boxes)
DEVICES = ["auto", "cpu", "cuda"]
# field -> the values it accepts: drives validate(), the CLI's flags and the app's forms
CHOICES = {"arch": ARCHS, "loss": LOSSES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
           "augment": AUGMENTS, "keep": KEEP, "in_channels": CHANNELS, "device": DEVICES}
# field -> its registry, for the `about` text of each value (forms, --help, the report)
REGISTRIES = {"arch": choices.ARCHS, "encoder": choices.ENCODERS, "loss": choices.LOSSES,
              "optimizer": choices.OPTIMIZERS, "schedule": choices.SCHEDULES, "augment": choices.AUGMENTS,
              "keep": choices.KEEP}
WEIGHTS_HELP = "'none', 'imagenet', or a path to a local encoder state-dict file (.pth/.pt/.safetensors)"


class ConfigError(ValueError):
    """A config value is out of range or unknown; the message names the field and the problem."""


# What runs saved before a field existed did, where today's default differs: they normalised with
# ImageNet statistics for every encoder, let BatchNorm statistics move, and kept the best epoch.
# A run read back (RunConfig.from_saved, store.runs.saved_config) is filled in with these, so it
# predicts and clones as it trained.
SAVED_DEFAULTS = {"norm_mean": _fmt(IMAGENET_STATS[0]), "norm_std": _fmt(IMAGENET_STATS[1]),
                  "freeze_bn": False, "keep": "best"}


@dataclass
class RunConfig:
    # The defaults are the best recipe measured on DIDA (5-fold, BENCHMARKS.md 6.3): U-Net with an
    # ImageNet-pretrained EfficientNet-Lite0 encoder whose weights ship as a package (offline) and
    # whose BatchNorm statistics stay as loaded, batch 2, lr 1e-3, 30 epochs, light augmentation,
    # bce+dice, AdamW with cosine decay, the last epoch's weights kept.
    # data
    data: str = "data/demo"           # dataset folder with images/ and labels/
    in_channels: int = 3              # 3 = RGB, 4 = RGB + alpha
    image_size: int = 0               # 0 = native size (padded to a multiple of 32); else resize to this
    exclude_flagged: bool = True      # drop pairs data.check_dataset flags (e.g. duplicate labels)
    exclude: str = ""                 # comma-separated image names (stems) left out of training, e.g. labels a review flagged
    augment: str = "light"            # augmentation preset: none | light | strong
    crop_size: int = 0                # > 0: train on random square crops of this size (faster epochs)
    # model
    arch: str = "Unet"                # smp architecture name, as smp spells it
    encoder: str = "timm-tf_efficientnet_lite0"  # smp encoder name, as smp spells it
    encoder_weights: str = "imagenet"  # none | imagenet | path to a local encoder weights file
    init_from: str = ""               # run folder (or id) whose best weights to fine-tune from
    norm_mean: str = ""               # RGB mean 'r,g,b' (0..1) inputs are standardised with; '' = the encoder's own
    norm_std: str = ""                # RGB std 'r,g,b' (0..1); '' = the encoder's own pretrained statistics
    # fine-tuning
    encoder_lr_mult: float = 1.0      # encoder lr = lr x this (e.g. 0.1: move pretrained features gently)
    freeze_encoder_epochs: int = 0    # train only the decoder for the first N epochs, encoder fixed
    freeze_bn: bool = True            # keep a pretrained encoder's BatchNorm statistics fixed (batches of 2 give noisy ones)
    # optimisation
    loss: str = "bce_dice"            # loss on logits (smp.losses): bce, dice, ..., bce_dice
    optimizer: str = "adamw"          # adam | adamw | sgd | rmsprop | adagrad | nadam | radam
    lr: float = 1e-3                  # peak learning rate
    weight_decay: float = 1e-4        # L2 / decoupled weight decay
    momentum: float = 0.9             # sgd and rmsprop only
    schedule: str = "cosine"          # constant | cosine (with warm-up) | onecycle
    warmup_epochs: int = 1            # cosine only
    epochs: int = 30                  # epochs per model (per fold with k-fold)
    batch_size: int = 2               # images per optimizer step
    # validation
    val_fraction: float = 0.2         # holdout fraction when folds < 2
    folds: int = 0                    # k >= 2: k-fold cross-validation, one model per fold
    seed: int = 0                     # seeds splits, init and augmentation
    threshold: float = 0.5            # probability above which a pixel is roof
    keep: str = "last"                # weights kept per fold: best (by val Dice) | last (the honest figure)
    tta: bool = False                 # predictions average the 8 flips/rotations of the square (8x slower)
    # runtime
    device: str = "auto"              # auto = cuda when present, else cpu
    amp: bool = True                  # bf16 autocast on CUDA; ignored on CPU
    num_threads: int = 0              # torch CPU threads; 0 = torch's default
    # bookkeeping
    name: str = ""                    # free-text run name (never used as a path)
    notes: str = ""                   # free text shown in the Runs table
    sweep: str = ""                   # sweep tag when the run is a sweep trial

    # ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "RunConfig":
        """Build from a dict, rejecting unknown keys and coercing types; `source` names the file."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; valid fields: {sorted(known)}")
        kw = {}
        for k, v in d.items():
            kw[k] = _coerce(known[k], v, source)
        return cls(**kw)

    @classmethod
    def from_saved(cls, d: dict, source: str = "config") -> "RunConfig":
        """A config read back from a run folder or checkpoint, with the fields older runs did not
        record filled in as those runs trained (SAVED_DEFAULTS), so they predict exactly as they did."""
        return cls.from_dict({**SAVED_DEFAULTS, **d}, source)

    def freezes_bn(self) -> bool:
        """Whether training keeps the encoder's BatchNorm statistics fixed: freeze_bn, and statistics
        worth keeping, loaded from encoder weights or an earlier run. A random encoder's are not
        (mean 0, variance 1), so from scratch they are learned whatever freeze_bn says."""
        return self.freeze_bn and (self.encoder_weights != "none" or bool(self.init_from))

    def resolved(self) -> "RunConfig":
        """This config with the encoder's normalisation written out (what a run records)."""
        mean, std = encoder_stats(self.encoder)
        return self.replace(norm_mean=self.norm_mean or _fmt(mean), norm_std=self.norm_std or _fmt(std))

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per input channel, alpha (0.5, 0.5) appended when in_channels is 4."""
        r = self.resolved()
        mean, std = parse_stats(r.norm_mean, "norm_mean"), parse_stats(r.norm_std, "norm_std")
        return (mean + (0.5,))[:self.in_channels], (std + (0.5,))[:self.in_channels]

    def excluded_names(self) -> list[str]:
        """The image names `exclude` lists (stems, in the order given)."""
        return [n.strip() for n in self.exclude.split(",") if n.strip()]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path, validate: bool = True) -> "RunConfig":
        """Read a config file; validate=False checks names and types only (values get overridden)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object of config fields")
        cfg = cls.from_dict(d, source=str(path))
        return cfg.validate(source=str(path)) if validate else cfg

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def validate(self, source: str = "config") -> "RunConfig":
        """Check every value; raise ConfigError naming the field. Returns self for chaining."""
        def bad(field, msg):
            raise ConfigError(f"{source}: {field}={getattr(self, field)!r}: {msg}")

        for field, allowed in CHOICES.items():
            if getattr(self, field) not in allowed:
                bad(field, f"must be one of {allowed}")
        if not self.encoder or not isinstance(self.encoder, str):
            bad("encoder", "must be an smp encoder name such as 'resnet18'")
        for field in ("lr", "weight_decay", "momentum", "val_fraction", "threshold"):
            v = getattr(self, field)
            if not math.isfinite(v):
                bad(field, "must be a finite number")
        if self.lr <= 0 or self.lr > 10:
            bad("lr", "must be > 0 and <= 10")
        if self.weight_decay < 0:
            bad("weight_decay", "must be >= 0")
        if not 0 <= self.momentum < 1:
            bad("momentum", "must be in [0, 1)")
        if self.epochs < 1 or self.epochs > 10000:
            bad("epochs", "must be between 1 and 10000")
        if self.warmup_epochs < 0:
            bad("warmup_epochs", "must be >= 0")
        if self.batch_size < 1:
            bad("batch_size", "must be >= 1")
        if not 0 < self.val_fraction < 1:
            bad("val_fraction", "must be strictly between 0 and 1")
        if self.folds < 0 or self.folds == 1:
            bad("folds", "must be 0 (holdout) or >= 2 (k-fold)")
        if not 0 < self.threshold < 1:
            bad("threshold", "must be strictly between 0 and 1")
        if self.image_size < 0 or self.image_size % 32:
            bad("image_size", "must be 0 (native) or a positive multiple of 32")
        if self.crop_size < 0 or self.crop_size % 32:
            bad("crop_size", "must be 0 (whole images) or a positive multiple of 32")
        if self.num_threads < 0:
            bad("num_threads", "must be >= 0")
        if not self.encoder_weights:
            bad("encoder_weights", f"must be {WEIGHTS_HELP}")
        if any(c in self.exclude for c in "/\\"):
            bad("exclude", "must list image names (file stems) separated by commas, not paths")
        for field in ("norm_mean", "norm_std"):
            if getattr(self, field):
                v = parse_stats(getattr(self, field), f"{source}: {field}")
                if field == "norm_std" and min(v) <= 0:
                    bad(field, "every std must be > 0")
        if not math.isfinite(self.encoder_lr_mult) or not 0 <= self.encoder_lr_mult <= 10:
            bad("encoder_lr_mult", "must be between 0 and 10 (0 keeps the encoder fixed)")
        if not 0 <= self.freeze_encoder_epochs <= self.epochs:
            bad("freeze_encoder_epochs", f"must be between 0 and epochs ({self.epochs})")
        return self


def _coerce(f: dataclasses.Field, v, source: str):
    """Coerce a JSON/CLI value to the field's type, with an error that names the field."""
    t = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if t == "bool":
            if isinstance(v, str):
                if v.lower() in ("1", "true", "yes", "on"):
                    return True
                if v.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(v)
            if isinstance(v, (bool, int)) and v in (0, 1):
                return bool(v)
            raise ValueError(v)
        if t == "int":
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError(v)
            return int(v)
        if t == "float":
            if isinstance(v, bool):
                raise ValueError(v)
            return float(v)
        if t == "str":
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise ValueError(v)
            return str(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {f.name}={v!r}: expected {t}") from None
    return v


def about(field: str, value=None) -> str:
    """What a field (or one of its values) is and when it helps: the texts of roofseg.choices."""
    if value is not None and field in REGISTRIES:
        return REGISTRIES[field].about(value)
    return choices.ABOUT.get(field, "")


def field_help() -> dict[str, str]:
    """Field name -> the comment beside it above (used for CLI --help and app tooltips)."""
    import inspect
    import re
    help_ = {}
    for line in inspect.getsource(RunConfig).splitlines():
        m = re.match(r"\s+(\w+): \w+ = .*?#\s*(.*)$", line)
        if m:
            help_[m.group(1)] = m.group(2)
    return help_
