"""`ClipDataset`: the clips of a selection as (waveform, class index, label, path) items."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from estm_ref.config import FeatureConfig
from estm_ref.data.audio import INT16_SCALE, load_clip, validate
from estm_ref.data.cache import AudioCache
from estm_ref.data.index import ClipInfo, clip_key
from estm_ref.errors import InputError

log = logging.getLogger(__name__)


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
            raise InputError(f"{len(unknown)} (machine_type, machine_id) pair(s) not in the class "
                             f"list: {', '.join(clip_key(*k) for k in unknown[:10])}"
                             f"{', ...' if len(unknown) > 10 else ''}")
        self._rows: list[int] | None = None
        self._array_path: Path | None = None
        self._audio: np.ndarray | None = None
        if cache_dir is None:
            self.clips, _, self.skipped = validate(clips, cfg, progress, full_decode=False)
        else:
            cache = AudioCache(Path(cache_dir), clips, cfg)
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
            wave = self._audio[self._rows[index]].astype(np.float32) / np.float32(INT16_SCALE)
        label = -1 if clip.label is None else clip.label
        return (torch.from_numpy(wave), self._class_index[(clip.machine_type, clip.machine_id)],
                label, str(clip.path))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_audio"] = None  # each worker maps the file itself
        return state
