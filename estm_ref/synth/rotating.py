"""The MIMII fan and pump: a motor-driven rotor moving air or fluid.

A unit is set apart from the others of its product line by its shaft speed (motor slip),
the balance of its blade- or vane-pass harmonics (blade irregularities), its duct or pipe
resonance and how tonal it is. The operating point of a clip (supply voltage, damper or
valve setting) moves the speed and the balances a little. The faults are those of MIMII
(fan: imbalance, voltage change, clogging; pump: contamination, leakage, clogging) and
act on the same features: speed, harmonic balance, resonance, flow noise; several are
episodes of a second or two rather than changes of the whole clip.
"""

from __future__ import annotations

import numpy as np

from estm_ref.synth.dsp import (TWO_PI, decaying_amps, depth, gate, harmonics, highpass, level,
                                lowpass, mix, peak, phase_of, poisson_times, ring, shaped_noise,
                                smooth_noise, speed_curve, tilt)
from estm_ref.synth.params import operating_pattern, spread, unit_pattern


def episodes(rng: np.random.Generator, duration: float, count: tuple[int, int],
             length_s: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, non-overlapping (start, stop) times of a few episodes inside the clip."""
    k = int(rng.integers(count[0], count[1] + 1))
    lengths = rng.uniform(*length_s, k)
    slack = max(duration - lengths.sum(), 0.0)
    gaps = np.diff(np.concatenate([[0.0], np.sort(rng.uniform(0.0, slack, k))]))
    starts = np.cumsum(gaps + np.concatenate([[0.0], lengths[:-1]]))
    return starts, starts + lengths


def render_fan(rng, frng, p, n, sr, fault, amount):
    """Airflow noise shaped by the duct, blade-pass harmonics, a weak shaft tone."""
    duration = n / sr
    voltage = spread(rng, 0.012)  # relative speed change from the supply of this clip
    if fault == "voltage_change":  # off-nominal supply: speed and blade loading change
        voltage += frng.choice([-1.0, 1.0]) * depth(0.05, amount, cap=0.15)
    shaft = p["shaft_hz"] * (1.0 + voltage) * speed_curve(rng, n, sr, jitter=0.002)
    shaft_phase = phase_of(shaft, sr)
    bpf_phase = 5.0 * shaft_phase  # five blades throughout the product line
    amps = (decaying_amps(p["harm_decay"], 10) * unit_pattern(p["blade_a"], p["blade_b"], 10)
            * operating_pattern(rng, 10))
    tonal_db = p["tonal_db"] + spread(rng, 1.2) + 40.0 * voltage
    duct_hz = p["duct_hz"] * (1.0 + spread(rng, 0.03))
    air_gain = np.ones(n)
    if fault == "clogging":  # a filter or grille clogs: the flow chokes in episodes
        starts, stops = episodes(frng, duration, (1, 3), (0.8, 2.5))
        choke = gate(n, sr, starts, stops, 0.15)
        air_gain = 1.0 - depth(0.45, amount) * choke
    tones = harmonics(rng, bpf_phase, 5.0 * shaft.max(), sr, amps)
    tones += 0.2 * np.sin(shaft_phase + rng.uniform(0, TWO_PI))
    air = shaped_noise(rng, n, sr, lambda f: tilt(f, p["air_tilt"]) *
                       (0.3 + peak(f, duct_hz, 1.4)) * lowpass(f, 6500.0, 2))
    air *= air_gain * (1.0 + 0.12 * np.sin(bpf_phase + rng.uniform(0, TWO_PI)))
    x = mix(air, tones, tonal_db)
    if fault == "clogging":  # the choked flow whistles above the duct mode
        whistle = shaped_noise(frng, n, sr, lambda f: peak(f, 1.35 * p["duct_hz"], 6.0))
        x = mix(x, whistle * choke, level(-10.0, amount))
    elif fault == "imbalance":  # once-per-revolution force: 1x tone, modulation, blade balance
        x = mix(x, np.sin(shaft_phase), level(-12.0, amount))
        x = x * (1.0 + depth(0.12, amount) * np.sin(shaft_phase + frng.uniform(0, TWO_PI)))
        shift = unit_pattern(frng.uniform(-1, 1), frng.uniform(-1, 1), 10) ** depth(0.8, amount, 2)
        x = mix(x, harmonics(frng, bpf_phase, 5.0 * shaft.max(), sr, amps * (shift - 1.0)),
                tonal_db - 3.0)
    return x


def render_pump(rng, frng, p, n, sr, fault, amount):
    """Shaft and vane-pass harmonics over fluid turbulence with slow flow fluctuation."""
    t = np.arange(n) / sr
    duration = n / sr
    load = spread(rng, 1.0)  # valve setting of this clip: flow, speed and tonal balance
    shaft = p["shaft_hz"] * (1.0 - 0.006 * load) * speed_curve(rng, n, sr, jitter=0.002)
    shaft_phase = phase_of(shaft, sr)
    tones = harmonics(rng, shaft_phase, shaft.max(), sr,
                      decaying_amps(p["harm_decay"], 6) * operating_pattern(rng, 6))
    vane_amps = np.array([1.0, 0.4, 0.15]) * unit_pattern(p["vane_a"], p["vane_b"], 3)
    tones += p["vane_gain"] * harmonics(rng, 6.0 * shaft_phase, 6.0 * shaft.max(), sr, vane_amps)
    pipe_hz = p["pipe_hz"] * (1.0 + spread(rng, 0.02))
    turb = shaped_noise(rng, n, sr, lambda f: lowpass(f, p["turb_hz"], 2) *
                        (0.25 + peak(f, pipe_hz, 3.0)))
    turb *= 1.0 + p["flow_depth"] * smooth_noise(rng, n, sr, p["flow_rate"])
    x = mix(turb, tones, p["tonal_db"] + 0.8 * load)
    if fault == "contamination":  # debris in the fluid: bursts of particles hitting the vanes
        starts, stops = episodes(frng, duration, (2, 4), (0.3, 1.2))
        times = poisson_times(frng, frng.uniform(60, 160), duration)
        on = gate(n, sr, starts, stops, 0.01)[np.clip((times * sr).astype(int), 0, n - 1)] > 0.5
        crackle = ring(n, sr, times[on], frng.exponential(1.0, int(on.sum())),
                       [frng.uniform(1500, 4000)], 0.0008, frng)
        x = mix(x, crackle, level(-16.0, amount))
    elif fault == "leakage":  # a leaking seal: hiss that comes and goes with the pressure
        fc = frng.uniform(2000, 4000)
        hiss = shaped_noise(frng, n, sr, lambda f: highpass(f, fc, 3) * lowpass(f, 7000, 2))
        starts, stops = episodes(frng, duration, (1, 3), (1.0, 3.0))
        x = mix(x, hiss * gate(n, sr, starts, stops, 0.1), level(-22.0, amount))
    elif fault == "clogging":  # a partly blocked intake: pulsation, louder vane pass
        rate = frng.uniform(1.5, 4.0)
        x = x * (1.0 + depth(0.2, amount) * np.sin(TWO_PI * rate * t + frng.uniform(0, TWO_PI)))
        x = mix(x, harmonics(frng, 6.0 * shaft_phase, 6.0 * shaft.max(), sr, vane_amps),
                level(-14.0, amount))
    return x
