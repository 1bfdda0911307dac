"""The ToyADMOS toy car and toy conveyor: small DC motors driving wheels or a belt.

A unit is set apart from the others of its product line by its motor speed, gear ratio,
the balance of its motor harmonics and the resonances of its body. The operating point of
a clip (battery charge, load) moves the speed and balances a little. The faults are those
of ToyADMOS (car: shaft, gears, tyres, supply voltage; conveyor: belt and pulley faults),
and act on speed, harmonic balance and timing; several are once-per-revolution events.
"""

from __future__ import annotations

import numpy as np

from estm_ref.synth.dsp import (TWO_PI, decaying_amps, depth, gate, harmonics, highpass, level,
                                lowpass, mix, peak, periodic_times, phase_of, poisson_times,
                                ring, shaped_noise, smooth_noise, speed_curve)
from estm_ref.synth.params import operating_pattern, some, spread, unit_pattern


def render_toycar(rng, frng, p, n, sr, fault, amount):
    """A small DC motor: whine with periodic speed modulation, gear mesh, brush noise, rumble."""
    t = np.arange(n) / sr
    battery = spread(rng, 0.03)
    speed = 1.0 + p["mod_depth"] * (1.0 + spread(rng, 0.3)) * np.sin(TWO_PI * p["mod_rate"] * t + rng.uniform(0, TWO_PI))
    speed = speed * (1.0 + battery) * speed_curve(rng, n, sr, jitter=0.002, wander=0.004)
    if fault == "voltage":  # supply voltage sagging or rising during the run
        speed = speed * (1.0 + frng.choice([-1.0, 1.0]) * depth(0.1, amount, cap=0.5) * t / t[-1])
    f_m = p["motor_hz"] * speed
    motor_phase = phase_of(f_m, sr)
    amps = (decaying_amps(p["harm_decay"], 6) * unit_pattern(p["wind_a"], p["wind_b"], 6)
            * operating_pattern(rng, 6))
    whine = speed ** 2 * harmonics(rng, motor_phase, f_m.max(), sr, amps)
    ratio = p["gear_ratio"]
    gear = harmonics(rng, ratio * motor_phase, ratio * f_m.max(), sr, [1.0, 0.5])
    brush = shaped_noise(rng, n, sr, lambda f: highpass(f, p["brush_hz"], 2))
    brush *= 1.0 + 0.5 * np.sin(2 * motor_phase)
    wheel_phase = motor_phase / 40.0
    rumble = shaped_noise(rng, n, sr, lambda f: lowpass(f, 350.0, 2))
    rumble *= 1.0 + 0.2 * np.sin(wheel_phase)
    x = mix(whine, gear, p["gear_db"] + spread(rng, 3.0))
    x = mix(x, brush, -12.0 + spread(rng, 3.0))
    x = mix(x, rumble, -8.0 + spread(rng, 3.0))
    if fault == "gear":  # a broken tooth: a knock once per gear revolution
        revs = phase_of(f_m / p["gear_teeth"], sr) / TWO_PI
        idx = np.flatnonzero(np.diff(np.floor(revs)) > 0)
        knocks = ring(n, sr, idx / sr, frng.uniform(0.6, 1.0, idx.size),
                      [frng.uniform(2000, 4500)], 0.0015, frng)
        x = mix(x, knocks, level(-7.0, amount))
    elif fault == "tyre":  # a deformed tyre: bump and modulation once per wheel turn
        x = x * (1.0 + depth(0.3, amount) * np.sin(wheel_phase + frng.uniform(0, TWO_PI)))
        x = mix(x, rumble * np.maximum(0, np.sin(wheel_phase)) ** 4, level(-4.0, amount))
    elif fault == "shaft":  # a bent shaft: the motor harmonics rebalance, a once-per-turn rub
        shift = unit_pattern(frng.uniform(-1, 1), frng.uniform(-1, 1), 6) ** depth(1.0, amount, 2)
        x = mix(x, speed ** 2 * harmonics(frng, motor_phase, f_m.max(), sr, amps * (shift - 1)),
                -3.0)
        band = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(4000, 7000), 5.0))
        x = mix(x, band * np.maximum(0.0, np.sin(motor_phase)) ** 8, level(-6.0, amount))
    return x


def render_toyconveyor(rng, frng, p, n, sr, fault, amount):
    """Belt rumble over the drive's hum, with ticks where the belt seam passes a roller."""
    t = np.arange(n) / sr
    duration = n / sr
    load = spread(rng, 0.03)
    wobble = 1.0
    if fault == "belt_slip":  # a worn belt slips on the drive pulley: uneven speed, squeaks
        wobble = 1.0 + depth(0.03, amount) * smooth_noise(frng, n, sr, 1.5)
    f_h = p["motor_hz"] * (1.0 - load) * speed_curve(rng, n, sr, jitter=0.002) * wobble
    amps = (decaying_amps(p["harm_decay"], 8) * unit_pattern(p["wind_a"], p["wind_b"], 8)
            * operating_pattern(rng, 8))
    hum = harmonics(rng, phase_of(f_h, sr), f_h.max(), sr, amps)
    roller_hz = p["roller_hz"] * (1.0 + spread(rng, 0.06))
    rumble = shaped_noise(rng, n, sr, lambda f: lowpass(f, p["rumble_hz"], 2) *
                          (0.3 + peak(f, roller_hz, 2.0)))
    rumble *= 1.0 + 0.15 * np.sin(TWO_PI * t / p["tick_s"] * 3.0 + rng.uniform(0, TWO_PI))
    jitter = 0.006 + (depth(0.06, amount) if fault == "belt_slip" else 0.0)
    seams = periodic_times(rng, p["tick_s"] * (1.0 + load), duration, jitter)
    times = np.concatenate([seams, seams + p["tick_gap_s"]])
    tick_amps = np.concatenate([np.ones(seams.size), 0.6 * np.ones(seams.size)])
    ticks = ring(n, sr, times, tick_amps, [p["tick_hz"], 1.9 * p["tick_hz"]], 0.003, rng)
    x = mix(rumble, hum, p["hum_db"] + spread(rng, 3.0))
    x = mix(x, ticks, p["tick_db"] + spread(rng, 3.0))
    if fault == "pulley":  # a loose pulley: rattling on some belt turns
        inside = seams[(seams > 0) & (seams < duration)]
        bursts = inside[some(frng, inside.size, 0.3)] + frng.uniform(0.0, 0.1)
        clicks = [b + np.cumsum(frng.exponential(1 / 70.0, 8)) for b in bursts]
        c_times = np.concatenate(clicks) if clicks else np.zeros(0)
        rattle = ring(n, sr, c_times, frng.uniform(0.3, 1.0, c_times.size),
                      [1.3 * p["tick_hz"]], 0.0015, frng)
        x = mix(x, rattle, level(-10.0, amount))
    elif fault == "belt_damage":  # a torn belt edge catches on some belt turns
        scrape = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(1000, 3000), 3.0))
        inside = seams[(seams > 0) & (seams < duration)]
        passes = inside[some(frng, inside.size, 0.25)]  # where the torn edge catches
        scrape *= gate(n, sr, passes, passes + 0.3 * p["tick_s"], 0.02)
        x = mix(x, scrape, level(-9.0, amount))
    elif fault == "belt_slip":
        starts = poisson_times(frng, 1.0, duration)
        squeak = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(900, 2500), 4.0))
        squeak *= gate(n, sr, starts, starts + frng.uniform(0.04, 0.15, starts.size), 0.01)
        x = mix(x, squeak, level(-8.0, amount))
    return x
