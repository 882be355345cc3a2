"""The hand-over report (roofseg.report, `python -m roofseg report`): one self-contained HTML file
with every section, written atomically; failed, queued and damaged runs; the CLI.

Runs are the tiny 64 px ones of conftest (a 2-fold run is trained once for this module).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fakes import tiny_config
from roofseg.cli.main import main
from roofseg.report import ReportError, write_report
from roofseg.store import runs
from roofseg.store.runs import RunError

SECTIONS = ["Runs", "Dataset check", "Recipe", "Curves", "Cross-validation", "Paired comparison",
            "Out-of-fold predictions", "Unlabeled images", "Environment"]


@pytest.fixture(scope="module")
def kfold_run(demo64, tmp_path_factory) -> Path:
    from roofseg.exec import worker
    d = runs.create_run(tiny_config(demo64, folds=2, epochs=1), tmp_path_factory.mktemp("kfold_runs"))
    st = worker.execute(d, wait_for_slot=False)
    assert st["state"] == "done", st
    return d


@pytest.fixture(scope="module")
def holdouts(finished_runs) -> list[Path]:
    return runs.list_runs(finished_runs)


def _copy_run(src: Path, dst_runs: Path) -> Path:
    """A writable copy of a run folder, without its weights (the report never reads them)."""
    dst = dst_runs / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pt"))
    return dst


def assert_self_contained(html: str) -> None:
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", html, re.I)
    remote = [u for u in links if re.match(r"\s*(https?:)?//", u, re.I)]
    assert not remote, f"remote src/href: {remote[:3]}"
    assert not re.search(r"https?://", " ".join(links), re.I)
    imgs = re.findall(r"""<img\b[^>]*\bsrc\s*=\s*["']([^"']*)""", html, re.I)
    assert imgs and all(re.match(r"data:image/(png|jpeg);base64,", u) for u in imgs)
    assert re.search(r"<svg\b", html), "no inline SVG chart"
    # nothing else that could fetch: stylesheets, scripts, fonts or CSS imports from elsewhere
    assert not re.search(r"<link\b|<script\b|@import|url\(\s*['\"]?(https?:)?//", html, re.I)


def test_flat_pictures_stay_lossless_and_photos_shrink():
    """A mask-like picture decodes back to its exact pixels; a photo-like one is a JPEG well under
    its PNG size, and the TP/FP/FN colours of an overlay survive it."""
    import base64
    import io

    from PIL import Image

    from roofseg.report.pictures import data_uri

    def decode(uri):
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))
    flat = np.zeros((64, 64, 3), np.uint8)
    flat[10:30, 5:50] = (255, 0, 0)
    flat[40:60, 20:40] = (0, 200, 255)
    uri = data_uri(flat)
    assert uri.startswith("data:image/png;") and np.array_equal(decode(uri), flat)
    rng = np.random.default_rng(0)
    photo = np.clip(rng.normal(128, 40, (256, 256, 3)).cumsum(1) / 16 % 256, 0, 255).astype(np.uint8)
    photo[100:150, 100:150] = (0, 200, 0)  # a true-positive patch
    uri = data_uri(photo)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG", compress_level=6)
    assert uri.startswith("data:image/jpeg;") and len(base64.b64decode(uri.split(",", 1)[1])) < buf.tell() / 2
    patch = decode(uri)[110:140, 110:140].reshape(-1, 3).astype(int)
    assert np.abs(patch - (0, 200, 0)).max() < 40


def headings(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html)


def test_report_of_a_kfold_run_is_self_contained_with_every_section(kfold_run, tmp_path):
    out = write_report([kfold_run], tmp_path / "report.html")
    assert out == tmp_path / "report.html"
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert headings(html) == SECTIONS
    assert kfold_run.name in html
    # the CV table: mean ± std over folds at the last and the best epoch, and the OOF figures
    for title in ("Dice, last epoch", "Dice, best epoch", "IoU, last epoch", "OOF Dice", "OOF threshold",
                  "OOF Dice, tuned threshold (CV)"):
        assert title in html
    assert " ± " in html
    # the recipe says why: the about text of the chosen loss
    from roofseg import config
    assert config.about("loss", "bce_dice")[:40] in html.replace("&#39;", "'")
    # overlays: each of the 10 labelled images (image | truth | prediction), the 2 unlabeled ones
    summary = json.loads((kfold_run / "summary.json").read_text())
    per_image = json.loads((kfold_run / "per_image.json").read_text())
    imgs = re.findall(r'<img src="', html)
    assert len(imgs) == 3 * len(per_image) + 2 * 2
    worst = min(per_image, key=lambda r: r["dice"])["name"]
    first_row = re.search(r'<table class="pics">\s*<tr>.*?</tr>\s*<tr><td>([^<]*)</td>', html, re.S)
    assert first_row.group(1) == worst  # worst Dice first
    assert f"{summary['threshold_oof']:.3f}" in html
    # environment: the git commit and versions from env.json
    env = json.loads((kfold_run / "env.json").read_text())
    assert env["torch"] in html
    assert "One run only: nothing to compare" in html


def test_several_runs_are_compared_against_the_first_and_charts_do_not_share_ids(kfold_run, holdouts, tmp_path):
    out = write_report([holdouts[0], holdouts[1], kfold_run], tmp_path / "r.html")
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert headings(html) == SECTIONS
    # two comparisons, each against the first run
    assert html.count(f"<h3>A: {holdouts[0].name}") == 2
    assert "Pairing: same data" in html  # the two holdout runs share their split
    assert "What differs between the runs" in html
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    assert len(svgs) == 4  # every run's curves and the overlay of all runs
    ids = Counter(i for s in svgs for i in re.findall(r'\bid="([^"]+)"', s))
    assert not [i for i, n in ids.items() if n > 1]


