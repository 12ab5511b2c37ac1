"""Synthetic 1-D signals for diffusion beyond images (notebook 11): sums of sine tones, and their spectrograms.

A waveform is a tensor ``(N, 1, L)`` in [-1, 1]: one channel of ``L`` samples at ``sample_rate`` Hz, the layout
of a batch of mono audio (DiffWave, Kong et al. 2021, arXiv 2009.09761). :func:`sine_tones` draws sums of 1-3
tones with random frequencies, phases and amplitudes; :func:`spectrogram` is the log-magnitude short-time
Fourier transform used to draw them; :func:`dominant_frequency` reads the loudest frequency off a spectrum.

>>> x, params = sine_tones(64, length=2048, sample_rate=8000, seed=0, return_params=True)
>>> x.shape, float(x.abs().max()) <= 1
(torch.Size([64, 1, 2048]), True)
"""
from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ToneParams", "sine_tones", "spectrogram", "dominant_frequency", "tone_purity", "snr_db", "wav_bytes",
           "SAMPLE_RATE", "NOTES"]

SAMPLE_RATE = 8000  # Hz: telephone quality, Nyquist frequency 4 kHz
# a C major chord over two octaves (equal temperament, A4 = 440 Hz): any two of them sound well together
NOTES = {"C4": 261.63, "E4": 329.63, "G4": 392.00, "C5": 523.25, "E5": 659.26}


@dataclass
class ToneParams:
    """What :func:`sine_tones` drew for each signal: lists of per-signal arrays (one entry per tone)."""
    frequencies: list[np.ndarray]  # Hz
    amplitudes: list[np.ndarray]  # relative amplitudes, before the peak normalisation
    phases: list[np.ndarray]  # radians
    peaks: np.ndarray  # (N,) the final max |x| of each signal


def sine_tones(n: int, length: int = 2048, sample_rate: int = SAMPLE_RATE, min_tones: int = 1,
               max_tones: int = 3, freq_range: tuple[float, float] = (150.0, 1200.0),
               peak_range: tuple[float, float] = (0.5, 0.95), frequencies=None, seed: int = 0,
               return_params: bool = False):
    """``n`` signals ``(n, 1, length)``, float32 in [-1, 1]: each a sum of ``min_tones..max_tones`` sine tones.

    Each tone ``a sin(2 pi f k / sample_rate + phi)`` has a frequency ``f`` log-uniform in ``freq_range`` (Hz),
    an amplitude ``a`` uniform in [0.2, 1] and a phase ``phi`` uniform in [0, 2 pi). The sum is scaled so that
    its largest magnitude is a level drawn uniformly from ``peak_range`` (inside [-1, 1], like image pixels).
    ``frequencies`` (a list of Hz, e.g. musical notes) replaces the continuous range: each signal's tones are then
    distinct frequencies drawn from that list.
    Seeded by ``seed``: the same arguments give the same signals. With ``return_params`` returns
    ``(signals, ToneParams)``.
    """
    if n < 1 or length < 2:
        raise ValueError(f"need n >= 1 signals of length >= 2, got n={n}, length={length}")
    if not 1 <= min_tones <= max_tones:
        raise ValueError(f"need 1 <= min_tones <= max_tones, got {min_tones}, {max_tones}")
    if frequencies is not None:
        frequencies = np.asarray(frequencies, dtype=np.float64)
        if frequencies.ndim != 1 or len(frequencies) < max_tones:
            raise ValueError(f"need at least max_tones = {max_tones} frequencies to choose from, "
                             f"got {len(frequencies)}")
        freq_range = (float(frequencies.min()), float(frequencies.max()))
    lo, hi = freq_range
    if not 0 < lo <= hi < sample_rate / 2:
        raise ValueError(f"freq_range {freq_range} must lie in (0, {sample_rate / 2}) Hz, below the Nyquist frequency")
    if not 0 < peak_range[0] <= peak_range[1] <= 1:
        raise ValueError(f"peak_range {peak_range} must lie in (0, 1]")
    rng = np.random.default_rng(seed)
    k = np.arange(length, dtype=np.float64) / sample_rate
    out = np.empty((n, 1, length), dtype=np.float64)
    freqs, amps, phases = [], [], []
    peaks = rng.uniform(*peak_range, size=n)
    for i in range(n):
        m = int(rng.integers(min_tones, max_tones + 1))
        if frequencies is None:
            f = np.exp(rng.uniform(math.log(lo), math.log(hi), size=m))
        else:
            f = rng.choice(frequencies, size=m, replace=False)
        a = rng.uniform(0.2, 1.0, size=m)
        phi = rng.uniform(0.0, 2 * math.pi, size=m)
        x = (a[:, None] * np.sin(2 * math.pi * f[:, None] * k[None] + phi[:, None])).sum(0)
        out[i, 0] = x / np.abs(x).max() * peaks[i]
        freqs.append(f), amps.append(a), phases.append(phi)
    signals = torch.from_numpy(out).float()
    if return_params:
        return signals, ToneParams(freqs, amps, phases, peaks)
    return signals


