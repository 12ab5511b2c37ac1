"""Feedback that teaches, for every exercise: the first ❌ says what is wrong without the formula, the formula comes
on request (hint levels 1 and 2), results of the wrong kind are named, and no answer, however strange, crashes a
checker or the cell after it (the checker returns the reference)."""
import re

import numpy as np
import pytest
import torch
from exercise_helpers import assert_rejected

from ddpm_lite.course import checking
from ddpm_lite.course.exercises import EXERCISES, ExerciseError, hint, hint_text

ALL = sorted(EXERCISES)

# A first message gives no formula away. The rule: no code (a call f(...), a module function torch./np./math.,
# ** or ^, a square root, a cumulative product or sum, an index [t]), no schedule symbol the learner would copy
# (alpha_bar, abar, alpha_t, beta_t, beta-tilde, sigma_t, sigma^2) unless it is one of the exercise's own argument
# names, no "name = expression" (a number after = is an input: "t = 0"), and not the level-2 text itself.
CODE = re.compile(r"\b(torch|np|math|scipy|F)\.|[A-Za-z_]\(|\*\*|\^|sqrt|cumprod|cumsum|\[t\b|\b[a-z_]+ = [a-z(]")
FORMULA_LIKE = re.compile(r"[=*/+^]|\(.*\)|\d")  # the level-2 text: an equation, a line of code, numbers
SYMBOLS = ("alpha_bar", "abar", "alpha_t", "beta_t", "beta-tilde", "beta_tilde", "sigma_t", "sigma^2")


