"""DCASE 2020 Task 2 data: find the clips under one or more roots, load them, serve them.

Layout (development set, additional training data and evaluation set alike):

    <root>/<machine_type>/train/normal_id_XX_NNNNNNNN.wav            label 0
    <root>/<machine_type>/test/normal_id_XX_NNNNNNNN.wav             label 0
    <root>/<machine_type>/test/anomaly_id_XX_NNNNNNNN.wav            label 1
    <root>/<machine_type>/test/id_XX_NNNNNNNN.wav                    no label (evaluation set)

XX is a two-digit machine ID, NNNNNNNN a counter (any number of digits is accepted).
Machine types are the folder names, whatever they are. Every other file under a root is
reported in `DatasetIndex.unmatched` and logged; none is silently dropped.

Audio rules (SPEC section 3): mono, `FeatureConfig.sample_rate`, non-empty, finite; a clip
is cropped to its first `clip_samples` samples or tiled to that length. A file that breaks
a rule raises a `ValueError` naming it in `load_clip`; `ClipDataset` logs, skips and
counts such files instead, so one bad file does not stop a long run.

Decoded-audio cache (optional): the clips of one `ClipDataset` as int16 rows of one
memory-mapped .npy, next to a JSON manifest (file list with sizes and mtimes, audio
parameters, skipped files). It is named by a hash of the file list and audio parameters,
reused while the manifest matches and rebuilt when it does not; both files are written to
temporary names and moved into place, manifest last, so an interrupted build is never
mistaken for a complete one. Caches of other selections in the same folder are left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
import torch

from estm_ref.config import FeatureConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
_LABELS = {"normal": 0, "anomaly": 1}
_NAME = re.compile(r"(?:(?P<label>normal|anomaly)_)?id_(?P<id>\d{2})_(?P<counter>\d+)\.wav")
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}  # the only WAV sample formats that can hold NaN or Inf
_CACHE_VERSION = 1
_INT16_SCALE = 32768.0  # soundfile maps 16-bit PCM to float as x / 32768, so this round-trips


@dataclass(frozen=True)
class ClipInfo:
    path: Path
    machine_type: str
    machine_id: str  # two digits, e.g. "00"
    split: str  # "train" | "test"
    label: int | None  # 0 normal, 1 anomaly, None: evaluation set (no label)


def parse_clip_path(path: Path | str, machine_type: str, split: str) -> ClipInfo:
    """The clip a file name describes; ValueError for a name outside the DCASE scheme."""
    path = Path(path)
    if split not in SPLITS:
        raise ValueError(f"{path}: split must be one of {SPLITS}, got {split!r}")
    match = _NAME.fullmatch(path.name)
    if match is None:
        raise ValueError(f"{path}: name does not match [normal_|anomaly_]id_XX_NNNNNNNN.wav")
    label = None if match["label"] is None else _LABELS[match["label"]]
    if split == "train" and label != 0:
        raise ValueError(f"{path}: training clips must be named normal_id_XX_NNNNNNNN.wav")
    return ClipInfo(path, machine_type, match["id"], split, label)


def _sort_key(clip: ClipInfo) -> tuple:
    return clip.machine_type, clip.machine_id, clip.split, clip.path.name, str(clip.path)


@dataclass
class DatasetIndex:
    clips: list[ClipInfo] = field(default_factory=list)  # sorted by (type, id, split, name)
    unmatched: list[Path] = field(default_factory=list)  # files outside the naming scheme

    def select(self, split: str | None = None, machine_type: str | None = None,
               machine_id: str | None = None) -> list[ClipInfo]:
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        return [c for c in self.clips
                if (split is None or c.split == split)
                and (machine_type is None or c.machine_type == machine_type)
                and (machine_id is None or c.machine_id == machine_id)]


def _walk_files(root: Path) -> Iterable[Path]:
    """Every file under `root`, in sorted order, following symlinked folders."""
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


def scan_roots(roots: Sequence[Path | str] | Path | str) -> DatasetIndex:
    """Index the clips under one or more DCASE roots (e.g. development + additional data)."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    clips: list[ClipInfo] = []
    unmatched: list[Path] = []
    seen: dict[Path, Path] = {}
    names: dict[tuple[str, str, str], Path] = {}
    repeated: list[str] = []  # the same file reached twice (a root given twice, a symlink)
    clashes: list[str] = []  # different files with the same type, split and name
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"data root {root} is not a folder")
        n_before = len(clips)
        for path in _walk_files(root):
            parts = path.relative_to(root).parts
            try:
                if len(parts) != 3:
                    raise ValueError(f"{path}: not at <root>/<machine_type>/<split>/<file>")
                clip = parse_clip_path(path, parts[0], parts[1])
            except ValueError as err:
                log.debug("unmatched: %s", err)
                unmatched.append(path)
                continue
            real = path.resolve()
            if real in seen:
                repeated.append(f"{path} = {seen[real]}")
                continue
            seen[real] = path
            key = (clip.machine_type, clip.split, path.name)
            if key in names:
                clashes.append(f"{names[key]} / {path}")
            names[key] = path
            clips.append(clip)
        if len(clips) == n_before:
            hint = ""
            if any((root / split).is_dir() for split in SPLITS):
                hint = f"; {root} looks like a machine-type folder: pass its parent"
            log.warning("no DCASE clips under %s (expected <root>/<machine_type>/{train,test}/"
                        "*.wav)%s", root, hint)
    _warn_list(unmatched, "file(s) do not match the DCASE 2020 Task 2 layout and are not used "
                          "(DatasetIndex.unmatched lists them)")
    _warn_list(repeated, "file(s) reached twice under the roots, counted once")
    _warn_list(clashes, "pair(s) of files share type, split and name; both are used, but "
                        "per-file outputs keyed by name will collide")
    return DatasetIndex(sorted(clips, key=_sort_key), unmatched)


