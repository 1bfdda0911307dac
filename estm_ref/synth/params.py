"""What a machine model is: the parameters that set one unit (machine ID) apart from the
others of its product line, the per-clip operating point, and the render function.

    render(rng, frng, p, n, sr, fault, amount) -> (n,) float64

draws one clip of the unit with ID parameters `p`. `fault` is None for a normal clip,
else one of the model's fault names; `amount` (> 0) scales how far the fault takes the
sound from normal (1 = the calibrated default). The normal sound draws only from `rng`,
the fault only from `frng`: with the same two streams, a faulty clip is the normal clip
plus the fault, which keeps the effect of `amount` measurable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

MAX_IDS = 7  # IDs per machine type at most; also the number of levels of an ID parameter


@dataclass(frozen=True)
class Param:
    """An ID parameter spread over [lo, hi] (log-spaced when `log`), integer when `integer`.

    The ranges are narrow on purpose: the IDs of a type are units of one product line,
    which differ by manufacturing tolerances, not different machines."""

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

    def moved(self, value: float, fraction: float) -> float:
        """`value` moved by `fraction` of the range (on the log scale when `log`)."""
        if self.log:
            return float(value * (self.hi / self.lo) ** fraction)
        return value + fraction * (self.hi - self.lo)


@dataclass(frozen=True)
class MachineModel:
    params: tuple[Param, ...]
    faults: tuple[str, ...]
    render: Callable[..., np.ndarray]
    description: str
    # How far this type's faults go at anomaly strength 1: the `amount` a render function
    # gets is anomaly_strength * severity * a per-clip spread. Calibrated per type
    # (docs/synthetic-data.md) together with `wear_steps`, so that the
    # official DCASE 2020 autoencoder baseline lands near its published AUC for the type.
    severity: float = 1.0
    # Fault -> the ID parameters it moves. A worn or damaged unit does not only add a new
    # sound: it also runs at another speed, with other resonances or another harmonic
    # balance, i.e. it sounds a little like a sibling unit (see `wear`).
    wear: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # How far a fault moves those parameters at anomaly strength 1, in ID spacings (times
    # the clip's spread of the fault amount). Calibrated per type with `severity`: wear is
    # what a per-unit detector notices and a detector trained on all units barely does.
    wear_steps: float = 2.0

    def __post_init__(self):
        if not self.wear_steps >= 0:
            raise ValueError(f"wear_steps must be >= 0, got {self.wear_steps}")
        names = {p.name for p in self.params}
        for fault, moved in self.wear.items():
            if fault not in self.faults or not set(moved) <= names:
                raise ValueError(f"wear of {fault!r} names unknown faults or parameters {moved}")


def spread(rng: np.random.Generator, scale: float) -> float:
    """A per-clip operating-point deviation: normal with std `scale`, clipped at 2.5 std."""
    return float(np.clip(rng.standard_normal(), -2.5, 2.5) * scale)


def unit_pattern(a: float, b: float, count: int) -> np.ndarray:
    """A unit's fixed pattern over `count` harmonics or modes from two ID parameters in
    [-1, 1] (blade or vane irregularity, winding asymmetry): multiplicative, about 1."""
    k = np.arange(1, count + 1)
    return np.exp(0.35 * (a * np.cos(1.3 * k) + b * np.sin(2.1 * k)))


def some(rng: np.random.Generator, count: int, share: float) -> np.ndarray:
    """A mask choosing about `share` of `count` events, at least one (a faulty clip always
    carries its fault)."""
    mask = rng.random(count) < share
    if count and not mask.any():
        mask[rng.integers(count)] = True
    return mask


def operating_pattern(rng: np.random.Generator, count: int, scale: float = 0.5) -> np.ndarray:
    """How this clip's load and temperature tilt a unit's harmonic balance: a
    `unit_pattern` with per-clip coefficients of std `scale` (about +-1 dB at 0.5)."""
    return unit_pattern(spread(rng, scale), spread(rng, scale), count)


def wear(rng: np.random.Generator, model: MachineModel, params: Mapping[str, float], fault: str,
         steps: float, directions: int) -> dict[str, float]:
    """The ID parameters of a unit with `fault`: each parameter the fault moves
    (`model.wear`) shifted by `steps` ID spacings (1/7 of its range, see
    `generate.N_LEVELS`), times a per-parameter spread in [0.5, 1]. The j-th such parameter
    moves down when bit j of `directions` is set, up otherwise (consecutive integers give
    every combination in turn)."""
    out = dict(params)
    by_name = {p.name: p for p in model.params}
    for j, name in enumerate(model.wear.get(fault, ())):
        sign = -1.0 if (directions >> j) & 1 else 1.0
        fraction = sign * rng.uniform(0.5, 1.0) * steps / MAX_IDS
        out[name] = by_name[name].moved(out[name], fraction)
    return out
