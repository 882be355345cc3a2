"""Tests for roofseg.data.overlay: what the user sees in the comparison panels, pixel by pixel."""
import itertools

import numpy as np
import pytest

from roofseg.data import overlay as ov

# 3x3 example with every case: gt rows / pred rows, expected codes
GT = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0]], bool)
PRED = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0]], bool)
CODES = np.array([[1, 3, 2], [0, 2, 1], [3, 0, 0]], np.uint8)  # 0 TN, 1 TP, 2 FP, 3 FN


def grey(h=3, w=3, value=100):
    return np.full((h, w, 3), value, np.uint8)


def test_error_map_codes_every_case():
    out = ov.error_map(GT, PRED)
    assert out.dtype == np.uint8 and out.shape == (3, 3)
    np.testing.assert_array_equal(out, CODES)
    # 0/255 uint8 masks (as PNGs load) give the same codes
    np.testing.assert_array_equal(ov.error_map(GT.astype(np.uint8) * 255, PRED.astype(np.uint8)), CODES)


def test_overlay_errors_colours_at_full_alpha():
    img = grey()
    out = ov.overlay_errors(img, GT, PRED, alpha=1.0)
    assert out.shape == (3, 3, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == ov.TP_COLOR
    assert tuple(out[0, 2]) == ov.FP_COLOR
    assert tuple(out[0, 1]) == ov.FN_COLOR
    assert tuple(out[1, 0]) == (100, 100, 100)  # TN untouched
    np.testing.assert_array_equal(img, grey())  # input not modified


def test_overlay_errors_half_alpha_tp_greener_tn_unchanged():
    out = ov.overlay_errors(grey(), GT, PRED, alpha=0.5).astype(int)
    assert out[0, 0, 1] > 100 and out[0, 0, 1] > out[0, 0, 0]  # TP pixel turned greener
    np.testing.assert_array_equal(out[CODES == 0], 100)


def test_alpha_zero_returns_image_unchanged():
    img = np.random.default_rng(0).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ov.overlay_errors(img, GT, PRED, alpha=0.0), img)
    np.testing.assert_array_equal(ov.overlay_mask(img, PRED, alpha=0.0), img)


def test_overlay_errors_without_gt_uses_mask_colour():
    out = ov.overlay_errors(grey(), None, PRED, alpha=1.0)
    assert tuple(out[0, 0]) == ov.MASK_COLOR and tuple(out[1, 0]) == (100, 100, 100)


def test_bad_alpha_rejected():
    with pytest.raises(ValueError, match="alpha"):
        ov.overlay_mask(grey(), PRED, alpha=1.5)


def test_overlay_mask_0_255_and_bool_agree():
    img = np.random.default_rng(1).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    a = ov.overlay_mask(img, PRED.astype(np.uint8) * 255, alpha=0.4)
    np.testing.assert_array_equal(a, ov.overlay_mask(img, PRED, alpha=0.4))
    np.testing.assert_array_equal(a, ov.overlay_mask(img, PRED.astype(np.uint8), alpha=0.4))
    np.testing.assert_array_equal(a[~PRED], img[~PRED])  # outside the mask: unchanged
    assert not np.array_equal(a[PRED], img[PRED])


def test_uint8_mask_threshold_at_128():
    m = np.array([[0, 127], [128, 255]], np.uint8)
    np.testing.assert_array_equal(ov.as_bool_mask(m), [[False, False], [True, True]])


def test_rgba_transparent_becomes_black_then_overlay():
    rgba = np.full((2, 2, 4), 200, np.uint8)
    rgba[0, 0, 3] = 0
    rgb = ov.to_rgb(rgba)
    assert rgb.shape == (2, 2, 3) and tuple(rgb[0, 0]) == (0, 0, 0) and tuple(rgb[1, 1]) == (200,) * 3
    mask = np.array([[1, 0], [0, 0]], bool)
    out = ov.overlay_mask(rgba, mask, color=(255, 255, 0), alpha=0.5)
    assert tuple(out[0, 0]) == (128, 128, 0)  # blended over black, not over the hidden 200s