def _warn_list(items: list, what: str, shown: int = 5) -> None:
    if items:
        log.warning("%d %s: %s%s", len(items), what, ", ".join(map(str, items[:shown])),
                    ", ..." if len(items) > shown else "")


def build_class_list(clips: Iterable[ClipInfo]) -> list[tuple[str, str]]:
    """Sorted (machine_type, machine_id) pairs of the training clips; class index = position."""
    return sorted({(c.machine_type, c.machine_id) for c in clips if c.split == "train"})


def summary_table(clips: Sequence[ClipInfo]) -> str:
    """Clip counts per machine type and ID: train, test normal, test anomaly, unlabelled."""
    columns = [("train", 0), ("test", 0), ("test", 1), ("test", None)]
    heads = ["train", "test normal", "test anomaly", "test no label"]
    counts = Counter((c.machine_type, c.machine_id, c.split, c.label) for c in clips)
    rows: list[tuple[str, str, list[int]]] = []
    for machine_type in sorted({c.machine_type for c in clips}):
        ids = sorted({c.machine_id for c in clips if c.machine_type == machine_type})
        per_id = [[counts[(machine_type, i, s, lab)] for s, lab in columns] for i in ids]
        rows += [(machine_type, f"id_{i}", n) for i, n in zip(ids, per_id)]
        rows.append((machine_type, "all", [sum(col) for col in zip(*per_id)]))
    rows.append(("total", "", [sum(counts[k] for k in counts if (k[2], k[3]) == col)
                               for col in columns]))
    width = max([len(r[0]) for r in rows] + [12])
    lines = [f"{'machine type':<{width}} {'id':<6} " + " ".join(f"{h:>13}" for h in heads)]
    lines += [f"{t:<{width}} {i:<6} " + " ".join(f"{n:>13}" for n in ns) for t, i, ns in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- audio

def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    if audio.size >= n:
        return audio[:n]
    return np.tile(audio, -(-n // audio.size))[:n]


def load_clip(path: Path | str, cfg: FeatureConfig) -> np.ndarray:
    """A clip as float32 (clip_samples,); ValueError naming the file if it breaks a rule."""
    path = Path(path)
    try:
        audio, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError) as err:
        raise ValueError(f"{path}: unreadable audio file ({err})") from err
    _check_format(path, sample_rate, audio.shape[1], audio.shape[0], cfg)
    if not np.isfinite(audio).all():
        raise ValueError(f"{path}: non-finite samples (NaN or Inf)")
    return np.ascontiguousarray(_fit_length(audio[:, 0], cfg.clip_samples))


def _check_format(path: Path, sample_rate: int, channels: int, frames: int,
                  cfg: FeatureConfig) -> None:
    if sample_rate != cfg.sample_rate:
        raise ValueError(f"{path}: sample rate {sample_rate} Hz, expected {cfg.sample_rate} Hz")
    if channels != 1:
        raise ValueError(f"{path}: {channels} channels, expected mono")
    if frames <= 0:
        raise ValueError(f"{path}: no samples")


def _check_header(path: Path, cfg: FeatureConfig) -> str:
    """Cheap checks from the header; the file's subtype (e.g. PCM_16) if they pass."""
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, OSError) as err:
        raise ValueError(f"{path}: unreadable audio file ({err})") from err
    _check_format(path, info.samplerate, info.channels, info.frames, cfg)
    return info.subtype


def _validate(clips: list[ClipInfo], cfg: FeatureConfig, progress: bool, full_decode: bool):
    """Valid clips, their subtypes and (path, reason) of the others.

    Float WAVs are always decoded in full: theirs is the only format that can hold NaN.
    """
    from tqdm.auto import tqdm

    valid, subtypes, skipped = [], [], []
    for clip in tqdm(clips, desc="checking audio", unit="file", disable=not progress,
                     leave=False):
        try:
            subtype = _check_header(clip.path, cfg)
            if full_decode or subtype in _FLOAT_SUBTYPES:
                load_clip(clip.path, cfg)
        except ValueError as err:
            skipped.append((clip.path, str(err)))
            continue
        valid.append(clip)
        subtypes.append(subtype)
    return valid, subtypes, skipped


def to_int16(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wave * _INT16_SCALE), -32768, 32767).astype(np.int16)


