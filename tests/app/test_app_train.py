"""The Train page, driven with Streamlit's AppTest: real worker processes on the 64 px demo.

AppTest runs the live fragment as part of each script run, so these tests poll the run folder
themselves (runs.status) and then re-run the page, rather than rely on run_every timing. The live
refresh itself, in a real browser, is tests/app/test_browser.py::test_the_curve_grows_live_until_the_run_finishes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from roofseg.store import runs
from roofseg.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "train.py")


@pytest.fixture
def at(env) -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=30).run()


def fill(at, **values) -> AppTest:
    """Set sidebar widgets by config field (tr_<field> keys), re-running after each."""
    for field, v in values.items():
        w = at.sidebar.get("selectbox") + at.sidebar.get("number_input") + at.sidebar.get("text_input")
        [widget] = [x for x in w if x.key == f"tr_{field}"]
        (widget.select(v) if widget.type == "selectbox" else widget.set_value(v)).run()
    return at


def start(at) -> AppTest:
    [button] = [b for b in at.sidebar.button if b.label == "Start"]
    return button.click().run()


def wait_until(run_dir, states, timeout=90.0) -> dict:
    end = time.time() + timeout
    while True:
        st = runs.status(run_dir)
        if st["state"] in states or time.time() > end:
            return st
        time.sleep(0.5)


def encoders(at) -> dict[str, str]:
    """The Encoder list as shown: {encoder: where its ImageNet weights are}."""
    return dict(o.split(" · ", 1) for o in at.selectbox(key="tr_encoder").options)


def test_encoder_choices_follow_the_architecture(at):
    assert not at.exception
    assert "resnet18" in encoders(at)
    fill(at, arch="DPT")
    options = encoders(at)
    assert options and all(e.startswith("tu-") for e in options)
    assert at.selectbox(key="tr_encoder").value in options
    fill(at, arch="UnetPlusPlus")
    assert "mit_b0" not in encoders(at)
    assert "resnet18" in encoders(at)


def test_each_encoder_says_whether_its_imagenet_weights_are_here(at):
    """Nobody should find out by failing: the list names installed, cached or internet-only weights."""
    notes = encoders(at)
    assert notes["timm-tf_efficientnet_lite0"] == "ImageNet weights installed (offline)"
    assert notes["resnet18"] in ("ImageNet weights need the internet (Hugging Face hub)",
                                 "ImageNet weights in the Hugging Face cache (offline)")
    fill(at, encoder="resnet18")
    at.radio(key="tr_weights").set_value("imagenet").run()
    if "internet" in notes["resnet18"]:
        assert any("need the internet" in w.value for w in at.sidebar.warning), at.sidebar.warning
    fill(at, encoder="timm-tf_efficientnet_lite0")
    assert not any("need the internet" in w.value for w in at.sidebar.warning)


def test_frozen_batchnorm_is_on_with_imagenet_weights_and_greyed_out_without(at):
    box = at.checkbox(key="tr_freeze_bn")
    assert at.radio(key="tr_weights").value == "imagenet" and box.value and not box.disabled
    at.radio(key="tr_weights").set_value("none").run()
    assert at.checkbox(key="tr_freeze_bn").disabled
    assert any("No pretrained statistics to freeze" in c.value for c in at.caption)


def test_start_launches_a_run_that_finishes_and_shows_its_metrics(at, runs_dir, demo64):
    at.radio(key="tr_weights").set_value("none").run()  # resnet18's ImageNet weights need the internet
    fill(at, arch="Unet", encoder="resnet18", epochs=2, batch_size=4, name="smoke")
    start(at)
    assert not at.exception and not at.error
    [d] = runs.list_runs(runs_dir)
    cfg = RunConfig.load(d / "config.json")
    assert (cfg.arch, cfg.encoder, cfg.epochs, cfg.batch_size, cfg.name, cfg.data) == (
        "Unet", "resnet18", 2, 4, "smoke", str(demo64))
    assert any("smoke" in m.value and d.name in m.value for m in at.markdown)  # shown as active
    assert len(at.get("progress")) == 1
    assert wait_until(d, ("done", "failed", "cancelled"))["state"] == "done", (d / "log.txt").read_text()
    at.run()  # what a reload shows: the run again, once, now finished
    assert not at.exception and not at.get("progress")
    assert len(runs.list_runs(runs_dir)) == 1
    row = at.dataframe[0].value.iloc[0]
    assert (row["run_id"], row["status"], row["epochs_done"]) == (d.name, "done", 2)
    assert 0 <= row["val_dice"] <= 1
    assert at.button(key="to_compare").label == "Open the 1 done run(s) in Compare"


def test_a_preflight_error_shows_and_creates_no_run(at, runs_dir):
    fill(at, batch_size=64)
    start(at)
    assert not at.exception
    assert "batch_size=64" in at.sidebar.error[0].value
    assert runs.list_runs(runs_dir) == []
    fill(at, batch_size=4, arch="DPT", encoder="tu-convnext_atto")
    at.sidebar.radio(key="tr_weights").set_value("local file").run()
    fill(at, weights_path="/no/such/weights.pth")
    start(at)
    assert "/no/such/weights.pth" in at.sidebar.error[0].value
    assert runs.list_runs(runs_dir) == []


def test_cancel_stops_a_long_run(at, runs_dir):
    fill(at, encoder="resnet18", epochs=200)
    start(at)
    [d] = runs.list_runs(runs_dir)
    assert wait_until(d, ("running",), timeout=60)["state"] == "running"
    at.run()
    at.button(key=f"cancel_{d.name}").click().run()
    assert not at.exception
    assert runs.status(d)["state"] == "cancelled"
    assert at.dataframe[0].value.iloc[0]["status"] == "cancelled"
    assert not any(b.key == f"cancel_{d.name}" for b in at.button)


def test_the_second_click_of_a_double_click_launches_nothing(at, runs_dir):
    fill(at, encoder="resnet18", epochs=200)
    [first] = [b for b in at.sidebar.button if b.label == "Start"]
    first.click().run()
    assert len(runs.list_runs(runs_dir)) == 1
    # The browser still shows the first button when the second click lands, so that click names
    # the first button's id again (what AppTest.run would send had the button not been replaced).
    states = at._tree.get_widget_states()
    states.widgets.append(first._widget_state)
    at._run(states)
    assert not at.exception and len(runs.list_runs(runs_dir)) == 1


def test_two_starts_queue_two_runs(at, runs_dir, monkeypatch):
    monkeypatch.setenv("ROOFSEG_SLOTS", "1")
    fill(at, encoder="resnet18", epochs=200)
    start(at)
    start(at)  # a second Start after the page re-rendered: a second run, not a duplicate click
    both = runs.list_runs(runs_dir)
    assert len(both) == 2
    end = time.time() + 60
    while time.time() < end and "running" not in {runs.status(d)["state"] for d in both}:
        time.sleep(0.5)
    assert sorted(runs.status(d)["state"] for d in both) == ["queued", "running"]  # one slot
    at.run()
    assert "queued" in " ".join(m.value for m in at.markdown)
    texts = sorted(p.proto.text for p in at.get("progress"))
    assert len(texts) == 2 and texts[1] == "queued: waiting for a free training slot"
    assert texts[0].startswith("epoch ")


def test_seeds_launch_one_run_per_seed(at, runs_dir):
    at.radio(key="tr_weights").set_value("none").run()
    fill(at, encoder="resnet18", epochs=1, batch_size=4, seed=3, name="repeat", n_seeds=3)
    start(at)
    assert not at.exception, at.exception
    made = runs.list_runs(runs_dir)
    cfgs = [RunConfig.load(d / "config.json") for d in made]
    assert sorted(c.seed for c in cfgs) == [3, 4, 5]  # seed, seed+1, seed+2
    assert {c.name for c in cfgs} == {"repeat"} and all(c.replace(seed=0) == cfgs[0].replace(seed=0) for c in cfgs)
    flash = [m.value for m in at.sidebar.success]
    assert flash and all(d.name in flash[0] for d in made)
    for d in made:
        assert wait_until(d, {"done", "failed"})["state"] == "done", (d / "log.txt").read_text()


def test_a_clone_prefills_the_form_once(env, demo64):
    at = AppTest.from_file(PAGE, default_timeout=30)
    clone = RunConfig(data=str(demo64), arch="FPN", encoder="resnet34", loss="dice", epochs=7,
                      folds=3, warmup_epochs=3, name="clone of x").to_dict()
    at.session_state["train_prefill"] = clone
    at.run()
    assert not at.exception and "train_prefill" not in at.session_state
    assert (at.selectbox(key="tr_arch").value, at.selectbox(key="tr_encoder").value) == ("FPN", "resnet34")
    assert at.radio(key="tr_validation").value == "k-fold" and at.number_input(key="tr_folds").value == 3
    assert at.session_state["train_form"]["warmup_epochs"] == 3  # a field the form does not show
    fill(at, epochs=1)
    assert at.session_state["train_form"]["epochs"] == 1  # the user's edit is not overwritten
    # values a hand-edited or CLI config may hold, outside the form's usual range
    at.session_state["train_prefill"] = {**clone, "folds": 0, "val_fraction": 0.95, "lr": 1e-7,
                                         "batch_size": 512}
    at.run()
    assert not at.exception
    assert (at.number_input(key="tr_val_fraction").value, at.number_input(key="tr_lr").value,
            at.number_input(key="tr_batch_size").value) == (0.95, 1e-7, 512)


def test_a_failed_run_shows_its_error_and_log(at, runs_dir, demo64):
    d = runs.create_run(RunConfig(data=str(demo64), name="broken"), runs_dir)
    runs.set_status(d, state="failed", ended=time.time(), error="DataError: labels/101.png: empty file")
    (d / "log.txt").write_text("".join(f"step {i}\n" for i in range(50)) + "Traceback: the end\n")
    at.run()
    assert not at.exception
    assert "broken failed: DataError: labels/101.png: empty file" in at.error[0].value
    tail = at.code[0].value  # the last 20 lines of log.txt
    assert tail.startswith("step 31\n") and tail.endswith("Traceback: the end")
    assert json.loads((d / "status.json").read_text())["state"] == "failed"


def test_compare_opens_the_finished_runs(env, runs_dir, demo64):
    """Through app.py, since st.switch_page needs the app's page list."""
    ids = []
    for name in ("a", "b"):
        d = runs.create_run(RunConfig(data=str(demo64), name=name), runs_dir)
        runs.set_status(d, state="done", started=time.time() - 60, ended=time.time())
        runs.write_json(d / "summary.json", {"val_dice": 0.5, "val_iou": 0.4, "minutes": 1.0})
        ids.append(d.name)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    at.switch_page("pages/train.py").run()
    assert at.dataframe[0].value.run_id.tolist() == ids[::-1]  # newest first
    at.button(key="to_compare").click().run()
    assert sorted(at.session_state["selected_runs"]) == sorted(ids)
    assert at.title[0].value.startswith("Compare")


def test_images_left_out_by_a_label_review_are_shown_and_can_be_trained_on_again(env, demo64):
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.session_state["train_prefill"] = {"exclude": "3,7", "data": str(demo64)}
    at.run()
    assert not at.exception
    assert any("Left out of training: 3,7" in i.value for i in at.sidebar.info)
    assert at.session_state["train_form"]["exclude"] == "3,7"  # what Start would launch
    [again] = [b for b in at.sidebar.button if b.key == "tr_clear_exclude"]
    again.click().run()
    assert at.session_state["train_form"]["exclude"] == ""
    assert not any("Left out of training" in i.value for i in at.sidebar.info)
