"""A sweep's definition: SweepSpec (fields to vary and their ranges, fixed settings, sampler,
pruner, budget) with its validation, optuna-free so that the app and tests can build one cheaply.

sweep.py stores and runs sweeps; this module only says what a valid sweep is.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace

from roofseg.config import ConfigError, RunConfig

SAMPLERS = ("tpe", "random", "qmc", "grid")
PRUNERS = ("none", "median", "halving")
DIRECTIONS = ("maximize", "minimize")
# summary.json keys a sweep can optimise (val_* are k-fold means of each fold's best epoch)
METRICS = ("val_dice", "val_iou", "val_loss", "val_dice_img", "val_iou_img", "val_precision",
           "val_recall", "oof_dice_img", "oof_iou_img")
NEVER_VARIED = ("data", "name", "notes", "sweep")
DEFAULT_SPACE = {"arch": {"choices": ["Unet", "FPN"]},
                 "loss": {"choices": ["bce_dice", "dice", "focal"]},
                 "lr": {"low": 1e-4, "high": 3e-3, "log": True},
                 "augment": {"choices": ["light", "strong"]}}
HEARTBEAT_S = 30
# a sweep name is also its folder and its study name, so it must be a safe file name
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_FIELD_TYPES = {f.name: str(f.type) for f in fields(RunConfig)}


def default_direction(metric: str) -> str:
    """How to optimise a metric when no direction is given: minimize a loss, maximize the rest."""
    return "minimize" if metric.endswith("loss") else "maximize"


class SweepError(ValueError):
    """A sweep is missing, already exists, or cannot do what was asked."""


# ---------------------------------------------------------------------------------------------
# the spec
@dataclass
class SweepSpec:
    name: str                      # folder runs/sweeps/<name>, the study name and config.sweep of its runs
    base: dict = field(default_factory=dict)   # fixed RunConfig fields (the varied ones are overridden)
    space: dict = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_SPACE.items()})
    # space: field -> {"choices": [...]} or {"low": x, "high": y, "log": bool} (int fields give ints)
    sampler: str = "tpe"           # tpe | random | qmc | grid
    trials: int = 20               # budget: trials that end on their own (interrupted ones are re-run)
    metric: str = "val_dice"       # summary.json key to optimise (the fold mean for k-fold)
    direction: str = "maximize"    # maximize | minimize
    pruner: str = "none"           # none | median | halving, on fold 0's per-epoch metric
    pruner_startup: int = 2        # median: trials finished before any trial can be pruned
    pruner_warmup: int = 1         # epochs every trial trains before it can be pruned
    grid_points: int = 3           # grid sampler: values taken from each numeric range
    seed: int = 0                  # sampler seed (each worker offsets it)
    storage: str = ""              # "" = journal.log in the sweep folder; else a database URL
    created: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"sweep spec: unknown field(s) {unknown}")
        return cls(**d)

    def validate(self) -> "SweepSpec":
        """Check everything; returns a copy with the base made complete and choices coerced."""
        def bad(msg):
            raise ConfigError(f"sweep {self.name!r}: {msg}")
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            bad("the name must be 1-80 letters, digits, '.', '_' or '-'")
        base = RunConfig.from_dict(dict(self.base), "sweep base config").validate("sweep base config")
        if not isinstance(self.space, dict) or not self.space:
            bad("vary at least one field")
        space = {}
        for k, p in self.space.items():
            if k not in _FIELD_TYPES or k in NEVER_VARIED:
                bad(f"cannot vary {k!r}; fields that can vary: "
                    f"{[f for f in _FIELD_TYPES if f not in NEVER_VARIED]}")
            src = f"sweep space {k}"

            def value(v):  # coerced and checked the way a config file's value would be
                return getattr(RunConfig.from_dict({**base.to_dict(), k: v}, src).validate(src), k)
            if isinstance(p, dict) and set(p) == {"choices"}:
                if not isinstance(p["choices"], list) or not p["choices"]:
                    bad(f"{k}: choices must be a non-empty list")
                space[k] = {"choices": list(dict.fromkeys(value(c) for c in p["choices"]))}
            elif isinstance(p, dict) and {"low", "high"} <= set(p) <= {"low", "high", "log"}:
                if _FIELD_TYPES[k] not in ("int", "float"):
                    bad(f"{k} is a {_FIELD_TYPES[k]} field: give {{\"choices\": [...]}}")
                lo, hi, log = value(p["low"]), value(p["high"]), bool(p.get("log", False))
                if not lo < hi:
                    bad(f"{k}: low ({lo}) must be below high ({hi})")
                if log and lo <= 0:
                    bad(f"{k}: a log range needs low > 0")
                space[k] = {"low": lo, "high": hi, "log": log}
            else:
                bad(f"{k}: expected {{\"choices\": [...]}} or {{\"low\": ..., \"high\": ..., \"log\": bool}}")
        for name, v, ok in [("sampler", self.sampler, SAMPLERS), ("pruner", self.pruner, PRUNERS),
                            ("direction", self.direction, DIRECTIONS), ("metric", self.metric, METRICS)]:
            if v not in ok:
                bad(f"{name}={v!r}: must be one of {list(ok)}")
        if self.pruner != "none" and not self.metric.startswith("val_"):
            bad(f"pruning needs a per-epoch metric (val_*); {self.metric} exists only at the end")
        for name in ("trials", "grid_points"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(f"{name} must be an integer >= 1")
        if self.pruner_startup < 0 or self.pruner_warmup < 0:
            bad("pruner_startup and pruner_warmup must be >= 0")
        return replace(self, base={**base.to_dict(), "sweep": self.name}, space=space)

    def distributions(self) -> dict:
        """The optuna distribution of each varied field."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
        out = {}
        for k, p in self.space.items():
            if "choices" in p:
                out[k] = CategoricalDistribution(p["choices"])
            elif _FIELD_TYPES[k] == "int":
                out[k] = IntDistribution(int(p["low"]), int(p["high"]), log=p["log"])
            else:
                out[k] = FloatDistribution(p["low"], p["high"], log=p["log"])
        return out

    def grid(self) -> dict[str, list]:
        """The grid sampler's values: the choices, or grid_points values spread over each range
        (geometrically on a log range; floats rounded to 3 significant digits)."""
        import numpy as np
        out = {}
        for k, p in self.space.items():
            if "choices" in p:
                out[k] = list(p["choices"])
                continue
            lo, hi = p["low"], p["high"]
            pts = (np.geomspace if p["log"] else np.linspace)(lo, hi, self.grid_points)
            if _FIELD_TYPES[k] == "int":
                out[k] = sorted({int(round(v)) for v in pts})
            else:
                out[k] = list(dict.fromkeys(min(hi, max(lo, float(f"{v:.3g}"))) for v in pts))
        return out

    def budget(self) -> int:
        """`trials`, or the grid's size when that is smaller (a grid sweep stops when it is done)."""
        return min(self.trials, math.prod(len(v) for v in self.grid().values())) \
            if self.sampler == "grid" else self.trials
