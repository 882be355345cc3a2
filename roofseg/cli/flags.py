"""RunConfig <-> argparse: the config flags every training command shares (train, sweep)."""
from __future__ import annotations

import argparse
from dataclasses import fields

from roofseg.config import CHOICES, REGISTRIES, RunConfig, about, field_help


def explained() -> dict[str, str]:
    """Field -> its comment plus what each choice is and when it helps (roofseg.choices): the
    texts the Train form's help and the report show too."""
    helps = field_help()
    for f in fields(RunConfig):
        extra = ([f"{v}: {about(f.name, v)}" for v in REGISTRIES[f.name]] if f.name in REGISTRIES
                 else [about(f.name)] if about(f.name) else [])
        if extra:
            helps[f.name] = helps.get(f.name, "") + ". " + " | ".join(extra)
    return helps


def add_config_flags(p: argparse.ArgumentParser, weights_notes: dict[str, str] | None = None) -> None:
    """One flag per RunConfig field: help from the field's comment, choices from config.CHOICES.
    weights_notes ({encoder: where its ImageNet weights are}, model.weights.availability_notes) is
    listed under --encoder, with every choice's explanation (explained()); both are for printed
    help only (the notes cost an smp import), so callers pass them only then."""
    helps, defaults = (explained() if weights_notes else field_help()), RunConfig()
    if weights_notes:
        helps = {**helps, "encoder": helps.get("encoder", "") + "; here: " + "; ".join(
            f"{e}: {note}" for e, note in weights_notes.items())}
    g = p.add_argument_group("run config (every field of RunConfig; defaults in brackets)")
    for f in fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, "").replace("%", "%%")  # argparse %-formats help strings
        kw = {"dest": f.name, "default": None, "help": f"{text} [{getattr(defaults, f.name)}]"}
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
