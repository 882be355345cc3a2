"""Tests for roofseg.model.tvguard: torchvision and smp import on a CPU-only torch, and the guard
patches only the one failure it knows, never hiding another."""
import subprocess
import sys
import types
from pathlib import Path

import pytest

from roofseg.model import tvguard as _tvguard

ROOT = Path(__file__).resolve().parents[2]


def test_fresh_interpreter_imports_torchvision_and_smp():
    code = ("import sys; from roofseg.model import tvguard as _tvguard; tv = _tvguard.ensure_torchvision(); "
            "import segmentation_models_pytorch as smp; import timm; "
            "m = smp.create_model('Unet', encoder_name='resnet18', encoder_weights=None, classes=1); "
            "print(tv.__version__, _tvguard.patched, tv is sys.modules['torchvision'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version, patched, same = proc.stdout.split()
    assert version and patched in ("True", "False") and same == "True"


def test_returns_the_imported_module():
    tv = _tvguard.ensure_torchvision()
    assert tv is sys.modules["torchvision"] and hasattr(tv, "__version__")


def test_noop_when_torchvision_imports_normally(monkeypatch):
    fake = types.ModuleType("torchvision")
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setattr(_tvguard, "patched", False)
    monkeypatch.setattr(_tvguard, "_lib", None)
    assert _tvguard.ensure_torchvision() is fake
    assert _tvguard.patched is False and _tvguard._lib is None  # nothing defined, nothing patched


class _RaisingFinder:
    """A meta-path finder that makes `import torchvision` raise the given error."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            raise self.error
        return None


@pytest.mark.parametrize("error", [RuntimeError("CUDA driver initialization failed"),
                                   ImportError("No module named 'torchvision'")])
def test_other_import_errors_are_reraised(monkeypatch, error):
    monkeypatch.delitem(sys.modules, "torchvision")
    monkeypatch.setattr(sys, "meta_path", [_RaisingFinder(error), *sys.meta_path])
    monkeypatch.setattr(_tvguard, "patched", False)
    with pytest.raises(type(error), match=str(error).split("'")[0]):
        _tvguard.ensure_torchvision()
    assert _tvguard.patched is False
