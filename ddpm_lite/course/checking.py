"""The exercise checker: one line of feedback on a learner's function, then the function to use next.

A checker (:meth:`Exercise.check`) calls the learner's function on fixed random inputs (:class:`Case`), looks at
what came back (the *kind* of result first: a torch tensor or an array, its dtype, device and shape, a pair in
the right order), compares the numbers with the reference (the package's own implementation) and, when they
differ, says **what** is wrong without giving the answer away:

- a known mistake (:class:`Mistake`: a missing square root, an off-by-one t, a swapped pair, ...) whose output the
  learner's matches: its diagnosis (``what``), in words;
- otherwise a description of the difference: which output (the mean or the variance), where (which case, which
  example of the batch), how (the sign, a constant factor, a constant offset, transposed, close but imprecise).

The formula comes only on request, in two levels: ``hint("q_sample")`` says what to look at, ``hint("q_sample",
2)`` gives the formula or the line of code (for the last mistake diagnosed, or the exercise's own when none was).
Every ❌ line ends with "(run `hint('q_sample')` for a hint)".

The checker never crashes on a strange answer: every call of the learner's function and every look at its result
is guarded. It returns the learner's function when it is correct, else the reference, so the cells after an
exercise always run.

- ``NotImplementedError`` (the learner has not started): "⏳ ... not implemented yet".
- ``DDPM_LITE_STRICT=1`` (set by the test suite for the solution notebooks): raise instead of falling back,
  :class:`ExerciseError` for a wrong answer and the original ``NotImplementedError`` for a missing one.

The exercises themselves are in :mod:`ddpm_lite.course.exercises`. Adding one (in that module or another)::

    MY_EX = register(Exercise(
        name="my_fn", reference=reference_fn, cases=make_cases,       # make_cases(generator) -> [Case, ...]
        arg_names=("x0", "t"), outputs=[Output("x_t", like="x0")],    # what the function returns
        look="what to look at (hint level 1)", formula="the formula (hint level 2)",
        mistakes=[Mistake("the noise is scaled by its variance, not its standard deviation",   # the diagnosis
                          "x_t = sqrt(a) * x0 + sqrt(1 - a) * noise",                           # level 2
                          wrong_fn, look="the factor in front of the noise"), ...]))            # level 1
    def check_my_fn(fn): return MY_EX.check(fn)

The first case is the diagnostic one: pick inputs on which every listed mistake gives a different result
(``tests/test_exercises.py`` checks that for every registered exercise); later cases probe edges (t = 0, other
arguments) and are labelled so the message says where the function went wrong. A function that returns several
values lists one :class:`Output` per value; an exercise whose result is measured rather than returned (the
parameters after a training step, a gradient) has a ``runner`` and ``extra_outputs``.
"""
from __future__ import annotations

import contextlib
import inspect
import linecache
import re
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..runtime import strict_mode

__all__ = ["Case", "Mistake", "Output", "Run", "Exercise", "Verdict", "ExerciseError", "WrongKind", "register",
           "EXERCISES", "strict_mode", "hint", "hint_text", "call_learner"]

FALLBACK = "using the reference so the notebook goes on"
HINT_NOTE = "(run `hint('{name}')` for a hint)"


class ExerciseError(AssertionError):
    """A wrong answer in strict mode."""


class WrongKind(Exception):
    """A result of the wrong kind; ``str(err)`` says what came back and what is expected ("returned ...")."""


class ComplexResult(WrongKind):
    """A complex result: wrong in kind, but a known mistake (a square root of a negative number) may explain it."""


class LearnerRaised(Exception):
    """The learner's function raised ``error`` (kept apart from the checker's own errors)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def call_learner(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, with any exception of the learner's code wrapped in :class:`LearnerRaised`."""
    try:
        return fn(*args, **kwargs)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any crash of the learner's code is feedback
        raise LearnerRaised(err) from err


@dataclass
class Case:
    """One call of the function under test: ``fn(*args, **kwargs)``; ``label`` says what the case probes.

    ``per_example`` names values that tell the examples of the batch apart (``{"t": t}``), so that a result wrong
    for some examples only is reported as "wrong only for example 0 (t = 0)"."""
    args: tuple
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    per_example: dict = field(default_factory=dict)


@dataclass
class Mistake:
    """A known wrong answer: ``fn`` computes what that mistake returns (same signature as the exercise).

    ``what`` is the diagnosis shown by the first ❌ (in words: which output, where, how; never the formula),
    ``look`` the first hint (what to look at; the exercise's ``look`` when empty) and ``fix`` the second (the
    formula or the line of code)."""
    what: str
    fix: str
    fn: Callable
    look: str = ""


