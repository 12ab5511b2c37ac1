"""Exercise checkers for the notebooks: one line of feedback, then the function to use next.

In a notebook::

    q_sample = check_q_sample(q_sample)   # prints "✅ q_sample: correct — ..." or "❌ q_sample: <what> — <hint>"

A checker calls the learner's function on fixed random inputs, compares the result with the reference (the
package's own implementation), and when it differs, looks for a known mistake (a missing square root, alpha in
place of alpha-bar, an off-by-one t, ...) whose output the learner's matches. It returns the learner's function
when it is correct, else the reference, so the rest of the notebook still runs.

- ``NotImplementedError`` (the learner has not started): "⏳ ... not implemented yet".
- ``DDPM_LITE_STRICT=1`` (set by the test suite for the solution notebooks): raise instead of falling back,
  :class:`ExerciseError` for a wrong answer and the original ``NotImplementedError`` for a missing one.

Adding an exercise (later notebooks do the same, in this module or their own)::

    MY_EX = register(Exercise(
        name="my_fn", reference=reference_fn, cases=make_cases,       # make_cases(generator) -> [Case, ...]
        mistakes=[Mistake("a missing square root", "the std is sqrt(1 - alpha_bar)", wrong_fn), ...],
        hint="what to re-read when the answer is wrong in an unknown way"))
    def check_my_fn(fn): return MY_EX.check(fn)

The first case is the diagnostic one: pick inputs on which every listed mistake gives a different result
(``tests/test_exercises.py`` checks that for every registered exercise); later cases probe edges (t = 0, other
arguments) and are labelled so the message says where the function went wrong.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion
from .losses import mean_flat
from .runtime import strict_mode
from .losses import normal_kl as _normal_kl
from .schedules import cosine_betas as _cosine_betas

__all__ = ["Case", "Mistake", "Exercise", "Verdict", "ExerciseError", "register", "EXERCISES", "strict_mode",
           "check_q_sample", "check_normal_kl", "check_simple_loss", "check_cosine_betas"]

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


def _randn(g: torch.Generator, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=dtype)


def _expand(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(len(v), *([1] * (x.ndim - 1)))


# ====================================================================== 01: q_sample (DDPM eq. 4)
def reference_q_sample(x0, t, noise, betas):
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, alpha_bar_t = prod_{s<=t} (1 - beta_s)."""
    betas = betas.detach().cpu().numpy() if isinstance(betas, torch.Tensor) else np.asarray(betas)
    return GaussianDiffusion(betas).q_sample(x0, t, noise)


def _q_with(abar_fn, mean_fn=torch.sqrt, std_fn=torch.sqrt, swap=False):
    def q(x0, t, noise, betas):
        ab = _expand(abar_fn(betas.double())[t], x0)
        a, b = (noise, x0) if swap else (x0, noise)
        return mean_fn(ab) * a + std_fn(1 - ab) * b
    return q


def _abar(b):
    return torch.cumprod(1 - b, 0)


def _abar_prev(b):
    return torch.cat([b.new_ones(1), _abar(b)[:-1]])


def _abar_next(b):
    return torch.cat([_abar(b)[1:], b.new_zeros(1)])


def _ident(v):
    return v


def _q_sample_cases(g):
    betas = torch.from_numpy(np.linspace(1e-4, 0.02, 1000))
    x0 = _randn(g, 5, 1, 4, 3)
    return [
        Case((x0, torch.tensor([3, 90, 400, 650, 998]), _randn(g, 5, 1, 4, 3), betas), label=""),
        Case((_randn(g, 4, 2), torch.tensor([0, 0, 999, 1]), _randn(g, 4, 2), betas),
             label="t = 0 and t = T-1 (2-D points)"),
        Case((_randn(g, 3, 3, 5, 6), torch.tensor([10, 200, 700]), _randn(g, 3, 3, 5, 6),
              torch.from_numpy(_cosine_betas(1000))), label="another schedule (cosine) and RGB images"),
    ]


