"""The six DCASE 2020 Task 2 machine types, one `MachineType` record each: the first ID
DCASE numbers from, the official autoencoder baseline's published figures and the
generator's model (ID parameters, faults, render function). `MACHINES` is the one table;
every list of machine types is derived from it.

The parameter ranges are those of one product line: a unit's speed lies within a few
percent of its siblings', its resonances within about ten percent, its balances within
a few dB (7 evenly spaced levels over each range, see `generate.id_params`). The signal
models are in `rotating` (fan, pump), `cyclic` (slider, valve) and `toys` (ToyCar,
ToyConveyor); the factory background in `factory`.

Everything is vectorised numpy: noise is coloured in the frequency domain, tones come
from integrated instantaneous frequency, impacts are impulse trains convolved with
decaying resonances. Levels are relative: the caller normalises the machine signal, adds
background noise at the chosen SNR and sets the loudness of the mix.
"""

from __future__ import annotations

from dataclasses import dataclass

from estm_ref.synth.cyclic import render_slider, render_valve
from estm_ref.synth.factory import factory_noise
from estm_ref.synth.params import MachineModel, Param
from estm_ref.synth.rotating import render_fan, render_pump
from estm_ref.synth.toys import render_toycar, render_toyconveyor

__all__ = ["MACHINES", "MACHINE_TYPES", "MachineModel", "MachineType", "Param", "factory_noise"]


@dataclass(frozen=True)
class MachineType:
    """One machine type: what DCASE says of it and how the generator renders it."""

    first_id: int  # IDs are numbered from here (00 or 01 in DCASE 2020), consecutively
    # the official autoencoder baseline on the DCASE 2020 development set, AUC and pAUC (%):
    # the target the model's severity and wear were calibrated against
    published_ae: tuple[float, float]
    model: MachineModel

# Each type's fault severity and wear steps (MachineModel.severity, .wear_steps) were fitted
# together against the official DCASE 2020 autoencoder baseline at its full 100 epochs and
# the per-ID clip-statistics detector (4 IDs x 100 training clips, seeds 0 and 1, three
# sets of anomalous clips each; docs/synthetic-data.md): the
# severity sets how audible the fault's own sound is, the wear how far the unit's own
# parameters move. Both detectors notice both; wear moves the per-ID detector a little more
# per point of autoencoder AUC. The parameters each fault moves (`wear`) were chosen for
# the physics.

# blade, vane or winding irregularity of a unit (see params.unit_pattern)
_PATTERN = (Param("pattern_a", -1.0, 1.0), Param("pattern_b", -1.0, 1.0))


def _pattern(prefix: str) -> tuple[Param, ...]:
    return tuple(Param(f"{prefix}_{p.name[-1]}", p.lo, p.hi) for p in _PATTERN)