def spectrogram(x, n_fft: int = 256, hop: int = 64, db: bool = True, floor_db: float = -80.0) -> torch.Tensor:
    """The magnitude short-time Fourier transform of ``x`` (L,) or (..., L), Hann window: (..., n_fft//2 + 1, frames).

    ``db=True`` gives ``20 log10(|STFT| / max)`` clipped below at ``floor_db``, 0 dB at the loudest bin of
    each signal; otherwise the plain magnitudes. Row ``j`` is the frequency ``j * sample_rate / n_fft``.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.shape[-1] < n_fft:
        raise ValueError(f"a signal of {x.shape[-1]} samples is shorter than n_fft = {n_fft}")
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=True,
                      return_complex=True).abs()
    if db:
        top = spec.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        spec = (20 * torch.log10(spec.clamp_min(1e-12) / top)).clamp_min(floor_db)
    return spec.reshape(*lead, *spec.shape[-2:])


def dominant_frequency(x, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The frequency (Hz) of the largest peak of the magnitude spectrum of each signal ``(..., L)`` (Hann window,
    the DC bin left out); resolution ``sample_rate / L``."""
    x = torch.as_tensor(x, dtype=torch.float64)
    length = x.shape[-1]
    spectrum = torch.fft.rfft(x * torch.hann_window(length, dtype=torch.float64), dim=-1).abs()
    spectrum[..., 0] = 0
    return (spectrum.argmax(dim=-1).numpy() * sample_rate / length).astype(np.float64)


def snr_db(x0, alpha_bar) -> torch.Tensor:
    """The signal-to-noise ratio of x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps in decibels, per signal:
    ``10 log10(alpha_bar * mean(x_0^2) / (1 - alpha_bar))``, the power of the scaled signal over the noise's
    variance; the mean runs over every dimension but the batch. ``alpha_bar``: a number or one per signal (B,)."""
    x0 = torch.as_tensor(x0)
    power = x0.double().pow(2).flatten(1).mean(1)
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    return 10 * torch.log10(ab * power / (1 - ab))


def tone_purity(x, frequencies, sample_rate: int = SAMPLE_RATE, tolerance: float = 20.0) -> np.ndarray:
    """The share of each signal's spectral power (Hann window, DC left out) within ``tolerance`` Hz of any of
    ``frequencies``: about 1 for sums of those tones, about ``2 * tolerance * len(frequencies) / (sample_rate / 2)``
    for white noise. ``x``: (..., L); returns an array of the leading shape."""
    x = torch.as_tensor(x, dtype=torch.float64)
    length = x.shape[-1]
    power = torch.fft.rfft(x * torch.hann_window(length, dtype=torch.float64), dim=-1).abs().pow(2)
    power[..., 0] = 0
    freqs = torch.fft.rfftfreq(length, d=1.0 / sample_rate, dtype=torch.float64)
    near = torch.zeros_like(freqs, dtype=torch.bool)
    for f in np.atleast_1d(np.asarray(frequencies, dtype=np.float64)):
        near |= (freqs - f).abs() <= tolerance
    return ((power * near).sum(-1) / power.sum(-1).clamp_min(1e-300)).numpy()


def wav_bytes(signal, sample_rate: int = SAMPLE_RATE, normalize: bool = True) -> bytes:
    """A mono 16-bit PCM WAV file of ``signal`` (any shape, flattened) in memory, for ``ipywidgets.Audio``.
    ``normalize`` scales the peak to 1 (as ``IPython.display.Audio`` does); otherwise values are clipped to [-1, 1]."""
    x = np.asarray(torch.as_tensor(signal, dtype=torch.float64).reshape(-1))
    if normalize and np.abs(x).max() > 0:
        x = x / np.abs(x).max()
    pcm = (np.clip(x, -1.0, 1.0) * 32767).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()
