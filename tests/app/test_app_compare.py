"""AppTest of the Compare page on the two finished runs (and hand-made k-fold, seeded and failed runs)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from fakes import make_kfold_run, seed_run, A_FOLDS, fake_run, images_a, tiny_config
from roofseg.store import compare
from roofseg.store import paired
from roofseg.store import runs

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "compare.py")


def open_compare(runs_dir, data, selected, monkeypatch) -> AppTest:
    monkeypatch.setenv("ROOFSEG_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("ROOFSEG_DATA", str(data))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["selected_runs"] = selected
    return at.run()


def charts(at: AppTest) -> list:
    return list(at.get("arrow_vega_lite_chart")) + list(at.get("vega_lite_chart"))


def chart_data(chart) -> pd.DataFrame:
    """The rows a chart was given: Streamlit ships them as Arrow datasets beside the spec."""
    parts = [ds.data.data for ds in chart.proto.datasets] + [chart.proto.data.data]
    return pd.concat([dataframe_util.convert_arrow_bytes_to_pandas_df(b) for b in parts if b])


def validation_images(at: AppTest) -> list:
    """The pictures of the Validation images section: all but those of "Is the difference real?"."""
    paired_ = [id(im) for e in at.expander if e.label.startswith("Where they disagree") for im in e.get("image")]
    return [im for im in at.get("image") if id(im) not in paired_]


def test_needs_two_runs(finished_runs, demo64, monkeypatch):
    at = open_compare(finished_runs, demo64, [], monkeypatch)
    assert not at.exception
    assert "at least two" in at.info[0].value and not charts(at)


def test_two_runs_render_curves_metrics_diff_and_overlays(finished_runs, demo64, monkeypatch):
    dirs = runs.list_runs(finished_runs)
    at = open_compare(finished_runs, demo64, [d.name for d in dirs], monkeypatch)
    assert not at.exception, at.exception
    assert sorted(at.multiselect(key="compare_runs").value) == sorted(d.name for d in dirs)
    assert charts(at)  # the learning-curve chart (vega-lite)
    report = at.get("download_button")
    assert [b.proto.label for b in report] == ["Download report (2 runs, the first as reference)"]
    assert not report[0].proto.disabled
    tables = [df.value for df in at.dataframe]
    assert any("loss" in t.index for t in tables)  # the config diff names the differing field
    n_images = len(compare.image_table(dirs))
    images = validation_images(at)
    shown = min(n_images, at.slider(key="compare_per_page").value)
    assert len(images) == shown * (2 + len(dirs))  # image | ground truth | one per run
    captions = [c for im in images for c in im.captions]
    assert sum("Dice" in c for c in captions) == shown * len(dirs)
    # other orders, metrics and opacities redraw without errors
    at.radio(key="compare_sort").set_value("worst Dice").run()
    at.selectbox(key="compare_metric").set_value("train_loss").run()
    at.slider(key="compare_alpha").set_value(0.9).run()
    at.slider(key="compare_per_page").set_value(1).run()
    assert not at.exception, at.exception
    assert len(validation_images(at)) == 2 + len(dirs)


def test_the_curves_zoom_on_shift_wheel_only_with_whole_epochs(finished_runs, demo64, monkeypatch):
    """Issue #14: a plain wheel scrolls the page (zoom needs shift), ticks are whole epochs and the
    axis spans the logged epochs (no nice rounding down to 0 or below)."""
    dirs = runs.list_runs(finished_runs)
    at = open_compare(finished_runs, demo64, [d.name for d in dirs], monkeypatch)
    spec = json.loads(charts(at)[0].proto.spec)
    [zoom] = [p for p in spec["params"] if p.get("bind") == "scales"]
    assert zoom["select"]["zoom"] == "wheel![event.shiftKey]" and zoom["select"]["encodings"] == ["x"]
    epochs = chart_data(charts(at)[0])["epoch"]
    for layer in spec["layer"]:
        x = layer["encoding"]["x"]
        assert x["axis"]["format"] == "d" and x["axis"]["tickMinStep"] == 1
        assert x["scale"]["domain"] == [epochs.min(), epochs.max()] and x["scale"]["nice"] is False


def test_kfold_run_gets_a_band(finished_runs, demo64, tmp_path, monkeypatch):
    rdir = tmp_path / "runs"
    rdir.mkdir()
    real = runs.list_runs(finished_runs)[0]
    (rdir / real.name).symlink_to(real, target_is_directory=True)
    k = make_kfold_run(rdir, demo64)
    at = open_compare(rdir, demo64, [real.name, k.name], monkeypatch)
    assert not at.exception, at.exception
    chart = charts(at)[0]
    spec = json.loads(chart.proto.spec)
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert "area" in marks and "line" in marks
    rows = chart_data(chart)
    band = rows[rows["label"] == "kfold-fake"]
    assert list(band["lo"]) == pytest.approx([0.1, 0.2]) and list(band["hi"]) == pytest.approx([0.3, 0.4])
    assert rows[rows["label"] != "kfold-fake"]["lo"].isna().all()  # holdout: no band
    assert any("share no validation image" in i.value for i in at.info)


def test_runs_that_differ_only_in_seed_show_mean_and_std(finished_runs, demo64, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    seeded = [seed_run(runs_dir, demo64, s, v) for s, v in ((0, 0.6), (1, 0.8))]
    at = open_compare(runs_dir, demo64, [d.name for d in seeded], monkeypatch)
    assert not at.exception, at.exception
    assert "Across seeds" in [h.value for h in at.subheader]
    [pooled] = [df.value for df in at.dataframe if "seeds" in df.value.columns]
    assert pooled.iloc[0]["seeds"] == "0, 1" and pooled.iloc[0]["val_dice"] == pytest.approx(0.7)
    # runs that differ in more than their seed: no such section
    dirs = runs.list_runs(finished_runs)
    at = open_compare(finished_runs, demo64, [d.name for d in dirs], monkeypatch)
    assert "Across seeds" not in [h.value for h in at.subheader]


def markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def test_is_the_difference_real_shows_verdicts_and_the_tests(finished_runs, demo64, monkeypatch):
    """Issue #12: the first run is the baseline; the other is compared with it, Dice and IoU fold by
    fold (one holdout split here) and per image, each verdict with the test used and why."""
    dirs = runs.list_runs(finished_runs)
    at = open_compare(finished_runs, demo64, [d.name for d in dirs], monkeypatch)
    assert not at.exception, at.exception
    assert "Is the difference real?" in [h.value for h in at.subheader]
    assert at.selectbox(key="compare_baseline").value == dirs[0].name
    rep = paired.report(dirs[0], dirs[1:], epoch="last", top=3)
    text = markdown_text(at)
    for key in ("dice", "iou", "images"):
        assert rep[key]["verdict"] in text, rep[key]["verdict"]
        assert rep[key]["test_why"] in text, rep[key]["test_why"]
    assert "one pair gives no interval" in rep["dice"]["verdict"]  # one holdout split: said plainly
    [table] = [df.value for df in at.dataframe if "B wins" in df.value.columns]
    assert table["compared"].tolist()[:2] == ["Dice, fold by fold", "IoU, fold by fold"]
    # the images where the two disagree most, drawn as image | ground truth | A | B
    [where] = [e for e in at.expander if e.label.startswith("Where they disagree")]
    captions = [c for im in where.get("image") for c in im.captions]
    assert any(c.startswith("A · ") for c in captions) and any(c.startswith("B · ") for c in captions)
    # the other run as baseline, and the best epoch: redrawn without errors, sides swapped
    at.selectbox(key="compare_baseline").set_value(dirs[1].name).run()
    at.toggle(key="compare_paired_best").set_value(True).run()
    assert not at.exception, at.exception
    swapped = paired.report(dirs[1], dirs[:1], epoch="best", top=3)
    assert swapped["dice"]["verdict"] in markdown_text(at)


def test_a_failed_run_is_said_not_a_traceback(finished_runs, demo64, tmp_path, monkeypatch):
    rdir = tmp_path / "runs"
    rdir.mkdir()
    real = runs.list_runs(finished_runs)[0]
    (rdir / real.name).symlink_to(real, target_is_directory=True)
    broken = runs.create_run(tiny_config(demo64, loss="dice", name="crashed"), rdir)
    runs.set_status(broken, state="failed", error="CUDA out of memory")
    at = open_compare(rdir, demo64, [real.name, broken.name], monkeypatch)
    assert not at.exception, at.exception
    assert any("crashed is failed (CUDA out of memory)" in w.value for w in at.warning)
    # a run folder whose config.json is corrupt: one line naming the file
    (broken / "config.json").write_text("{not json")
    at.run()
    assert not at.exception, at.exception
    assert any("config.json is not valid JSON" in e.value for e in at.error)


def test_seeds_of_the_baseline_pool_into_side_a(tmp_path, demo64, monkeypatch):
    rd = tmp_path / "runs"
    a = [fake_run(rd, f"A{s}", A_FOLDS, seed=s, image_dice=images_a(s)) for s in (0, 1)]
    b = fake_run(rd, "B", [x + 0.03 for x in A_FOLDS], seed=0, loss="dice", image_dice=images_a() + 0.03)
    at = open_compare(rd, demo64, [d.name for d in (*a, b)], monkeypatch)
    assert not at.exception, at.exception
    text = markdown_text(at)
    assert "**B:** B" in text and "**A:** A0 + 1 more (seeds 0, 1)" in text
    assert "B beats A by" in text  # 5 folds of seed 0 paired; seed 1 has no partner
