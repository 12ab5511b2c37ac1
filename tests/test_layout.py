"""The package's layout: the library apart from the course, and the old import paths kept for a transition."""
import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ddpm_lite
from ddpm_lite import _moved

PACKAGE = Path(ddpm_lite.__file__).parent
IMPORTS_COURSE = re.compile(r"^\s*(from|import)\s+(\.+course|ddpm_lite\.course)\b", re.M)
COURSE = {"plotting", "widgets", "exercises", "analytic", "fast_sampling", "waveforms", "evaluate",
          "reverse_process", "learned_variance"}


def test_the_course_modules_live_in_the_course_package():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert not top & set(_moved.MOVED), "a course module is back at the top of the package"
    assert COURSE <= {p.stem for p in (PACKAGE / "course").glob("*.py")}


def test_the_library_does_not_import_the_course():
    """The library stands alone: no library module imports ddpm_lite.course (the course imports the library)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "course" in path.relative_to(PACKAGE).parts or path.name == "_moved.py":
            continue
        if IMPORTS_COURSE.search(path.read_text()):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_import_paths_still_work_and_say_where_the_module_went(old):
    """A learner's saved notebook with ``from ddpm_lite.plotting import ...`` keeps working, with a warning."""
    new = _moved.MOVED[old]
    code = (f"import warnings; warnings.simplefilter('always')\n"
            f"import ddpm_lite.{old} as m\n"
            f"import ddpm_lite.{new} as n\n"
            f"assert m is n, (m, n)\n"
            f"assert n.__spec__.name == 'ddpm_lite.{new}'\n"
            f"from ddpm_lite import {old} as a\n"
            f"assert a is n\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"ddpm_lite.{old} moved to ddpm_lite.{new}" in out.stderr
    assert out.stderr.count("MovedModuleWarning") == 1  # once per name, not at every access


def test_attribute_access_of_an_old_name_warns():
    _moved._warned.discard("analytic")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = ddpm_lite.analytic
    assert module is importlib.import_module("ddpm_lite.course.analytic")
    assert any(issubclass(w.category, _moved.MovedModuleWarning) for w in caught)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ddpm_lite.nonexistent  # noqa: B018


def test_generate_lives_in_sampling_and_train_still_has_it():
    from ddpm_lite import sampling, train

    assert train.generate is sampling.generate


def test_the_readme_lists_every_public_module():
    """README's module table names every public module of the package (a new module must be described there):
    as ``ddpm_lite.x.y`` or, in its subpackage's row, as ``x.y``."""
    readme = (PACKAGE.parent / "README.md").read_text()
    named = set(re.findall(r"`((?:ddpm_lite\.)?\w+(?:\.\w+)*)`", readme))
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if any(p.startswith("_") for p in parts[1:]):
            continue  # __init__, __main__ and private modules
        full, short = ".".join(parts), ".".join(parts[1:])
        if full not in named and not (len(parts) > 2 and short in named):
            missing.append(full)
    assert not missing, f"README's module table does not list {missing}"