@dataclass
class Output:
    """What one returned value must be, for the cells after the exercise to use it.

    - ``kind``: ``"tensor"`` (a torch tensor), ``"array"`` (a tensor or a numpy array; ``lists=True`` admits a
      list of numbers too) or ``"number"`` (a Python or numpy number, or a 0-d tensor or array);
    - ``why``: what the next cell does with it, quoted when the kind is wrong;
    - ``dtype``: ``None`` (any floating dtype but half precision), ``"float64"``, ``"float32"``, ``"same:ARG"``
      (the dtype of argument ARG) or ``"atleast:ARG"`` (float64 when ARG is float64);
    - ``per_example_of``: a value per example of argument ARG, accepted as (B,), (B, 1, ...) or ARG's shape;
    - ``plain``: a tensor must not require grad; ``needs_grad``: it must (a loss to backpropagate), and
      ``needs_grad_says`` says why when it does not;
    - ``shape_says``: the expected shape in words, for a result of the wrong shape;
    - ``zero_says``: replaces "is zero everywhere" for a result that is all zeros;
    - ``plural``: the name is a plural ("the betas are ...").
    """
    name: str = "your result"
    kind: str = "tensor"
    why: str = ""
    dtype: str | None = None
    per_example_of: str | None = None
    plain: bool = True
    needs_grad: bool = False
    needs_grad_says: str = ""
    lists: bool = False
    shape_says: str = ""
    zero_says: str = ""
    plural: bool = False


@dataclass
class Run:
    """One call: what the function returned, what the checker measured around it (``extra``: parameters after a
    training step, a gradient), and the arguments the call changed in place."""
    returned: Any
    extra: tuple = ()
    changed: tuple = ()


@dataclass
class Verdict:
    """``status``: "correct", "missing" (NotImplementedError) or "wrong"; ``message`` is the one-line verdict;
    ``look`` and ``fix`` are the two hint levels that go with it."""
    status: str
    message: str
    error: BaseException | None = None
    look: str = ""
    fix: str = ""
    mistake: Mistake | None = None

    @property
    def ok(self) -> bool:
        return self.status == "correct"


# ======================================================================================================================
# describing and reading values
# ======================================================================================================================
def _shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _number(x: float) -> str:
    return f"{x:.4g}"


def _describe(value: Any) -> str:
    """A short, safe description of any value: "a numpy array of shape (4, 2)", "a list of 3 items", ..."""
    try:
        if value is None:
            return "None"
        if isinstance(value, torch.Tensor):
            where = "" if value.device.type == "cpu" else f" on {value.device}"
            if value.ndim == 0 and value.device.type != "meta":
                return f"a 0-d tensor ({str(value.dtype).replace('torch.', '')}{where})"
            return f"a tensor of shape {_shape(value.shape)} ({str(value.dtype).replace('torch.', '')}{where})"
        if isinstance(value, np.ndarray):
            return f"a numpy array of shape {_shape(value.shape)} ({value.dtype})"
        if isinstance(value, (bool, np.bool_)):
            return f"the boolean {bool(value)}"
        if isinstance(value, (int, float, np.number)) and not isinstance(value, complex):
            return f"the number {_number(float(value))}"
        if isinstance(value, complex):
            return f"the complex number {value:.4g}"
        if isinstance(value, (str, bytes)):
            text = repr(value)
            return f"the string {text[:30] + '...' if len(text) > 30 else text}"
        if isinstance(value, (list, tuple)):
            return f"a {type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}"
        if inspect.isgenerator(value) or isinstance(value, types.GeneratorType):
            return "a generator"
        if inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value):
            return f"the function {getattr(value, '__name__', '?')}"
        if isinstance(value, dict):
            return f"a dict with keys {list(value)[:4]}"
        return f"a {type(value).__name__}"
    except Exception:  # noqa: BLE001 - describing must never fail
        return "an unreadable value"


def _expected_kind(out: Output) -> str:
    return {"tensor": "a torch tensor", "number": "one number",
            "array": "a numpy array or a torch tensor" if not out.lists else "an array (or a list) of numbers"
            }.get(out.kind, "a tensor")


def _dtype_name(value) -> str | None:
    """"float32", "float64", ... for a tensor or an array; None for anything else."""
    if isinstance(value, torch.Tensor):
        return str(value.dtype).replace("torch.", "")
    if isinstance(value, np.ndarray):
        return str(value.dtype)
    return None


def _to_numpy(x: Any) -> np.ndarray:
    """The numbers of a value as a float64 array (complex: the real part). Raises WrongKind when there are none."""
    try:
        if isinstance(x, torch.Tensor):
            if x.device.type == "meta":
                raise WrongKind("returned a tensor on the meta device, which holds no numbers")
            x = x.detach()
            if x.is_complex():
                x = x.real
            return x.cpu().double().numpy()
        if isinstance(x, (np.ndarray, np.generic, int, float, complex, list, tuple)) and not isinstance(x, bool):
            a = np.asarray(x)
            if np.iscomplexobj(a):
                a = a.real
            if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
                raise WrongKind(f"returned {_describe(x)}, which does not hold numbers")
            return a.astype(np.float64)
    except WrongKind:
        raise
    except Exception as err:  # noqa: BLE001 - a ragged list, tensors that require grad inside a list, ...
        raise WrongKind(f"returned {_describe(x)}, whose numbers could not be read ({type(err).__name__})") from err
    raise WrongKind(f"returned {_describe(x)}")


