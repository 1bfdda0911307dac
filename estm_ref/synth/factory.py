"""Factory background noise, independent of machine and label."""

from __future__ import annotations

import numpy as np

from estm_ref.synth.dsp import (TWO_PI, harmonics, mix, peak, phase_of, poisson_times, ring, rms,
                                shaped_noise, smooth_noise, speed_curve, tilt, unit)


def factory_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Factory background, RMS 1: coloured noise with room modes, distant mains hum, another
    machine far away, slow level drift and occasional clangs. Independent of machine and label."""
    duration = n / sr
    t = np.arange(n) / sr
    slope = rng.uniform(-4.5, -1.5)
    modes = [(rng.uniform(80, 2000), rng.uniform(0.3, 1.5)) for _ in range(2)]
    noise = shaped_noise(rng, n, sr, lambda f: tilt(f, slope) *
                         (1.0 + sum(g * peak(f, fc, 2.0) for fc, g in modes)))
    noise *= 1.0 + 0.1 * smooth_noise(rng, n, sr, 0.2)
    mains = rng.choice([50.0, 60.0])
    hum_amps = rng.uniform(0, 1, 6) * [1.0, 0.3, 0.7, 0.2, 0.4, 0.1]  # odd harmonics stronger
    hum = harmonics(rng, TWO_PI * mains * t, mains, sr, hum_amps)
    x = mix(noise, hum, rng.uniform(-20.0, -8.0))
    f_far = rng.uniform(60.0, 300.0)
    far = harmonics(rng, phase_of(f_far * speed_curve(rng, n, sr, 0.0, 0.01), sr), f_far * 1.05,
                    sr, [1.0, 0.5, 0.25]) * (1.0 + 0.3 * smooth_noise(rng, n, sr, 0.3))
    x = mix(x, far, rng.uniform(-24.0, -10.0))
    times = poisson_times(rng, rng.uniform(0.05, 0.4), duration)
    if times.size:
        clangs = ring(n, sr, times, rng.uniform(0.3, 1.0, times.size),
                      [rng.uniform(200, 3000), rng.uniform(200, 3000)], rng.uniform(0.02, 0.12),
                      rng)
        x = x + clangs * (rms(x) / max(rms(clangs), 1e-12) * 10 ** (rng.uniform(-18.0, -8.0) / 20))
    return unit(x)
