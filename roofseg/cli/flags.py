"""RunConfig <-> argparse: the config flags every training command shares (train, sweep)."""
from __future__ import annotations

import argparse
from dataclasses import fields

from roofseg.config import CHOICES, RunConfig, field_help


def add_config_flags(p: argparse.ArgumentParser, weights_notes: dict[str, str] | None = None) -> None:
    """One flag per RunConfig field: help from the field's comment, choices from config.CHOICES.
    weights_notes ({encoder: where its ImageNet weights are}, model.weights.availability_notes) is
    listed under --encoder; it costs an smp import, so callers pass it only when help is printed."""
    helps, defaults = field_help(), RunConfig()
    if weights_notes:
        helps = {**helps, "encoder": helps.get("encoder", "") + "; here: " + "; ".join(
            f"{e}: {note}" for e, note in weights_notes.items())}
    g = p.add_argument_group("run config (every field of RunConfig; defaults in brackets)")
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        kw = {"dest": f.name, "default": None, "help": f"{helps.get(f.name, '')} [{getattr(defaults, f.name)}]"}
        if f.name in CHOICES:
            kw["choices"] = CHOICES[f.name]
        kw["type"] = {"int": int, "float": float}.get(str(f.type), str)
        if str(f.type) == "bool":
            kw.pop("type")
            kw["action"] = argparse.BooleanOptionalAction
        g.add_argument(flag, **kw)


def config_from_args(a) -> RunConfig:
    # validate only after the flags are applied: a flag may fix a value the file has wrong
    base = RunConfig.load(a.config, validate=False).to_dict() if a.config else RunConfig().to_dict()
    for f in fields(RunConfig):
        v = getattr(a, f.name, None)
        if v is not None:
            base[f.name] = v
    return RunConfig.from_dict(base, source=a.config or "command line").validate(source=a.config or "command line")
