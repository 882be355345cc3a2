"""Tests for roofseg.store.compare: the numbers and pictures the Compare and Runs pages show."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakes import make_kfold_run, seed_run, A_FOLDS, fake_run, images_a, tiny_config
from roofseg.store import compare
from roofseg.store import results
from roofseg.store import runs


@pytest.fixture(scope="module")
def two(finished_runs) -> list[Path]:
    return runs.list_runs(finished_runs)


def test_labels_are_names_or_ids_and_unique(tmp_path, demo64):
    a, b = make_kfold_run(tmp_path, demo64, "same"), make_kfold_run(tmp_path / "x", demo64, "same")
    c = tmp_path / "unnamed"
    c.mkdir()
    tiny_config(demo64).save(c / "config.json")
    assert compare.labels([a, b, c]) == [f"same ({a.name})", f"same ({b.name})", "unnamed"]


def test_config_diff_shows_only_differing_fields(two):
    diff = compare.config_diff(two)
    assert list(diff.index) == ["loss"]  # the fixture's two runs differ in nothing else
    assert list(diff.columns) == compare.labels(two)
    assert sorted(diff.loc["loss"]) == ["bce_dice", "dice"]
    assert compare.config_diff(two[:1] * 2).empty


def test_config_diff_lists_bookkeeping_fields_last(tmp_path, demo64):
    a = make_kfold_run(tmp_path, demo64, "first")
    b = make_kfold_run(tmp_path / "b", demo64, "second")
    cfg = json.loads((b / "config.json").read_text())
    cfg.update(lr=0.01, notes="higher lr")
    (b / "config.json").write_text(json.dumps(cfg))
    diff = compare.config_diff([a, b])
    assert list(diff.index) == ["lr", "name", "notes"]
    assert list(diff.loc["lr"]) == ["0.001", "0.01"] and diff.loc["notes", "first"] == "(empty)"


def test_final_metrics_and_best(two, tmp_path, demo64):
    k = make_kfold_run(tmp_path, demo64)
    df = compare.final_metrics([*two, k])
    assert list(df.index) == compare.labels([*two, k])
    assert list(df["status"]) == ["done"] * 3 and list(df["folds"]) == [1, 1, 3]
    for d, (_, row) in zip(two, df.iterrows()):
        s = json.loads((d / "summary.json").read_text())
        assert row["val_dice"] == pytest.approx(s["val_dice"]) and np.isnan(row["val_dice_std"])
    assert df.loc["kfold-fake", "val_dice_std"] == pytest.approx(0.1)
    best = compare.best_per_column(df)
    assert best["val_dice"] == [df["val_dice"].idxmax()]
    assert best["minutes"] == [df["minutes"].idxmin()]  # time: fewer is better
    assert "val_recall" in best  # the real runs have it; the fake run's NaN is skipped


def test_curves_holdout_has_no_band(two):
    df = compare.curves(two, "val_dice")
    assert set(df["label"]) == set(compare.labels(two))
    assert list(df.groupby("run_id", sort=False)["epoch"].apply(list)) == [[1, 2], [1, 2]]
    assert (df["n_folds"] == 1).all() and df["std"].isna().all() and df["lo"].isna().all()
    rows, _ = runs.read_metrics(two[0])
    assert list(df[df["run_id"] == two[0].name]["value"]) == pytest.approx([r["val_dice"] for r in rows])
    assert "val_dice" in compare.curve_metrics(two) and "epoch" not in compare.curve_metrics(two)


def test_curves_kfold_mean_and_std_band(tmp_path, demo64, two):
    k = make_kfold_run(tmp_path, demo64)
    df = compare.curves([k, two[0]], "val_dice")
    kf = df[df["run_id"] == k.name].reset_index(drop=True)
    assert df["run_id"].iloc[0] == k.name  # runs keep the order given
    assert list(kf["epoch"]) == [1, 2] and list(kf["n_folds"]) == [3, 3]
    assert list(kf["value"]) == pytest.approx([0.2, 0.3])
    assert list(kf["std"]) == pytest.approx([0.1, 0.1])
    assert list(kf["lo"]) == pytest.approx([0.1, 0.2]) and list(kf["hi"]) == pytest.approx([0.3, 0.4])
    assert compare.curves([k], "no_such_metric").empty


def test_image_table_one_row_per_shared_val_image(two):
    df = compare.image_table(two)
    per = [{r["name"]: r["dice"] for r in runs.read_per_image(d)} for d in two]
    assert sorted(df["name"]) == sorted(per[0])  # same seed and split: the same val images
    assert len(df) == len(set(df["name"])) == len(per[0])
    for lab, p in zip(compare.labels(two), per):
        assert list(df[f"dice {lab}"]) == pytest.approx([p[n] for n in df["name"]])
    assert df["worst_dice"].tolist() == pytest.approx(df[[f"dice {lab}" for lab in compare.labels(two)]].min(axis=1).tolist())
    assert df["disagreement"].between(0, 1).all()
    assert df["disagreement"].is_monotonic_decreasing
    assert compare.image_table(two, "worst_dice")["worst_dice"].is_monotonic_increasing
    with pytest.raises(ValueError, match="sort must be one of"):
        compare.image_table(two, "best")


def test_image_table_is_empty_without_shared_predictions(two, tmp_path, demo64):
    assert compare.image_table([two[0], make_kfold_run(tmp_path, demo64)]).empty


def test_panels_shapes_and_dice(two, demo64):
    name = compare.image_table(two)["name"].iloc[0]
    p = compare.panels(two, None, name, alpha=0.6)  # None: the runs' own dataset
    assert p["name"] == name
    assert p["image"].shape == (64, 64, 3) and p["image"].dtype == np.uint8
    assert p["ground_truth"].shape == (64, 64, 3)
    per = {r["name"]: r["dice"] for r in runs.read_per_image(two[0])}
    assert [r["label"] for r in p["runs"]] == compare.labels(two)
    for r in p["runs"]:
        assert r["overlay"].shape == (64, 64, 3) and r["error"] is None
    assert p["runs"][0]["dice"] == pytest.approx(per[name])
    assert not np.array_equal(p["runs"][0]["overlay"], p["image"])  # something is coloured


def test_panels_without_a_prediction_says_why(two, tmp_path, demo64):
    name = compare.image_table(two)["name"].iloc[0]
    p = compare.panels([two[0], make_kfold_run(tmp_path, demo64)], demo64, name)
    assert p["runs"][0]["overlay"] is not None
    assert p["runs"][1]["overlay"] is None and "no validation prediction" in p["runs"][1]["error"]
    assert np.isnan(p["runs"][1]["dice"])
    with pytest.raises(ValueError, match="no image named"):
        compare.panels(two, demo64, "not-an-image")


def test_select_runs_filters_and_sorts(finished_runs, tmp_path, demo64):
    rdir = tmp_path / "runs"
    shutil.copytree(finished_runs, rdir, ignore=shutil.ignore_patterns("*.pt", "predictions"))
    make_kfold_run(rdir, demo64)
    table = results.rebuild(rdir)
    assert len(compare.select_runs(table)) == 3
    only = compare.select_runs(table, {"loss": ["dice"], "status": []})
    assert len(only) == 1 and only["loss"].iloc[0] == "dice"
    by = compare.select_runs(table, sort_by="val_dice", ascending=False)
    assert by["val_dice"].is_monotonic_decreasing
    assert pd.api.types.is_datetime64_any_dtype(by["created"])


def test_across_seeds_pools_runs_that_differ_only_in_seed(tmp_path, demo64):
    a = [seed_run(tmp_path, demo64, s, v) for s, v in ((0, 0.70), (1, 0.80), (2, 0.90))]
    b = [seed_run(tmp_path, demo64, s, v, loss="dice") for s, v in ((0, 0.60), (1, 0.64))]
    lone = seed_run(tmp_path / "x", demo64, 5, 0.5, loss="focal")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    tiny_config(demo64, seed=9).save(unfinished / "config.json")  # no summary.json: left out
    df = compare.across_seeds([*a, *b, lone, unfinished]).set_index("config")
    assert list(df.index) == ["loss=bce_dice", "loss=dice", "loss=focal"]
    assert list(df["runs"]) == [3, 2, 1] and df.loc["loss=bce_dice", "seeds"] == "0, 1, 2"
    assert df.loc["loss=bce_dice", "val_dice"] == pytest.approx(0.80)
    assert df.loc["loss=bce_dice", "val_dice_std"] == pytest.approx(0.10)  # sample std over seeds
    assert df.loc["loss=dice", "val_iou"] == pytest.approx(0.31)
    assert np.isnan(df.loc["loss=focal", "val_dice_std"])  # one run: no spread to show
    assert list(compare.across_seeds(a)["config"]) == ["all runs"]


# ---------------------------------------------------------------------------------------------
# is the difference real? (the Compare page's paired comparisons)
def test_seed_groups_keep_unfinished_runs_and_the_order(tmp_path, demo64):
    a = [seed_run(tmp_path, demo64, s, 0.7) for s in (0, 1)]
    b = seed_run(tmp_path, demo64, 0, 0.6, loss="dice")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    tiny_config(demo64, seed=9).save(unfinished / "config.json")  # no summary.json: still a seed of a
    assert compare.seed_groups([b, a[0], unfinished, a[1]]) == [[b], [a[0], unfinished, a[1]]]


def test_paired_comparisons_pool_seeds_per_side_against_the_baseline(tmp_path):
    rd = tmp_path / "runs"
    a = [fake_run(rd, f"A{s}", A_FOLDS, seed=s, image_dice=images_a(s)) for s in (0, 1)]
    b = [fake_run(rd, f"B{s}", np.add(A_FOLDS, 0.03), seed=s, loss="dice", image_dice=images_a(s) + 0.03)
         for s in (0, 1)]
    c = fake_run(rd, "C", A_FOLDS[:2], seed=0, loss="focal", state="failed")
    [vs_b, vs_c] = compare.paired_comparisons([*a, *b, c], a[1])
    assert vs_b["a"] == ["A1", "A0"] and vs_b["b"] == ["B0", "B1"]  # the baseline first
    assert vs_b["a_label"] == "A1 + 1 more (seeds 1, 0)" and vs_b["b_label"] == "B0 + 1 more (seeds 0, 1)"
    assert vs_b["dirs"] == [str(d) for d in (a[1], a[0], *b)] and vs_b["error"] is None
    rep = vs_b["report"]
    assert rep["dice"]["verdict"].startswith("B beats A by 0.030 Dice") and rep["dice"]["n"] == 10
    table = vs_b["table"].set_index("compared")
    assert list(table.index) == ["Dice, fold by fold", "IoU, fold by fold", "Dice per image"]
    assert table.loc["Dice, fold by fold", "B wins"] == 10 and table.loc["Dice, fold by fold", "A wins"] == 0
    assert table.loc["Dice, fold by fold", "B − A"] == pytest.approx(0.03)
    assert table.loc["Dice per image", "test"] == "Wilcoxon signed-rank"
    # a failed run is said in a sentence, and what it recorded is used
    assert vs_c["unfinished"] == ["B run C is failed (CUDA out of memory): compared on what it "
                                  "recorded before it stopped."]
    assert vs_c["report"]["dice"]["n"] == 2 and vs_c["report"]["images"]["paired"] is False
    # a corrupt file: one line, no report; seeds of the baseline alone: nothing to compare
    (c / "config.json").write_text("{")
    [_, broken] = compare.paired_comparisons([*a, *b, c], a[0])
    assert broken["report"] is None and "config.json is not valid JSON" in broken["error"]
    assert broken["table"].empty
    assert compare.paired_comparisons(a, a[0]) == []
    with pytest.raises(ValueError, match="not one of the runs"):
        compare.paired_comparisons(a, b[0])


def test_cache_paths_cover_what_the_readers_read(two):
    from roofseg.store.fingerprint import fingerprint
    paths = compare.cache_paths(two)
    assert {p.name for p in paths} >= {"config.json", "status.json", "metrics.jsonl", "summary.json",
                                       "per_image.json", "val"}
    assert all(any(p.is_relative_to(d) for d in two) for p in paths)
    assert fingerprint(*paths) == fingerprint(*compare.cache_paths(two))