# ----------------------------------------------------------------------------- cache

def _file_state(path: Path) -> list:
    try:
        st = os.stat(path)
    except OSError:
        return [str(path.resolve()), -1, -1]
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _audio_params(cfg: FeatureConfig) -> dict:
    return {"sample_rate": cfg.sample_rate, "clip_samples": cfg.clip_samples, "dtype": "int16"}


class _AudioCache:
    """The .npy + .json pair of one selection of clips (see the module docstring)."""

    def __init__(self, cache_dir: Path, clips: list[ClipInfo], cfg: FeatureConfig):
        self.cfg = cfg
        self.states = [_file_state(c.path) for c in clips]
        key = json.dumps({"version": _CACHE_VERSION, "audio": _audio_params(cfg),
                          "files": [s[0] for s in self.states]})
        stem = "audio-" + hashlib.sha256(key.encode()).hexdigest()[:16]
        self.array_path = Path(cache_dir) / f"{stem}.npy"
        self.manifest_path = Path(cache_dir) / f"{stem}.json"

    def load(self) -> dict | None:
        """The manifest if the cache matches the files on disk, else None (reason logged)."""
        if not self.manifest_path.exists():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
            reason = None
            if manifest.get("version") != _CACHE_VERSION:
                reason = "cache format changed"
            elif manifest.get("audio") != _audio_params(self.cfg):
                reason = "audio parameters changed"
            elif manifest.get("files") != self.states:
                reason = "files changed (size or modification time)"
            elif tuple(np.load(self.array_path, mmap_mode="r").shape) != tuple(manifest["shape"]):
                reason = "array does not match its manifest"
        except (OSError, ValueError, KeyError, TypeError) as err:
            reason = f"unreadable ({err})"
        if reason is not None:
            log.info("rebuilding audio cache %s: %s", self.array_path, reason)
            return None
        return manifest

    def build(self, clips: list[ClipInfo], progress: bool) -> dict:
        from tqdm.auto import tqdm

        valid, subtypes, skipped = _validate(clips, self.cfg, progress, full_decode=False)
        other = Counter(s for s in subtypes if s != "PCM_16")
        if other:
            log.warning("the audio cache stores 16-bit samples; %s clip(s) are rounded to 16 bits",
                        ", ".join(f"{n} {s}" for s, n in sorted(other.items())))
        rows: dict[str, int] = {}
        shape = (len(valid), self.cfg.clip_samples)
        self.array_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_array = self.array_path.with_name(f".{self.array_path.name}.{os.getpid()}.tmp")
        tmp_manifest = self.manifest_path.with_name(f".{self.manifest_path.name}.{os.getpid()}.tmp")
        try:
            array = np.lib.format.open_memmap(tmp_array, mode="w+", dtype=np.int16, shape=shape)
            for clip in tqdm(valid, desc="caching audio", unit="file", disable=not progress):
                try:
                    wave = load_clip(clip.path, self.cfg)
                except ValueError as err:
                    skipped.append((clip.path, str(err)))
                    continue
                array[len(rows)] = to_int16(wave)
                rows[str(clip.path.resolve())] = len(rows)
            array.flush()
            del array
            manifest = {"version": _CACHE_VERSION, "audio": _audio_params(self.cfg),
                        "files": self.states, "shape": list(shape), "rows": rows,
                        "skipped": [[str(p.resolve()), r] for p, r in skipped]}
            tmp_manifest.write_text(json.dumps(manifest))
            # manifest last: a manifest on disk always describes a complete array
            self.manifest_path.unlink(missing_ok=True)
            os.replace(tmp_array, self.array_path)
            os.replace(tmp_manifest, self.manifest_path)
        finally:
            tmp_array.unlink(missing_ok=True)
            tmp_manifest.unlink(missing_ok=True)
        log.info("audio cache %s: %d clips, %.1f MB", self.array_path, len(rows),
                 self.array_path.stat().st_size / 1e6)
        return manifest


