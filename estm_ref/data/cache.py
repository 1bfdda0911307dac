"""Decoded-audio cache: the clips of one `ClipDataset` as int16 rows of one memory-mapped .npy.

Next to the array lies a JSON manifest (file list with sizes and mtimes, audio parameters,
skipped files). The pair is named by a hash of the file list and audio parameters,
reused while the manifest matches and rebuilt when it does not; both files are written to
temporary names and moved into place, manifest last, so an interrupted build is never
mistaken for a complete one. Caches of other selections in the same folder are left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from estm_ref.config import FeatureConfig
from estm_ref.data.audio import load_clip, to_int16, validate
from estm_ref.data.index import ClipInfo

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def _file_state(path: Path) -> list:
    try:
        st = os.stat(path)
    except OSError:
        return [str(path.resolve()), -1, -1]
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _audio_params(cfg: FeatureConfig) -> dict:
    return {"sample_rate": cfg.sample_rate, "clip_samples": cfg.clip_samples, "dtype": "int16"}


class AudioCache:
    """The .npy + .json pair of one selection of clips (see the module docstring)."""

    def __init__(self, cache_dir: Path, clips: list[ClipInfo], cfg: FeatureConfig):
        self.cfg = cfg
        self.states = [_file_state(c.path) for c in clips]
        key = json.dumps({"version": CACHE_VERSION, "audio": _audio_params(cfg),
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
            if manifest.get("version") != CACHE_VERSION:
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

        valid, subtypes, skipped = validate(clips, self.cfg, progress, full_decode=False)
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
            manifest = {"version": CACHE_VERSION, "audio": _audio_params(self.cfg),
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
