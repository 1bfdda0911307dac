"""Signal models of the six DCASE 2020 Task 2 machines, their faults, and factory noise.

Each machine is a `MachineModel`: a table of parameters that set one machine ID apart
from another (speeds, resonances, timing) and a render function

    render(rng, frng, p, n, sr, fault, amount) -> (n,) float64

that draws one clip of the machine with ID parameters `p`. `fault` is None for a normal
clip, else one of the model's fault names; `amount` (> 0) scales how far the fault takes
the sound from normal (1 = the subtle default). The normal sound draws only from `rng`,
the fault only from `frng`: with the same two streams, a faulty clip is the normal clip
plus the fault, which keeps the effect of `amount` measurable.

Everything is vectorised numpy: noise is coloured in the frequency domain, tones come
from integrated instantaneous frequency, impacts are impulse trains convolved with
decaying resonances.

Levels are relative: the caller normalises the machine signal, adds background noise at
the chosen SNR and sets the loudness of the mix, so no model needs an absolute scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from estm_ref.synth.dsp import (TWO_PI, decaying_amps, depth, gate, harmonics, highpass, level,
                                lowpass, mix, peak, periodic_times, phase_of, poisson_times,
                                ring, rms, shaped_noise, smooth_noise, speed_curve, tilt, unit)


# ----------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class Param:
    """An ID parameter spread over [lo, hi] (log-spaced when `log`), integer when `integer`."""

    name: str
    lo: float
    hi: float
    log: bool = False
    integer: bool = False

    def level(self, position: float) -> float:
        """The value at `position` in [0, 1] of the range."""
        if self.log:
            return float(np.exp(np.log(self.lo) + position * (np.log(self.hi) - np.log(self.lo))))
        return self.lo + position * (self.hi - self.lo)


@dataclass(frozen=True)
class MachineModel:
    params: tuple[Param, ...]
    faults: tuple[str, ...]
    render: Callable[..., np.ndarray]
    description: str


# ----------------------------------------------------------------------------- machines

def render_fan(rng, frng, p, n, sr, fault, amount):
    """Airflow noise shaped by the duct, blade-pass harmonics, a weak shaft tone."""
    t = np.arange(n) / sr
    shaft = p["shaft_hz"] * speed_curve(rng, n, sr)
    shaft_phase = phase_of(shaft, sr)
    blades = p["blades"]
    bpf_phase = blades * shaft_phase
    f_bpf = blades * shaft.max()
    tones = harmonics(rng, bpf_phase, f_bpf, sr, decaying_amps(p["harm_decay"], 10))
    tones += 0.2 * np.sin(shaft_phase + rng.uniform(0, TWO_PI))
    air = shaped_noise(rng, n, sr, lambda f: tilt(f, p["air_tilt"]) *
                       (0.3 + peak(f, p["duct_hz"], 1.4)) * lowpass(f, 6500.0, 2))
    air *= 1.0 + 0.12 * np.sin(bpf_phase + rng.uniform(0, TWO_PI))
    x = mix(air, tones, p["tonal_db"])
    if fault == "bearing":  # defect on a race: a resonance excited at the ball-pass rate
        band = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(2500, 6000), 6.0))
        bpfo = shaft * frng.uniform(2.6, 4.4)
        band *= 1.0 + 0.9 * np.sin(phase_of(bpfo, sr))
        x = mix(x, band, level(-12.0, amount))
    elif fault == "imbalance":  # once-per-revolution force: 1x tone and modulation
        x = mix(x, np.sin(shaft_phase), level(-9.0, amount))
        x = x * (1.0 + depth(0.3, amount) * np.sin(shaft_phase + frng.uniform(0, TWO_PI)))
    elif fault == "rub":  # a blade tip touching the housing once per revolution
        revs = np.arange(0.0, t[-1] + 1.0, 1.0 / p["shaft_hz"]) + frng.uniform(0, 0.05)
        amps = frng.uniform(0.2, 1.0, revs.size) * (frng.random(revs.size) < 0.7)
        clicks = ring(n, sr, revs, amps, [frng.uniform(3000, 6000)], 0.0015, frng)
        x = mix(x, clicks, level(-17.0, amount))
    return x


def render_pump(rng, frng, p, n, sr, fault, amount):
    """Shaft and vane-pass harmonics over fluid turbulence with slow flow fluctuation."""
    t = np.arange(n) / sr
    shaft = p["shaft_hz"] * speed_curve(rng, n, sr)
    shaft_phase = phase_of(shaft, sr)
    tones = harmonics(rng, shaft_phase, shaft.max(), sr, decaying_amps(p["harm_decay"], 6))
    vanes = p["vanes"]
    tones += p["vane_gain"] * harmonics(rng, vanes * shaft_phase, vanes * shaft.max(), sr,
                                        [1.0, 0.4, 0.15])
    turb = shaped_noise(rng, n, sr, lambda f: lowpass(f, p["turb_hz"], 2) *
                        (0.25 + peak(f, p["pipe_hz"], 3.0)))
    turb *= 1.0 + p["flow_depth"] * smooth_noise(rng, n, sr, p["flow_rate"])
    x = mix(turb, tones, p["tonal_db"])
    if fault == "cavitation":  # collapsing vapour bubbles: bursts of sharp crackle
        times = poisson_times(frng, frng.uniform(60, 160), t[-1])
        burst = smooth_noise(frng, n, sr, 3.0)
        on = burst[np.clip((times * sr).astype(int), 0, n - 1)] > 0.0
        amps = frng.exponential(1.0, times.size) * on
        crackle = ring(n, sr, times, amps, [frng.uniform(2500, 5500)], 0.0006, frng)
        x = mix(x, crackle, level(-17.0, amount))
    elif fault == "leak":  # a leaking seal: steady high-frequency hiss
        fc = frng.uniform(2500, 4500)
        hiss = shaped_noise(frng, n, sr, lambda f: highpass(f, fc, 3) * lowpass(f, 7000, 2))
        x = mix(x, hiss, level(-13.0, amount))
    elif fault == "clog":  # a partly blocked intake: pressure pulsation at a few Hz
        rate = frng.uniform(1.5, 4.0)
        x = x * (1.0 + depth(0.4, amount) * np.sin(TWO_PI * rate * t + frng.uniform(0, TWO_PI)))
        x = mix(x, harmonics(frng, vanes * shaft_phase, vanes * shaft.max(), sr, [1.0]),
                level(-10.0, amount))
    return x


def _strokes(rng, p, duration, period_jitter):
    """Start times and moving durations of the slider's strokes."""
    starts = periodic_times(rng, p["period_s"] * (1 + 0.008 * rng.standard_normal()),
                            duration, period_jitter)
    moving = p["duty"] * np.diff(np.append(starts, starts[-1] + p["period_s"]))
    return starts, moving


