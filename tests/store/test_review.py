"""Label review (roofseg.store.review, `data review`, overlay.overlay_review) on constructed
out-of-fold probability maps written into fake k-fold run folders: no training."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from roofseg.cli.main import main as cli
from roofseg.data import overlay
from roofseg.store import review

SIZE = 96
def boxes(i: int) -> list[tuple[int, int, int, int]]:
    """Image i's three roofs (y0, x0, y1, x1): in 3 of the 9 cells of a 32 px grid, seeded by i, so
    labels of different images rarely overlap."""
    rng = np.random.default_rng(100 + i)
    out = []
    for cell in rng.choice(9, 3, replace=False):
        y0, x0 = 32 * (cell // 3) + int(rng.integers(2, 10)), 32 * (cell % 3) + int(rng.integers(2, 10))
        out.append((y0, x0, y0 + int(rng.integers(14, 20)), x0 + int(rng.integers(14, 20))))
    return out


def truth(i: int, skip: int = 0) -> np.ndarray:
    """Image i's true roof mask; skip > 0 leaves its first `skip` roofs out (an erased label)."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    for y0, x0, y1, x1 in boxes(i)[skip:]:
        m[y0:y1, x0:x1] = 1
    return m


def prob_of(mask: np.ndarray, seed: int) -> np.ndarray:
    """A good model's probability map of `mask`: spatially smooth as a network's output, ~0.97 on
    roofs and ~0.03 elsewhere, edges soft over a few pixels, a little smooth noise."""
    rng = np.random.default_rng(seed)
    p = 0.03 + 0.94 * ndimage.gaussian_filter(mask.astype(np.float64), 1.0)
    return np.clip(p + ndimage.gaussian_filter(rng.normal(0, 0.05, mask.shape), 3), 0, 1)


def write_png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_run(tmp: Path, labels: dict[str, np.ndarray] | None = None, n: int = 12, **cfg) -> tuple[Path, Path]:
    """(run folder, dataset folder): n labelled images whose out-of-fold probabilities are prob_of
    the true roofs; `labels` replaces some label files (the planted errors)."""
    root, run_dir = tmp / "data", tmp / "runs" / "20250101-000000-FPN-resnet18-abcd"
    names = [f"{i:03d}" for i in range(n)]
    rows = []
    for i, name in enumerate(names):
        rgb = np.random.default_rng(i).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        write_png(root / "images" / f"{name}.png", rgb)
        lab = (labels or {}).get(name, truth(i))
        write_png(root / "labels" / f"{name}.png", (lab > 0).astype(np.uint8) * 255)
        write_png(run_dir / "predictions" / "val_prob" / f"{name}.png",
                  np.round(prob_of(truth(i), i) * 255).astype(np.uint8))
        rows.append({"name": name, "fold": i % 5, "dice": 0.9, "iou": 0.8, "tp": 1, "fp": 0, "fn": 0, "tn": 1})
    (run_dir / "config.json").write_text(json.dumps({"data": str(root), "folds": 5, "threshold": 0.5, **cfg}))
    (run_dir / "status.json").write_text(json.dumps({"state": "done"}))
    (run_dir / "summary.json").write_text(json.dumps({"excluded": {}, "val_dice": 0.9}))
    (run_dir / "per_image.json").write_text(json.dumps(rows))
    return run_dir, root


def erased(i: int, k: int = 1) -> np.ndarray:
    return truth(i, skip=k)


def test_a_swapped_label_ranks_first_and_clean_labels_are_not_flagged(tmp_path):
    run_dir, _ = make_run(tmp_path, {"004": truth(5)})
    rev = review.review(run_dir)
    top = rev["images"][0]
    assert top["name"] == "004" and top["rank"] == 1 and top["flagged"]
    assert "another image's label" in top["reason"]
    assert top["score"] < 0.5
    assert [r["name"] for r in rev["images"] if r["flagged"]] == ["004"]
    assert all(r["score"] > 0.9 and r["reason"] == "label agrees with the model"
               for r in rev["images"][1:]), rev["images"][1:]
    assert 0.5 <= rev["thresholds"]["roof"] < 1 and 0.5 <= rev["thresholds"]["background"] < 1
    assert rev["flagged"] == 1 and rev["not_reviewed"] == {}
    assert review.review_labels(run_dir, top=2) == rev["images"][:2]


