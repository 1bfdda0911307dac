"""Audio rules (docs/design.md, "Features"): mono, `FeatureConfig.sample_rate`, non-empty, finite.

A clip is cropped to its first `clip_samples` samples or tiled to that length
(`fit_clip_length`, the project's one crop-or-tile). A file that breaks a rule raises an
`InputError` (a ValueError) naming it in `load_clip`; `validate` collects such files
instead, so that one bad file does not stop a long run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from estm_ref.config import FeatureConfig
from estm_ref.data.index import ClipInfo
from estm_ref.errors import InputError

FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}  # the only WAV sample formats that can hold NaN or Inf
INT16_SCALE = 32768.0  # soundfile maps 16-bit PCM to float as x / 32768, so this round-trips


def fit_clip_length(waveform, clip_samples: int):
    """Crop to the first clip_samples samples, or tile (repeat) a shorter clip to length.

    waveform: numpy array or torch tensor (..., samples) with samples >= 1 -> (..., clip_samples).
    """
    n = waveform.shape[-1]
    if n == 0:
        raise InputError("waveform is empty: cannot fit an empty clip to length")
    if n < clip_samples:
        reps = math.ceil(clip_samples / n)
        if isinstance(waveform, np.ndarray):
            waveform = np.tile(waveform, (1,) * (waveform.ndim - 1) + (reps,))
        else:
            waveform = waveform.repeat(*([1] * (waveform.dim() - 1)), reps)
    return waveform[..., :clip_samples]


def soundfile():
    """The soundfile module, imported on first use: only reading and writing WAV files
    needs it, so the model, the scan and the benchmarks run without it."""
    try:
        import soundfile as sf
    except ImportError as err:
        raise ImportError("reading and writing WAV files needs the soundfile package "
                          "(pip install soundfile)") from err
    return sf


def load_clip(path: Path | str, cfg: FeatureConfig) -> np.ndarray:
    """A clip as float32 (clip_samples,); ValueError naming the file if it breaks a rule."""
    path = Path(path)
    sf = soundfile()
    try:
        audio, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError) as err:
        raise InputError(f"{path}: unreadable audio file ({err})") from err
    _check_format(path, sample_rate, audio.shape[1], audio.shape[0], cfg)
    if not np.isfinite(audio).all():
        raise InputError(f"{path}: non-finite samples (NaN or Inf)")
    return np.ascontiguousarray(fit_clip_length(audio[:, 0], cfg.clip_samples))


def _check_format(path: Path, sample_rate: int, channels: int, frames: int,
                  cfg: FeatureConfig) -> None:
    if sample_rate != cfg.sample_rate:
        raise InputError(f"{path}: sample rate {sample_rate} Hz, expected {cfg.sample_rate} Hz")
    if channels != 1:
        raise InputError(f"{path}: {channels} channels, expected mono")
    if frames <= 0:
        raise InputError(f"{path}: no samples")


def _check_header(path: Path, cfg: FeatureConfig) -> str:
    """Cheap checks from the header; the file's subtype (e.g. PCM_16) if they pass."""
    sf = soundfile()
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, OSError) as err:
        raise InputError(f"{path}: unreadable audio file ({err})") from err
    _check_format(path, info.samplerate, info.channels, info.frames, cfg)
    return info.subtype


def validate(clips: list[ClipInfo], cfg: FeatureConfig, progress: bool, full_decode: bool):
    """Valid clips, their subtypes and (path, reason) of the others.

    Float WAVs are always decoded in full: theirs is the only format that can hold NaN.
    """
    from tqdm.auto import tqdm

    valid, subtypes, skipped = [], [], []
    for clip in tqdm(clips, desc="checking audio", unit="file", disable=not progress,
                     leave=False):
        try:
            subtype = _check_header(clip.path, cfg)
            if full_decode or subtype in FLOAT_SUBTYPES:
                load_clip(clip.path, cfg)
        except ValueError as err:
            skipped.append((clip.path, str(err)))
            continue
        valid.append(clip)
        subtypes.append(subtype)
    return valid, subtypes, skipped


def to_int16(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wave * INT16_SCALE), -32768, 32767).astype(np.int16)