def test_failed_and_queued_runs_show_what_they_recorded(kfold_run, demo64, tmp_path):
    failed = runs.create_run(tiny_config(demo64, epochs=3), tmp_path)
    for epoch in (1, 2):
        runs.append_metrics(failed, {"fold": 0, "epoch": epoch, "train_loss": 0.9 / epoch, "val_loss": 1.0 / epoch,
                                     "val_dice": 0.2 * epoch, "val_iou": 0.1 * epoch, "epoch_s": 1.0})
    with open(failed / "metrics.jsonl", "a") as f:
        f.write('{"fold": 0, "epo\n')  # a line cut short by the crash
    runs.set_status(failed, state="failed", started=1.0, ended=2.0, error="RuntimeError: out of memory")
    (failed / "log.txt").write_text("epoch 2 done\nfailed: RuntimeError: out of memory\n")
    queued = runs.create_run(tiny_config(demo64), tmp_path)
    html = write_report([kfold_run, failed, queued], tmp_path / "out" / "r.html").read_text(encoding="utf-8")
    assert headings(html) == SECTIONS
    assert f"{failed.name} is failed</strong>: RuntimeError: out of memory" in html
    assert "failed: RuntimeError: out of memory" in html  # the log's tail
    assert f"{queued.name} is queued</strong>" in html and "has not finished" in html
    assert "1 unreadable line(s) in metrics.jsonl skipped" in html
    assert "Traceback" not in html
    # the failed run's two epochs are drawn and tabled; the comparison says it is unfinished
    assert len(re.findall(r"<svg\b", html)) == 1 + 2  # kfold, failed (queued has no epochs), overlay
    assert "No epochs recorded yet" in html
    assert "2 of 3" in html
    assert f"run {failed.name} is failed" in html


def test_missing_or_corrupt_run_files_are_one_line_errors_naming_run_and_file(holdouts, tmp_path):
    with pytest.raises(RunError, match="no run folder"):
        write_report([tmp_path / "nope"], tmp_path / "r.html")
    d = _copy_run(holdouts[0], tmp_path / "runs")
    (d / "summary.json").write_text('{"val_dice": 0.8,')
    with pytest.raises(RunError, match=rf"run {d.name}: summary.json is not valid JSON"):
        write_report([d], tmp_path / "r.html")
    (d / "summary.json").write_text((holdouts[0] / "summary.json").read_text())
    (d / "per_image.json").unlink()
    with pytest.raises(RunError, match=rf"run {d.name}: per_image.json is missing"):
        write_report([d], tmp_path / "r.html")
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(RunError, match=rf"run {d.name}: config.json is not a JSON object"):
        write_report([d], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_data_gone_and_exclusions_recorded(holdouts, tmp_path):
    d = _copy_run(holdouts[0], tmp_path / "runs")
    cfg = json.loads((d / "config.json").read_text())
    cfg["data"] = str(tmp_path / "gone")
    (d / "config.json").write_text(json.dumps(cfg))
    s = json.loads((d / "summary.json").read_text())
    s["excluded"] = {"278": "label is identical to labels of 270 (a copy; the images differ)"}
    s["data_notes"] = ["images differ in size: trained at 64x64"]
    (d / "summary.json").write_text(json.dumps(s))
    html = write_report([d], tmp_path / "r.html").read_text(encoding="utf-8")
    assert_self_contained(html)
    assert "no longer exists" in html
    assert "278: label is identical to labels of 270" in html
    assert "images differ in size: trained at 64x64" in html
    assert "dataset: " in html  # each overlay says why it is drawn without its image


def test_unwritable_out_folder_is_one_error_and_leaves_no_file(holdouts, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ReportError, match=re.escape(str(blocker))):
        write_report([holdouts[0]], blocker / "r.html")
    rc = main(["report", holdouts[0].name, "--runs-dir", str(holdouts[0].parent), "--out", str(blocker / "r.html")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and str(blocker) in err and len(err.splitlines()) == 1
    with pytest.raises(ReportError, match="is a folder"):
        write_report([holdouts[0]], tmp_path)
    # a failure while writing (disk full, permissions) leaves neither the report nor its temporary file
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ReportError, match=rf"cannot write the report into {re.escape(str(out_dir))}"):
        write_report([holdouts[0]], out_dir / "r.html")
    assert list(out_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(holdouts, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ReportError, match=re.escape(str(ro))):
            write_report([holdouts[0]], ro / "r.html")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_cli_writes_the_report_without_torch_and_names_a_missing_run(holdouts, tmp_path):
    runs_dir, out = holdouts[0].parent, tmp_path / "out" / "report.html"
    code = ("import sys; from roofseg.cli.main import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules, 'streamlit' in sys.modules, 'roofseg.engine' in sys.modules); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, "report", holdouts[0].name, holdouts[1].name,
                        "--runs-dir", str(runs_dir), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [str(out), "False False False"]
    assert_self_contained(out.read_text(encoding="utf-8"))
    # a second report replaces the first
    before = out.stat().st_mtime_ns
    assert main(["report", holdouts[1].name, "--runs-dir", str(runs_dir), "--out", str(out)]) == 0
    assert out.stat().st_mtime_ns >= before and holdouts[0].name not in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]


def test_cli_missing_run_is_one_line(holdouts, tmp_path, capsys):
    out = tmp_path / "r.html"
    rc = main(["report", holdouts[0].name, "no-such-run", "--runs-dir", str(holdouts[0].parent), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"error: no run 'no-such-run' in {holdouts[0].parent}"
    assert not out.exists()


def test_template_is_package_data():
    from importlib import resources
    assert (resources.files("roofseg.report") / "templates" / "report.html").is_file()
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'roofseg = ["report/templates/*.html"]' in text
