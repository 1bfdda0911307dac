"""Signal primitives of the synthetic machines: levels, spectral shapes, coloured noise,
tones from integrated frequency, decaying resonances, event times and gates.

Everything is vectorised numpy on float64 arrays; frequencies in Hz, `sr` in samples/s.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.signal import oaconvolve

TWO_PI = 2.0 * np.pi


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) + 1e-12


def unit(x: np.ndarray) -> np.ndarray:
    """`x` scaled to RMS 1."""
    return x / rms(x)


def mix(base: np.ndarray, part: np.ndarray, rel_db: float) -> np.ndarray:
    """`base` plus `part` at `rel_db` dB relative to the RMS of `base`."""
    return base + part * (rms(base) / rms(part) * 10.0 ** (rel_db / 20.0))


def level(base_db: float, amount: float) -> float:
    """A fault component's level in dB: `base_db` at amount 1, +6 dB per doubling."""
    return base_db + 20.0 * np.log10(amount)


def depth(base: float, amount: float, cap: float = 0.9) -> float:
    """A fault's modulation depth or deviation: `base` at amount 1, linear, at most `cap`."""
    return min(base * amount, cap)


def tilt(f: np.ndarray, db_per_octave: float) -> np.ndarray:
    """Amplitude slope in dB per octave, 1 at 1 kHz (flat below 20 Hz)."""
    return (np.maximum(f, 20.0) / 1000.0) ** (db_per_octave / 6.0206)


def peak(f: np.ndarray, fc: float, q: float) -> np.ndarray:
    """Magnitude of a second-order band-pass resonance at `fc` with quality `q`."""
    ratio = np.maximum(f, 1.0) / fc
    return 1.0 / np.sqrt(1.0 + (q * (ratio - 1.0 / ratio)) ** 2)


def lowpass(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def highpass(f: np.ndarray, fc: float, order: int = 2) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (fc / np.maximum(f, 1.0)) ** (2 * order))


def shaped_noise(rng: np.random.Generator, n: int, sr: int,
                 gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Gaussian noise whose amplitude spectrum is `gain(f)`, RMS 1."""
    f = np.fft.rfftfreq(n, 1.0 / sr)
    spec = rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)
    spec *= gain(f)
    spec[0] = 0.0
    return unit(np.fft.irfft(spec, n))


def smooth_noise(rng: np.random.Generator, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """A slow random curve (knots every 1/rate_hz s, linearly joined), about unit scale."""
    n_knots = int(n * rate_hz / sr) + 3
    knots = rng.standard_normal(n_knots)
    return np.interp(np.arange(n) * (rate_hz / sr), np.arange(n_knots), knots)


def speed_curve(rng: np.random.Generator, n: int, sr: int, jitter: float = 0.006,
                wander: float = 0.002) -> np.ndarray:
    """Per-clip speed factor near 1: a static offset plus a slow wander."""
    return 1.0 + jitter * rng.standard_normal() + wander * smooth_noise(rng, n, sr, 0.5)


def phase_of(freq: np.ndarray, sr: int) -> np.ndarray:
    """Running phase (rad) of a tone with instantaneous frequency `freq` (Hz)."""
    return TWO_PI * np.cumsum(freq) / sr


def harmonics(rng: np.random.Generator, phase: np.ndarray, f_top: float, sr: int,
              amps: list[float] | np.ndarray) -> np.ndarray:
    """Sum of a_k sin(k * phase + random phase); harmonics above 0.95 Nyquist are dropped.

    `f_top` is the highest instantaneous fundamental frequency in `phase`.
    """
    # z**k by repeated multiplication: one complex exponential instead of one sine per harmonic
    amps = np.asarray(amps, dtype=np.float64)
    offsets = rng.uniform(0.0, TWO_PI, amps.size)
    count = int(np.sum(np.arange(1, amps.size + 1) * f_top < 0.475 * sr))
    wrapped = (phase - TWO_PI * np.floor(phase / TWO_PI)).astype(np.float32)
    z = np.cos(wrapped) + 1j * np.sin(wrapped)  # complex64: float32 sin/cos are vectorised
    zk = z.copy()
    out = np.zeros(phase.shape, dtype=np.float32)
    for k in range(count):
        if k:
            zk *= z
        coef = amps[k] * np.exp(1j * offsets[k])
        out += np.float32(coef.real) * zk.imag + np.float32(coef.imag) * zk.real
    return out.astype(np.float64)


def decaying_amps(ratio: float, count: int) -> np.ndarray:
    return ratio ** np.arange(count)


def ring(n: int, sr: int, times: np.ndarray, amps: np.ndarray, freqs: list[float],
         decay_s: float, rng: np.random.Generator) -> np.ndarray:
    """Impulses at `times` (s) with `amps`, each ringing through decaying sinusoids at `freqs`."""
    phases = rng.uniform(0.0, TWO_PI, len(freqs))
    length = min(n, max(8, int(7.0 * decay_s * sr)))
    t = np.arange(length) / sr
    kernel = np.zeros(length)
    for j, (fr, ph) in enumerate(zip(freqs, phases)):
        if fr < 0.475 * sr:
            kernel += (0.6 ** j) * np.sin(TWO_PI * fr * t + ph)
    kernel *= np.exp(-t / decay_s)
    idx = np.round(np.asarray(times, dtype=np.float64) * sr).astype(np.int64)
    amps = np.broadcast_to(np.asarray(amps, dtype=np.float64), idx.shape)
    keep = (idx >= 0) & (idx < n) & (amps != 0)
    idx, amps = idx[keep], amps[keep]
    if idx.size * length > 4 * n:  # dense: one FFT convolution
        pulses = np.zeros(n)
        np.add.at(pulses, idx, amps)
        return oaconvolve(pulses, kernel)[:n]
    out = np.zeros(n + length)  # sparse: add the kernel at each event
    for i, a in zip(idx, amps):
        out[i:i + length] += a * kernel
    return out[:n]


def poisson_times(rng: np.random.Generator, rate_hz: float, duration: float) -> np.ndarray:
    return np.sort(rng.uniform(0.0, duration, rng.poisson(rate_hz * duration)))


def periodic_times(rng: np.random.Generator, period: float, duration: float,
                   jitter: float) -> np.ndarray:
    """Event times with a random start and a relative period jitter per event."""
    count = int(duration / period) + 3
    steps = period * (1.0 + jitter * rng.standard_normal(count))
    offsets = np.concatenate([[0.0], np.cumsum(np.maximum(steps, 0.2 * period))])
    return rng.uniform(-period, 0.0) + offsets


def gate(n: int, sr: int, starts: np.ndarray, stops: np.ndarray, ramp_s: float,
         levels: np.ndarray | None = None) -> np.ndarray:
    """1 (or `levels`) inside the [start, stop) intervals, 0 outside, with linear ramps."""
    if len(starts) == 0:
        return np.zeros(n)
    t = np.arange(n) / sr
    k = np.searchsorted(starts, t, side="right") - 1
    valid = k >= 0
    kk = np.clip(k, 0, None)
    up = np.clip((t - starts[kk]) / ramp_s, 0.0, 1.0)
    down = np.clip((stops[kk] - t) / ramp_s, 0.0, 1.0)
    value = np.minimum(up, down) if levels is None else levels[kk] * np.minimum(up, down)
    return np.where(valid, value, 0.0)
