"""DCASE 2020 Task 2 data: `index` (names and layout), `audio` (loading and its rules),
`cache` (decoded int16 audio, memory-mapped), `dataset` (the torch Dataset)."""

from estm_ref.data.audio import fit_clip_length, load_clip
from estm_ref.data.dataset import ClipDataset
from estm_ref.data.index import (ClipInfo, DatasetIndex, build_class_list, clip_key,
                                 identify_clip, parse_clip_path, scan_roots, summary_table)

__all__ = ["ClipDataset", "ClipInfo", "DatasetIndex", "build_class_list", "clip_key",
           "fit_clip_length", "identify_clip", "load_clip", "parse_clip_path", "scan_roots",
           "summary_table"]
