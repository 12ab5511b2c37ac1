"""Helpers of the exercise tests: a learner's cell from source, and "this answer is rejected with that diagnosis"."""
from __future__ import annotations

import linecache
import math

import numpy as np
import torch
import torch.nn.functional as F

from ddpm_lite.course.exercises import EXERCISES
from ddpm_lite.losses import mean_flat


def learner(code: str, args: str, **names):
    """A learner's cell: ``def f(args): <code>``, with torch, np, F, math and mean_flat in scope; its source is
    registered in linecache under a cell name, as IPython does, so that messages can quote the learner's line."""
    namespace = {"torch": torch, "np": np, "F": F, "math": math, "mean_flat": mean_flat, **names}
    body = "\n".join("    " + line for line in code.splitlines())
    source = f"def f({args}):\n{body}\n"
    filename = f"<learner cell {abs(hash(source))}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - a learner's cell
    return namespace["f"]


def assert_rejected(name: str, fn, *fragments: str) -> str:
    """``fn`` is wrong for exercise ``name``: one line, the hint pointer at the end, every fragment in it."""
    v = EXERCISES[name].diagnose(fn)
    assert v.status == "wrong", v.message
    assert v.message.startswith(f"❌ {name}") and "\n" not in v.message, v.message
    assert v.message.endswith(f"(run `hint('{name}')` for a hint)"), v.message
    for fragment in fragments:
        assert fragment in v.message, f"{fragment!r} not in {v.message!r}"
    return v.message


def assert_accepted(name: str, fn) -> None:
    v = EXERCISES[name].diagnose(fn)
    assert v.ok, v.message
