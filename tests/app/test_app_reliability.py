"""Reliability in the app (AppTest): bad input is an st.error naming the file, never a traceback;
a restarted app finds its runs again; damaged or unwritable run stores still render; ids from
session state never reach outside the runs folder."""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from fakes import make_zip, truncate, huge_png, tiny_config
from roofseg.data import fetch
from roofseg.store import runs
from roofseg.config import RunConfig

PAGES = Path(__file__).resolve().parents[2] / "pages"


@pytest.fixture
def env(demo64, tmp_path, monkeypatch) -> Path:
    """The app's folders for one test; returns the runs folder."""
    monkeypatch.setenv("ROOFSEG_DATA", str(demo64))
    monkeypatch.setenv("ROOFSEG_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ROOFSEG_DATA_ROOT", str(tmp_path / "data_root"))
    return tmp_path / "runs"


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(PAGES / name), default_timeout=60)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def texts(elements) -> str:
    return "\n".join(e.value for e in elements)


@pytest.fixture
def fake_worker():
    """start(run_dir): a live process whose command line names the run, as a real worker's does."""
    procs = []

    def start(run_dir: Path) -> subprocess.Popen:
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", run_dir.name]))
        return procs[-1]
    yield start
    for p in procs:
        p.kill()
        p.wait()


# ---------------------------------------------------------------------------------------------
# Data page
def test_data_page_names_unreadable_files_in_an_error(env, demo_copy):
    labelled = sorted(p.stem for p in (demo_copy / "labels").iterdir())
    truncate(demo_copy / "images" / f"{labelled[0]}.png")
    (demo_copy / "labels" / f"{labelled[1]}.png").write_bytes(b"")
    huge_png(demo_copy / "images" / "huge.png")
    Image.fromarray(np.tile(np.arange(3, dtype=np.uint8), (64, 22))[:, :64]).save(
        demo_copy / "labels" / f"{labelled[2]}.png")  # a class-index mask {0, 1, 2}
    at = page("data.py")
    at.text_input(key="data_folder").input(str(demo_copy)).run()
    at.button(key="use_folder").click().run()
    assert not at.exception, at.exception
    [err] = at.error
    for name in (f"{labelled[0]}.png", f"{labelled[1]}.png", "huge.png"):
        assert name in err.value
    assert "truncated" in err.value and "empty file" in err.value and "pixel limit" in err.value
    findings = at.dataframe[0].value
    row = findings[findings.iloc[:, 0] == labelled[2]]
    assert row.iloc[0, 1] == "warning (kept): mask values [0, 1, 2]: every non-zero value counted as roof"


def test_data_page_says_a_folder_without_labels_is_prediction_only(env, demo_copy):
    shutil.rmtree(demo_copy / "labels")
    at = page("data.py")
    at.text_input(key="data_folder").input(str(demo_copy)).run()
    at.button(key="use_folder").click().run()
    assert not at.exception and not at.error
    assert at.session_state["dataset"] == str(demo_copy.resolve())
    assert "prediction-only" in texts(at.info)


def test_data_page_upload_keeps_unsafe_zip_entries_out(env, demo64, tmp_path):
    entries = {f"export/ü data/{p.relative_to(demo64).as_posix()}": p.read_bytes()
               for p in demo64.rglob("*.png")}  # nested folders, unicode
    png = next(iter(entries.values()))
    entries |= {"../evil.png": png, "export/ü data/images/../../../evil2.png": png,
                "/tmp/roofseg-evil/images/x.png": png}
    at = page("data.py")
    at.file_uploader(key="data_zip").set_value(
        ("roofs.zip", make_zip(entries, {"export/ü data/images/link.png": "/etc/passwd"}), "application/zip")).run()
    at.button(key="unpack_zip").click().run()
    assert not at.exception and not at.error
    dest = tmp_path / "data_root" / "uploads" / "roofs"
    assert at.session_state["dataset"] == str(dest)
    got = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink())
    want = sorted(f"data_root/uploads/roofs/{p.relative_to(demo64)}" for p in demo64.rglob("*.png"))
    assert [g for g in got if not g.startswith("runs")] == want  # no evil*.png, no link.png anywhere


def test_data_page_refuses_a_zip_bomb(env, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "extract_dataset_zip", functools.partial(fetch.extract_dataset_zip, max_bytes=2**20))
    at = page("data.py")
    bomb = make_zip({"roofs/images/big.png": b"\0" * (8 * 2**20)})
    at.file_uploader(key="data_zip").set_value(("bomb.zip", bomb, "application/zip")).run()
    at.button(key="unpack_zip").click().run()
    assert not at.exception
    assert "bomb.zip" in at.error[0].value and "possible zip bomb" in at.error[0].value
    assert not (tmp_path / "data_root" / "uploads").exists() or not any((tmp_path / "data_root" / "uploads").iterdir())


# ---------------------------------------------------------------------------------------------
# Train page
def start(at: AppTest) -> AppTest:
    [button] = [b for b in at.sidebar.button if b.label == "Start"]
    return button.click().run()


def test_train_page_refuses_out_of_range_values(env):
    at = page("train.py")
    at.sidebar.number_input(key="tr_lr").set_value(0.0).run()
    start(at)
    assert not at.exception and "lr=0.0: must be > 0" in at.sidebar.error[0].value
    at.sidebar.number_input(key="tr_lr").set_value(1e-3).run()
    at.sidebar.radio(key="tr_validation").set_value("k-fold").run()
    at.sidebar.number_input(key="tr_folds").set_value(11).run()
    start(at)
    assert not at.exception and "folds=11 is more than the 10 usable labelled pairs" in at.sidebar.error[0].value
    assert runs.list_runs(env) == []