Q_SAMPLE = register(Exercise(
    name="q_sample",
    reference=reference_q_sample,
    cases=_q_sample_cases,
    arg_names=("x0", "t", "noise", "betas"),
    hint="x_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * noise, alpha_bar_t = cumprod(1 - betas)[t] (eq. 4)",
    shape_hint="x_t must have the shape of x0: reshape alpha_bar[t] to (B, 1, 1, ...) so it broadcasts",
    errors=[(r"must match the size of tensor|shape .* (doesn't|does not) match|not broadcastable|broadcast",
             "alpha_bar[t] has shape (B,): reshape it to (B, 1, 1, ...) with "
             "`.reshape(-1, *[1] * (x0.ndim - 1))` so it multiplies each example of x0"),
            (r"only integer tensors|index|indices", "index alpha_bar with the integer tensor t: `alpha_bar[t]`")],
    mistakes=[
        Mistake("missing square roots", "the mean is sqrt(alpha_bar_t) * x0 and the std sqrt(1 - alpha_bar_t): "
                "eq. 4 gives variances, take their square root", _q_with(_abar, _ident, _ident)),
        Mistake("the noise is scaled by the variance 1 - alpha_bar_t",
                "scale it by the standard deviation: a missing square root, sqrt(1 - alpha_bar_t) * noise",
                _q_with(_abar, torch.sqrt, _ident)),
        Mistake("x0 is scaled by alpha_bar_t", "a missing square root: the mean is sqrt(alpha_bar_t) * x0",
                _q_with(_abar, _ident, torch.sqrt)),
        Mistake("alpha_t used in place of alpha_bar_t",
                "alpha_t = 1 - beta_t is one step; q(x_t | x_0) needs alpha-bar, the product of all alphas up to t: "
                "torch.cumprod(1 - betas, dim=0)[t]", _q_with(lambda b: 1 - b)),
        Mistake("off by one in t: alpha_bar_{t-1} (the product stops before step t)",
                "alpha_bar_t includes alpha_t: torch.cumprod(1 - betas, dim=0)[t], with t = 0 the first step",
                _q_with(_abar_prev)),
        Mistake("off by one in t: alpha_bar_{t+1}", "index with t itself: torch.cumprod(1 - betas, dim=0)[t]",
                _q_with(_abar_next)),
        Mistake("alpha_bar computed as 1 - sum of betas",
                "that is only its first-order approximation: alpha_bar_t is the product torch.cumprod(1 - betas, 0)",
                _q_with(lambda b: 1 - torch.cumsum(b, 0))),
        Mistake("x0 and noise swapped", "sqrt(alpha_bar_t) multiplies the data x0, sqrt(1 - alpha_bar_t) the noise",
                _q_with(_abar, swap=True)),
    ],
))


def check_q_sample(fn):
    """Check ``q_sample(x0, t, noise, betas)`` (DDPM eq. 4); returns the function to use next."""
    return Q_SAMPLE.check(fn)


