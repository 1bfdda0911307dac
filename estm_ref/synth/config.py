"""`SynthConfig`: every setting of a generated data set, with its default written once.

The defaults are the calibrated difficulty (docs/synthetic-data.md): on 4 IDs x 100
training x 40 test clips per type the official DCASE 2020 autoencoder baseline (100
epochs) lands near its published per-type AUC on the real development set, and a per-ID
clip-statistics detector at 80-90 on average (bench/results/calibration.md).
`estm synth` builds its flags from these fields (`help` in each field's metadata).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

from estm_ref.errors import InputError
from estm_ref.synth.machines import MACHINE_TYPES
from estm_ref.synth.params import MAX_IDS


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class SynthConfig:
    seed: int = field(default=0, metadata=_help("seed of every random choice"))
    ids_per_type: int = field(default=4, metadata=_help(f"machine IDs per type, 1-{MAX_IDS}"))
    train_per_id: int = field(default=100, metadata=_help("normal training clips per ID"))
    test_per_id: int = field(default=40, metadata=_help("test clips per ID"))
    anomaly_fraction: float = field(default=0.5, metadata=_help("share of anomalous test clips"))
    snr_db: float = field(default=6.0, metadata=_help(
        "machine-to-factory-noise ratio in dB; lower is harder"))
    anomaly_strength: float = field(default=1.0, metadata=_help(
        "scale of every fault (1 = calibrated); lower is harder"))
    duration_s: float = field(default=10.0, metadata=_help("clip length in seconds"))
    types: tuple[str, ...] = field(default=MACHINE_TYPES, metadata=_help("machine types"))

    def __post_init__(self):
        object.__setattr__(self, "types", tuple(self.types))
        unknown = [t for t in self.types if t not in MACHINE_TYPES]
        _check("types", not unknown and len(set(self.types)) == len(self.types) and self.types,
               f"distinct names from {MACHINE_TYPES}", list(self.types))
        _check("seed", isinstance(self.seed, numbers.Integral) and self.seed >= 0,
               "an integer >= 0", self.seed)
        _check("ids_per_type", 1 <= self.ids_per_type <= MAX_IDS, f"in [1, {MAX_IDS}]",
               self.ids_per_type)
        _check("train_per_id", self.train_per_id >= 0, ">= 0", self.train_per_id)
        _check("test_per_id", self.test_per_id >= 0, ">= 0", self.test_per_id)
        _check("anomaly_fraction", 0.0 <= self.anomaly_fraction <= 1.0, "in [0, 1]",
               self.anomaly_fraction)
        _check("anomaly_strength", self.anomaly_strength > 0, "> 0", self.anomaly_strength)
        _check("snr_db", math.isfinite(self.snr_db), "finite", self.snr_db)
        _check("duration_s", math.isfinite(self.duration_s) and self.duration_s >= 0.1, ">= 0.1",
               self.duration_s)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}


def _check(name: str, ok: bool, requirement: str, value) -> None:
    if not ok:
        raise InputError(f"{name} must be {requirement}, got {value!r}")
