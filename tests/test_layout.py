"""The tests mirror the library's layers: a newcomer finds a module's tests in the folder of the same
name, and no test module depends on another (shared builders live in conftest.py and fakes.py)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = sorted(p.name for p in (ROOT / "roofseg").iterdir() if (p / "__init__.py").is_file())


def test_every_layer_has_its_test_folder_and_nothing_else_does():
    folders = sorted(p.name for p in (ROOT / "tests").iterdir()
                     if p.is_dir() and any(p.glob("test_*.py")))
    assert LAYERS, "roofseg has no subpackages?"
    # config.py and choices.py are modules, not packages: their tests are tests/config/
    assert folders == sorted({*LAYERS, "config", "app"}), folders


def test_no_test_module_imports_another():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                 if re.search(r"^\s*(from|import) test_\w+", p.read_text(), flags=re.M)]
    assert offenders == []