# ====================================================================== 03: normal_kl (DDPM eq. 5 terms)
def reference_normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise."""
    return _normal_kl(mean1, logvar1, mean2, logvar2)


def _kl(m1, lv1, m2, lv2, *, half=0.5, const=-1.0, var=torch.exp, ratio=None, msq=None):
    """The KL formula with one knob turned: the generator of the known mistakes."""
    v1, v2 = var(lv1), var(lv2)
    r = v1 / v2 if ratio is None else ratio(lv1, lv2)
    m = (m1 - m2) ** 2 / v2 if msq is None else msq(m1, m2, lv2)
    return half * (const + torch.log(v2) - torch.log(v1) + r + m)


def _kl_cases(g):
    shape = (6, 5)
    m1, m2 = _randn(g, *shape), _randn(g, *shape)
    lv1, lv2 = 0.8 * _randn(g, *shape), 0.8 * _randn(g, *shape)
    return [
        Case((m1, lv1, m2, lv2)),
        Case((m1, lv1, m1.clone(), lv1.clone()), label="two identical Gaussians (the KL must be 0)"),
        Case((_randn(g, 2, 3, 4, 4), -2 + _randn(g, 2, 3, 4, 4), _randn(g, 2, 3, 4, 4), torch.zeros(2, 3, 4, 4)),
             label="images against N(0, I)"),
    ]


NORMAL_KL = register(Exercise(
    name="normal_kl",
    reference=reference_normal_kl,
    cases=_kl_cases,
    arg_names=("mean1", "logvar1", "mean2", "logvar2"),
    hint="KL = 1/2 [-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2)]",
    shape_hint="the KL is elementwise: return a tensor of the inputs' shape; don't sum or average",
    nan_hint="did you take the log of a log-variance? The arguments are already log sigma^2: "
             "log(sigma2^2 / sigma1^2) = logvar2 - logvar1",
    mistakes=[
        Mistake("the log-variances are used as variances",
                "the arguments are log sigma^2: the variance is exp(logvar), and log(var2 / var1) = logvar2 - logvar1",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, var=_ident)),
        Mistake("exp(logvar) used as a standard deviation",
                "logvar is log sigma^2, so exp(logvar) is already the variance sigma^2; don't square it again",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, var=lambda lv: torch.exp(2 * lv))),
        Mistake("the factor 1/2 is missing", "the whole bracket is multiplied by 1/2",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, half=1.0)),
        Mistake("the -1 is missing", "the KL between two identical Gaussians must be 0: keep the -1 in the bracket",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, const=0.0)),
        Mistake("you computed KL(N2 || N1), the other direction",
                "the KL is not symmetric: the variance ratio is sigma1^2 / sigma2^2 and the squared mean difference "
                "is divided by sigma2^2", lambda m1, lv1, m2, lv2: _normal_kl(m2, lv2, m1, lv1)),
        Mistake("the squared mean difference is multiplied by the variance",
                "divide it by sigma2^2: multiply by exp(-logvar2), not exp(logvar2)",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, msq=lambda a, b, lv: (a - b) ** 2 * torch.exp(lv))),
        Mistake("the squared mean difference is divided by the standard deviation",
                "divide it by the variance sigma2^2 = exp(logvar2)",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2,
                                             msq=lambda a, b, lv: (a - b) ** 2 * torch.exp(-0.5 * lv))),
        Mistake("the mean difference is not squared", "the mean term is (mean1 - mean2)^2 / sigma2^2",
                lambda m1, lv1, m2, lv2: _kl(m1, lv1, m2, lv2, msq=lambda a, b, lv: (a - b) * torch.exp(-lv))),
        Mistake("sum instead of elementwise", "return the KL of every element; the caller averages (mean_flat)",
                lambda m1, lv1, m2, lv2: _normal_kl(m1, lv1, m2, lv2).sum()),
        Mistake("mean instead of elementwise", "return the KL of every element; the caller averages (mean_flat)",
                lambda m1, lv1, m2, lv2: _normal_kl(m1, lv1, m2, lv2).mean()),
    ],
))


def check_normal_kl(fn):
    """Check ``normal_kl(mean1, logvar1, mean2, logvar2)``; returns the function to use next."""
    return NORMAL_KL.check(fn)


# ====================================================================== 03: the simple loss (DDPM eq. 14)
def reference_simple_loss(model, diffusion, x0, t, noise):
    """L_simple per example: mean over pixels of (noise - model(x_t, t))^2, x_t = q_sample(x0, t, noise)."""
    x_t = diffusion.q_sample(x0, t, noise)
    return mean_flat((noise - model(x_t, t)) ** 2)


class _ToyEpsModel:
    """A fixed, deterministic "network" for the checks: eps_theta(x, t) = 0.6 x - 0.3 tanh(x) + t / 1000."""

    def __call__(self, x, t):
        return 0.6 * x - 0.3 * torch.tanh(x) + _expand(t.to(x.dtype) / 1000, x)

    def __repr__(self):
        return "toy eps model"


def _simple_cases(g):
    model = _ToyEpsModel()
    diffusion = GaussianDiffusion(np.linspace(1e-4, 0.02, 1000))
    cosine = GaussianDiffusion(_cosine_betas(200))
    return [
        Case((model, diffusion, _randn(g, 4, 1, 3, 5), torch.tensor([5, 250, 500, 990]), _randn(g, 4, 1, 3, 5))),
        Case((model, cosine, _randn(g, 3, 2), torch.tensor([0, 100, 199]), _randn(g, 3, 2)),
             label="2-D points on another diffusion"),
    ]


def _simple_with(target="noise", inp="x_t", err=lambda d: d ** 2, reduce=mean_flat, t_shift=0):
    def loss(model, diffusion, x0, t, noise):
        x_t = diffusion.q_sample(x0, t, noise)
        tt = (t + t_shift).clamp(0, diffusion.num_timesteps - 1)
        pred = model({"x_t": x_t, "x0": x0, "noise": noise}[inp], tt)
        return reduce(err({"noise": noise, "x0": x0, "x_t": x_t}[target] - pred))
    return loss


SIMPLE_LOSS = register(Exercise(
    name="simple_loss",
    reference=reference_simple_loss,
    cases=_simple_cases,
    arg_names=("model", "diffusion", "x0", "t", "noise"),
    hint="x_t = diffusion.q_sample(x0, t, noise); the loss is the mean over every dim but the batch of "
         "(noise - model(x_t, t))^2",
    shape_hint="return one loss per example, shape (B,): average over every dimension but the batch (mean_flat)",
    mistakes=[
        Mistake("sum over pixels instead of mean", "average over every dimension but the batch: "
                "`((noise - eps) ** 2).mean(dim=tuple(range(1, x0.ndim)))`, i.e. mean_flat",
                _simple_with(reduce=lambda d: d.flatten(1).sum(1))),
        Mistake("a single number: averaged over the batch too", "return one loss per example, shape (B,): "
                "average over every dimension but the batch (mean_flat); the training loop averages the batch",
                _simple_with(reduce=lambda d: d.mean())),
        Mistake("summed over everything", "return one loss per example, shape (B,), the mean over its pixels",
                _simple_with(reduce=lambda d: d.sum())),
        Mistake("the target is x0", "in eq. 14 the network predicts the noise: the target is `noise`, not x0",
                _simple_with(target="x0")),
        Mistake("the target is x_t", "the network predicts the noise that was added: the target is `noise`",
                _simple_with(target="x_t")),
        Mistake("the model is applied to x0", "the network only sees the noisy x_t: "
                "x_t = diffusion.q_sample(x0, t, noise), then model(x_t, t)", _simple_with(inp="x0")),
        Mistake("the model is applied to the noise",
                "the network sees the noisy x_t = diffusion.q_sample(x0, t, noise)",
                _simple_with(inp="noise")),
        Mistake("the error is not squared", "L_simple is the squared error ||noise - eps_theta||^2",
                _simple_with(err=lambda d: d)),
        Mistake("absolute error instead of squared", "L_simple is the squared error ||noise - eps_theta||^2",
                _simple_with(err=torch.abs)),
        Mistake("the model gets t + 1", "pass the same t that made x_t: model(x_t, t)", _simple_with(t_shift=1)),
        Mistake("the model gets t - 1", "pass the same t that made x_t: model(x_t, t)", _simple_with(t_shift=-1)),
    ],
))


def check_simple_loss(fn):
    """Check ``simple_loss(model, diffusion, x0, t, noise)`` (DDPM eq. 14); returns the function to use next."""
    return SIMPLE_LOSS.check(fn)


# ====================================================================== 05: cosine_betas (Improved DDPM eq. 17)
def reference_cosine_betas(num_timesteps, s=0.008, max_beta=0.999):
    """beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, max_beta), alpha_bar_t = f(t) / f(0)."""
    return _cosine_betas(num_timesteps, s=s, max_beta=max_beta)


def _f(tau, s=0.008, square=2, angle=math.pi / 2):
    return np.cos((tau + s) / (1 + s) * angle) ** square


def _cos_with(f=_f, clip=True, shift=0, ratio=True, hard_max=None, s_fixed=None):
    def betas(num_timesteps, s=0.008, max_beta=0.999):
        s = s if s_fixed is None else s_fixed
        i = np.arange(num_timesteps, dtype=np.float64) + shift
        ab = f((i + 1) / num_timesteps, s) / f(0.0, s)
        ab_prev = f(i / num_timesteps, s) / f(0.0, s)
        b = 1 - ab / ab_prev if ratio else 1 - ab
        top = max_beta if hard_max is None else hard_max
        return np.minimum(b, top) if clip else b
    return betas


def _cosine_cases(g):
    return [
        Case((1000,)),
        Case((50,), label="T = 50"),
        Case((100,), {"s": 0.02, "max_beta": 0.9}, label="s = 0.02 and max_beta = 0.9 (use the arguments)"),
    ]


COSINE_BETAS = register(Exercise(
    name="cosine_betas",
    reference=reference_cosine_betas,
    cases=_cosine_cases,
    arg_names=("num_timesteps", "s", "max_beta"),
    rtol=1e-4, atol=1e-6,
    hint="f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2, alpha_bar_t = f(t)/f(0), "
         "beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, max_beta) for t = 1..T (eq. 17)",
    shape_hint="return T betas, one per step t = 1..T",
    mistakes=[
        Mistake("the clip at max_beta = 0.999 is missing",
                "the last beta is 1 (alpha_bar_T = 0), a singularity at the end of the chain: "
                "clip with np.minimum(betas, max_beta) (section 3.2)", _cos_with(clip=False)),
        Mistake("the offset s is missing", "f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2 with s = 0.008: "
                "without s the first betas are tiny (section 3.2)", _cos_with(s_fixed=0.0)),
        Mistake("off by one in t: beta_t uses alpha_bar_{t-1} / alpha_bar_{t-2}",
                "the first beta is 1 - alpha_bar(1/T) / alpha_bar(0): use (i + 1)/T and i/T for i = 0..T-1",
                _cos_with(shift=-1)),
        Mistake("off by one in t: beta_t uses alpha_bar_{t+1} / alpha_bar_t",
                "the first beta is 1 - alpha_bar(1/T) / alpha_bar(0): use (i + 1)/T and i/T for i = 0..T-1",
                _cos_with(shift=1)),
        Mistake("beta_t = 1 - alpha_bar_t", "beta_t is one step's noise: 1 - alpha_bar_t / alpha_bar_{t-1}",
                _cos_with(ratio=False)),
        Mistake("the cosine is not squared", "f(t) = cos(...)^2", _cos_with(f=lambda tau, s: _f(tau, s, square=1))),
        Mistake("the angle runs to pi instead of pi/2",
                "f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2: the angle goes from about 0 to pi/2",
                _cos_with(f=lambda tau, s: _f(tau, s, angle=math.pi))),
        Mistake("max_beta is ignored", "clip with the max_beta argument, not a constant",
                _cos_with(hard_max=0.999)),
        Mistake("s is ignored", "use the s argument, not the constant 0.008", _cos_with(s_fixed=0.008)),
    ],
))


def check_cosine_betas(fn):
    """Check ``cosine_betas(num_timesteps, s=0.008, max_beta=0.999)`` (Improved DDPM eq. 17)."""
    return COSINE_BETAS.check(fn)
