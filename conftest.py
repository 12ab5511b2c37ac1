"""Notebook runs under nbval: a hang guard per notebook, strict checkers for the solution notebooks.

nbval (``--nbval-lax``) collects ``notebooks/**/*.ipynb``; each cell is a test item. nbval only has a per-cell
timeout, so this hook caps every cell by what is left of its notebook's hang guard: a generous limit (20 minutes)
that only a notebook that hangs reaches, never a slow or busy machine. How long the notebooks take is measured
in docs/notebooks.md, not asserted here. Just before a notebook's first cell
(when nbval starts its kernel, which copies ``os.environ``) it also sets:

- ``DDPM_LITE_STRICT=1`` for the solution notebooks ``notebooks/NN_name.ipynb``: a checker that rejects the
  solution fails the run; ``0`` for the learner versions ``notebooks/exercises/``, whose checkers fall back to the
  reference on the ``NotImplementedError`` placeholders, as they do for a learner;
- ``MPLBACKEND`` to the inline backend, so the kernel draws its figures as in Jupyter (a figure that fails to
  render fails the test) even when the test run itself uses Agg.

Both are restored before any other test. Hang guard: ``NB_TIMEOUT`` seconds (default 1200, in fast and full mode),
or per notebook in ``NB_TIMEOUTS``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

DEFAULT_NB_TIMEOUT = float(os.environ.get("NB_TIMEOUT", "1200"))
NB_TIMEOUTS: dict[str, float] = {}  # per notebook (file name), seconds
KERNEL_ENV = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
_started: dict[str, float] = {}
_saved_env: dict[str, str | None] = {}


def _is_notebook_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def _restore_env() -> None:
    for key, value in _saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _saved_env.clear()


def _set_env(key: str, value: str) -> None:
    _saved_env.setdefault(key, os.environ.get(key))
    os.environ[key] = value


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if not _is_notebook_cell(item):
        _restore_env()
        return
    path = Path(str(item.fspath))
    budget = NB_TIMEOUTS.get(path.name, DEFAULT_NB_TIMEOUT)
    if str(path) not in _started:
        # first cell: nbval starts this notebook's kernel right after this hook, with a copy of os.environ
        _set_env("DDPM_LITE_STRICT", "0" if "exercises" in path.parts else "1")
        for key, value in KERNEL_ENV.items():
            _set_env(key, value)
    start = _started.setdefault(str(path), time.monotonic())
    remaining = budget - (time.monotonic() - start)
    if remaining <= 0:
        pytest.fail(f"{path.name}: still running after the hang guard of {budget:.0f}s", pytrace=False)
    item.config.option.nbval_cell_timeout = remaining  # nbval reads it at each cell


def pytest_sessionfinish(session):
    _restore_env()
