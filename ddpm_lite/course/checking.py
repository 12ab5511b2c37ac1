"""The exercise checker: one line of feedback on a learner's function, then the function to use next.

A checker (:meth:`Exercise.check`) calls the learner's function on fixed random inputs (:class:`Case`), compares
the result with the reference (the package's own implementation), and when it differs, looks for a known mistake
(:class:`Mistake`: a missing square root, alpha in place of alpha-bar, an off-by-one t, ...) whose output the
learner's matches. It returns the learner's function when it is correct, else the reference, so the rest of the
notebook still runs.

- ``NotImplementedError`` (the learner has not started): "⏳ ... not implemented yet".
- ``DDPM_LITE_STRICT=1`` (set by the test suite for the solution notebooks): raise instead of falling back,
  :class:`ExerciseError` for a wrong answer and the original ``NotImplementedError`` for a missing one.

The exercises themselves are in :mod:`ddpm_lite.course.exercises`. Adding one (in that module or another)::

    MY_EX = register(Exercise(
        name="my_fn", reference=reference_fn, cases=make_cases,       # make_cases(generator) -> [Case, ...]
        mistakes=[Mistake("a missing square root", "the std is sqrt(1 - alpha_bar)", wrong_fn), ...],
        hint="what to re-read when the answer is wrong in an unknown way"))
    def check_my_fn(fn): return MY_EX.check(fn)

The first case is the diagnostic one: pick inputs on which every listed mistake gives a different result
(``tests/test_exercises.py`` checks that for every registered exercise); later cases probe edges (t = 0, other
arguments) and are labelled so the message says where the function went wrong. A function that returns a pair
is checked through :func:`_pair` (both values stacked into one tensor) and :func:`_check_pair`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..runtime import strict_mode

__all__ = ["Case", "Mistake", "Exercise", "Verdict", "ExerciseError", "register", "EXERCISES", "strict_mode"]

FALLBACK = "using the reference so the notebook goes on"


class ExerciseError(AssertionError):
    """A wrong answer in strict mode."""


@dataclass
class Case:
    """One call of the function under test: ``fn(*args, **kwargs)``; ``label`` says what the case probes."""
    args: tuple
    kwargs: dict = field(default_factory=dict)
    label: str = ""


@dataclass
class Mistake:
    """A known wrong answer: ``fn`` computes what that mistake returns (same signature as the exercise)."""
    what: str
    hint: str
    fn: Callable


@dataclass
class Verdict:
    """``status``: "correct", "missing" (NotImplementedError) or "wrong"; ``message`` is the one-line verdict."""
    status: str
    message: str
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.status == "correct"


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    if isinstance(x, (np.ndarray, np.generic, float, int, list, tuple)):
        return np.asarray(x, dtype=np.float64)
    raise TypeError(type(x).__name__)


def _clone(x: Any) -> Any:
    """A private copy of a tensor or array argument; other objects (a model, a diffusion) are passed as they are."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    return x.copy() if isinstance(x, np.ndarray) else x


