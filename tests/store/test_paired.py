"""Tests for roofseg.store.paired and `python -m roofseg compare`: paired comparisons of runs.

Every case is a hand-made run folder (config.json, status.json, metrics.jsonl, per_image.json
written directly): the numbers are known, so the verdicts are too. No training.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from roofseg.cli import main as cli
from roofseg.store import paired, runs
from roofseg.store.runs import RunError
from fakes import A_FOLDS, NAMES, fake_run, images_a

@pytest.fixture
def win(tmp_path):
    """B better than A on every fold by 0.03 ± 0.003, and on every image by 0.03 but img07."""
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS, image_dice=images_a())
    b_img = images_a() + 0.03
    b_img[7] -= 0.43  # one image where B fails badly: the top disagreement
    b = fake_run(rd, "B", np.add(A_FOLDS, [0.032, 0.027, 0.031, 0.029, 0.033]), image_dice=b_img)
    return rd, a, b


# ---------------------------------------------------------------------------------------------
# fold by fold
def test_clear_win_is_a_win_with_an_interval_above_zero(win):
    _, a, b = win
    assert paired.pairing(a, b)[0]
    r = paired.compare_runs([a], [b])
    assert r["paired"] and r["n"] == 5 and r["wins"] == {"a": 0, "b": 5, "tie": 0}
    assert r["ci_low"] > 0 and r["diff"] == pytest.approx(0.0304)
    assert r["verdict"].startswith("B beats A by 0.030 Dice [") and r["verdict"].endswith("over 5 folds")
    # 5 pairs: Wilcoxon cannot reach 0.05; the exact sign-flip p is the smallest possible, 2/32
    assert r["test"] == "sign-flip" and r["p_value"] == pytest.approx(0.0625)
    assert "Wilcoxon cannot reach p<0.05" in r["test_why"]
    iou = paired.compare_runs(a, b, metric="val_iou")
    assert iou["label"] == "IoU" and iou["ci_low"] > 0 and iou["verdict"].startswith("B beats A by")
    flipped = paired.compare_runs(b, a)
    assert flipped["verdict"].startswith("A beats B by 0.030 Dice [") and flipped["ci_high"] < 0


def test_tie_is_no_difference(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS)
    b = fake_run(rd, "B", np.add(A_FOLDS, [0.02, -0.02, 0.01, -0.01, 0.0]))
    r = paired.compare_runs(a, b)
    assert r["ci_low"] < 0 < r["ci_high"] and abs(r["diff"]) < 1e-9
    assert r["verdict"].startswith("no difference this data can show (")
    assert r["wins"] == {"a": 2, "b": 2, "tie": 1}


def test_one_noisy_fold_leaves_the_interval_across_zero(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS)
    b = fake_run(rd, "B", np.add(A_FOLDS, [0.010, 0.012, 0.008, 0.011, -0.10]))
    r = paired.compare_runs(a, b)
    assert r["wins"] == {"a": 1, "b": 4, "tie": 0}
    assert r["ci_low"] < 0 < r["ci_high"]
    assert r["verdict"].startswith("no difference this data can show (−0.012 [")


def test_seeds_pair_seed_by_seed_and_use_wilcoxon(tmp_path):
    rd = tmp_path / "runs"
    rng = np.random.default_rng(1)
    a = [fake_run(rd, f"A{s}", np.add(A_FOLDS, rng.normal(0, 0.01, 5)), seed=s) for s in (0, 1)]
    b = [fake_run(rd, f"B{s}", [v + 0.03 + rng.normal(0, 0.004) for v in _finals(a_dir)], seed=s)
         for s, a_dir in zip((0, 1), a)]
    r = paired.compare_runs(a, b)
    assert r["n"] == 10 and {(p["run_a"], p["run_b"]) for p in r["pairs"]} == {("A0", "B0"), ("A1", "B1")}
    assert r["test"] == "wilcoxon" and r["p_value"] < 0.01
    assert r["diff"] == pytest.approx(0.03, abs=0.003) and r["ci_low"] > 0
    assert r["verdict"].startswith("B beats A by 0.0") and r["verdict"].endswith("over 5 folds × 2 seeds")
    # seeds that do not match across the sides pair nothing fold by fold
    c = fake_run(rd, "C5", A_FOLDS, seed=5)
    none = paired.compare_runs(a, [c])
    assert not none["paired"] and "no seed in common" in none["verdict"]


def _finals(run_dir):
    rows, _ = runs.read_metrics(run_dir)
    return [max((r for r in rows if r["fold"] == f), key=lambda r: r["epoch"])["val_dice"] for f in range(5)]


def test_best_epoch_reads_the_best_dice_epoch(tmp_path):
    rd = tmp_path / "runs"
    a, b = fake_run(rd, "A", A_FOLDS), fake_run(rd, "B", A_FOLDS)
    for f in range(5):  # B's folds peak at epoch 2 (+0.2), then fall back at epoch 3 (the same as A)
        runs.append_metrics(b, {"fold": f, "epoch": 2, "val_dice": 0.9, "val_iou": 0.8})
    assert paired.compare_runs(a, b, epoch="last")["diff"] == pytest.approx(0.0)
    best = paired.compare_runs(a, b, epoch="best")
    assert best["diff"] == pytest.approx(0.9 - np.mean(A_FOLDS))
    assert paired.compare_runs(a, b, "val_iou", epoch="best")["mean_b"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="epoch must be"):
        paired.compare_runs(a, b, epoch="middle")


# ---------------------------------------------------------------------------------------------
# what cannot be paired, and why
def test_different_data_pairs_nothing(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS, image_dice=images_a())
    b = fake_run(rd, "B", A_FOLDS, data="other", image_dice=images_a())
    ok, reason = paired.pairing(a, b)
    assert not ok and reason.startswith("different data")
    r = paired.compare_runs(a, b)
    assert not r["paired"] and r["n"] == 0 and "different data" in r["verdict"]
    im = paired.compare_images(a, b)
    assert not im["paired"] and im["verdict"].startswith("cannot compare per image: different data")


def test_different_k_is_compared_per_image_only(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS, image_dice=images_a())
    b = fake_run(rd, "B", A_FOLDS[:3], folds=3, image_dice=images_a() + 0.02)
    ok, reason = paired.pairing(a, b)
    assert not ok and "different k (A: 5 folds, B: 3 folds)" in reason and "per image only" in reason
    assert not paired.compare_runs(a, b)["paired"]
    im = paired.compare_images(a, b)
    assert im["paired"] and im["n"] == 25 and im["verdict"].startswith("B beats A by 0.020 Dice per image")


def test_different_seed_pairs_per_image_only_and_says_why(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS, image_dice=images_a())
    b = fake_run(rd, "B", A_FOLDS, seed=1, image_dice=images_a())
    ok, reason = paired.pairing(a, b)
    assert not ok and "different split seed (A: 0, B: 1" in reason
    assert "the seed also draws the folds" in reason and reason.endswith("compared per image only")
    assert paired.compare_images(a, b)["paired"]


def test_different_images_and_moved_folds_are_caught(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS, image_dice=images_a())
    b = fake_run(rd, "B", A_FOLDS, image_dice=images_a()[:24], names=NAMES[:24], exclude_flagged=False)
    ok, reason = paired.pairing(a, b)
    assert not ok and "different labelled images (A: 25, B: 24; only in A: img24" in reason
    c = fake_run(rd, "C", A_FOLDS, image_dice=images_a(), names=NAMES[::-1])  # same names, other folds
    ok, reason = paired.pairing(a, c)
    assert not ok and "validate in different folds" in reason


# ---------------------------------------------------------------------------------------------
# per image
def test_per_image_comparison_lists_the_biggest_disagreements(win):
    _, a, b = win
    im = paired.compare_images(a, b, top=3)
    assert im["n"] == 25 and im["test"] == "wilcoxon" and im["wins"] == {"a": 1, "b": 24, "tie": 0}
    top = im["disagree"]
    assert len(top) == 3 and top[0]["name"] == "img07" and top[0]["diff"] == pytest.approx(-0.40)
    assert top[0]["a"] == pytest.approx(images_a()[7]) and top[0]["b"] == pytest.approx(images_a()[7] - 0.40)
    # 24 images +0.03, one -0.40: the ranks say B, the mean is dragged down to an uncertain gap
    assert im["p_value"] < 0.001 and im["ci_low"] < 0 < im["ci_high"]
    assert im["verdict"].startswith("no difference this data can show (+0.013 [")
    assert "B wins 24 of 25 images (Wilcoxon p<0.001), but a few large differences" in im["verdict"]


def test_per_image_matches_by_name_only_where_both_have_it(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS, image_dice=images_a(), folds=0)  # holdout-like: only 5 images
    b = fake_run(rd, "B", A_FOLDS, image_dice=images_a() + 0.01)
    rows = json.loads((a / "per_image.json").read_text())[:5]
    runs.write_json(a / "per_image.json", rows)
    im = paired.compare_images(a, b)
    assert im["n"] == 5 and "20 image(s) scored by only one side left out" in im["notes"]


# ---------------------------------------------------------------------------------------------
# unfinished, missing and broken runs
def test_failed_run_is_noted_and_what_exists_is_used(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS, image_dice=images_a())
    b = fake_run(rd, "B", np.add(A_FOLDS[:3], 0.03), state="failed")  # died in fold 3; no per_image.json
    r = paired.compare_runs(a, b)
    assert r["states"] == {"A": "done", "B": "failed"} and r["n"] == 3
    assert any(n.startswith("B run B is failed: CUDA out of memory") for n in r["notes"])
    assert r["verdict"].endswith("(partly from unfinished runs)")
    assert any("fold 3 only in A" in n for n in r["notes"])
    im = paired.compare_images(a, b)
    assert not im["paired"] and any("no per_image.json yet" in n for n in im["notes"])


def test_running_run_reports_the_epoch_it_is_at(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS)
    b = fake_run(rd, "B", A_FOLDS[:1], state="running", epochs_done=2)
    r = paired.compare_runs(a, b)
    assert r["n"] == 1 and "one pair gives no interval" in r["verdict"]
    assert "B run B: fold 0 is at epoch 2 of 3" in r["notes"]


def test_missing_and_corrupt_files_are_one_line_errors(tmp_path):
    rd = tmp_path / "runs"
    a = fake_run(rd, "A", A_FOLDS, image_dice=images_a())
    b = fake_run(rd, "B", A_FOLDS, image_dice=images_a())
    with pytest.raises(RunError, match="no run folder"):
        paired.compare_runs(a, rd / "nope")
    (b / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(RunError, match=r"^run B: metrics.jsonl is corrupt"):
        paired.compare_runs(a, b)
    (b / "metrics.jsonl").unlink()
    with pytest.raises(RunError, match=r"^run B: metrics.jsonl is missing$"):
        paired.compare_runs(a, b)
    (b / "per_image.json").write_text('[{"name": "img00", "di')
    with pytest.raises(RunError, match=r"^run B: per_image.json is not valid JSON"):
        paired.compare_images(a, b)
    (b / "config.json").write_text("[]")
    with pytest.raises(RunError, match=r"^run B: config.json is not a JSON object"):
        paired.pairing(a, b)


# ---------------------------------------------------------------------------------------------
# the command line
def run_cli(capsys, *argv):
    try:
        rc = cli.main([str(x) for x in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_text(win, capsys):
    rd, _, _ = win
    rc, out, err = run_cli(capsys, "compare", "A", "B", "--runs-dir", rd)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "A: A (done)" and lines[1] == "B: B (done)"
    assert lines[2].startswith("pairing: same data (") and lines[2].endswith("paired fold by fold")
    assert any(line.startswith("Dice, last epoch of each fold: B beats A by 0.030 Dice [") for line in lines)
    assert any(line.startswith("IoU, last epoch of each fold: B beats A by") for line in lines)
    assert "  test: exact sign-flip p=0.0625. n=5 pairs: Wilcoxon cannot reach p<0.05 below 6" in out
    assert "wins: B 5, A 0, ties 0" in out
    assert "  most disagreement:" in out and "    img07" in out and "−0.400" in out


def test_cli_json_and_several_runs(win, capsys):
    rd, _, _ = win
    fake_run(rd, "C", A_FOLDS, seed=3, image_dice=images_a())
    rc, out, err = run_cli(capsys, "compare", "A", "B", "C", "--runs-dir", rd, "--format", "json",
                           "--epoch", "best")
    assert rc == 0, err
    rep = json.loads(out)  # strict JSON: NaN would not parse in other languages; none is written
    assert "NaN" not in out and rep["epoch"] == "best"
    ab, ac = rep["comparisons"]
    assert (ab["a"], ab["b"], ac["a"], ac["b"]) == (["A"], ["B"], ["A"], ["C"])
    assert ab["dice"]["ci_low"] > 0 and ab["images"]["disagree"][0]["name"] == "img07"
    assert not ac["dice"]["paired"] and ac["dice"]["ci_low"] is None
    assert "different split seed" in ac["dice"]["pairing"] and ac["images"]["paired"]


def test_cli_sides_with_several_seeds(tmp_path, capsys):
    rd = tmp_path / "runs"
    for s in (0, 1):
        fake_run(rd, f"A{s}", A_FOLDS, seed=s, image_dice=images_a())
        fake_run(rd, f"B{s}", np.add(A_FOLDS, [0.01, -0.01, 0.0, 0.005, -0.005]), seed=s,
                 image_dice=images_a())
    rc, out, err = run_cli(capsys, "compare", "--a", "A0", "A1", "--b", "B0", "B1", "--runs-dir", rd)
    assert rc == 0, err
    assert "A: A0 (done), A1 (done)" in out
    assert "Dice, last epoch of each fold: no difference this data can show (" in out
    assert "over 5 folds × 2 seeds" in out and "test: Wilcoxon signed-rank" in out


def test_cli_bad_input_is_one_error_line(win, capsys):
    rd, _, _ = win
    for argv, text in ((["A", "nope"], "no run 'nope'"), (["A"], "give two runs"),
                       (["A", "--a", "B", "--b", "A"], "together")):
        rc, out, err = run_cli(capsys, "compare", *argv, "--runs-dir", rd)
        assert rc == 2 and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and text in err, err
    (rd / "B" / "per_image.json").write_text("{")
    rc, out, err = run_cli(capsys, "compare", "A", "B", "--runs-dir", rd)
    assert rc == 2 and err.strip() == "error: run B: per_image.json is not valid JSON (corrupt or half-written)"


def test_cli_text_for_runs_that_pair_only_per_image(win, capsys):
    rd, _, _ = win
    fake_run(rd, "S1", A_FOLDS, seed=1, image_dice=images_a() - 0.05, state="cancelled")
    rc, out, err = run_cli(capsys, "compare", "A", "S1", "--runs-dir", rd)
    assert rc == 0, err
    assert "B: S1 (cancelled)" in out
    assert "pairing: different split seed (A: 0, B: 1; the seed also draws the folds)" in out
    assert "Dice and IoU fold by fold: not compared (see pairing)" in out
    assert "Dice per image (out of fold): A beats B by 0.050 Dice per image [" in out
    assert "note: B run S1 is cancelled; using what it recorded so far" in out
