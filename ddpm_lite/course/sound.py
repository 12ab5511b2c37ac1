"""Sounds long enough to hear. The waveforms of notebook 11 last 0.256 s (2048 samples at 8 kHz): played as they
are, a clip is over before the ear has judged it. For listening, a clip is repeated back and forth (forwards,
then backwards: the joins meet at the same sample, so they do not click) to a few seconds; several clips play one
after the other with a short silence between them.

The result is a plain array for ``IPython.display.Audio(x, rate=...)`` or
:func:`ddpm_lite.course.waveforms.wav_bytes` (an ``ipywidgets.Audio``), which both work in JupyterLab and Colab.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MIN_SECONDS", "repeat", "sequence"]

MIN_SECONDS = 2.0  # the shortest sound the course plays


def _samples(signal) -> np.ndarray:
    x = signal.detach().cpu().double().numpy() if isinstance(signal, torch.Tensor) else np.asarray(signal, np.float64)
    return x.reshape(-1)


def repeat(signal, sample_rate: int, seconds: float = MIN_SECONDS) -> np.ndarray:
    """``signal`` (any shape, flattened) repeated forwards and backwards to ``seconds`` (at least one copy,
    whole copies only); float64, the same sample values."""
    x = _samples(signal)
    if not len(x):
        raise ValueError("an empty signal cannot be repeated")
    copies = max(1, math.ceil(seconds * sample_rate / len(x)))
    return np.concatenate([x if i % 2 == 0 else x[::-1] for i in range(copies)])


def sequence(clips, sample_rate: int, seconds_each: float = 1.0, gap: float = 0.25) -> np.ndarray:
    """Clips one after the other (``clips``: a list of signals, or a batch (N, ...) of them), each repeated to
    ``seconds_each`` (:func:`repeat`), with ``gap`` seconds of silence between them."""
    silence = np.zeros(int(round(gap * sample_rate)))
    parts = []
    for i, clip in enumerate(clips):
        if i:
            parts.append(silence)
        parts.append(repeat(clip, sample_rate, seconds_each))
    if not parts:
        raise ValueError("no clips to play")
    return np.concatenate(parts)
