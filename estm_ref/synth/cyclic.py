"""The MIMII slider and valve: machines that move in strokes or actuations.

A unit is set apart from the others of its product line by its cycle timing, the
frequencies of its impact and friction resonances and the balance of its parts. The
operating point of a clip (program speed, supply pressure) moves the timing and levels a
little. The faults are those of MIMII (slider: rail damage, no grease, loose belt; valve:
contamination, heard as sticking actuations, a bouncing plunger or a leaking seat) and
most are local in time: one knock per stroke, a squeal on some strokes, one weak
actuation in a clip.
"""

from __future__ import annotations

import numpy as np

from estm_ref.synth.dsp import (TWO_PI, decaying_amps, depth, gate, harmonics, level, mix,
                                peak, periodic_times, phase_of, ring, shaped_noise, speed_curve)
from estm_ref.synth.params import some, spread


def _strokes(rng, p, duration, period_jitter):
    """Start times and moving durations of the slider's strokes."""
    period = p["period_s"] * (1.0 + spread(rng, 0.01))
    starts = periodic_times(rng, period, duration, period_jitter)
    moving = p["duty"] * np.diff(np.append(starts, starts[-1] + period))
    return starts, moving


def render_slider(rng, frng, p, n, sr, fault, amount):
    """Back-and-forth strokes: motor whine and rail friction while moving, a stop impact."""
    t = np.arange(n) / sr
    duration = n / sr
    jitter = 0.004 + (depth(0.06, amount) if fault == "loose_belt" else 0.0)
    starts, moving = _strokes(rng, p, duration, jitter)
    k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, None)
    u = (t - starts[k]) / moving[k]
    inside = (u >= 0.0) & (u < 1.0)
    v = np.where(inside, np.sin(np.pi * np.clip(u, 0.0, 1.0)) ** 0.6, 0.0)
    if fault == "loose_belt":  # slack belt: the carriage surges while it moves, the belt slaps
        surge = TWO_PI * frng.uniform(7, 14) * t
        v = v * (1.0 + depth(0.7, amount) * np.sin(surge))
    f_motor = p["motor_hz"] * (0.35 + 0.65 * v) * speed_curve(rng, n, sr, jitter=0.01)
    whine = v * harmonics(rng, phase_of(f_motor, sr), f_motor.max(), sr,
                          decaying_amps(0.5, 5))
    friction_hz = p["friction_hz"] * (1.0 + spread(rng, 0.05))
    if fault == "no_grease":  # dry rail: the friction band moves up, some strokes stick
        dry = some(frng, starts.size, 0.6)[k]
        friction_hz = friction_hz * (1.0 + depth(0.15, amount))
    friction = v * shaped_noise(rng, n, sr, lambda f: peak(f, friction_hz, 1.2))
    stops = starts + moving
    amps = 1.0 + 0.08 * rng.standard_normal(starts.size)
    impact_f = [p["impact_hz"], 2.7 * p["impact_hz"]]
    impacts = ring(n, sr, stops, amps, impact_f, p["impact_decay_s"], rng)
    impacts += ring(n, sr, starts, 0.3 * amps, impact_f, p["impact_decay_s"], rng)
    x = mix(friction, whine, p["whine_db"] + spread(rng, 2.0))
    if fault == "loose_belt":
        slap = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(120, 300), 2.0))
        x = mix(x, v * np.maximum(0.0, np.sin(surge)) ** 4 * slap, level(5.0, amount))
    x = mix(x, impacts, p["impact_db"] + spread(rng, 2.0))
    if fault == "no_grease":  # ... with stick-slip squeal on those strokes
        f_sq = frng.uniform(2500, 5000) * (1 + 0.01 * np.sin(TWO_PI * 5.0 * t))
        squeal = v * dry * np.sin(phase_of(f_sq, sr))
        x = mix(x, squeal, level(7.0, amount))
    elif fault == "rail_damage":  # a damaged stretch of rail: the carriage grinds over it
        pos, width = frng.uniform(0.15, 0.6), frng.uniform(0.15, 0.3)
        rough = gate(n, sr, starts + pos * moving, starts + (pos + width) * moving, 0.01)
        grind = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(3500, 5500), 2.0))
        grind *= 1.0 + 0.8 * np.sin(TWO_PI * frng.uniform(40, 90) * t)
        x = mix(x, rough * v * grind, level(6.0, amount))
    return x


def _valve_faults(frng, fault, amount, opens, closes, duration, p):
    """Actuation amplitudes, flow per actuation, chatter clicks and their gain of a valve
    whose plunger sticks (contamination)."""
    open_amp, close_amp = np.ones(opens.size), p["close_gain"] * np.ones(opens.size)
    flow, extra = np.ones(opens.size), np.zeros(0)
    weakness, chatter = min(amount, 1.0), depth(0.7, amount, cap=1.5)
    if fault == "sticking":  # debris on the plunger: weak actuations that chatter
        count = max(1, int(round(0.4 * duration / p["cycle_s"])))
        in_clip = np.flatnonzero((opens > 0) & (closes < duration))
        for stuck in frng.choice(in_clip, min(count, in_clip.size), replace=False):
            open_amp[stuck] *= 1.0 - 0.5 * weakness
            flow[stuck] *= 1.0 - 0.5 * weakness
            extra = np.append(extra, opens[stuck] + np.cumsum(frng.uniform(0.02, 0.06, 3)))
    return open_amp, close_amp, flow, extra, chatter


def render_valve(rng, frng, p, n, sr, fault, amount):
    """A solenoid valve cycling: open and close clicks, fluid hiss while open."""
    duration = n / sr
    cycle = p["cycle_s"] * (1.0 + spread(rng, 0.01))
    opens = periodic_times(rng, cycle, duration, 0.003)
    closes = opens + p["open_frac"] * cycle * (1 + 0.01 * rng.standard_normal(opens.size))
    open_amp, close_amp, flow, extra, chatter = _valve_faults(frng, fault, amount, opens,
                                                               closes, duration, p)
    freqs = [p["click_hz"], p["click_hz"] * p["click_ratio"], 180.0]
    clicks = ring(n, sr, opens, open_amp, freqs, p["decay_s"], rng)
    clicks += ring(n, sr, closes, close_amp, [0.85 * f for f in freqs], p["decay_s"], rng)
    if extra.size:
        clicks += ring(n, sr, extra, chatter * frng.uniform(0.5, 1.0, extra.size), freqs,
                       p["decay_s"], frng)
    if fault == "bounce":  # a sticky plunger bounces on its seat after closing
        lag, height = frng.uniform(0.008, 0.025), depth(1.5, amount, cap=2.5)
        for k in range(3):  # each bounce lower and sooner than the one before
            clicks += ring(n, sr, closes + lag * (1 - 0.6 ** (k + 1)) / 0.4,
                           height * 0.5 ** k * close_amp, [1.1 * f for f in freqs],
                           0.7 * p["decay_s"], frng)
    is_open = gate(n, sr, opens, closes, 0.004, flow)
    hiss_src = shaped_noise(rng, n, sr, lambda f: peak(f, p["hiss_hz"], 1.0))
    x = mix(clicks, is_open * hiss_src, p["hiss_db"] + spread(rng, 1.5))
    if fault == "seat_leak":  # contamination on the seat: a whistling leak while closed
        whistle = shaped_noise(frng, n, sr, lambda f: peak(f, min(1.6 * p["hiss_hz"], 7000.0), 8.0))
        x = mix(x, (1.0 - is_open) * whistle, level(-8.0, amount))
    return x