def _same(a: Any, b: Any) -> bool:
    """False when the learner's code changed a tensor or array argument in place."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    return True


@dataclass
class Exercise:
    """An exercise: the reference, the inputs to try, the known mistakes and a general hint.

    ``cases(generator)`` builds the inputs from a seeded ``torch.Generator`` (so every run checks the same
    thing). ``arg_names`` names the positional arguments in messages. ``shape_hint`` and ``nan_hint`` replace
    ``hint`` for a result of the wrong shape or with NaNs. ``errors`` maps regexes on an exception's text to a
    hint, for mistakes that crash (a shape that does not broadcast).
    """
    name: str
    reference: Callable
    cases: Callable[[torch.Generator], list[Case]]
    mistakes: Sequence[Mistake] = ()
    hint: str = "compare your code with the equation above, term by term"
    arg_names: Sequence[str] = ()
    shape_hint: str = ""
    nan_hint: str = ""
    errors: Sequence[tuple[str, str]] = ()
    rtol: float = 1e-4
    atol: float = 1e-5
    seed: int = 0

    # ------------------------------------------------------------------ running
    def make_cases(self) -> list[Case]:
        return self.cases(torch.Generator().manual_seed(self.seed))

    def _call(self, fn: Callable, case: Case):
        args = tuple(_clone(a) for a in case.args)
        kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
        with torch.no_grad():
            out = fn(*args, **kwargs)
        changed = [self._arg_name(i) for i, (a, b) in enumerate(zip(args, case.args)) if not _same(a, b)]
        changed += [k for k, v in kwargs.items() if not _same(v, case.kwargs[k])]
        return out, changed

    def _arg_name(self, i: int) -> str:
        return self.arg_names[i] if i < len(self.arg_names) else f"argument {i + 1}"

    def _close(self, a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and np.allclose(a, b, rtol=self.rtol, atol=self.atol, equal_nan=True)

    def _wrong(self, what: str, hint: str = "") -> Verdict:
        return Verdict("wrong", f"❌ {self.name}: {what}" + (f" — {hint}" if hint else ""))

    def diagnose(self, fn: Callable) -> Verdict:
        """Run ``fn`` on every case and return the verdict (prints nothing, never falls back)."""
        for i, case in enumerate(self.make_cases()):
            where = f" for {case.label}" if case.label else ""
            expected = _to_numpy(self.reference(*case.args, **case.kwargs))
            try:
                raw, changed = self._call(fn, case)
            except NotImplementedError as err:
                return Verdict("missing", f"⏳ {self.name}: not implemented yet — {FALLBACK}", err)
            except Exception as err:  # noqa: BLE001 - any crash of the learner's code is feedback
                return self._explain_error(err, where)
            if raw is None:
                return self._wrong("returned None", "did you forget the `return`?")
            try:
                got = _to_numpy(raw)
            except (TypeError, ValueError):
                return self._wrong(f"returned a {type(raw).__name__}", "return a tensor (or array) of numbers")
            if changed:
                return self._wrong(f"changed its input {', '.join(f'`{c}`' for c in changed)} in place",
                                   "avoid in-place operations such as `x *= ...` or `.add_()` on the arguments")
            if i == 0:
                again, _ = self._call(fn, case)
                if not self._close(_to_numpy(again), got):
                    return self._wrong("gives different results for the same inputs",
                                       "use the noise passed in as an argument; don't draw new random numbers")
            if self._close(got, expected):
                continue
            for mistake in self.mistakes:
                try:
                    wrong = _to_numpy(mistake.fn(*case.args, **case.kwargs))
                except Exception:  # noqa: BLE001 - a mistake that crashes on this case cannot be the one
                    continue
                if self._close(got, wrong):
                    return self._wrong(mistake.what + where, mistake.hint)
            if got.shape != expected.shape:
                return self._wrong(f"wrong shape{where}: got {tuple(got.shape)}, expected {tuple(expected.shape)}",
                                   self.shape_hint or self.hint)
            if not np.isfinite(got).all() and np.isfinite(expected).all():
                return self._wrong(f"NaN or inf in the result{where}", self.nan_hint or self.hint)
            err = np.abs(got - expected).max()
            return self._wrong(f"wrong values{where} (largest error {err:.3g})", self.hint)
        return Verdict("correct", f"✅ {self.name}: correct — your function is used from here on")

    def _explain_error(self, err: Exception, where: str) -> Verdict:
        text = f"{type(err).__name__}: {err}".splitlines()[0]
        for pattern, hint in self.errors:
            if re.search(pattern, text):
                return Verdict("wrong", f"❌ {self.name} raised {text[:160]}{where} — {hint}", err)
        return Verdict("wrong", f"❌ {self.name} raised {text[:160]}{where} — {self.hint}", err)

    def check(self, fn: Callable) -> Callable:
        """Print the verdict; return ``fn`` when correct, else the reference (strict mode: raise instead)."""
        verdict = self.diagnose(fn)
        if verdict.ok:
            print(verdict.message)
            return fn
        if strict_mode():
            if verdict.status == "missing":
                raise verdict.error
            raise ExerciseError(verdict.message) from verdict.error
        print(verdict.message if verdict.status == "missing" else f"{verdict.message} ({FALLBACK})")
        return self.reference


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to :data:`EXERCISES` (the tests run every registered one) and return it."""
    if exercise.name in EXERCISES:
        raise ValueError(f"an exercise named {exercise.name!r} is already registered")
    EXERCISES[exercise.name] = exercise
    return exercise


# ======================================================================================================================
# exercises whose function returns a pair
# ======================================================================================================================
def _pair(fn, name: str, what: str):
    """Wrap ``fn`` returning a pair (a, b) into one returning ``torch.stack([a, b])`` (b broadcast to a's shape:
    a per-example b of shape (B,) is read as (B, 1, ...)), so the checker compares both at once. A wrong arity
    raises TypeError("{name} must return a pair {what}, ...")."""
    def packed(*args, **kwargs):
        out = fn(*args, **kwargs)
        if out is None:
            return None
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            got = f"{len(out)} values" if isinstance(out, (tuple, list)) else f"one {type(out).__name__}"
            raise TypeError(f"{name} must return a pair {what}, got {got}")
        a, b = (torch.as_tensor(v) for v in out)
        a, b = a.double(), b.double()
        if b.ndim == 1 and a.ndim > 1 and len(b) == len(a):
            b = b.reshape(len(b), *[1] * (a.ndim - 1))
        return torch.stack([a, b.expand_as(a)])
    packed.unpacked = fn
    return packed


def _check_pair(exercise: Exercise, fn: Callable, reference: Callable, name: str, what: str) -> Callable:
    packed = _pair(fn, name, what)
    return fn if exercise.check(packed) is packed else reference
