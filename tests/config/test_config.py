"""Tests for roofseg.config: validation names the field, files name themselves, the compat table."""
import json
import math
from dataclasses import fields

import pytest

from roofseg.config import ARCHS, ConfigError, RunConfig, field_help, incompatible


def test_defaults_validate():
    cfg = RunConfig()
    assert cfg.validate() is cfg


@pytest.mark.parametrize("field, value", [
    ("lr", 0.0), ("lr", -1e-3), ("lr", 11.0), ("lr", math.nan), ("lr", math.inf),
    ("epochs", 0), ("epochs", 10001),
    ("folds", 1), ("folds", -2),
    ("batch_size", 0),
    ("val_fraction", 0.0), ("val_fraction", 1.0),
    ("threshold", 0.0), ("threshold", 1.0), ("threshold", math.nan),
    ("image_size", 100), ("image_size", -32),
    ("crop_size", 48),
    ("weight_decay", -0.1), ("momentum", 1.0), ("warmup_epochs", -1), ("num_threads", -1),
    ("arch", "UNet"), ("loss", "mse"), ("optimizer", "lbfgs"), ("schedule", "step"),
    ("augment", "heavy"), ("in_channels", 2), ("device", "tpu"),
    ("encoder", ""), ("encoder_weights", ""),
])
def test_out_of_range_value_names_the_field(field, value):
    cfg = RunConfig().replace(**{field: value})
    with pytest.raises(ConfigError) as e:
        cfg.validate(source="my.json")
    msg = str(e.value)
    assert msg.startswith("my.json: ") and f"{field}=" in msg


def test_unknown_choice_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="arch='Unet3D': must be one of .*'DeepLabV3Plus'"):
        RunConfig(arch="Unet3D").validate()


@pytest.mark.parametrize("ok_field, value", [("folds", 0), ("folds", 2), ("image_size", 0),
                                              ("image_size", 96), ("crop_size", 64), ("epochs", 1)])
def test_boundary_values_are_accepted(ok_field, value):
    RunConfig().replace(**{ok_field: value}).validate()


def test_from_dict_rejects_unknown_keys_naming_the_file():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"epochs": 3, "learning_rate": 0.1}, source="exp/a.json")
    msg = str(e.value)
    assert msg.startswith("exp/a.json:") and "learning_rate" in msg and "'lr'" in msg  # lists valid


@pytest.mark.parametrize("key, value", [("epochs", "ten"), ("epochs", 2.5), ("epochs", True),
                                        ("lr", "fast"), ("lr", False), ("amp", "maybe"),
                                        ("amp", 2), ("name", ["a"]), ("batch_size", None)])
def test_from_dict_rejects_bad_types_naming_file_and_field(key, value):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({key: value}, source="exp/b.json")
    msg = str(e.value)
    assert msg.startswith("exp/b.json:") and f"{key}=" in msg


def test_from_dict_coerces_json_and_cli_spellings():
    cfg = RunConfig.from_dict({"epochs": "3", "lr": 1, "amp": "false", "exclude_flagged": 0,
                               "batch_size": 2.0, "name": 7})
    assert (cfg.epochs, cfg.lr, cfg.amp, cfg.exclude_flagged, cfg.batch_size, cfg.name) == \
        (3, 1.0, False, False, 2, "7")
    assert isinstance(cfg.lr, float) and isinstance(cfg.epochs, int)


def test_save_load_round_trip(tmp_path):
    cfg = RunConfig(arch="FPN", encoder="mit_b0", loss="lovasz", lr=3e-4, epochs=7, folds=3,
                    in_channels=4, amp=False, notes="ünïcode ✓", image_size=128, crop_size=64)
    p = tmp_path / "c.json"
    cfg.save(p)
    assert RunConfig.load(p) == cfg
    assert json.loads(p.read_text())["arch"] == "FPN"  # plain, hand-editable JSON


@pytest.mark.parametrize("text, expect", [
    ('{ "epochs": 3, }', "not valid JSON"),        # trailing comma, as people hand-edit
    ("{ epochs: 3 }", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"epochs": 0}', "epochs=0"),                 # parses, but out of range
    ('{"epochs": "x"}', "epochs='x'"),
    ('{"arch": "Unet", "colour": 1}', "colour"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
])
def test_load_of_a_bad_file_names_the_file(tmp_path, text, expect):
    p = tmp_path / "hand-edited.json"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as e:
        RunConfig.load(p)
    assert str(p) in str(e.value) and expect in str(e.value)


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nope.json: file not found"):
        RunConfig.load(tmp_path / "nope.json")


@pytest.mark.parametrize("arch, encoder, why", [
    ("Unet", "resnet18", None), ("DPT", "tu-convnext_atto", None), ("PAN", "resnet34", None),
    ("FPN", "mit_b0", None), ("Segformer", "vgg11_bn", None),
    ("DPT", "resnet18", "tu-"), ("UnetPlusPlus", "mit_b2", "Mix Transformer"),
    ("Linknet", "mit_b0", "Mix Transformer"), ("PAN", "vgg11_bn", "dilated"),
    ("DeepLabV3", "densenet121", "dilated"), ("DeepLabV3Plus", "vgg11_bn", "dilated"),
])
def test_incompatible_table(arch, encoder, why):
    got = incompatible(arch, encoder)
    if why is None:
        assert got is None
    else:
        assert got and why in got


def test_every_field_has_help_text():
    # the CLI's --help and the app's tooltips come from the comments beside the fields
    helps = field_help()
    missing = [f.name for f in fields(RunConfig) if f.name not in helps]
    assert not missing, f"fields without a comment: {missing}"
    assert "multiple of 32" in helps["image_size"]


def test_archs_are_smp_names():
    import segmentation_models_pytorch as smp
    for a in ARCHS:
        assert hasattr(smp, a), a
