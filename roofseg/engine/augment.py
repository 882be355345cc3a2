"""Training input pipeline: albumentations presets and an in-memory torch Dataset.

Geometric transforms move image (all 4 channels) and mask together; colour transforms touch
RGB only, so the alpha channel (DIDA's redaction boxes) keeps its meaning. Batches stay uint8
until they reach the device, where `normalize` turns them into float tensors.
"""
from __future__ import annotations

import warnings

import albumentations as A
import cv2
import numpy as np
import torch

# Default normalisation (runs pass their config's own, RunConfig.stats()): ImageNet statistics
# for RGB and 0.5/0.5 for alpha.
MEAN = (0.485, 0.456, 0.406, 0.5)
STD = (0.229, 0.224, 0.225, 0.5)


def build_augment(preset: str, seed: int = 0, crop: int = 0, square: bool = True):
    """Return (geometric, colour) albumentations pipelines for a preset name, or (None, None).

    crop > 0 prepends a random crop of crop x crop pixels (applied even with preset 'none').
    square=False leaves out 90° rotations, which would turn H x W items into W x H ones that
    cannot share a batch (the flips still give 180°).
    """
    crops = [A.RandomCrop(crop, crop)] if crop else []
    if preset == "none":
        return (A.Compose(crops, seed=seed) if crops else None), None
    geo = crops + [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    geo += [A.RandomRotate90(p=0.5)] if square or crop else []
    colour = []
    if preset == "strong":
        geo.append(A.Affine(translate_percent=(-0.06, 0.06), scale=(0.9, 1.1), rotate=(-30, 30),
                            border_mode=cv2.BORDER_REFLECT_101, p=0.7))
        colour = [A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.7),
                  A.OneOf([A.GaussianBlur(blur_limit=(3, 5)),
                           A.GaussNoise(std_range=(0.02, 0.06))], p=0.3)]
    elif preset != "light":
        raise ValueError(f"unknown augmentation preset {preset!r}; choose none, light or strong")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # albumentations' version-check chatter
        g = A.Compose(geo, seed=seed)
        c = A.Compose(colour, seed=seed + 1) if colour else None
    return g, c


class SegDataset(torch.utils.data.Dataset):
    """Items are (image (H, W, C) uint8, mask (H, W) uint8) drawn from arrays already in memory."""

    def __init__(self, images: np.ndarray, masks: np.ndarray | None, in_channels: int = 3,
                 augment: str = "none", seed: int = 0, crop: int = 0):
        self.images, self.masks, self.c = images, masks, in_channels
        crop = crop if 0 < crop < min(images.shape[1:3]) else 0
        self.geo, self.colour = build_augment(augment, seed, crop, images.shape[1] == images.shape[2])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        mask = self.masks[i] if self.masks is not None else np.zeros(img.shape[:2], np.uint8)
        if self.geo is not None:
            out = self.geo(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        if self.colour is not None:
            rgb = self.colour(image=np.ascontiguousarray(img[..., :3]))["image"]
            img = np.concatenate([rgb, img[..., 3:]], axis=2)
        return np.ascontiguousarray(img[..., :self.c]), np.ascontiguousarray(mask)


def collate(batch):
    """Stack uint8 items into tensors: images (B, H, W, C) uint8, masks (B, 1, H, W) uint8."""
    imgs = torch.from_numpy(np.stack([b[0] for b in batch]))
    masks = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
    return imgs, masks


def normalize(imgs: torch.Tensor, in_channels: int, stats=None) -> torch.Tensor:
    """(B, H, W, C) uint8 on any device -> (B, C, H, W) float32, standardised per channel with
    stats = (mean, std) in 0..1 (RunConfig.stats(); default MEAN/STD)."""
    m, s = stats or (MEAN, STD)
    mean = torch.tensor(m[:in_channels], device=imgs.device).view(1, -1, 1, 1)
    std = torch.tensor(s[:in_channels], device=imgs.device).view(1, -1, 1, 1)
    x = imgs.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std