def test_an_erased_roof_is_missing_from_the_label_with_its_component_count(tmp_path):
    run_dir, _ = make_run(tmp_path, {"002": erased(2, 1), "007": erased(7, 2)})
    rows = {r["name"]: r for r in review.review_labels(run_dir)}
    one, two = rows["002"], rows["007"]
    assert one["flagged"] and two["flagged"]
    assert one["missing_roofs"] == 1 and one["rejected_roofs"] == 0
    assert two["missing_roofs"] == 2
    area = int(truth(7).sum() - erased(7, 2).sum())  # the two erased roofs' pixels
    assert 0.6 * area <= two["missing_px"] <= area
    assert two["reason"] == f"model finds 2 roofs ({two['missing_px']:,} px) the label lacks"
    assert one["reason"].startswith("model finds 1 roof (") and one["reason"].endswith("px) the label lacks")
    assert [r["name"] for r in review.review_labels(run_dir, top=2)] == ["007", "002"]
    assert sum(r["flagged"] for r in rows.values()) == 2


def test_a_roof_the_model_rejects_and_a_shifted_label(tmp_path):
    extra = truth(5).copy()
    extra[68:82, 6:20] = 1  # a roof drawn in a grid cell where image 5 has none
    shifted = np.zeros_like(truth(8))
    shifted[:, 8:] = truth(8)[:, :-8]
    run_dir, _ = make_run(tmp_path, {"005": extra, "008": shifted})
    rows = {r["name"]: r for r in review.review_labels(run_dir)}
    assert rows["005"]["flagged"] and rows["005"]["rejected_roofs"] == 1
    assert "label has 1 roof (" in rows["005"]["reason"] and "the model rejects" in rows["005"]["reason"]
    assert rows["008"]["flagged"] and rows["008"]["reason"].startswith("label looks shifted (8 px right;")


