"""AppTest of the Runs page: the table, filters, row selection, compare/clone/delete.

The page is opened through app.py (AppTest.switch_page) so that its st.switch_page calls to the
Compare and Train pages resolve as they do in the browser. AppTest cannot tick a dataframe's
row boxes, but the selection of a keyed st.dataframe is writable through session state, which is
what a click produces: the tests set it that way (see select()).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from roofseg.store import runs

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def runs_copy(finished_runs, demo64, tmp_path, monkeypatch) -> Path:
    """A private copy of the two finished runs (weights left out: nothing here loads them)."""
    dst = tmp_path / "runs"
    shutil.copytree(finished_runs, dst, ignore=shutil.ignore_patterns("*.pt"))
    monkeypatch.setenv("ROOFSEG_RUNS_DIR", str(dst))
    monkeypatch.setenv("ROOFSEG_DATA", str(demo64))
    return dst


def open_runs() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/runs.py").run()
    assert not at.exception, at.exception
    return at


def select(at: AppTest, rows: list[int]) -> AppTest:
    """What ticking the rows' boxes does: write the table's selection state, then rerun."""
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": rows, "columns": []}}
    at.run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def shown(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["run_id"])


def test_table_filters_and_sort(runs_copy):
    at = open_runs()
    assert sorted(shown(at)) == sorted(p.name for p in runs.list_runs(runs_copy))
    table = at.dataframe[0].value
    assert {"status", "loss", "val_dice", "arch", "encoder"} <= set(table.columns)
    assert table["val_dice"].is_monotonic_decreasing  # default: best val Dice first
    at.multiselect(key="runs_f_loss").set_value(["dice"]).run()
    assert len(shown(at)) == 1 and at.dataframe[0].value["loss"].iloc[0] == "dice"
    at.multiselect(key="runs_f_loss").set_value([]).run()
    at.radio(key="runs_order").set_value("asc").run()
    assert at.dataframe[0].value["val_dice"].is_monotonic_increasing


def test_selection_compare_and_kept_across_filters(runs_copy):
    at = open_runs()
    [report] = at.get("download_button")
    assert report.proto.label == "Download report" and report.proto.disabled  # nothing selected yet
    at = select(at, [0, 1])
    [report] = at.get("download_button")
    assert not report.proto.disabled
    ids = shown(at)
    assert at.session_state["selected_runs"] == ids
    assert button(at, "Clone").disabled  # cloning needs exactly one
    # a filter that hides one selected run keeps it selected
    at.multiselect(key="runs_f_loss").set_value(["dice"]).run()
    assert sorted(at.session_state["selected_runs"]) == sorted(ids)
    at.multiselect(key="runs_f_loss").set_value([]).run()
    button(at, "Compare selected").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Compare runs"
    assert sorted(at.multiselect(key="compare_runs").value) == sorted(ids)


def test_clone_sets_train_prefill(runs_copy):
    at = open_runs()
    i = list(at.dataframe[0].value["loss"]).index("dice")  # not the default loss: a real change
    run_id = shown(select(at, [i]))[i]
    assert button(at, "Compare selected").disabled
    cfg = json.loads((runs_copy / run_id / "config.json").read_text())
    button(at, "Clone config into Train").click().run()
    assert not at.exception, at.exception
    # The Train page consumes st.session_state["train_prefill"] at once (it pops it and seeds
    # its form's widgets), so what is checked is that hand-over arriving there.
    assert at.title[0].value == "Train"
    assert "train_prefill" not in at.session_state
    assert at.session_state["tr_loss"] == cfg["loss"] and at.session_state["dataset"] == cfg["data"]


def test_delete_asks_first_then_removes_the_folder(runs_copy):
    at = select(open_runs(), [0])
    victim, keeper = shown(at)
    button(at, "Delete selected").click().run()
    assert (runs_copy / victim).is_dir()  # nothing deleted before the confirmation
    assert any(victim in w.value for w in at.warning)
    button(at, "Cancel").click().run()
    assert (runs_copy / victim).is_dir() and not at.warning
    button(at, "Delete selected").click().run()
    button(at, "Yes, delete").click().run()
    assert not at.exception, at.exception
    assert not (runs_copy / victim).exists() and (runs_copy / keeper).is_dir()
    assert shown(at) == [keeper] and at.session_state["selected_runs"] == []
    assert any(victim in s.value for s in at.success)


def test_delete_refuses_a_running_run(runs_copy):
    at = open_runs()
    run_id = shown(at)[0]
    # a live process whose command line names the run, as the real worker's does
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", run_id])
    try:
        runs.set_status(runs_copy / run_id, state="running", pid=proc.pid)
        at = open_runs()
        select(at, [shown(at).index(run_id)])
        button(at, "Delete selected").click().run()
        button(at, "Yes, delete").click().run()
        assert (runs_copy / run_id).is_dir()
        assert any("still running" in e.value and run_id in e.value for e in at.error)
    finally:
        proc.kill()
        proc.wait()