def _clone(x: Any) -> Any:
    """A private copy of a tensor or array argument; other objects (a model, a diffusion) are passed as they are."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    return x.copy() if isinstance(x, np.ndarray) else x


def _same(a: Any, b: Any) -> bool:
    """False when the learner's code changed a tensor or array argument in place."""
    try:
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return a.shape == b.shape and torch.equal(a.detach(), b)
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a.shape == b.shape and np.array_equal(a, b)
    except Exception:  # noqa: BLE001
        return False
    return True


def _learner_line(err: BaseException, fn: Callable) -> str:
    """The line of the learner's function where ``err`` was raised ("" when not found)."""
    try:
        code = getattr(fn, "__code__", None)
        if code is None:
            return ""
        line = ""
        for frame, lineno in traceback.walk_tb(err.__traceback__):
            if frame.f_code.co_filename == code.co_filename:
                text = linecache.getline(frame.f_code.co_filename, lineno).strip()
                line = text or line
        return line if len(line) <= 70 else line[:67] + "..."
    except Exception:  # noqa: BLE001
        return ""


# the verbs a diagnosis may start with ("uses base-10 logarithms"): "your function" goes in front
VERBS = {"uses", "reads", "returns", "returned", "weighs", "maps", "mixes", "interpolates", "adds", "ignores",
         "multiplies", "scales", "shifts", "sums", "moves", "compares", "points", "gives", "differentiates",
         "divides", "draws", "takes"}

# errors any exercise can meet: (regex on "Type: message", what it means, what to do)
COMMON_ERRORS: list[tuple[str, str, str]] = [
    (r"^TypeError: .*(positional argument|required positional|unexpected keyword|takes \d+)",
     "it was called with the arguments {call} and did not accept them",
     "keep the signature of the exercise cell: def {call}"),
    (r"^NameError", "a name your function uses is not defined",
     "run the cell that imports it (torch, np, math, ...) or defines it, or check its spelling"),
    (r"^AttributeError: 'numpy\.ndarray' object has no attribute",
     "a numpy array was used where the code expects a torch tensor",
     "convert with torch.as_tensor(...) or use the numpy function of the same name"),
    (r"Expected all tensors to be on the same device", "tensors on different devices were mixed",
     "create new tensors on the device of the inputs: device=x.device"),
    (r"expected (m1 and m2 to have the same dtype|scalar type)|dtype.*(?:Double|Float)|(Double|Float) did not match",
     "float32 and float64 tensors were mixed in one operation",
     "convert one of them: .to(x.dtype), .float() or .double()"),
    (r"^ZeroDivisionError", "a division by zero", "look for a quantity that is 0 for some input (at t = 0?)"),
    (r"math domain error", "a square root or log of a negative number (math.sqrt / math.log)",
     "check the sign of what goes into the square root or the log"),
    (r"^RecursionError", "the function calls itself without end",
     "inside the exercise cell, don't call the function you are defining"),
]


