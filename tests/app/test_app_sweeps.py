"""The Sweeps page, driven with Streamlit's AppTest: a sweep made with the library shows its trials
table and plots; a sweep defined with the sidebar widgets starts real background workers."""
from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from fakes import tiny_config
from roofseg.sweep import study as sweep
from roofseg.sweep.study import SweepSpec
from roofseg.sweep.worker import run_worker

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "sweeps.py")


def charts(at) -> list:
    return list(at.get("arrow_vega_lite_chart")) + list(at.get("vega_lite_chart"))


def test_empty_page_invites_a_sweep(env):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("No sweeps yet" in i.value for i in at.info)
    assert [b.label for b in at.sidebar.button] == ["Start"]
    # the choice fields come from config.CHOICES (device aside: where a trial runs) plus the encoders
    offered = at.multiselect(key="sw_vary").options
    assert {"arch", "encoder", "loss", "keep", "in_channels"} <= set(offered) and "device" not in offered


def test_page_shows_trials_best_and_plots(env, demo64, runs_dir):
    spec = SweepSpec(name="lib", base=tiny_config(demo64, epochs=1).to_dict(), sampler="random", trials=3,
                     space={"lr": {"low": 1e-4, "high": 3e-3, "log": True},
                            "loss": {"choices": ["bce_dice", "dice"]}})
    sweep.create_sweep(spec, runs_dir)
    run_worker("lib", runs_dir)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="sw_current").value == "lib"
    frames = [d.value for d in at.dataframe]
    trials = next(f for f in frames if "trial" in f.columns)
    assert trials.trial.tolist() == [0, 1, 2] and (trials.state == "complete").all()
    assert any(s.value.startswith("Best: trial") for s in at.success)
    # metric vs lr, metric vs loss, the isolation bars, parallel coordinates
    assert len(charts(at)) == 4
    assert [b.label for b in at.button if b.label.startswith("Open")] == ["Open the best 3 in Compare"]
    at.selectbox(key="sw_sci_lib").select("loss").run()  # the isolation plot for another field
    assert not at.exception
    iso = next(d.value for d in at.dataframe if "group" in d.value.columns)
    assert set(iso.group) == set(trials.loss)
    assert not [b for b in at.button if b.label == "Resume"]  # the budget is reached


def test_define_and_start_a_sweep_with_the_widgets(env, runs_dir):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.multiselect(key="sw_vary").set_value(["lr", "augment"]).run()
    at.number_input(key="sw_lo_lr").set_value(2e-4).run()
    at.number_input(key="sw_fix_epochs").set_value(1).run()
    at.number_input(key="sw_fix_threads").set_value(1).run()
    at.number_input(key="sw_trials").set_value(2).run()
    at.selectbox(key="sw_sampler").select("random").run()
    at.text_input(key="sw_name").input("ui").run()
    [start] = [b for b in at.sidebar.button if b.label == "Start"]
    start.click().run()
    assert not at.exception, at.exception
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]
    spec = sweep.load_spec("ui", runs_dir)
    assert spec.space == {"lr": {"low": 2e-4, "high": 3e-3, "log": True},
                          "augment": {"choices": ["light", "strong"]}}
    assert spec.base["epochs"] == 1 and spec.base["num_threads"] == 1 and spec.trials == 2
    assert sweep.workers("ui", runs_dir)  # launched: the page returned at once
    assert at.selectbox(key="sw_current").value == "ui"
    # a second Start with the same name says why not, and starts nothing
    [start] = [b for b in at.sidebar.button if b.label == "Start"]
    start.click().run()
    assert any("already exists" in e.value for e in at.sidebar.error)
    [cancel] = [b for b in at.button if b.label == "Cancel sweep"]
    cancel.click().run()
    assert not at.exception and not sweep.workers("ui", runs_dir)
    deadline = time.time() + 30
    while sweep.progress("ui", runs_dir)["workers"] and time.time() < deadline:
        time.sleep(0.2)
    at.run()
    assert [b.label for b in at.button if b.label == "Resume"] == ["Resume"]