def render_slider(rng, frng, p, n, sr, fault, amount):
    """Back-and-forth strokes: motor whine and rail friction while moving, a stop impact."""
    t = np.arange(n) / sr
    duration = n / sr
    jitter = 0.004 + (depth(0.03, amount) if fault == "loose_belt" else 0.0)
    starts, moving = _strokes(rng, p, duration, jitter)
    k = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, None)
    u = (t - starts[k]) / moving[k]
    inside = (u >= 0.0) & (u < 1.0)
    v = np.where(inside, np.sin(np.pi * np.clip(u, 0.0, 1.0)) ** 0.6, 0.0)
    if fault == "loose_belt":  # slack belt: the carriage surges while it moves
        v = v * (1.0 + depth(0.25, amount) * np.sin(TWO_PI * frng.uniform(7, 14) * t))
    f_motor = p["motor_hz"] * (0.35 + 0.65 * v) * speed_curve(rng, n, sr)
    whine = v * harmonics(rng, phase_of(f_motor, sr), f_motor.max(), sr,
                          decaying_amps(0.5, 5))
    friction = v * shaped_noise(rng, n, sr, lambda f: peak(f, p["friction_hz"], 1.2))
    stops = starts + moving
    amps = 1.0 + 0.08 * rng.standard_normal(starts.size)
    impact_f = [p["impact_hz"], 2.7 * p["impact_hz"]]
    impacts = ring(n, sr, stops, amps, impact_f, p["impact_decay_s"], rng)
    impacts += ring(n, sr, starts, 0.3 * amps, impact_f, p["impact_decay_s"], rng)
    x = mix(friction, whine, p["whine_db"])
    x = mix(x, impacts, p["impact_db"])
    if fault == "squeal":  # dry rail: stick-slip squeal on some strokes
        f_sq = frng.uniform(1500, 4000) * (1 + 0.01 * np.sin(TWO_PI * 5.0 * t))
        strokes_on = (frng.random(starts.size) < 0.6)[k]
        squeal = v * strokes_on * np.sin(phase_of(f_sq, sr))
        x = mix(x, squeal, level(-10.0, amount))
    elif fault == "rail_damage":  # a dent in the rail: a small knock at one position
        pos = frng.uniform(0.2, 0.8)
        knocks = ring(n, sr, starts + pos * moving, frng.uniform(0.6, 1.0, starts.size),
                      [frng.uniform(2500, 5000)], 0.002, frng)
        x = mix(x, knocks, level(-8.0, amount))
    return x


