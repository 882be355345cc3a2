"""roofseg.choices: every option is declared once, explains itself, and builds (issues #11, #12)."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path
import sys

import pytest
import torch

from roofseg import choices, config
from roofseg.cli.main import build_parser
from roofseg.config import ConfigError, RunConfig
from roofseg.model import factory

REGISTRIES = [choices.ARCHS, choices.ENCODERS, choices.LOSSES, choices.OPTIMIZERS, choices.SCHEDULES,
              choices.AUGMENTS, choices.KEEP]


@pytest.mark.parametrize("reg", REGISTRIES, ids=lambda r: r.kind)
def test_every_choice_says_what_it_is_in_two_or_three_sentences(reg):
    for c in reg.values():
        sentences = [s for s in c.about.replace("e.g.", "eg").split(". ") if s.strip()]
        assert 1 <= len(sentences) <= 4 and len(c.about) < 420, (c.name, c.about)


def test_config_validates_the_cli_offers_and_the_factory_builds_the_same_names():
    assert config.ARCHS == choices.ARCHS.names() and config.LOSSES == choices.LOSSES.names()
    with pytest.raises(ConfigError, match="loss='hinge'"):
        RunConfig(loss="hinge").validate()
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.values()
                 if a.prog.endswith("train"))
    offered = {a.dest: a.choices for a in train._actions if a.choices}
    for field, names in config.CHOICES.items():
        assert list(offered[field]) == names, field
    y = torch.randint(0, 2, (2, 1, 32, 32)).float()
    logits = torch.randn(2, 1, 32, 32, requires_grad=True)
    for name in choices.LOSSES:
        loss = factory.build_loss(name)(logits, y)
        assert loss.ndim == 0 and torch.isfinite(loss), name
    model = torch.nn.Conv2d(1, 1, 1)
    for name in choices.OPTIMIZERS:
        opt = factory.build_optimizer(RunConfig(optimizer=name), model.parameters())
        assert isinstance(opt, torch.optim.Optimizer), name
    with pytest.raises(factory.ModelError, match="choose one of"):
        factory.build_loss("hinge")


def test_about_texts_reach_the_forms_and_cite_benchmarks_where_they_claim_a_figure():
    assert "offline" in config.about("encoder", "timm-tf_efficientnet_lite0")
    assert config.about("folds") and config.about("tta") and config.about("seed")
    for reg in REGISTRIES:
        for c in reg.values():
            if "beats" in c.about or "measured" in c.about:
                assert "BENCHMARKS.md" in c.about, c.name


def test_the_store_and_data_layers_import_no_torch():
    """What the Runs, Compare (tables and curves), Sweeps and Data pages need loads without torch."""
    code = ("import sys; import roofseg.config, roofseg.choices, roofseg.data.dataset, roofseg.data.overlay, "
            "roofseg.data.demo, roofseg.store.runs, roofseg.store.results, roofseg.store.progress, "
            "roofseg.store.compare, roofseg.store.fingerprint, roofseg.sweep.spec, roofseg.sweep.report; "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'segmentation_models_pytorch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("page", ["data", "runs", "compare", "sweeps"])
def test_pages_that_only_read_run_folders_import_no_torch(page):
    """Executes the page file's own top-level imports in a fresh interpreter (as a first visit)."""
    import ast
    from pathlib import Path
    src = (Path(__file__).resolve().parents[2] / "pages" / f"{page}.py").read_text()
    imports = [ast.get_source_segment(src, n) for n in ast.parse(src).body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    code = "\n".join(imports) + "\nimport sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_first_page_drawn_imports_nothing_heavy():
    """app.py and the Data page (the first paint of a fresh server) import no torch, pandas,
    scipy, altair, cv2 or optuna: those load later, in the background (bench/first_paint.py)."""
    root = Path(__file__).resolve().parents[2]
    imports = []
    for f in ("app.py", "pages/data.py"):
        src = (root / f).read_text()
        imports += [ast.get_source_segment(src, n) for n in ast.parse(src).body
                    if isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "module", None) != "__future__"]
    heavy = ("torch", "pandas", "scipy", "altair", "cv2", "optuna")
    code = "\n".join(imports) + f"\nimport sys; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_app_loads_the_other_pages_modules_in_the_background_once():
    """app.py opens without torch, optuna or altair, then pages.common.preload imports what Sweeps,
    Train and Predict need in one background thread, so a first click there does not wait for it."""
    heavy = ("torch", "segmentation_models_pytorch", "optuna", "altair")
    code = ("import sys; from pages import common; "
            f"heavy = {heavy!r}; before = [m for m in heavy if m in sys.modules]; "
            "common.preload(); t = common._preloading; common.preload(); again = common._preloading is t; "
            "t.join(300); print(before == [], again, t.daemon, all(m in sys.modules for m in heavy), "
            "'roofseg.engine.train' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=360,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["True", "True", "True", "True", "True"], out.stdout


def test_train_help_explains_each_choice_and_where_weights_are(capsys):
    """`--help` shows the same why-texts as the Train form and the report, and per encoder whether
    its ImageNet weights are on this machine."""
    from roofseg.cli.main import main
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(choices.LOSSES["bce_dice"].about.split()) in out
    assert " ".join(choices.ABOUT["tta"].split()) in out
    assert "tf_efficientnet_lite0: ImageNet weights installed (offline)" in out  # argparse breaks at "-"
