"""Tests for roofseg.model.metrics on hand-made masks whose tp/fp/fn/tn are known."""
import pytest
import torch

from roofseg.model import metrics


def logits_from(pred: torch.Tensor) -> torch.Tensor:
    """0/1 prediction -> confident logits."""
    return (pred.float() * 2 - 1) * 10


def stats(pred, gt):
    return metrics.confusion(logits_from(pred), gt)


def test_perfect_prediction():
    gt = torch.zeros(2, 1, 8, 8)
    gt[0, 0, :4] = 1
    gt[1, 0, :, :2] = 1
    s = metrics.scores(*stats(gt, gt))
    assert set(s) == set(metrics.METRICS)
    for k, v in s.items():
        assert v == pytest.approx(1.0), k


def test_half_overlap_known_values():
    gt = torch.zeros(1, 1, 4, 4)
    gt[..., :2, :] = 1      # top half: 8 px
    pred = torch.zeros(1, 1, 4, 4)
    pred[..., :, :2] = 1    # left half: 8 px; overlap 4
    tp, fp, fn, tn = stats(pred, gt)
    assert (int(tp), int(fp), int(fn), int(tn)) == (4, 4, 4, 4)
    assert tp.shape == (1, 1) and tp.dtype == torch.int64
    s = metrics.scores(tp, fp, fn, tn)
    assert s["dice"] == pytest.approx(0.5)          # 2*4 / (2*4 + 4 + 4)
    assert s["iou"] == pytest.approx(1 / 3)         # 4 / 12
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["dice_img"] == pytest.approx(0.5) and s["iou_img"] == pytest.approx(1 / 3)


def test_micro_and_per_image_reductions_differ_as_documented():
    gt = torch.zeros(2, 1, 10, 10)
    gt[0, 0] = 1             # 100 px of roof, found exactly
    gt[1, 0, 0, :4] = 1      # 4 px of roof, all missed
    pred = gt.clone()
    pred[1] = 0
    s = metrics.scores(*stats(pred, gt))
    assert s["dice"] == pytest.approx(200 / 204)    # micro: pixels of both images pooled
    assert s["dice_img"] == pytest.approx(0.5)      # per image: (1 + 0) / 2
    assert s["iou_img"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(100 / 104) and s["precision"] == pytest.approx(1.0)


def test_empty_ground_truth_and_empty_prediction_scores_one_per_image():
    gt = torch.zeros(2, 1, 8, 8)
    pred = torch.zeros(2, 1, 8, 8)
    pred[1, 0, 0, 0] = 1     # image 1: one false positive on an empty image
    rows = metrics.per_image(*stats(pred, gt))
    assert rows[0]["dice"] == 1.0 and rows[0]["iou"] == 1.0
    assert rows[0]["precision"] == 1.0 and rows[0]["recall"] == 1.0
    assert rows[1]["dice"] == 0.0 and rows[1]["iou"] == 0.0
    assert (rows[1]["tp"], rows[1]["fp"], rows[1]["fn"], rows[1]["tn"]) == (0, 1, 0, 63)
    assert metrics.scores(*stats(pred, gt))["dice_img"] == pytest.approx(0.5)


def test_no_prediction_at_all_gives_numbers_not_nan():
    # an untrained model often predicts no roof anywhere: precision is 0/0 over the whole epoch
    gt = torch.zeros(2, 1, 8, 8)
    gt[:, 0, :3] = 1
    s = metrics.scores(*stats(torch.zeros_like(gt), gt))
    assert s["precision"] == 1.0 and s["recall"] == 0.0 and s["dice"] == 0.0 and s["iou"] == 0.0
    # a validation set without roof, left empty, is perfect under both reductions
    z = torch.zeros(2, 1, 8, 8)
    assert all(v == 1.0 for v in metrics.scores(*stats(z, z)).values())


def test_per_image_rows():
    gt = torch.zeros(3, 1, 4, 4)
    gt[:, 0, 0] = 1
    pred = gt.clone()
    pred[2, 0, 1] = 1  # image 2: 4 tp, 4 fp
    rows = metrics.per_image(*stats(pred, gt))
    assert len(rows) == 3
    assert rows[0]["dice"] == 1.0 and rows[2]["dice"] == pytest.approx(8 / 12)
    assert rows[2]["precision"] == pytest.approx(0.5) and rows[2]["recall"] == 1.0
    assert all(isinstance(r["tp"], int) for r in rows)


def test_threshold_moves_the_decision():
    gt = torch.ones(1, 1, 2, 2)
    logits = torch.full((1, 1, 2, 2), 0.5)   # sigmoid 0.62
    assert metrics.scores(*metrics.confusion(logits, gt, 0.5))["recall"] == 1.0
    assert metrics.scores(*metrics.confusion(logits, gt, 0.7))["recall"] == 0.0


def test_meter_weights_loss_by_batch_size_and_pools_counts():
    m = metrics.Meter()
    gt = torch.zeros(3, 1, 4, 4)
    gt[:, 0, :2] = 1
    m.update(1.0, logits_from(gt[:2]), gt[:2])
    half = gt[2:].clone()
    half[..., :, 2:] = 0     # find half of the roof of the third image
    m.update(4.0, logits_from(half), gt[2:])
    r = m.result("val")
    assert r["val_loss"] == pytest.approx((1.0 * 2 + 4.0 * 1) / 3)
    assert r["val_recall"] == pytest.approx(20 / 24) and r["val_precision"] == 1.0
    assert set(r) == {"val_loss", *(f"val_{k}" for k in metrics.METRICS)}


def test_empty_meter_reports_only_loss():
    assert metrics.Meter().result("val") == {"val_loss": 0.0}
