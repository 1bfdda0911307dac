"""DCASE 2020 Task 2 names and layout: find the clips under one or more roots.

Layout (development set, additional training data and evaluation set alike):

    <root>/<machine_type>/train/normal_id_XX_NNNNNNNN.wav            label 0
    <root>/<machine_type>/test/normal_id_XX_NNNNNNNN.wav             label 0
    <root>/<machine_type>/test/anomaly_id_XX_NNNNNNNN.wav            label 1
    <root>/<machine_type>/test/id_XX_NNNNNNNN.wav                    no label (evaluation set)

XX is a two-digit machine ID, NNNNNNNN a counter (any number of digits is accepted).
Machine types are the folder names, whatever they are. Every other file under a root is
reported in `DatasetIndex.unmatched` and logged; none is silently dropped.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from estm_ref.errors import InputError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
_LABELS = {"normal": 0, "anomaly": 1}
_ID = r"id_(?P<id>\d{2})"  # a machine ID in a file name
ID_PATTERN = re.compile(_ID)
_NAME = re.compile(rf"(?:(?P<label>normal|anomaly)_)?{_ID}_(?P<counter>\d+)\.wav")


def clip_key(machine_type: str, machine_id: str) -> str:
    """How a machine (type, ID) is named in messages and threshold tables: "fan/id_00"."""
    return f"{machine_type}/id_{machine_id}"


def identify_clip(path: Path, machine_type: str | None = None,
                  machine_id: str | None = None) -> tuple[str, str]:
    """(type, id) of a single file: given explicitly, else the type from the folder
    `<type>/<split>/file.wav` and the ID from `id_XX` in the file name."""
    if machine_type is None:
        machine_type = path.resolve().parent.parent.name
    if machine_id is None:
        match = ID_PATTERN.search(path.name)
        if match is None:
            raise InputError(f"{path}: no id_XX in the file name; pass --id")
        machine_id = match["id"]
    return machine_type, machine_id


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
            raise InputError(f"data root {root} is not a folder")
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