# ======================================================================================================================
# the exercise
# ======================================================================================================================
@dataclass
class Exercise:
    """An exercise: the reference, the inputs to try, what must come back, the known mistakes, two hint levels.

    ``cases(generator)`` builds the inputs from a seeded ``torch.Generator`` (so every run checks the same
    thing). ``arg_names`` names the positional arguments in messages. ``outputs``: one :class:`Output` per
    returned value (two for a function returning a pair). ``look`` and ``formula`` are the hints for an answer
    wrong in an unknown way. ``errors`` maps regexes on an exception's text to ``(what it means, fix)``, for
    mistakes that crash. ``nan``: ``(what, fix)`` for NaN or inf in the result. ``also_correct``: other
    functions whose results are right too (another valid order of random draws). ``runner(fn, case) -> Run``
    replaces the plain call (a training step, a gradient); its measurements are checked against
    ``extra_outputs`` (``extra_first``: a wrong measurement is reported before a wrong returned value).
    ``no_grad``: call the function under ``torch.no_grad()``.
    """
    name: str
    reference: Callable
    cases: Callable[[torch.Generator], list[Case]]
    mistakes: Sequence[Mistake] = ()
    formula: str = "compare your code with the equation above, term by term"
    look: str = "compare your code with the equation above, term by term"
    arg_names: Sequence[str] = ()
    outputs: Sequence[Output] = (Output(),)
    extra_outputs: Sequence[Output] = ()
    nan: tuple[str, str] = ()
    errors: Sequence[tuple[str, str, str]] = ()
    also_correct: Sequence[Callable] = ()
    runner: Callable[[Callable, Case], Run] | None = None
    extra_first: bool = False
    no_grad: bool = True
    rtol: float = 1e-4
    atol: float = 1e-5
    seed: int = 0

    # ------------------------------------------------------------------ running
    def make_cases(self) -> list[Case]:
        return self.cases(torch.Generator().manual_seed(self.seed))

    def _arg(self, case: Case, name: str):
        if name in case.kwargs:
            return case.kwargs[name]
        names = list(self.arg_names)
        return case.args[names.index(name)] if name in names and names.index(name) < len(case.args) else None

    def _arg_name(self, i: int) -> str:
        return self.arg_names[i] if i < len(self.arg_names) else f"argument {i + 1}"

    def run(self, fn: Callable, case: Case) -> Run:
        """Call ``fn`` on ``case`` (private copies of the tensors): a :class:`Run`. The learner's exceptions come
        out as :class:`LearnerRaised`."""
        if self.runner is not None:
            return self.runner(fn, case)
        args = tuple(_clone(a) for a in case.args)
        kwargs = {k: _clone(v) for k, v in case.kwargs.items()}
        with torch.no_grad() if self.no_grad else contextlib.nullcontext():
            out = call_learner(fn, *args, **kwargs)
        changed = [self._arg_name(i) for i, (a, b) in enumerate(zip(args, case.args)) if not _same(a, b)]
        changed += [k for k, v in kwargs.items() if not _same(v, case.kwargs[k])]
        return Run(out, (), tuple(changed))

    def _items(self, run: Run) -> list:
        """The returned values, one per output (raises WrongKind for a wrong number of values)."""
        n = len(self.outputs)
        if n == 1:
            return [run.returned]
        value = run.returned
        names = ", ".join(o.name.replace("the ", "") for o in self.outputs)
        if isinstance(value, (tuple, list)) and len(value) == n:
            return list(value)
        if isinstance(value, (tuple, list)):
            raise WrongKind(f"returned {len(value)} values; return {n}: ({names})")
        if value is None:
            raise WrongKind(f"returned None; return {n} values: ({names}) — did you forget the `return`?")
        raise WrongKind(f"returned {_describe(value)}; return {n} values: ({names})")

    def values(self, run: Run, case: Case, strict: bool = True) -> list[np.ndarray]:
        """The numbers of a run, one float64 array per output then per extra output. ``strict``: check the kind of
        each returned value first (raises WrongKind)."""
        items = self._items(run) if strict else (
            [run.returned] if len(self.outputs) == 1 else list(run.returned))
        out = []
        for value, spec in zip(items, self.outputs):
            if strict:
                self._check_kind(value, spec, case, multi=len(self.outputs) > 1)
            out.append(self._per_example(_to_numpy(value), spec, case))
        for value, spec in zip(run.extra, self.extra_outputs):
            out.append(self._per_example(_to_numpy(value), spec, case))
        return out

    def _per_example(self, a: np.ndarray, spec: Output, case: Case) -> np.ndarray:
        """A per-example value (B,) or (B, 1, ...) broadcast to the shape of its argument."""
        if spec.per_example_of is None:
            return a
        ref = self._arg(case, spec.per_example_of)
        target = tuple(getattr(ref, "shape", ()))
        if not target or a.shape == target:
            return a
        batch = target[0]
        if a.ndim == 1 and len(a) == batch:
            a = a.reshape(batch, *[1] * (len(target) - 1))
        if a.ndim == len(target) and a.shape[0] == batch and all(s == 1 for s in a.shape[1:]):
            return np.broadcast_to(a, target)
        return a

    def _check_kind(self, value: Any, spec: Output, case: Case, multi: bool = False) -> None:
        """Raise WrongKind when ``value`` is not what the next cells can use."""
        what = f" as {spec.name}" if multi else ""
        need = _expected_kind(spec)
        why = f" ({spec.why})" if spec.why else ""
        if value is None:
            raise WrongKind(f"returned None{what} — did you forget the `return`?")
        if isinstance(value, (str, bytes)):
            raise WrongKind(f"returned {_describe(value)}{what}; return {need}{why}")
        if inspect.isgenerator(value) or isinstance(value, types.GeneratorType):
            raise WrongKind(f"returned a generator{what} (a `yield`, or `(... for ...)` in parentheses); "
                            f"return {need}{why}")
        if callable(value) and not isinstance(value, (torch.Tensor, np.ndarray)):
            raise WrongKind(f"returned a function{what}, not its result: return the value itself ({need})")
        if isinstance(value, (bool, np.bool_)):
            raise WrongKind(f"returned {_describe(value)}{what}; return {need}{why}")
        if spec.kind == "tensor" and not isinstance(value, torch.Tensor):
            if isinstance(value, np.ndarray):
                raise WrongKind(f"returned a numpy array of shape {_shape(value.shape)}{what}; return a torch "
                                f"tensor{why}")
            if isinstance(value, (int, float, np.number)):
                raise WrongKind(f"returned {_describe(value)}{what}; return a torch tensor"
                                f"{self._shape_words(spec, case)}{why}")
            raise WrongKind(f"returned {_describe(value)}{what}; return a torch tensor{why}")
        if spec.kind == "array" and not isinstance(value, (torch.Tensor, np.ndarray)):
            if isinstance(value, (list, tuple)) and spec.lists:
                _to_numpy(value)  # raises for a list that holds no numbers
            else:
                raise WrongKind(f"returned {_describe(value)}{what}; return {need}{why}")
        if spec.kind == "number":
            if isinstance(value, (torch.Tensor, np.ndarray)):
                if value.ndim != 0:
                    raise WrongKind(f"returned {_describe(value)}{what}; return one number"
                                    + (f": {spec.shape_says}" if spec.shape_says else "") + why)
            elif not isinstance(value, (int, float, complex, np.number)):
                raise WrongKind(f"returned {_describe(value)}{what}; return one number{why}")
        if isinstance(value, torch.Tensor):
            self._check_tensor(value, spec, case, what, why)
        elif isinstance(value, np.ndarray) or isinstance(value, np.number):
            self._check_dtype(np.asarray(value).dtype.name, np.iscomplexobj(value), value, spec, case, what, why)
        if isinstance(value, complex) or (isinstance(value, np.ndarray) and np.iscomplexobj(value)) or \
                isinstance(value, np.complexfloating):
            a = np.asarray(value)
            imag = float(np.abs(a.imag).max(initial=0))
            if imag > 1e-6 * max(float(np.abs(a.real).max(initial=0)), 1.0):
                raise ComplexResult(f"returned a complex number{what} with an imaginary part of {imag:.3g}; the "
                                    "result is real: keep the .real part of what made it complex")
            raise WrongKind(f"returned a complex number{what} (its imaginary part, {imag:.1g}, is rounding); return "
                            f"its .real part{why or ' (the next cell compares it with real numbers)'}")

    def _check_tensor(self, value: torch.Tensor, spec: Output, case: Case, what: str, why: str) -> None:
        if value.device.type == "meta":
            raise WrongKind(f"returned a tensor on the meta device{what}, which holds no numbers; compute it from "
                            "the inputs (on the cpu)")
        devices = {a.device.type for a in [*case.args, *case.kwargs.values()] if isinstance(a, torch.Tensor)}
        if devices and value.device.type not in devices:
            raise WrongKind(f"returned a tensor on {value.device}{what} while the inputs are on "
                            f"{'/'.join(sorted(devices))}: keep it on the inputs' device{why}")
        if value.is_complex():
            raise ComplexResult(f"returned complex numbers ({_dtype_name(value)}){what}: a square root (** 0.5) of a "
                                "negative number somewhere? The result is real")
        self._check_dtype(_dtype_name(value), False, value, spec, case, what, why)
        if value.requires_grad and spec.plain:
            plain = "a plain number, with .item()" if spec.kind == "number" else "a plain tensor, with .detach()"
            raise WrongKind(f"returned a tensor that still requires grad{what}; return {plain}{why}")
        if spec.needs_grad and not value.requires_grad:
            raise WrongKind(f"returned a tensor that does not require grad{what}: "
                            + (spec.needs_grad_says or "no gradient can flow back through it"))

    def _check_dtype(self, dtype: str, complex_: bool, value, spec: Output, case: Case, what: str, why: str):
        if complex_:
            return  # judged by the size of the imaginary part
        if dtype == "bool" or dtype.startswith(("int", "uint")):
            raise WrongKind(f"returned {'booleans' if dtype == 'bool' else 'integers'} ({dtype}){what}; return "
                            f"floating-point numbers{why}")
        if dtype in ("float16", "bfloat16"):
            raise WrongKind(f"returned half precision numbers ({dtype}){what}: too imprecise here, compute in "
                            "float32 or float64")
        if not dtype.startswith("float"):
            raise WrongKind(f"returned {dtype} values{what}; return floating-point numbers{why}")
        rule = spec.dtype
        if rule is None:
            return
        if rule in ("float32", "float64"):
            if dtype != rule:
                reason = spec.why or ("float32 loses the digits of the smallest values here"
                                      if rule == "float64" else "the network's layers are float32")
                raise WrongKind(f"returned {dtype}{what}; return {rule} ({reason})")
            return
        kind, _, arg = rule.partition(":")
        ref = _dtype_name(self._arg(case, arg))
        if ref is None or not ref.startswith("float"):
            return
        if kind == "same" and dtype != ref:
            raise WrongKind(f"returned {dtype} for a {ref} `{arg}`{what}; keep the dtype of `{arg}`{why}")
        if kind == "atleast" and ref == "float64" and dtype != "float64":
            raise WrongKind(f"returned {dtype} for a float64 `{arg}`{what}; keep the precision of `{arg}`{why}")

    def _shape_words(self, spec: Output, case: Case, shape=None) -> str:
        """" with one value per example, shape (4,)" and the like, from the expected shape of a case."""
        try:
            if shape is None:
                shape = tuple(self.values(self.run(self.reference, case), case, strict=False)[0].shape)
        except Exception:  # noqa: BLE001
            return ""
        return f" with {self._shape_text(tuple(shape), spec, case)}"

    def _shape_text(self, shape: tuple, spec: Output, case: Case) -> str:
        """The expected shape in words, named after the learner's own arguments where one has it."""
        if spec.per_example_of is not None:
            ref = self._arg(case, spec.per_example_of)
            batch = len(ref) if hasattr(ref, "__len__") else "B"
            return (f"one value per example, shape ({batch},) or ({batch}, 1, ...), or the shape of "
                    f"`{spec.per_example_of}`")
        if shape == ():
            return "one number" + (f" ({spec.shape_says})" if spec.shape_says else "")
        for name in self.arg_names:
            arg = self._arg(case, name)
            if isinstance(arg, (torch.Tensor, np.ndarray)) and tuple(arg.shape) == shape and arg.ndim > 1:
                return f"the shape of `{name}`, {_shape(shape)}"
        batch = next((len(a) for a in case.args if isinstance(a, torch.Tensor) and a.ndim >= 1), None)
        if len(shape) == 1 and shape[0] == batch and not spec.shape_says:
            return f"one value per example of the batch, shape ({batch},)"
        return f"shape {_shape(shape)}" + (f": {spec.shape_says}" if spec.shape_says else "")

    # ------------------------------------------------------------------ verdicts
    def _wrong(self, text: str, look: str = "", fix: str = "", mistake: Mistake | None = None,
               error: BaseException | None = None) -> Verdict:
        return Verdict("wrong", f"❌ {self.name}{text} {HINT_NOTE.format(name=self.name)}", error,
                       look or self.look, fix or self.formula, mistake)

    def _close(self, a: np.ndarray, b: np.ndarray) -> bool:
        try:
            return a.shape == b.shape and bool(np.allclose(a, b, rtol=self.rtol, atol=self.atol, equal_nan=True))
        except Exception:  # noqa: BLE001
            return False

    def _all_close(self, got: list[np.ndarray], expected: list[np.ndarray]) -> bool:
        return len(got) == len(expected) and all(self._close(a, b) for a, b in zip(got, expected))

    def _numbers(self, fn: Callable, case: Case) -> list[np.ndarray] | None:
        """The numbers of one of our own functions (the reference, a mistake), None when it fails on this case."""
        try:
            return self.values(self.run(fn, case), case, strict=False)
        except Exception:  # noqa: BLE001 - a mistake that crashes on this case cannot be the one
            return None

    def diagnose(self, fn: Callable) -> Verdict:
        """Run ``fn`` on every case and return the verdict (prints nothing, never falls back, never raises)."""
        if not callable(fn):
            return self._wrong(f": `{self.name}` must be a function (`def {self.name}(...)`), but it is "
                               f"{_describe(fn)}", "the exercise cell defines a function and checks it",
                               f"keep `def {self.name}(...)` and the line `{self.name} = check_{self.name}"
                               f"({self.name})` after it")
        try:
            return self._diagnose(fn)
        except Exception as err:  # noqa: BLE001 - a checker never crashes, whatever came back
            return self._wrong(f": could not check your function ({type(err).__name__}: {str(err)[:80]})",
                               error=err)

    def _diagnose(self, fn: Callable) -> Verdict:
        cases = self.make_cases()
        for i, case in enumerate(cases):
            where = f" — for {case.label}" if case.label else ""
            expected = self.values(self.run(self.reference, case), case, strict=False)
            try:
                run = self.run(fn, case)
            except LearnerRaised as raised:
                if isinstance(raised.error, NotImplementedError):
                    return Verdict("missing", f"⏳ {self.name}: not implemented yet — {FALLBACK}", raised.error,
                                   self.look, self.formula)
                return self._explain_error(raised.error, fn, case, where)
            except WrongKind as err:
                return self._wrong(f" {err}{where}")
            try:
                got = self.values(run, case)
            except ComplexResult as err:  # a known mistake may explain the imaginary part
                mistake = self._known_mistake(run, case)
                if mistake is not None:
                    return self._wrong(f": {self._said(mistake.what)}{where}", mistake.look, mistake.fix, mistake)
                return self._wrong(f" {err}" + (where if i else ""))
            except WrongKind as err:
                swapped = self._swapped(run, case, expected)
                return swapped or self._wrong(f" {err}" + (where if i else ""))
            if run.changed:
                return self._wrong(f" changed its input {', '.join(f'`{c}`' for c in run.changed)} in place",
                                   "operations that write into a tensor: `x *= ...`, `x[...] = ...`, `.add_()`",
                                   "work on new tensors (y = x * a) or on a copy (x = x.clone())")
            if i == 0:
                again = self._again(fn, case)
                if again is not None and not self._all_close(again, got):
                    return self._wrong(" gives different results for the same inputs",
                                       "where your function draws random numbers",
                                       "use the noise (or the generator) passed in as an argument; don't draw "
                                       "new random numbers with the global generator")
            if self._all_close(got, expected):
                continue
            if any(self._all_close(got, alt) for alt in
                   (self._numbers(f, case) for f in self.also_correct) if alt is not None):
                continue
            swapped = self._swapped(run, case, expected)
            if swapped:
                return swapped
            mistake = self._known_mistake(run, case, got)
            if mistake is not None:
                return self._wrong(f": {self._said(mistake.what)}{where}", mistake.look, mistake.fix, mistake)
            text = self._describe_difference(got, expected, case)
            fix = self.nan[1] if self.nan and "NaN or inf" in text else ""
            return self._wrong(": " + text + where + self._right_elsewhere(fn, cases, i), fix=fix)
        return Verdict("correct", f"✅ {self.name}: correct — your function is used from here on")

    def _right_elsewhere(self, fn: Callable, cases: list[Case], wrong: int) -> str:
        """" (right for a batch of one)": the labelled cases where ``fn`` is right, to say where it is wrong."""
        right = []
        for j, case in enumerate(cases):
            if j == wrong or not case.label:
                continue
            try:
                got = self.values(self.run(fn, case), case)
                if self._all_close(got, self.values(self.run(self.reference, case), case, strict=False)):
                    right.append(case.label)
            except Exception:  # noqa: BLE001 - a case it fails on is not a case it is right for
                continue
        return f" (right for {'; '.join(right)})" if right else ""

    def _known_mistake(self, run: Run, case: Case, got: list[np.ndarray] | None = None) -> Mistake | None:
        """The first known mistake whose output on ``case`` is the learner's (read leniently when not given)."""
        if got is None:
            try:
                got = self.values(run, case, strict=False)
            except Exception:  # noqa: BLE001
                return None
        for mistake in self.mistakes:
            wrong = self._numbers(mistake.fn, case)
            if wrong is not None and self._all_close(got, wrong):
                return mistake
        return None

    def _again(self, fn: Callable, case: Case) -> list[np.ndarray] | None:
        try:
            return self.values(self.run(fn, case), case, strict=False)
        except Exception:  # noqa: BLE001 - a second call that fails: judged by the first
            return None

    def _swapped(self, run: Run, case: Case, expected: list[np.ndarray]) -> Verdict | None:
        """A pair returned in the wrong order."""
        n = len(self.outputs)
        value = run.returned
        if n != 2 or not isinstance(value, (tuple, list)) or len(value) != 2:
            return None
        try:
            a = self._per_example(_to_numpy(value[1]), self.outputs[0], case)
            b = self._per_example(_to_numpy(value[0]), self.outputs[1], case)
        except Exception:  # noqa: BLE001
            return None
        if self._close(a, expected[0]) and self._close(b, expected[1]):
            names = [o.name.replace("the ", "") for o in self.outputs]
            return self._wrong(f" returned the pair in the wrong order: ({names[1]}, {names[0]}); return "
                               f"({names[0]}, {names[1]})", "the order of the returned values",
                               f"return {names[0]}, {names[1]}")
        return None

    def _said(self, what: str) -> str:
        """A diagnosis that starts with a verb gets its subject: "is 2 times ..." -> "the loss is 2 times ..."."""
        first = what.split(" ", 1)[0]
        if first in ("is", "has") and len(self.outputs) == 1:
            return f"{self.outputs[0].name} {what}"
        if first in VERBS:
            return f"your function {what}"
        return what

    def _explain_error(self, err: BaseException, fn: Callable, case: Case, where: str) -> Verdict:
        where = where.replace(" — for ", " for ")
        text = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
        line = _learner_line(err, fn)
        at = f" at `{line}`" if line else ""
        call = f"{self.name}({', '.join(self.arg_names)})"
        for pattern, what, fix in [*self.errors, *COMMON_ERRORS]:
            if re.search(pattern, text):
                what, fix = what.format(call=call), fix.format(call=call)
                return self._wrong(f" raised {text[:140]}{where}{at} — {what}", what, fix, error=err)
        return self._wrong(f" raised {text[:140]}{where}{at}", error=err)

    def _describe_difference(self, got: list[np.ndarray], expected: list[np.ndarray], case: Case) -> str:
        """Which output is wrong, and how, in words."""
        specs = [*self.outputs, *self.extra_outputs]
        wrong = [k for k, (a, b) in enumerate(zip(got, expected)) if not self._close(a, b)]
        if self.extra_first:
            wrong.sort(key=lambda j: j < len(self.outputs))
        k = wrong[0]
        spec, a, b = specs[k], got[k], expected[k]
        right = [specs[j].name for j in range(len(specs)) if j not in wrong]
        prefix = f"{' and '.join(right)} {'is' if len(right) == 1 else 'are'} right, but " if right else ""
        how = self._how(a, b, spec, case)
        if spec.plural:  # "the betas are ...", "the weights have ..."
            first, _, rest = how.partition(" ")
            how = {"is": "are", "has": "have", "holds": "hold"}.get(first, first) + " " + rest
        return prefix + f"{spec.name} " + how

    def _how(self, a: np.ndarray, b: np.ndarray, spec: Output, case: Case) -> str:
        if a.shape != b.shape:
            got = "is one number" if a.shape == () else f"has shape {_shape(a.shape)}"
            return f"{got}; it should have {self._shape_text(tuple(b.shape), spec, case)}"
        finite = np.isfinite(b)
        if not np.isfinite(a[finite]).all():
            bad = int((~np.isfinite(a) & finite).sum())
            what, _ = self.nan or ("", "")
            return f"holds NaN or inf in {bad} of {a.size} values" + (f": {what}" if what else "")
        if not finite.all():
            a, b = np.where(finite, a, 0.0), np.where(finite, b, 0.0)
        scale = max(float(np.abs(b).max(initial=0)), 1e-12)
        err = np.abs(a - b)
        if np.abs(a).max(initial=0) <= self.atol and scale > self.atol:
            return spec.zero_says or "is zero everywhere"
        if self._close(a, -b):
            return "has the right size but the wrong sign"
        mask = np.abs(b) > 1e-6 * scale
        if mask.any():
            ratios = a[mask] / b[mask]
            k = float(np.median(ratios))
            if np.isfinite(k) and abs(k - 1) > 1e-3 and np.allclose(a, k * b, rtol=1e-3, atol=self.atol):
                return f"is {self._factor(k)} the right value" + (" everywhere (a constant factor)" if a.size > 1
                                                                  else "")
        offset = (a - b).ravel()
        if offset.size > 1 and np.allclose(offset, offset[0], rtol=1e-3, atol=self.atol):
            return f"is off by the same amount everywhere ({offset[0]:+.4g})"
        if a.ndim == 2 and a.shape[0] == a.shape[1] and self._close(a.T, b):
            return "is transposed (rows and columns swapped)"
        rows = self._wrong_rows(a, b, case)
        worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
        at = f" at index {tuple(int(i) for i in worst)}" if err.ndim and a.size > 1 else ""
        relative = float((err / (np.abs(b) + 1e-3 * scale)).max())
        if relative < 2e-3:
            return (f"is close but not within tolerance (largest error {err.max():.2g}{at}, relative {relative:.1e}): "
                    "a precision problem? float32 arithmetic where nearly equal numbers are subtracted, float16, "
                    "or a rounded intermediate" + (f" ({rows.replace('is wrong only', 'only')})" if rows else ""))
        if rows:
            return rows
        return f"has wrong values (largest error {err.max():.3g}{at})"

    @staticmethod
    def _factor(k: float) -> str:
        for inverse in (False, True):
            v = 1 / k if inverse else k
            n = round(v)
            if n >= 2 and abs(v - n) < 1e-3 * n:
                return f"1/{n} of" if inverse else f"{n} times"
        if abs(k + 1) < 1e-3:
            return "minus"
        return f"{k:.4g} times"

    def _wrong_rows(self, a: np.ndarray, b: np.ndarray, case: Case) -> str:
        """"is wrong only for example 0 of the batch (t = 0)" when the first dimension is the batch."""
        if not case.per_example or a.ndim < 1:
            return ""
        tags = {k: np.asarray(_to_numpy(v)).ravel() for k, v in case.per_example.items()}
        batch = len(next(iter(tags.values())))
        if a.shape[0] != batch or batch < 2:
            return ""
        bad = [i for i in range(batch) if not self._close(a[i], b[i])]
        if not bad or len(bad) == batch:
            return ""
        names = ", ".join(f"{i} ({', '.join(f'{k} = {tags[k][i]:g}' for k in tags)})" for i in bad[:4])
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        return (f"is wrong only for example{'s' if len(bad) > 1 else ''} {names}{more} of the batch; the "
                "others are right")

    def check(self, fn: Callable) -> Callable:
        """Print the verdict; return ``fn`` when correct, else the reference (strict mode: raise instead)."""
        verdict = self.diagnose(fn)
        LAST[self.name] = verdict
        if verdict.ok:
            print(verdict.message)
            return fn
        if strict_mode():
            if verdict.status == "missing":
                raise verdict.error
            raise ExerciseError(verdict.message) from verdict.error
        print(verdict.message if verdict.status == "missing" else f"{verdict.message} — {FALLBACK}")
        return self.reference