def test_grey_image_accepted():
    out = ov.overlay_mask(np.full((2, 2), 50, np.uint8), np.zeros((2, 2), bool))
    assert out.shape == (2, 2, 3) and (out == 50).all()


@pytest.mark.parametrize("call", [
    lambda: ov.overlay_mask(grey(4, 4), np.zeros((3, 4), bool)),
    lambda: ov.overlay_errors(grey(4, 4), np.zeros((3, 4), bool), np.zeros((3, 4), bool)),
    lambda: ov.error_map(np.zeros((4, 4), bool), np.zeros((3, 4), bool)),
])
def test_shape_mismatch_names_both_shapes(call):
    with pytest.raises(ValueError) as e:
        call()
    assert "(3, 4)" in str(e.value) and "(4, 4" in str(e.value)


def test_dice_iou_half_overlap_and_empty():
    gt = np.zeros((2, 4), bool)
    gt[:, :2] = True  # 4 px
    pred = np.zeros((2, 4), bool)
    pred[:, 1:3] = True  # 4 px, 2 shared
    assert ov.dice(gt, pred) == pytest.approx(0.5)
    assert ov.iou(gt, pred) == pytest.approx(2 / 6)
    empty = np.zeros((2, 4), bool)
    assert ov.dice(empty, empty) == 1.0 and ov.iou(empty, empty) == 1.0
    assert ov.dice(gt, empty) == 0.0 and ov.iou(gt, empty) == 0.0
    assert ov.dice(gt, gt) == 1.0 and ov.iou(gt, gt) == 1.0


def test_disagreement():
    assert ov.disagreement([PRED, PRED.copy(), PRED.astype(np.uint8) * 255]) == 0.0
    assert ov.disagreement([PRED, ~PRED]) == 1.0
    assert ov.disagreement([PRED]) == 0.0 and ov.disagreement([]) == 0.0
    one_off = PRED.copy()
    one_off[2, 2] = True
    assert ov.disagreement([PRED, PRED, one_off]) == pytest.approx(1 / 9)


def test_prob_to_rgb():
    ramp = np.linspace(0, 1, 256)[None, :]
    out = ov.prob_to_rgb(ramp)
    assert out.shape == (1, 256, 3) and out.dtype == np.uint8
    assert np.linalg.norm(out[0, 0].astype(float) - out[0, -1]) > 100
    luma = out[0].astype(float) @ [0.299, 0.587, 0.114]
    assert (np.diff(luma) >= -0.5).all() and luma[-1] > luma[0] + 100  # brighter = more likely
    np.testing.assert_array_equal(ov.prob_to_rgb(np.arange(256, dtype=np.uint8)[None, :]), out)
    with pytest.raises(ValueError, match="0, 1"):
        ov.prob_to_rgb(np.array([[-2.0, 3.0]]))  # logits, not probabilities


def _lab(rgb):
    """sRGB 0..255 -> CIELAB (D65), enough to compare colours the way people see them."""
    c = np.asarray(rgb, float) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ lin / [0.95047, 1.0, 1.08883]
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _simulate(rgb, m):
    """Colour-vision-deficiency simulation (Machado 2009 matrix, applied in linear RGB)."""
    c = np.asarray(rgb, float) / 255
    lin = np.clip(np.asarray(m) @ np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4), 0, 1)
    return 255 * np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


MACHADO = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                   [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                   [0.004733, 0.691367, 0.303900]],
}


def test_error_colours_far_apart_also_for_colour_blind_viewers():
    colours = [c for _, c in ov.legend()]
    assert colours == [ov.TP_COLOR, ov.FP_COLOR, ov.FN_COLOR]
    for a, b in itertools.combinations(colours, 2):
        assert np.linalg.norm(np.subtract(a, b)) > 100
    for name, m in MACHADO.items():
        for a, b in itertools.combinations(colours, 2):
            delta_e = np.linalg.norm(_lab(_simulate(a, m)) - _lab(_simulate(b, m)))
            assert delta_e > 25, f"{a} vs {b} look alike under {name} (dE {delta_e:.1f})"