def render_valve(rng, frng, p, n, sr, fault, amount):
    """A solenoid valve cycling: open and close clicks, fluid hiss while open."""
    duration = n / sr
    opens = periodic_times(rng, p["cycle_s"] * (1 + 0.005 * rng.standard_normal()),
                           duration, 0.003)
    closes = opens + p["open_frac"] * p["cycle_s"] * (1 + 0.01 * rng.standard_normal(opens.size))
    open_amp = np.ones(opens.size)
    close_amp = p["close_gain"] * np.ones(opens.size)
    extra = np.zeros(0)
    flow = np.ones(opens.size)  # relative flow (hiss) per actuation
    weakness = 1.0
    if fault == "irregular":  # weak or missed actuations, spurious clicks
        count = max(1, int(round(0.5 * amount * duration / p["cycle_s"])))
        weakness = min(amount, 1.0)  # below 1 a missed actuation is a weak one
        in_clip = np.flatnonzero((opens > 0) & (closes < duration))
        for _ in range(count):
            if frng.random() < 0.5 and in_clip.size:
                miss = frng.choice(in_clip)
                open_amp[miss] *= 1.0 - weakness
                close_amp[miss] *= 1.0 - weakness
                flow[miss] *= 1.0 - weakness
            else:
                extra = np.append(extra, frng.uniform(0.0, duration))
    freqs = [p["click_hz"], p["click_hz"] * p["click_ratio"], 180.0]
    clicks = ring(n, sr, opens, open_amp, freqs, p["decay_s"], rng)
    clicks += ring(n, sr, closes, close_amp, [0.85 * f for f in freqs], p["decay_s"], rng)
    if extra.size:
        clicks += ring(n, sr, extra, weakness * frng.uniform(0.5, 1.0, extra.size), freqs,
                       p["decay_s"], frng)
    if fault == "bounce":  # a sticky plunger bounces on its seat after closing
        lag, height = frng.uniform(0.008, 0.025), depth(0.9, amount, cap=1.5)
        for k in range(3):  # each bounce lower and sooner than the one before
            clicks += ring(n, sr, closes + lag * (1 - 0.6 ** (k + 1)) / 0.4,
                           height * 0.5 ** k * close_amp, [1.1 * f for f in freqs],
                           0.7 * p["decay_s"], frng)
    is_open = gate(n, sr, opens, closes, 0.004, flow)
    hiss_src = shaped_noise(rng, n, sr, lambda f: peak(f, p["hiss_hz"], 1.0))
    x = mix(clicks, is_open * hiss_src, p["hiss_db"])
    if fault == "leak":  # contamination on the seat: flow continues while closed
        x = mix(x, (1.0 - is_open) * hiss_src, level(-12.0, amount))
    return x