# ----------------------------------------------------------------------------- dataset

class ClipDataset(torch.utils.data.Dataset):
    """(waveform (clip_samples,) float32, class index, label (-1: none), path) per clip.

    Every file is checked when the dataset is made (header; full decode for float WAVs and
    when the cache is built); bad files are logged and listed in `skipped`, the rest in
    `clips`. A clip whose (machine_type, machine_id) is not in `class_list` is an error.
    With `cache_dir`, audio comes from the memory-mapped cache, opened lazily in each
    DataLoader worker.
    """

    def __init__(self, clips: Sequence[ClipInfo], class_list: Sequence[tuple[str, str]],
                 cfg: FeatureConfig, cache_dir: Path | str | None = None, progress: bool = True):
        self.cfg = cfg
        self.class_list = [tuple(c) for c in class_list]
        self._class_index = {c: i for i, c in enumerate(self.class_list)}
        clips = list(clips)
        unknown = sorted({(c.machine_type, c.machine_id) for c in clips} - set(self._class_index))
        if unknown:
            raise ValueError(f"{len(unknown)} (machine_type, machine_id) pair(s) not in the class "
                             f"list: {', '.join(f'{t}/id_{i}' for t, i in unknown[:10])}"
                             f"{', ...' if len(unknown) > 10 else ''}")
        self._rows: list[int] | None = None
        self._array_path: Path | None = None
        self._audio: np.ndarray | None = None
        if cache_dir is None:
            self.clips, _, self.skipped = _validate(clips, cfg, progress, full_decode=False)
        else:
            cache = _AudioCache(Path(cache_dir), clips, cfg)
            manifest = cache.load()
            if manifest is None:
                manifest = cache.build(clips, progress)
            else:
                log.info("reusing audio cache %s", cache.array_path)
            rows = manifest["rows"]
            self.clips = [c for c in clips if str(c.path.resolve()) in rows]
            self._rows = [rows[str(c.path.resolve())] for c in self.clips]
            by_real = {str(c.path.resolve()): c.path for c in clips}
            self.skipped = [(by_real.get(p, Path(p)), r) for p, r in manifest["skipped"]]
            self._array_path = cache.array_path
        for path, reason in self.skipped:
            log.warning("skipped: %s", reason if str(path) in reason else f"{path}: {reason}")
        if self.skipped:
            log.warning("%d of %d file(s) skipped, %d used", len(self.skipped), len(clips),
                        len(self.clips))

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        clip = self.clips[index]
        if self._rows is None:
            wave = load_clip(clip.path, self.cfg)
        else:
            if self._audio is None:
                self._audio = np.load(self._array_path, mmap_mode="r")
            wave = self._audio[self._rows[index]].astype(np.float32) / np.float32(_INT16_SCALE)
        label = -1 if clip.label is None else clip.label
        return (torch.from_numpy(wave), self._class_index[(clip.machine_type, clip.machine_id)],
                label, str(clip.path))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_audio"] = None  # each worker maps the file itself
        return state
