"""AppTest of the Compare page on the two finished runs (and a hand-made k-fold run)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from roofseg.store import compare
from roofseg.store import runs
from test_compare import make_kfold_run

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "compare.py")


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
    tables = [df.value for df in at.dataframe]
    assert any("loss" in t.index for t in tables)  # the config diff names the differing field
    n_images = len(compare.image_table(dirs))
    images = at.get("image")
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
    assert len(at.get("image")) == 2 + len(dirs)


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
    from test_compare import _seed_run
    runs_dir = tmp_path / "runs"
    seeded = [_seed_run(runs_dir, demo64, s, v) for s, v in ((0, 0.6), (1, 0.8))]
    at = open_compare(runs_dir, demo64, [d.name for d in seeded], monkeypatch)
    assert not at.exception, at.exception
    assert "Across seeds" in [h.value for h in at.subheader]
    [pooled] = [df.value for df in at.dataframe if "seeds" in df.value.columns]
    assert pooled.iloc[0]["seeds"] == "0, 1" and pooled.iloc[0]["val_dice"] == pytest.approx(0.7)
    # runs that differ in more than their seed: no such section
    dirs = runs.list_runs(finished_runs)
    at = open_compare(finished_runs, demo64, [d.name for d in dirs], monkeypatch)
    assert "Across seeds" not in [h.value for h in at.subheader]
