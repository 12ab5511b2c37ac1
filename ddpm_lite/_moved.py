"""Old import paths of the course modules, kept working for a transition with a warning.

The teaching helpers moved from the top of the package into :mod:`ddpm_lite.course` (and two were renamed), so
that the library (schedules, losses, diffusion, models, training, sampling, metrics) stands apart from what only
the notebooks use. A learner's saved notebook that still says ``from ddpm_lite.widgets import ...`` or
``ddpm_lite.plotting`` keeps working and is told the new name once.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module name (under ddpm_lite) -> new module name (under ddpm_lite)
MOVED = {
    "plotting": "course.plotting",
    "widgets": "course.widgets",
    "exercises": "course.exercises",
    "analytic": "course.analytic",
    "fast_sampling": "course.fast_sampling",
    "waveforms": "course.waveforms",
    "evaluate": "course.evaluate",
    "reverse": "course.reverse_process",
    "variance": "course.learned_variance",
}


class MovedModuleWarning(FutureWarning):
    """An old import path of a module that moved; shown to users (unlike DeprecationWarning)."""


_warned: set[str] = set()


def _warn(old: str, new: str) -> None:
    if old in _warned:
        return
    _warned.add(old)
    warnings.warn(f"ddpm_lite.{old} moved to ddpm_lite.{new}: import it from there (the old name will be "
                  "removed in a later version)", MovedModuleWarning, stacklevel=3)


def resolve(old: str):
    """The moved module for ``ddpm_lite.<old>``, with the warning (once per name and process)."""
    new = MOVED[old]
    _warn(old, new)
    return importlib.import_module(f"ddpm_lite.{new}")


class _Alias(importlib.abc.Loader):
    def __init__(self, old: str):
        self.old = old

    def create_module(self, spec):
        module = resolve(self.old)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module):
        # already executed at its new place; the import system bound it under the old name and stamped the
        # alias spec on it: give it its own spec back
        module.__spec__ = self.real_spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds ``ddpm_lite.<old>`` for every old name and hands out the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != "ddpm_lite" or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(name))


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