def test_the_review_picture_colours_the_disagreement(tmp_path):
    run_dir, _ = make_run(tmp_path, {"002": erased(2, 1)})
    rev = review.review(run_dir)
    pic = review.review_picture(run_dir, "002", rev["thresholds"])
    assert pic.shape == (SIZE, SIZE, 3) and pic.dtype == np.uint8
    y0, x0, y1, x1 = boxes(2)[0]  # the erased roof
    centre = pic[(y0 + y1) // 2, (x0 + x1) // 2]
    # the erased roof's centre carries magenta (missing); the label outline is yellow somewhere
    assert centre[1] < centre[0] and centre[1] < centre[2]
    assert (pic == overlay.OUTLINE_COLOR).all(axis=2).any()
    assert [c for _, c in overlay.review_legend()][2:] == [overlay.MISSING_COLOR, overlay.REJECTED_COLOR]


def test_overlay_review_layers():
    img = np.full((8, 8, 3), 100, np.uint8)
    label = np.zeros((8, 8), bool)
    label[2:6, 2:6] = True
    prob = np.zeros((8, 8), np.float32)
    prob[2:6, 2:6] = 0.9
    miss = np.zeros((8, 8), bool)
    miss[0, 7] = True
    rej = np.zeros((8, 8), bool)
    rej[3, 3] = True
    out = overlay.overlay_review(img, label, prob, miss, rej, alpha=1.0)
    assert tuple(out[2, 2]) == overlay.OUTLINE_COLOR          # outline on top
    assert tuple(out[3, 3]) == overlay.REJECTED_COLOR         # inside the outline
    assert tuple(out[0, 7]) == overlay.MISSING_COLOR
    assert tuple(out[7, 0]) == (100, 100, 100)                # background untouched
    assert overlay.outline(label).sum() == 12
    with pytest.raises(ValueError, match="height/width differ"):
        overlay.overlay_review(img, label[:4], prob, miss, rej)


def test_cli_text_and_json(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path, {"004": truth(5)})
    assert cli(["data", "review", run_dir.name, "--runs-dir", str(run_dir.parent), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "1 flagged" in out and "12 labelled images reviewed" in out
    first = [line for line in out.splitlines() if line.strip().startswith("1 ")][0]
    assert "!" in first and "004" in first and "another image's label" in first
    assert "... 9 more" in out
    assert cli(["data", "review", str(run_dir), "--runs-dir", str(run_dir.parent), "--format", "json"]) == 0
    rev = json.loads(capsys.readouterr().out)
    assert rev["images"][0]["name"] == "004" and len(rev["images"]) == 12


def one_line_error(capsys, run_dir: Path) -> str:
    assert cli(["data", "review", run_dir.name, "--runs-dir", str(run_dir.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f"run {run_dir.name}" in err and "a finished k-fold run on this dataset" in err
    return err


def test_bad_runs_give_one_line_errors(tmp_path, capsys):
    run_dir, root = make_run(tmp_path)
    cfg = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**cfg, "folds": 0}))
    assert "holdout run" in one_line_error(capsys, run_dir)
    (run_dir / "config.json").write_text(json.dumps(cfg))

    (run_dir / "status.json").write_text(json.dumps({"state": "failed", "error": "RuntimeError: boom"}))
    assert "it is failed (RuntimeError: boom)" in one_line_error(capsys, run_dir)
    (run_dir / "status.json").write_text(json.dumps({"state": "done"}))

    shutil.move(run_dir / "predictions", tmp_path / "preds")
    assert "out-of-fold probability maps are missing" in one_line_error(capsys, run_dir)
    shutil.move(tmp_path / "preds", run_dir / "predictions")
    (run_dir / "per_image.json").write_text("[]")
    assert "no out-of-fold predictions" in one_line_error(capsys, run_dir)


def test_a_moved_or_changed_dataset_is_named(tmp_path, capsys):
    run_dir, root = make_run(tmp_path)
    shutil.move(root, tmp_path / "elsewhere")
    assert "dataset has moved or changed" in one_line_error(capsys, run_dir)
    shutil.move(tmp_path / "elsewhere", root)
    (root / "labels" / "003.png").unlink()
    assert "no label in" in one_line_error(capsys, run_dir)
    write_png(root / "labels" / "003.png", np.zeros((SIZE + 32, SIZE), np.uint8))
    assert "label 003.png is 96x128" in one_line_error(capsys, run_dir)
    with pytest.raises(review.ReviewError, match="trained on .* not on"):
        review.review(run_dir, dataset=tmp_path / "other")


def test_images_the_run_left_out_or_never_saw_are_listed_not_reviewed(tmp_path):
    run_dir, root = make_run(tmp_path)
    write_png(root / "labels" / "new.png", truth(0) * 255)
    write_png(root / "images" / "new.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    (run_dir / "summary.json").write_text(json.dumps({"excluded": {"dup": "label is identical"}}))
    write_png(root / "labels" / "dup.png", truth(1) * 255)
    write_png(root / "images" / "dup.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    rev = review.review(run_dir)
    assert len(rev["images"]) == 12
    assert rev["not_reviewed"]["dup"] == "left out of the run: label is identical"
    assert "no out-of-fold prediction" in rev["not_reviewed"]["new"]


def test_reviewable_runs_are_finished_k_fold_runs_on_the_dataset(tmp_path):
    run_dir, root = make_run(tmp_path, name="five folds")
    holdout = run_dir.parent / "20250101-000001-FPN-resnet18-ef01"
    shutil.copytree(run_dir, holdout)
    cfg = json.loads((holdout / "config.json").read_text())
    (holdout / "config.json").write_text(json.dumps({**cfg, "folds": 0}))
    found = review.reviewable_runs(run_dir.parent, root)
    assert [r["run_id"] for r in found] == [run_dir.name]
    assert found[0]["label"] == "five folds · 5 folds · val Dice 0.900"
    assert review.reviewable_runs(run_dir.parent, tmp_path / "other") == []


def test_scores_of_pure_maps():
    t = {"roof": 0.8, "background": 0.9}
    lab = truth(0)
    perfect = review.score_image(lab, lab.astype(float), t)
    assert perfect["score"] == 1.0 and perfect["reason"] == "label agrees with the model"
    nothing = review.score_image(np.zeros_like(lab), np.zeros(lab.shape), t)
    assert nothing["score"] == 1.0
    assert review.flag_limit([0.0] * 10) == review.MIN_BAD
    assert review.flag_limit([]) == 1.0
    assert review.class_thresholds([(lab, np.full(lab.shape, 0.3))]) == {"roof": 0.5, "background": 0.7}


def test_pixels_without_image_data_are_not_disputed(tmp_path):
    run_dir, root = make_run(tmp_path, {"002": erased(2, 1)})
    y0, x0, y1, x1 = boxes(2)[0]  # the erased roof lies under a redacted box (alpha 0), as in DIDA
    rgba = np.array(Image.open(root / "images" / "002.png").convert("RGBA"))
    rgba[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4, 3] = 0
    write_png(root / "images" / "002.png", rgba)
    row = next(r for r in review.review_labels(run_dir) if r["name"] == "002")
    assert not row["flagged"] and row["missing_roofs"] == 0 and row["score"] > 0.9