MACHINES: dict[str, MachineType] = {
    "fan": MachineType(first_id=0, published_ae=(65.16, 52.59), model=MachineModel(
        params=(Param("shaft_hz", 23.0, 26.0, log=True), *_pattern("blade"),
                Param("duct_hz", 650.0, 850.0, log=True), Param("air_tilt", -3.2, -2.6),
                Param("harm_decay", 0.55, 0.7), Param("tonal_db", -9.0, -6.0)),
        faults=("imbalance", "voltage_change", "clogging"),
        render=render_fan,
        severity=0.27965,
        wear_steps=4.0,
        wear={"imbalance": ("blade_a", "blade_b", "harm_decay"),
              "voltage_change": ("shaft_hz", "tonal_db"), "clogging": ("duct_hz", "air_tilt")},
        description="broadband airflow through a duct resonance + blade-pass harmonics",
    )),
    "pump": MachineType(first_id=0, published_ae=(72.59, 60.00), model=MachineModel(
        params=(Param("shaft_hz", 28.0, 31.0, log=True), *_pattern("vane"),
                Param("harm_decay", 0.5, 0.65), Param("vane_gain", 0.4, 0.7),
                Param("turb_hz", 600.0, 800.0, log=True),
                Param("pipe_hz", 350.0, 450.0, log=True),
                Param("flow_rate", 0.2, 0.4), Param("flow_depth", 0.1, 0.2),
                Param("tonal_db", -4.0, -1.0)),
        faults=("contamination", "leakage", "clogging"),
        render=render_pump,
        severity=0.49476,
        wear_steps=5.0,
        wear={"contamination": ("vane_a", "vane_b", "vane_gain"),
              "leakage": ("pipe_hz", "turb_hz", "flow_depth"),
              "clogging": ("shaft_hz", "harm_decay", "flow_rate")},
        description="low shaft/vane-pass harmonics + low-passed fluid turbulence",
    )),
    "slider": MachineType(first_id=0, published_ae=(84.99, 66.93), model=MachineModel(
        params=(Param("period_s", 1.1, 1.3, log=True), Param("duty", 0.6, 0.7),
                Param("motor_hz", 300.0, 360.0, log=True),
                Param("friction_hz", 1300.0, 1600.0, log=True),
                Param("impact_hz", 1600.0, 2000.0, log=True),
                Param("impact_decay_s", 0.008, 0.012),
                Param("whine_db", -4.0, -1.0), Param("impact_db", -5.0, -2.0)),
        faults=("rail_damage", "no_grease", "loose_belt"),
        render=render_slider,
        severity=0.04807,
        wear_steps=3.0,
        wear={"rail_damage": ("friction_hz", "impact_hz"),
              "no_grease": ("friction_hz", "motor_hz", "whine_db"),
              "loose_belt": ("period_s", "duty", "impact_decay_s")},
        description="periodic strokes: motor whine and rail friction, impacts at the stops",
    )),
    "valve": MachineType(first_id=0, published_ae=(66.46, 50.60), model=MachineModel(
        params=(Param("cycle_s", 1.3, 1.6, log=True), Param("open_frac", 0.3, 0.4),
                Param("click_hz", 2200.0, 2700.0, log=True), Param("click_ratio", 1.7, 2.0),
                Param("decay_s", 0.006, 0.009, log=True), Param("close_gain", 0.9, 1.2),
                Param("hiss_hz", 2800.0, 3400.0, log=True), Param("hiss_db", -11.0, -8.0)),
        faults=("sticking", "bounce", "seat_leak"),
        render=render_valve,
        severity=0.0306,
        wear_steps=1.45,
        wear={"sticking": ("open_frac", "cycle_s", "click_ratio"),
              "bounce": ("decay_s", "close_gain", "click_hz"), "seat_leak": ("hiss_hz", "hiss_db")},
        description="intermittent open/close solenoid clicks + flow hiss while open",
    )),
    "ToyCar": MachineType(first_id=1, published_ae=(80.09, 67.22), model=MachineModel(
        params=(Param("motor_hz", 430.0, 500.0, log=True), Param("harm_decay", 0.5, 0.65),
                *_pattern("wind"), Param("gear_ratio", 2.2, 2.5), Param("gear_db", -10.0, -7.0),
                Param("mod_rate", 0.3, 0.45, log=True), Param("mod_depth", 0.05, 0.08),
                Param("brush_hz", 4500.0, 5300.0, log=True),
                Param("gear_teeth", 14, 20, integer=True)),
        faults=("shaft", "gear", "tyre", "voltage"),
        render=render_toycar,
        severity=0.0798,
        wear_steps=4.5,
        wear={"shaft": ("wind_a", "wind_b", "harm_decay"), "gear": ("gear_ratio", "gear_db"),
              "tyre": ("mod_rate", "mod_depth"), "voltage": ("motor_hz", "brush_hz")},
        description="DC-motor whine with speed modulation, gear mesh, brush noise, wheel rumble",
    )),
    "ToyConveyor": MachineType(first_id=1, published_ae=(72.68, 60.66), model=MachineModel(
        params=(Param("motor_hz", 65.0, 75.0, log=True), Param("harm_decay", 0.55, 0.7),
                *_pattern("wind"), Param("rumble_hz", 350.0, 450.0, log=True),
                Param("roller_hz", 550.0, 700.0, log=True),
                Param("tick_s", 0.5, 0.6, log=True), Param("tick_gap_s", 0.06, 0.08),
                Param("tick_hz", 2500.0, 3000.0, log=True), Param("tick_db", -7.0, -4.0),
                Param("hum_db", -6.0, -3.0)),
        faults=("pulley", "belt_damage", "belt_slip"),
        render=render_toyconveyor,
        severity=0.08512,
        wear_steps=3.5,
        wear={"pulley": ("roller_hz", "tick_gap_s"),
              "belt_damage": ("tick_s", "tick_hz", "tick_db"),
              "belt_slip": ("motor_hz", "rumble_hz", "hum_db")},
        description="belt rumble + drive hum + periodic seam ticks",
    )),
}

MACHINE_TYPES = tuple(MACHINES)
