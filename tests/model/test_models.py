"""Tests for roofseg.model.factory: every loss/optimizer/schedule works, models build, bad pairs explain themselves.

test_compat_table keeps config.incompatible (the static table the UI filters encoders with) honest
against real smp construction and a forward pass.
"""
import math

import pytest
import torch

import roofseg.model  # noqa: F401  (the torchvision guard runs before timm/smp import)
from roofseg.model import factory as models
from roofseg.model import checkpoint
from roofseg.store import runs
from roofseg.config import ARCHS, LOSSES, OPTIMIZERS, SCHEDULES, RunConfig, incompatible
from roofseg.model.factory import ModelError, build_loss, build_model, build_optimizer, build_scheduler


# ---------------------------------------------------------------------------------------------
# losses
@pytest.mark.parametrize("name", LOSSES)
def test_loss_is_a_finite_scalar_with_gradients(name):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, generator=g, requires_grad=True)
    target = (torch.rand(2, 1, 16, 16, generator=g) > 0.7).float()
    loss = build_loss(name)(logits, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # a loss must prefer the right answer: confident-correct beats confident-wrong
    good = (target * 2 - 1) * 8
    assert build_loss(name)(good, target) < build_loss(name)(-good, target)


def test_unknown_loss_lists_choices():
    with pytest.raises(ModelError, match="unknown loss 'mse'.*bce_dice"):
        build_loss("mse")


# ---------------------------------------------------------------------------------------------
# optimizers and schedules
def lrs(cfg, steps_per_epoch):
    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer(cfg, [p])
    sched = build_scheduler(cfg, opt, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
        sched.step()
    return out, p


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_and_schedule_builds_and_steps(optimizer, schedule):
    cfg = RunConfig(optimizer=optimizer, schedule=schedule, lr=0.05, epochs=3)
    seen, p = lrs(cfg, steps_per_epoch=4)
    assert all(math.isfinite(v) and 0 < v <= 0.05 + 1e-12 for v in seen)
    assert (p < 1).all()  # the parameters moved downhill


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_momentum_zero_is_accepted(optimizer):
    seen, p = lrs(RunConfig(optimizer=optimizer, momentum=0.0, lr=0.05, epochs=1), 3)
    assert (p < 1).all()


def test_constant_schedule_keeps_lr():
    seen, _ = lrs(RunConfig(schedule="constant", lr=0.01, epochs=2), 3)
    assert seen == [0.01] * 6


def test_cosine_warms_up_then_decays():
    cfg = RunConfig(schedule="cosine", lr=0.1, epochs=4, warmup_epochs=1)
    seen, _ = lrs(cfg, steps_per_epoch=5)
    warm, rest = seen[:6], seen[5:]
    assert all(a < b for a, b in zip(warm, warm[1:]))          # increases during warm-up
    assert seen[5] == pytest.approx(0.1)                       # reaches lr after one epoch
    assert all(a >= b for a, b in zip(rest, rest[1:]))         # then never increases
    assert seen[-1] < 0.01 and seen[-1] > 0                    # and ends near zero, not at zero


def test_cosine_without_warmup_starts_at_lr():
    seen, _ = lrs(RunConfig(schedule="cosine", lr=0.1, epochs=2, warmup_epochs=0), 3)
    assert seen[0] == pytest.approx(0.1) and seen[-1] < seen[0]


def test_onecycle_rises_to_lr_then_falls():
    cfg = RunConfig(schedule="onecycle", lr=0.1, epochs=5)
    seen, _ = lrs(cfg, steps_per_epoch=4)  # stepping every batch of every epoch must not overrun
    peak = max(range(len(seen)), key=seen.__getitem__)
    assert 0 < peak < len(seen) - 1
    assert seen[peak] == pytest.approx(0.1, rel=0.05)
    assert seen[0] < 0.1 / 5 and seen[-1] < 0.1 / 5


def test_unknown_optimizer_and_schedule():
    p = [torch.nn.Parameter(torch.ones(1))]
    with pytest.raises(ModelError, match="unknown optimizer 'lbfgs'"):
        build_optimizer(RunConfig(optimizer="lbfgs"), p)
    with pytest.raises(ModelError, match="unknown schedule 'step'"):
        build_scheduler(RunConfig(schedule="step"), torch.optim.SGD(p, lr=0.1), 3)


# ---------------------------------------------------------------------------------------------
# models
@pytest.mark.parametrize("arch, encoder", [("Unet", "resnet18"), ("FPN", "resnet18"),
                                           ("DeepLabV3Plus", "resnet18"), ("Segformer", "mit_b0")])
@pytest.mark.parametrize("channels", [3, 4])
def test_build_model_outputs_one_channel_logits(arch, encoder, channels):
    model = build_model(RunConfig(arch=arch, encoder=encoder, in_channels=channels, encoder_weights="none"), log=lambda m: None)
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(2, channels, 64, 64))
    assert y.shape == (2, 1, 64, 64) and torch.isfinite(y).all()


def test_invalid_pair_lists_working_encoders():
    with pytest.raises(ModelError) as e:
        build_model(RunConfig(arch="PAN", encoder="vgg11_bn"))
    msg = str(e.value)
    assert msg.startswith("PAN with encoder vgg11_bn does not build")
    working = msg.split("encoders that work with PAN:")[1]
    assert "resnet18" in working and "vgg11_bn" not in working and "densenet121" not in working


@pytest.mark.parametrize("encoder", ["resnet19", "efficientnet_b0"])
def test_unknown_encoder_name(encoder):
    with pytest.raises(ModelError, match=f"unknown encoder '{encoder}'; encoders that work with Unet: .*resnet34"):
        build_model(RunConfig(arch="Unet", encoder=encoder))


def test_unknown_timm_encoder_says_it_does_not_build():
    with pytest.raises(ModelError, match="Unet with encoder tu-not_a_model does not build"):
        build_model(RunConfig(arch="Unet", encoder="tu-not_a_model"))


def test_compatible_encoders_follow_the_table():
    assert models.compatible_encoders("DPT") == ["tu-convnext_atto", "tu-regnety_002"]
    assert "mit_b0" not in models.compatible_encoders("UnetPlusPlus")
    assert len(models.compatible_encoders("Unet")) == len(models.ENCODERS)


def _builds_and_runs(arch, encoder) -> str | None:
    """None when smp builds the pair and it runs on a small batch; else the error."""
    size = 128 if arch == "PAN" else 64  # PAN's pyramid pooling needs >= 128 px (train.preflight says so)
    try:
        model = models.create(arch, encoder, 3).eval()
        with torch.no_grad():
            y = model(torch.zeros(1, 3, size, size))
        assert y.shape == (1, 1, size, size), y.shape
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _check_table(pairs):
    wrong = []
    for arch, enc in pairs:
        table, real = incompatible(arch, enc), _builds_and_runs(arch, enc)
        if (table is None) != (real is None):
            wrong.append(f"{arch} + {enc}: table says {table or 'ok'}, smp says {real or 'ok'}")
    assert not wrong, "config.incompatible disagrees with smp:\n" + "\n".join(wrong)


QUIET_DPT = pytest.mark.filterwarnings("ignore:Encoder does not have prefix tokens")


@pytest.mark.slow
@QUIET_DPT
def test_compat_table():
    _check_table([(a, e) for a in ARCHS
                  for e in ["resnet18", "mit_b0", "densenet121", "vgg11_bn", "tu-convnext_atto"]])


@QUIET_DPT
def test_compat_table_subset():
    # CI: every architecture with the cheap encoders, plus densenet's refusals (vgg builds slowly)
    _check_table([(a, e) for a in ARCHS for e in ["resnet18", "mit_b0", "tu-convnext_atto"]]
                 + [(a, "densenet121") for a in ("Unet", "DeepLabV3", "DeepLabV3Plus", "PAN")])


# ---------------------------------------------------------------------------------------------
# weights
def test_local_encoder_weights_file_is_loaded(tmp_path):
    import torchvision
    torch.manual_seed(1)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-local.pth"
    torch.save(sd, path)
    logs = []
    model = build_model(RunConfig(encoder="resnet18", encoder_weights=str(path)), log=logs.append)
    assert torch.equal(model.encoder.conv1.weight, sd["conv1.weight"])
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    assert any(str(path) in m and "tensors" in m for m in logs)
    # a 4-channel run widens the pretrained stem instead of discarding it
    m4 = build_model(RunConfig(encoder="resnet18", encoder_weights=str(path), in_channels=4), log=logs.append)
    w = m4.encoder.conv1.weight
    assert w.shape[1] == 4
    assert torch.equal(m4.encoder.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])
    assert m4.eval()(torch.zeros(1, 4, 64, 64)).shape == (1, 1, 64, 64)


def test_init_from_an_earlier_run(finished_runs):
    run = runs.list_runs(finished_runs)[0]
    ck = checkpoint.load_checkpoint(run / "best.pt")
    cfg = RunConfig.from_dict(ck["config"]).replace(init_from=str(run))
    model = build_model(cfg, log=lambda m: None)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck["state_dict"][k]), k
    with pytest.raises(ModelError, match="encoder='resnet18', this run has encoder='resnet34'"):
        build_model(cfg.replace(encoder="resnet34"), log=lambda m: None)
    with pytest.raises(ModelError, match="no best.*pt weights"):
        build_model(cfg.replace(init_from=str(finished_runs / "nothing")), log=lambda m: None)