def render_toycar(rng, frng, p, n, sr, fault, amount):
    """A small DC motor: whine with periodic speed modulation, gear mesh, brush noise, rumble."""
    t = np.arange(n) / sr
    speed = 1.0 + p["mod_depth"] * np.sin(TWO_PI * p["mod_rate"] * t + rng.uniform(0, TWO_PI))
    speed = speed * speed_curve(rng, n, sr, jitter=0.006, wander=0.004)
    if fault == "speed_drift":  # supply voltage sagging or rising during the run
        speed = speed * (1.0 + frng.choice([-1.0, 1.0]) * depth(0.08, amount, cap=0.5) * t / t[-1])
    f_m = p["motor_hz"] * speed
    motor_phase = phase_of(f_m, sr)
    whine = speed ** 2 * harmonics(rng, motor_phase, f_m.max(), sr,
                                   decaying_amps(p["harm_decay"], 6))
    ratio = p["gear_ratio"]
    gear = harmonics(rng, ratio * motor_phase, ratio * f_m.max(), sr, [1.0, 0.5])
    brush = shaped_noise(rng, n, sr, lambda f: highpass(f, p["brush_hz"], 2))
    brush *= 1.0 + 0.5 * np.sin(2 * motor_phase)
    wheel_phase = motor_phase / 40.0
    rumble = shaped_noise(rng, n, sr, lambda f: lowpass(f, 350.0, 2))
    rumble *= 1.0 + 0.2 * np.sin(wheel_phase)
    x = mix(whine, gear, p["gear_db"])
    x = mix(x, brush, -12.0)
    x = mix(x, rumble, -8.0)
    if fault == "gear_damage":  # a broken tooth: a knock once per gear revolution
        revs = phase_of(f_m / p["gear_teeth"], sr) / TWO_PI
        idx = np.flatnonzero(np.diff(np.floor(revs)) > 0)
        knocks = ring(n, sr, idx / sr, frng.uniform(0.6, 1.0, idx.size),
                      [frng.uniform(2000, 4500)], 0.0015, frng)
        x = mix(x, knocks, level(-10.0, amount))
    elif fault == "tire":  # a deformed tyre: bump and modulation once per wheel turn
        x = x * (1.0 + depth(0.25, amount) * np.sin(wheel_phase + frng.uniform(0, TWO_PI)))
        x = mix(x, rumble * np.maximum(0, np.sin(wheel_phase)) ** 4, level(-9.0, amount))
    elif fault == "bearing":  # a worn shaft bearing: high band modulated at the shaft rate
        band = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(4000, 7000), 5.0))
        band *= 1.0 + 0.8 * np.sin(motor_phase)
        x = mix(x, band, level(-11.0, amount))
    return x


def render_toyconveyor(rng, frng, p, n, sr, fault, amount):
    """Belt rumble over the drive's hum, with ticks where the belt seam passes a roller."""
    t = np.arange(n) / sr
    duration = n / sr
    wobble = 1.0
    if fault == "slip":  # a slipping belt: uneven speed
        wobble = 1.0 + depth(0.05, amount) * smooth_noise(frng, n, sr, 1.5)
    f_h = p["motor_hz"] * speed_curve(rng, n, sr) * wobble
    hum = harmonics(rng, phase_of(f_h, sr), f_h.max(), sr, decaying_amps(p["harm_decay"], 8))
    rumble = shaped_noise(rng, n, sr, lambda f: lowpass(f, p["rumble_hz"], 2) *
                          (0.3 + peak(f, p["roller_hz"], 2.0)))
    rumble *= 1.0 + 0.15 * np.sin(TWO_PI * t / p["tick_s"] * 3.0 + rng.uniform(0, TWO_PI))
    jitter = 0.006 + (depth(0.15, amount) if fault == "slip" else 0.0)
    seams = periodic_times(rng, p["tick_s"] * (1 + 0.006 * rng.standard_normal()),
                           duration, jitter)
    times = np.concatenate([seams, seams + p["tick_gap_s"]])
    amps = np.concatenate([np.ones(seams.size), 0.6 * np.ones(seams.size)])
    ticks = ring(n, sr, times, amps, [p["tick_hz"], 1.9 * p["tick_hz"]], 0.003, rng)
    x = mix(rumble, hum, p["hum_db"])
    x = mix(x, ticks, p["tick_db"])
    if fault == "rattle":  # a loose part: bursts of metallic clicks
        bursts = seams[frng.random(seams.size) < 0.7] + frng.uniform(0.0, 0.1)
        clicks = [b + np.cumsum(frng.exponential(1 / 70.0, 12)) for b in bursts]
        c_times = np.concatenate(clicks) if clicks else np.zeros(0)
        rattle = ring(n, sr, c_times, frng.uniform(0.3, 1.0, c_times.size),
                      [frng.uniform(3000, 6000)], 0.001, frng)
        x = mix(x, rattle, level(-11.0, amount))
    elif fault == "scrape":  # something dragging on the belt: band noise once per seam passage
        scrape = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(1000, 3000), 3.0))
        scrape *= gate(n, sr, seams, seams + 0.4 * p["tick_s"], 0.02)
        x = mix(x, scrape, level(-12.0, amount))
    elif fault == "slip":  # ... and a short squeak each time the belt slips on the drive roller
        starts = poisson_times(frng, 1.5, duration)
        squeak = shaped_noise(frng, n, sr, lambda f: peak(f, frng.uniform(900, 2500), 4.0))
        squeak *= gate(n, sr, starts, starts + frng.uniform(0.04, 0.15, starts.size), 0.01)
        x = mix(x, squeak, level(-15.0, amount))
    return x


