"""Seeded synthetic machine sounds in the exact DCASE 2020 Task 2 layout.

    <out>/<machine_type>/train/normal_id_XX_NNNNNNNN.wav
    <out>/<machine_type>/test/normal_id_XX_NNNNNNNN.wav
    <out>/<machine_type>/test/anomaly_id_XX_NNNNNNNN.wav

16 kHz, 16-bit PCM, mono, 10 s by default. fan, pump, slider and valve number their IDs
from 00, ToyCar and ToyConveyor from 01 (as in DCASE); IDs are consecutive. The sound
models and faults are in `estm_ref.synth.machines`.

One clip: the machine (with a fault on anomalous clips) is scaled to RMS 1, factory noise
is added at `snr_db`, and the mix is set to a loudness drawn from `LOUDNESS_DBFS`,
whatever the label, so loudness alone says nothing about the label or the ID.

Determinism: every clip draws from its own generator, seeded by (seed, machine type, ID,
split, label, counter), and the parameters of an ID by (seed, machine type, ID), so a file's
bytes depend on nothing else: not on the order of generation, on `types`, or on how many
other IDs or clips are made. Same numpy/scipy build and seed -> byte-identical files.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from estm_ref.config import FeatureConfig
from estm_ref.errors import InputError
from estm_ref.synth.config import MACHINE_TYPES, MAX_IDS, SynthConfig
from estm_ref.synth.dsp import rms
from estm_ref.synth.machines import MODELS, MachineModel, factory_noise
from estm_ref.synth.params import wear

log = logging.getLogger(__name__)

__all__ = ["MACHINE_TYPES", "MAX_IDS", "SynthConfig", "generate", "id_params", "machine_ids",
           "render_clip", "format_summary"]

FIRST_ID = {"fan": 0, "pump": 0, "slider": 0, "valve": 0, "ToyCar": 1, "ToyConveyor": 1}
# Each ID parameter takes one of N_LEVELS evenly spaced values over its range, in a
# seed-dependent order, plus a jitter of at most a quarter step: any two IDs differ in
# every parameter by at least half a step.
N_LEVELS = MAX_IDS
ID_JITTER = 0.25
LOUDNESS_DBFS = (-36.0, -32.0)  # RMS of every clip, uniform, label-independent; leaves
# 32 dB of headroom for the impacts of slider and valve (crest factors up to ~32 dB)
SNR_SPREAD_DB = 3.0  # per-clip deviation of the SNR from `snr_db`, uniform, label-independent
WEAR_STEPS = 2.0  # how far a fault moves the unit's ID parameters, in ID spacings (params.wear)
SEVERITY = (0.7, 1.3)  # per-clip spread of the fault amount around strength * severity
LIMIT = 0.9  # samples above this are soft-limited towards full scale (rare transients)

_SPLIT_CODE = {"train": 0, "test": 1}
_LABEL_CODE = {"normal": 0, "anomaly": 1}
_PURPOSE_LEVELS, _PURPOSE_ID, _PURPOSE_CLIP = 1, 2, 3


def _type_code(machine_type: str) -> int:
    return zlib.crc32(machine_type.encode())


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def machine_ids(machine_type: str, ids_per_type: int) -> list[str]:
    """The two-digit IDs generated for a type: 00.. or (ToyCar, ToyConveyor) 01.."""
    first = FIRST_ID[machine_type]
    return [f"{first + i:02d}" for i in range(ids_per_type)]


def id_params(seed: int, machine_type: str, machine_id: str) -> dict[str, float]:
    """The parameters of one machine ID (see N_LEVELS)."""
    model = MODELS[machine_type]
    index = int(machine_id) - FIRST_ID[machine_type]
    if not 0 <= index < MAX_IDS:
        raise InputError(f"{machine_type} has IDs {machine_ids(machine_type, MAX_IDS)}, "
                         f"not {machine_id!r}")
    order_rng = _rng(seed, _PURPOSE_LEVELS, _type_code(machine_type))
    jitter_rng = _rng(seed, _PURPOSE_ID, _type_code(machine_type), index)
    params = {}
    for param in model.params:
        level = int(order_rng.permutation(N_LEVELS)[index])
        jitter = jitter_rng.uniform(-ID_JITTER, ID_JITTER)
        if param.integer:
            params[param.name] = float(round(param.level(level / (N_LEVELS - 1))))
        else:
            params[param.name] = param.level((level + 0.5 + jitter) / N_LEVELS)
    return params


def render_clip(seed: int, machine_type: str, machine_id: str, split: str, label: str,
                index: int, params: dict[str, float], sample_rate: int, n_samples: int,
                snr_db: float, anomaly_strength: float) -> tuple[np.ndarray, str | None, bool]:
    """One clip as int16 samples, its fault (None if normal) and whether it was limited."""
    model: MachineModel = MODELS[machine_type]
    seeds = np.random.SeedSequence([seed, _PURPOSE_CLIP, _type_code(machine_type), int(machine_id),
                                    _SPLIT_CODE[split], _LABEL_CODE[label], index])
    rng, fault_rng, noise_rng, wear_rng = (np.random.default_rng(s) for s in seeds.spawn(4))
    fault, amount = None, 0.0
    if label == "anomaly":
        fault = model.faults[fault_rng.integers(len(model.faults))]
        spread = fault_rng.uniform(*SEVERITY)
        amount = anomaly_strength * model.severity * spread
        params = wear(wear_rng, model, params, fault, WEAR_STEPS * anomaly_strength * spread)
    machine = model.render(rng, fault_rng, params, n_samples, sample_rate, fault, amount)
    background = factory_noise(noise_rng, n_samples, sample_rate)
    snr = snr_db + noise_rng.uniform(-SNR_SPREAD_DB, SNR_SPREAD_DB)  # the factory's level varies
    x = machine / rms(machine) + background * 10.0 ** (-snr / 20.0)
    x *= 10.0 ** (noise_rng.uniform(*LOUDNESS_DBFS) / 20.0) / rms(x)
    over = np.abs(x) > LIMIT
    limited = bool(over.any())
    if limited:  # a smooth knee keeps clangs and impacts from clipping
        excess = (np.abs(x[over]) - LIMIT) / (1.0 - LIMIT)
        x[over] = np.sign(x[over]) * (LIMIT + (1.0 - LIMIT) * np.tanh(excess))
    return np.round(x * 32767.0).astype(np.int16), fault, limited


def _write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write atomically, so an interrupted run leaves no truncated clip under a clip's name."""
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(tmp, samples, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _plan(machine_type: str, ids: list[str], train_per_id: int, test_per_id: int,
          anomaly_fraction: float) -> list[tuple[str, str, str, int]]:
    n_anomaly = int(round(test_per_id * anomaly_fraction))
    jobs = []
    for machine_id in ids:
        jobs += [(machine_id, "train", "normal", i) for i in range(train_per_id)]
        jobs += [(machine_id, "test", "normal", i) for i in range(test_per_id - n_anomaly)]
        jobs += [(machine_id, "test", "anomaly", i) for i in range(n_anomaly)]
    return jobs


def generate(out: Path | str, config: SynthConfig | None = None, *, progress: bool = True,
             **settings) -> dict:
    """Write a synthetic DCASE 2020 Task 2 set under `out`; return a summary dict.

    `config` (default `SynthConfig()`) with any field replaced by `settings`, e.g.
    `generate(out, seed=1, types=["fan"])`. Existing files of the same names are
    overwritten (with the same bytes, for the same settings); other files are left alone.
    """
    from tqdm.auto import tqdm

    cfg = replace(config or SynthConfig(), **settings)
    sample_rate = FeatureConfig().sample_rate
    n_samples = int(round(cfg.duration_s * sample_rate))
    out = Path(out)
    jobs = [(t, *job) for t in cfg.types
            for job in _plan(t, machine_ids(t, cfg.ids_per_type), cfg.train_per_id,
                             cfg.test_per_id, cfg.anomaly_fraction)]
    for machine_type in cfg.types:
        for split in ("train", "test"):
            (out / machine_type / split).mkdir(parents=True, exist_ok=True)
    params = {t: {i: id_params(cfg.seed, t, i) for i in machine_ids(t, cfg.ids_per_type)}
              for t in cfg.types}
    faults: dict[str, Counter] = {t: Counter() for t in cfg.types}
    counts: dict[str, Counter] = {t: Counter() for t in cfg.types}
    n_limited = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for machine_type, machine_id, split, label, index in tqdm(
            jobs, desc="synth", unit="clip", disable=not progress):
        samples, fault, limited = render_clip(
            cfg.seed, machine_type, machine_id, split, label, index,
            params[machine_type][machine_id], sample_rate, n_samples, cfg.snr_db,
            cfg.anomaly_strength)
        name = f"{label}_id_{machine_id}_{index:08d}.wav"
        _write_wav(out / machine_type / split / name, samples, sample_rate)
        counts[machine_type][f"{split}_{label}"] += 1
        if fault is not None:
            faults[machine_type][fault] += 1
        n_limited += limited
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # this process's CPU time: speed per core
    summary = {
        "out": str(out), "seed": cfg.seed, "types": list(cfg.types), "sample_rate": sample_rate,
        "duration_s": n_samples / sample_rate, "snr_db": cfg.snr_db,
        "anomaly_strength": cfg.anomaly_strength, "anomaly_fraction": cfg.anomaly_fraction,
        "ids": {t: machine_ids(t, cfg.ids_per_type) for t in cfg.types},
        "counts": {t: dict(sorted(c.items())) for t, c in counts.items()},
        "faults": {t: dict(sorted(c.items())) for t, c in faults.items()},
        "id_params": params, "n_files": len(jobs), "n_limited": n_limited,
        "seconds": seconds, "clips_per_s": len(jobs) / seconds if seconds > 0 else float("inf"),
        "cpu_seconds": cpu_seconds,
        "clips_per_cpu_s": len(jobs) / cpu_seconds if cpu_seconds > 0 else float("inf"),
    }
    log.info("wrote %d clips to %s in %.1f s (%.1f clips/s); %d soft-limited",
             len(jobs), out, seconds, summary["clips_per_s"], n_limited)
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"{'type':<12} {'ids':<22} {'train':>6} {'test N':>7} {'test A':>7}  faults"]
    for t in summary["types"]:
        c = summary["counts"][t]
        faults = ", ".join(f"{k} {v}" for k, v in summary["faults"][t].items()) or "-"
        lines.append(f"{t:<12} {' '.join(summary['ids'][t]):<22} {c.get('train_normal', 0):>6} "
                     f"{c.get('test_normal', 0):>7} {c.get('test_anomaly', 0):>7}  {faults}")
    lines.append(f"{summary['n_files']} clips of {summary['duration_s']:g} s at "
                 f"{summary['sample_rate']} Hz in {summary['out']}: seed {summary['seed']}, "
                 f"SNR {summary['snr_db']:g} dB, anomaly strength {summary['anomaly_strength']:g}; "
                 f"{summary['seconds']:.1f} s ({summary['clips_per_s']:.1f} clips/s, "
                 f"{summary['clips_per_cpu_s']:.1f} per CPU-second)")
    return "\n".join(lines)