EXERCISES: dict[str, Exercise] = {}
LAST: dict[str, Verdict] = {}  # the last verdict of each exercise's check, for hint()


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to :data:`EXERCISES` (the tests run every registered one) and return it."""
    if exercise.name in EXERCISES:
        raise ValueError(f"an exercise named {exercise.name!r} is already registered")
    EXERCISES[exercise.name] = exercise
    return exercise


# ======================================================================================================================
# hints on request
# ======================================================================================================================
def hint_text(name: str | None = None, level: int = 1) -> str:
    """The hint of level 1 (what to look at) or 2 (the formula or the line of code) for exercise ``name``, about
    its last diagnosed mistake if there was one; ``name`` None: the exercise checked last."""
    if name is None:
        if not LAST:
            return "no exercise checked yet: run an exercise cell first, then hint('its_name')"
        name = next(reversed(LAST))
    if not isinstance(name, str) or name not in EXERCISES:
        known = ", ".join(f"'{n}'" for n in EXERCISES)
        return f"no exercise named {name!r}; the exercises are {known}"
    try:
        level = 2 if int(level) >= 2 else 1
    except (TypeError, ValueError):
        level = 1
    exercise, verdict = EXERCISES[name], LAST.get(name)
    about = verdict is not None and verdict.status == "wrong"
    if level == 1:
        text = (verdict.look if about and verdict.look else exercise.look)
        return (f"💡 {name}, hint 1 of 2: {text}\n   Still stuck? hint('{name}', 2) shows the "
                f"{'fix' if about and verdict.mistake else 'formula'}.")
    text = (verdict.fix if about and verdict.fix else exercise.formula)
    return f"💡 {name}, hint 2 of 2: {text}"


def hint(name: str | None = None, level: int = 1) -> None:
    """Print a hint for exercise ``name``: ``hint("q_sample")`` what to look at, ``hint("q_sample", 2)`` the formula.
    Without a name, for the exercise checked last."""
    print(hint_text(name, level))