@pytest.fixture(autouse=True)
def friendly(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_STRICT", "0")
    checking.LAST.clear()


def first_message(name, fn):
    """The diagnosis a learner reads first, without the "(run hint(...))" pointer and the exercise's name."""
    message = EXERCISES[name].diagnose(fn).message
    return message.replace(f"(run `hint('{name}')` for a hint)", "").replace(f"❌ {name}", "")


def without_argument_names(name, text):
    """The learner's own argument names (alpha_bar for ddim_step, t, ...) are words, not formulas: blanked out."""
    for arg in sorted(EXERCISES[name].arg_names, key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(arg)}\b", "ARG", text)
    return text


# ---------------------------------------------------------------------- the formula only on request
@pytest.mark.parametrize("name", ALL)
def test_first_messages_give_no_formula_away(name):
    ex = EXERCISES[name]
    for mistake in ex.mistakes:
        message = first_message(name, mistake.fn)
        assert mistake.what in message
        assert mistake.fix not in message and ex.formula not in message, message
        text = without_argument_names(name, message)
        assert not CODE.search(text), (CODE.search(text), message)
        assert not any(symbol in text for symbol in SYMBOLS), message
    for _, what, _ in ex.errors:  # what a crash means (it may name the PyTorch function that raised): no formula
        text = without_argument_names(name, what)
        assert ex.formula not in what and not any(symbol in text for symbol in SYMBOLS), what
    if ex.nan:
        assert not CODE.search(without_argument_names(name, ex.nan[0])), ex.nan[0]


@pytest.mark.parametrize("name", ALL)
def test_the_formula_comes_at_hint_level_2(name, capsys):
    ex = EXERCISES[name]
    assert CODE.search(ex.formula) or FORMULA_LIKE.search(ex.formula), ex.formula  # code or an equation
    assert ex.formula in hint_text(name, 2) and ex.look in hint_text(name, 1)  # before any check
    assert ex.formula not in hint_text(name, 1)
    for mistake in ex.mistakes:
        ex.check(mistake.fn)
        level1, level2 = hint_text(name), hint_text(name, 2)
        assert (mistake.look or ex.look) in level1 and mistake.fix not in level1
        assert mistake.fix in level2 and level2.startswith(f"💡 {name}, hint 2 of 2: ")
        assert FORMULA_LIKE.search(mistake.fix) or "argument" in mistake.fix, mistake.fix
    capsys.readouterr()


def test_hint_prints_and_follows_the_last_check(capsys):
    def wrong(x0, t, noise, betas):
        ab = torch.cumprod(1 - betas, 0)[t].reshape(-1, *[1] * (x0.ndim - 1))
        return ab * x0 + (1 - ab).sqrt() * noise

    EXERCISES["q_sample"].check(wrong)
    assert "run `hint('q_sample')` for a hint" in capsys.readouterr().out
    hint("q_sample")
    out = capsys.readouterr().out
    assert out.startswith("💡 q_sample, hint 1 of 2: the factor in front of x0") and "hint('q_sample', 2)" in out
    hint("q_sample", 2)
    assert capsys.readouterr().out == "💡 q_sample, hint 2 of 2: alpha_bar.sqrt() * x0\n"
    hint()  # no name: the exercise checked last
    assert capsys.readouterr().out.startswith("💡 q_sample, hint 1 of 2")
    # a right answer afterwards: the hints go back to the exercise's own
    EXERCISES["q_sample"].check(EXERCISES["q_sample"].reference)
    assert EXERCISES["q_sample"].formula in hint_text("q_sample", 2)


def test_hint_never_raises():
    assert "no exercise named 'nope'" in hint_text("nope") and "'q_sample'" in hint_text("nope")
    assert "no exercise named 3" in hint_text(3)
    assert hint_text("q_sample", 7).startswith("💡 q_sample, hint 2 of 2")
    assert hint_text("q_sample", "two").startswith("💡 q_sample, hint 1 of 2")
    assert hint_text("q_sample", None).startswith("💡 q_sample, hint 1 of 2")
    assert "no exercise checked yet" in hint_text()


# ---------------------------------------------------------------------- a zoo of strange answers
def _gen(*args, **kwargs):
    yield 1


def _raise(kind):
    def fn(*args, **kwargs):
        raise kind("something went wrong")
    return fn


def _like_reference(name, make):
    """A function returning, in place of each tensor or array of the reference's result, ``make(that value)``."""
    ex = EXERCISES[name]

    def fn(*args, **kwargs):
        out = ex.reference(*args, **kwargs)
        convert = (lambda v: make(torch.as_tensor(v)) if isinstance(v, (torch.Tensor, np.ndarray)) else make(
            torch.tensor(float(v))))
        return tuple(convert(v) for v in out) if isinstance(out, tuple) else convert(out)
    return fn


STRANGE_VALUES = {
    "None": None, "3": 3, "abc": "abc", "[1, 2]": [1, 2], "np.zeros": np.zeros((4, 1, 8, 8)), "True": True,
    "a dict": {"x": 1}, "an object": object(), "a complex": 1 + 2j, "torch.Size": torch.Size([2, 3]),
    "nested lists": [[1, 2], [3]], "an int tensor": torch.ones(3, dtype=torch.long), "(1, None)": (1, None),
    "a tensor that requires grad": torch.ones(3, requires_grad=True), "bytes": b"\x00",
}
STRANGE_FUNCTIONS = {
    "returns a generator": _gen,
    "returns a function": lambda *a, **k: (lambda: 0),
    "raises ValueError": _raise(ValueError),
    "raises IndexError": _raise(IndexError),
    "raises ZeroDivisionError": _raise(ZeroDivisionError),
    "raises SystemExit": _raise(SystemExit),
    "takes no argument": lambda: 0,
    "recurses forever": None,  # filled below
}


def _forever(*args, **kwargs):
    return _forever(*args, **kwargs)


STRANGE_FUNCTIONS["recurses forever"] = _forever


def _returning(value):
    return lambda *args, **kwargs: value


def zoo(name):
    answers = dict(STRANGE_VALUES)  # not even a function
    answers.update({f"returns {k}": _returning(v) for k, v in STRANGE_VALUES.items()})
    answers.update(STRANGE_FUNCTIONS)
    answers["returns NaN"] = _like_reference(name, lambda v: torch.full_like(v.double(), float("nan")))
    answers["returns a tensor on the meta device"] = _like_reference(name, lambda v: torch.zeros(v.shape,
                                                                                                  device="meta"))
    answers["returns infinities"] = _like_reference(name, lambda v: torch.full_like(v.double(), float("inf")))
    answers["returns an empty tensor"] = lambda *a, **k: torch.empty(0)
    answers["returns a huge number"] = _like_reference(name, lambda v: torch.full_like(v.double(), 1e300))
    return answers


@pytest.mark.parametrize("name", ALL)
def test_no_checker_raises_on_a_zoo_of_strange_answers(name, capsys):
    ex = EXERCISES[name]
    for label, answer in zoo(name).items():
        with np.errstate(all="ignore"):
            got = ex.check(answer)
        out = capsys.readouterr().out
        assert got is ex.reference, label
        assert out.startswith(f"❌ {name}") and out.count("\n") == 1, (label, out)
        assert "— using the reference so the notebook goes on" in out, (label, out)


@pytest.mark.parametrize("name", ALL)
def test_strict_mode_raises_only_exercise_errors_on_the_zoo(name, monkeypatch, capsys):
    monkeypatch.setenv("DDPM_LITE_STRICT", "1")
    ex = EXERCISES[name]
    for answer in zoo(name).values():
        with pytest.raises(ExerciseError, match=f"❌ {name}"), np.errstate(all="ignore"):
            ex.check(answer)
    capsys.readouterr()


@pytest.mark.parametrize("name", ALL)
def test_the_fallback_has_the_kind_the_next_cell_needs(name):
    """The reference (what the next cell gets when the answer is wrong) passes the kind checks of its own outputs:
    a torch tensor where a tensor is needed, the dtype asked for, no autograd graph where a plain value is needed."""
    ex = EXERCISES[name]
    for case in ex.make_cases():
        ex.values(ex.run(ex.reference, case), case, strict=True)  # raises WrongKind otherwise


# ---------------------------------------------------------------------- the messages name the learner's own things
@pytest.mark.parametrize("name", ALL)
def test_messages_never_name_the_checkers_internals(name):
    ex = EXERCISES[name]
    messages = [ex.diagnose(m.fn).message for m in ex.mistakes]
    messages += [ex.diagnose(answer).message for answer in zoo(name).values()]
    for message in messages:
        for internal in ("Case(", "case", "expected", "reference", "self.", "_with", "mistake", "Run(", "spec"):
            assert internal not in message, (internal, message)


def test_a_wrong_shape_is_described_with_the_learners_own_shapes():
    def squeezed(x0, t, noise, betas):
        ab = torch.cumprod(1 - betas, 0)[t].reshape(-1, *[1] * (x0.ndim - 1))
        return (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).squeeze(1)

    assert_rejected("q_sample", squeezed, "x_t has shape (5, 4, 3); it should have the shape of `x0`, (5, 1, 4, 3)")

    def per_pixel(model, diffusion, x0, t, noise):
        return (noise - model(diffusion.q_sample(x0, t, noise), t)) ** 2

    assert_rejected("simple_loss", per_pixel, "the loss has shape (4, 1, 3, 5); it should have one value per "
                    "example of the batch, shape (4,)")


def test_a_scalar_where_one_value_per_example_is_needed():
    assert_rejected("snr_db", lambda x0, ab: torch.tensor(3.0), "the SNR is one number; it should have one value per "
                    "example of the batch, shape (4,)")
    assert_rejected("decoder_nll_bits", lambda x0, m, s: 2.5, "returned the number 2.5; return a torch tensor with "
                    "one value per example of the batch, shape (4,)")


def test_the_learners_line_is_quoted_when_it_crashes():
    from exercise_helpers import learner

    fn = learner("alpha_bar = torch.cumprod(1 - betas, 0)[t.float()]\nreturn alpha_bar", "x0, t, noise, betas")
    assert_rejected("q_sample", fn, "raised IndexError", "at `alpha_bar = torch.cumprod(1 - betas, 0)[t.float()]`",
                    "t could not index the schedule")


def test_where_a_wrong_answer_is_right_is_said_too():
    """Wrong on one case, right on the others: the message says where it is right (a batch of one, 2-D points)."""
    from exercise_helpers import learner

    scaled_by_batch = learner("x = x_t.detach().requires_grad_(True)\n"
                              "lp = torch.log_softmax(classifier(x, t), dim=-1)[torch.arange(len(y)), y]\n"
                              "return torch.autograd.grad(lp.sum() / len(y) ** 0.5, x)[0]", "classifier, x_t, t, y")
    assert_rejected("classifier_grad", scaled_by_batch, "the gradient is 1/2 of the right value everywhere",
                    "(right for a batch of one)")

    linear_only = learner("betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)\n"
                          "ab = torch.cumprod(1 - betas, 0)[t].reshape(-1, *[1] * (x0.ndim - 1))\n"
                          "return ab.sqrt() * x0 + (1 - ab).sqrt() * noise", "x0, t, noise, betas")
    assert_rejected("q_sample", linear_only, "x_t has wrong values", "for another schedule (cosine) and RGB images",
                    "(right for t = 0 and t = T-1 (2-D points in float64))")