MODELS: dict[str, MachineModel] = {
    "fan": MachineModel(
        params=(Param("shaft_hz", 12.0, 28.0, log=True), Param("blades", 3, 9, integer=True),
                Param("duct_hz", 300.0, 2400.0, log=True), Param("air_tilt", -4.5, -1.5),
                Param("harm_decay", 0.45, 0.8), Param("tonal_db", -12.0, -3.0)),
        faults=("bearing", "imbalance", "rub"),
        render=render_fan,
        description="broadband airflow through a duct resonance + blade-pass harmonics",
    ),
    "pump": MachineModel(
        params=(Param("shaft_hz", 20.0, 48.0, log=True), Param("vanes", 4, 10, integer=True),
                Param("harm_decay", 0.4, 0.75), Param("vane_gain", 0.2, 0.9),
                Param("turb_hz", 300.0, 1500.0, log=True),
                Param("pipe_hz", 150.0, 1200.0, log=True),
                Param("flow_rate", 0.1, 0.6), Param("flow_depth", 0.05, 0.25),
                Param("tonal_db", -8.0, 2.0)),
        faults=("cavitation", "leak", "clog"),
        render=render_pump,
        description="low shaft/vane-pass harmonics + low-passed fluid turbulence",
    ),
    "slider": MachineModel(
        params=(Param("period_s", 0.7, 2.2, log=True), Param("duty", 0.5, 0.8),
                Param("motor_hz", 180.0, 600.0, log=True),
                Param("friction_hz", 800.0, 3000.0, log=True),
                Param("impact_hz", 900.0, 3500.0, log=True), Param("impact_decay_s", 0.005, 0.02),
                Param("whine_db", -8.0, 2.0), Param("impact_db", -4.0, 4.0)),
        faults=("squeal", "rail_damage", "loose_belt"),
        render=render_slider,
        description="periodic strokes: motor whine and rail friction, impacts at the stops",
    ),
    "valve": MachineModel(
        params=(Param("cycle_s", 0.8, 3.0, log=True), Param("open_frac", 0.15, 0.6),
                Param("click_hz", 1200.0, 5000.0, log=True), Param("click_ratio", 1.3, 2.6),
                Param("decay_s", 0.003, 0.015, log=True), Param("close_gain", 0.6, 1.6),
                Param("hiss_hz", 1500.0, 6000.0, log=True), Param("hiss_db", -16.0, -4.0)),
        faults=("irregular", "bounce", "leak"),
        render=render_valve,
        description="intermittent open/close solenoid clicks + flow hiss while open",
    ),
    "ToyCar": MachineModel(
        params=(Param("motor_hz", 250.0, 900.0, log=True), Param("harm_decay", 0.4, 0.75),
                Param("gear_ratio", 1.6, 3.2), Param("gear_db", -14.0, -4.0),
                Param("mod_rate", 0.15, 0.8, log=True), Param("mod_depth", 0.03, 0.12),
                Param("brush_hz", 3000.0, 7000.0, log=True),
                Param("gear_teeth", 12, 24, integer=True)),
        faults=("gear_damage", "tire", "speed_drift", "bearing"),
        render=render_toycar,
        description="DC-motor whine with speed modulation, gear mesh, brush noise, wheel rumble",
    ),
    "ToyConveyor": MachineModel(
        params=(Param("motor_hz", 40.0, 120.0, log=True), Param("harm_decay", 0.4, 0.8),
                Param("rumble_hz", 150.0, 800.0, log=True),
                Param("roller_hz", 200.0, 1200.0, log=True),
                Param("tick_s", 0.25, 1.2, log=True), Param("tick_gap_s", 0.03, 0.12),
                Param("tick_hz", 1500.0, 5000.0, log=True), Param("tick_db", -12.0, 0.0),
                Param("hum_db", -10.0, 0.0)),
        faults=("rattle", "slip", "scrape"),
        render=render_toyconveyor,
        description="belt rumble + drive hum + periodic seam ticks",
    ),
}


# ----------------------------------------------------------------------------- background

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
