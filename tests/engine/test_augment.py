"""Tests for roofseg.engine.augment: masks move with images, alpha is never recoloured, batches normalise."""
import numpy as np
import pytest
import torch

from roofseg.engine import augment
from roofseg.engine.augment import SegDataset


def half_white(n=8, size=64, alpha=255):
    """n images whose left half is white (mask 1) and right half black (mask 0)."""
    imgs = np.zeros((n, size, size, 4), np.uint8)
    imgs[:, :, : size // 2, :3] = 255
    imgs[..., 3] = alpha
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, :, : size // 2] = 1
    return imgs, masks


def items(ds, rounds=3):
    return [ds[i] for _ in range(rounds) for i in range(len(ds))]


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
@pytest.mark.parametrize("channels", [3, 4])
def test_presets_keep_shapes_and_binary_masks(preset, channels):
    imgs, masks = half_white()
    ds = SegDataset(imgs, masks, channels, preset, seed=0)
    for img, m in items(ds, 2):
        assert img.shape == (64, 64, channels) and img.dtype == np.uint8
        assert m.shape == (64, 64) and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 1}


def test_light_moves_mask_with_image_exactly():
    imgs, masks = half_white()
    ds = SegDataset(imgs, masks, 4, "light", seed=1)
    moved = 0
    for img, m in items(ds):
        # flips and 90-degree turns are exact: white pixels are exactly the mask's pixels
        np.testing.assert_array_equal(img[..., 0] == 255, m == 1)
        moved += not np.array_equal(m, masks[0])
    assert moved >= 5  # the transforms really ran (24 draws; identity has probability 1/8)


def test_strong_keeps_mask_and_image_aligned():
    imgs, masks = half_white()
    ds = SegDataset(imgs, masks, 3, "strong", seed=2)
    for img, m in items(ds):
        bright = img[..., :3].mean(axis=2) > 127
        # rotation/scale interpolate the image (bilinear) and the mask (nearest), and the colour
        # jitter shifts brightness, so allow disagreement along the edge only
        assert np.mean(bright == (m == 1)) > 0.9


def test_colour_transforms_leave_alpha_alone():
    imgs, masks = half_white(alpha=77)
    imgs[..., :3] = 128  # flat grey: geometric moves cannot change it, colour changes would show
    ds = SegDataset(imgs, masks, 4, "strong", seed=3)
    recoloured = 0
    for img, _ in items(ds):
        assert (img[..., 3] == 77).all()
        recoloured += not (img[..., :3] == 128).all()
    assert recoloured >= 5  # colour jitter/noise did run on RGB


def test_same_seed_same_augmentations():
    imgs, masks = half_white(4)
    imgs[:, 10:20, 40:50, 1] = 99  # something asymmetric
    a = items(SegDataset(imgs, masks, 4, "strong", seed=5), 2)
    b = items(SegDataset(imgs, masks, 4, "strong", seed=5), 2)
    for (ia, ma), (ib, mb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)


def test_none_returns_the_data_unchanged():
    imgs, masks = half_white(2)
    img, m = SegDataset(imgs, masks, 4, "none")[1]
    np.testing.assert_array_equal(img, imgs[1])
    np.testing.assert_array_equal(m, masks[1])


def test_crop_size_crops_image_and_mask_together():
    imgs, masks = half_white(4)
    for preset in ("none", "light"):
        ds = SegDataset(imgs, masks, 4, preset, seed=0, crop=32)
        for img, m in items(ds):
            assert img.shape == (32, 32, 4) and m.shape == (32, 32)
            np.testing.assert_array_equal(img[..., 0] == 255, m == 1)
    # a crop as large as the image is ignored rather than failing
    img, m = SegDataset(imgs, masks, 4, "none", crop=64)[0]
    assert img.shape == (64, 64, 4)


def test_unlabeled_items_get_an_empty_mask():
    imgs, _ = half_white(2)
    img, m = SegDataset(imgs, None, 3, "light")[0]
    assert img.shape == (64, 64, 3) and m.shape == (64, 64) and m.max() == 0


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown augmentation preset 'wild'"):
        augment.build_augment("wild")


def test_collate_and_normalize():
    imgs, masks = half_white(3)
    ds = SegDataset(imgs, masks, 4, "none")
    x, y = augment.collate([ds[i] for i in range(3)])
    assert x.shape == (3, 64, 64, 4) and x.dtype == torch.uint8
    assert y.shape == (3, 1, 64, 64) and y.dtype == torch.uint8
    for c in (3, 4):
        z = augment.normalize(x[..., :c], c)
        assert z.shape == (3, c, 64, 64) and z.dtype == torch.float32
    z = augment.normalize(x, 4)
    white = torch.tensor([(1 - m) / s for m, s in zip(augment.MEAN, augment.STD)])
    torch.testing.assert_close(z[0, :, 0, 0], white)  # white, opaque pixel
    torch.testing.assert_close(z[0, :3, 0, -1], torch.tensor([-m / s for m, s in zip(augment.MEAN[:3], augment.STD[:3])]))
    assert x.dtype == torch.uint8 and x.max() == 255  # the input batch is not modified in place