def test_train_page_with_a_cloned_config_it_cannot_offer(env, demo64):
    prefill = {**RunConfig(data=str(demo64)).to_dict(), "arch": "Unet3D", "encoder": "resnet19"}
    at = page("train.py", train_prefill=prefill)
    assert not at.exception, at.exception
    # the form cannot show arch Unet3D: it says so instead of silently training something else
    assert "arch = 'Unet3D' (the form has 'Unet')" in texts(at.warning), texts(at.warning)
    assert at.sidebar.selectbox(key="tr_arch").value == "Unet"
    start(at)
    assert not at.exception and "resnet19" in at.sidebar.error[0].value
    assert runs.list_runs(env) == []


def test_a_restarted_app_finds_a_running_run_then_sees_it_killed(env, demo64, fake_worker):
    d = runs.create_run(tiny_config(demo64, epochs=3, name="overnight"), env)
    proc = fake_worker(d)
    runs.set_status(d, state="running", pid=proc.pid, started=time.time() - 30)
    runs.append_metrics(d, {"fold": 0, "epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_dice": 0.3,
                            "val_iou": 0.2, "epoch_s": 10.0})
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"fold": 0, "epoch": 2, "train_lo')  # a power cut mid-line
    (d / "log.txt").write_text("fold 0 epoch 1/3: val_dice 0.3000\n")
    at = page("train.py")  # a new session: nothing in session state knows the run
    assert not at.exception, at.exception
    assert any(d.name in m.value and "running" in m.value for m in at.markdown)
    [bar] = at.get("progress")
    assert bar.proto.text.startswith("epoch 1/3 ·") and "ETA 20s" in bar.proto.text
    assert f"{d.name}/metrics.jsonl: 1 unreadable line(s) skipped" in texts(at.warning)
    proc.kill()  # SIGKILL: the worker never writes its end
    proc.wait()
    at.run()
    assert not at.exception and not at.get("progress")
    row = at.dataframe[0].value.iloc[0]
    assert (row["run_id"], row["status"], row["epochs_done"]) == (d.name, "failed", 1)
    assert "overnight failed" in at.error[0].value and "killed or crashed" in at.error[0].value
    assert "val_dice 0.3000" in at.code[0].value  # its log
    assert f"{d.name}/metrics.jsonl: 1 unreadable line(s) skipped" in texts(at.warning)


def test_start_in_a_read_only_runs_folder_is_an_error(env, readonly):
    readonly(env)
    at = page("train.py")
    start(at)
    assert not at.exception, at.exception
    assert f"Not started: cannot create a run folder in {env}: Permission denied" in at.sidebar.error[0].value
    assert list(env.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Runs, Compare, Predict: damaged stores and crafted ids
@pytest.fixture
def runs_copy(env, finished_runs) -> Path:
    shutil.copytree(finished_runs, env)
    return env


@pytest.fixture
def outside(runs_copy) -> Path:
    """A complete run folder just outside the runs folder, which no page may read or delete."""
    evil = runs_copy.parent / "evil"
    shutil.copytree(runs.list_runs(runs_copy)[0], evil)
    return evil


def test_runs_page_with_a_damaged_table_and_a_hand_edited_run(runs_copy, demo64):
    d = runs.create_run(tiny_config(demo64), runs_copy)
    (d / "config.json").write_text(json.dumps({**json.loads((d / "config.json").read_text()), "lr": -1}))
    from roofseg.exec import worker
    worker.execute(d, wait_for_slot=False)
    (runs_copy / "results.parquet").write_bytes(b"PAR1 half a table")  # a power cut
    at = page("runs.py")
    assert not at.exception, at.exception
    assert "results.parquet was unreadable" in at.warning[0].value and "rebuilt" in at.warning[0].value
    table = at.dataframe[0].value.set_index("run_id")
    assert len(table) == 3 and table.loc[d.name, "status"] == "failed"
    assert "config.json: lr=-1.0" in table.loc[d.name, "error"]


def test_runs_page_when_the_table_cannot_be_saved(runs_copy, monkeypatch):
    def no_space(self, *a, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_space)
    at = page("runs.py")
    assert not at.exception, at.exception
    assert "could not update" in at.warning[0].value and "No space left" in at.warning[0].value
    assert len(at.dataframe[0].value) == 2


def test_runs_page_refuses_to_delete_a_crafted_id(runs_copy, outside):
    at = page("runs.py", runs_pending_delete=["../evil", str(outside)])
    [yes] = [b for b in at.button if b.label.startswith("Yes, delete")]
    yes.click().run()
    assert not at.exception, at.exception
    assert outside.is_dir() and (outside / "best.pt").is_file()
    assert texts(at.error).count("Not deleted") == 2
    assert len(runs.list_runs(runs_copy)) == 2


def test_compare_and_predict_ignore_crafted_ids(runs_copy, outside):
    real = [d.name for d in runs.list_runs(runs_copy)]
    at = page("compare.py", selected_runs=[real[0], "../evil", str(outside)])
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_runs").value == [real[0]]  # not two runs: nothing compared
    at = page("predict.py", predict_run="../evil")
    assert not at.exception, at.exception
    assert at.selectbox(key="predict_run").value in real
