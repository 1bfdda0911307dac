"""The decoded-audio cache: reused while the files match, rebuilt when they do not, and never
left half-written by a crash."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile", reason="the WAV reader and writer need soundfile")

from data_files import CFG, clip_tree, write  # noqa: E402
from estm_ref.config import FeatureConfig  # noqa: E402
from estm_ref.data import ClipDataset, build_class_list, load_clip, scan_roots  # noqa: E402
from estm_ref.data import audio as data_audio  # noqa: E402
from estm_ref.data import cache as data_cache  # noqa: E402


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_cache_is_reused_without_decoding(tmp_path, monkeypatch):
    clips = clip_tree(tmp_path / "d")
    classes = build_class_list(clips)
    first = ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    files = cache_files(tmp_path / "c")
    assert len(files) == 2 and not any(f.endswith(".tmp") for f in files)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a matching cache must not decode audio again")

    monkeypatch.setattr(data_cache, "load_clip", no_decoding)
    monkeypatch.setattr(data_audio, "load_clip", no_decoding)
    monkeypatch.setattr(data_audio.soundfile(), "info", no_decoding)
    again = ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    assert again.clips == first.clips and cache_files(tmp_path / "c") == files
    for i in range(len(again)):
        torch.testing.assert_close(again[i][0], first[i][0], rtol=0, atol=0)


def test_cache_rebuilt_when_a_file_changes(tmp_path):
    clips = clip_tree(tmp_path / "d")
    classes = build_class_list(clips)
    ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    target = clips[0].path
    stat = target.stat()
    new = np.full(2000, 0.25)
    write(target, new)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    ds = ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    i = ds.clips.index(clips[0])
    np.testing.assert_array_equal(ds[i][0].numpy(), np.full(1600, 0.25, np.float32))
    assert len(cache_files(tmp_path / "c")) == 2  # same selection: rebuilt in place


def test_cache_follows_the_file_list_and_audio_parameters(tmp_path):
    clips = clip_tree(tmp_path / "d")
    classes = build_class_list(clips)
    ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    write(tmp_path / "d" / "fan" / "train" / "normal_id_00_00000099.wav", np.full(2000, -0.5))
    more = scan_roots([tmp_path / "d"]).clips
    ds = ClipDataset(more, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    assert len(ds) == len(clips) + 1 and len(cache_files(tmp_path / "c")) == 4
    i = [c.path.name for c in ds.clips].index("normal_id_00_00000099.wav")
    np.testing.assert_array_equal(ds[i][0].numpy(), np.full(1600, -0.5, np.float32))
    longer = FeatureConfig(clip_samples=3000)
    ds = ClipDataset(more, classes, longer, cache_dir=tmp_path / "c", progress=False)
    assert ds[0][0].shape == (3000,) and len(cache_files(tmp_path / "c")) == 6


@pytest.mark.parametrize("damage", ["no manifest", "corrupt manifest", "short array"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    clips = clip_tree(tmp_path / "d")
    classes = build_class_list(clips)
    first = ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    manifest = next((tmp_path / "c").glob("*.json"))
    array = next((tmp_path / "c").glob("*.npy"))
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "corrupt manifest":
        manifest.write_text(manifest.read_text()[:-20])
    else:
        np.save(array, np.zeros((1, CFG.clip_samples), np.int16))
    ds = ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    for i in range(len(ds)):
        torch.testing.assert_close(ds[i][0], first[i][0], rtol=0, atol=0)
    assert json.loads(manifest.read_text())["shape"] == [len(clips), CFG.clip_samples]


def test_interrupted_cache_build_leaves_nothing_reusable(tmp_path, monkeypatch):
    clips = clip_tree(tmp_path / "d")
    classes = build_class_list(clips)
    real_load = data_cache.load_clip
    calls = []

    def crash_midway(path, cfg):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_load(path, cfg)

    monkeypatch.setattr(data_cache, "load_clip", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    assert cache_files(tmp_path / "c") == []
    monkeypatch.setattr(data_cache, "load_clip", real_load)
    ds = ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    assert len(ds) == len(clips)
    np.testing.assert_array_equal(ds[0][0].numpy(), load_clip(ds.clips[0].path, CFG))


def test_cached_dataset_in_dataloader_workers(tmp_path):
    clips = clip_tree(tmp_path / "d", n=4)
    ds = ClipDataset(clips, build_class_list(clips), CFG, cache_dir=tmp_path / "c", progress=False)
    ds[0]  # the parent maps the cache; a pickled copy must map it again on its own
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._audio is None
    torch.testing.assert_close(copy[1][0], ds[1][0], rtol=0, atol=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    waves, classes, labels, paths = (torch.cat(x) if isinstance(x[0], torch.Tensor) else
                                     sum(map(list, x), []) for x in zip(*loader))
    assert waves.shape == (len(ds), CFG.clip_samples)
    assert paths == [str(c.path) for c in ds.clips]
    torch.testing.assert_close(waves[5], ds[5][0], rtol=0, atol=0)


def test_crash_while_replacing_the_array_never_serves_stale_audio(tmp_path, monkeypatch):
    clips = clip_tree(tmp_path / "d")
    classes = build_class_list(clips)
    ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    target = clips[0].path
    stat = target.stat()
    write(target, np.full(2000, 0.125))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    real_replace = os.replace

    def crash_on_array(src, dst):
        if str(dst).endswith(".npy"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(data_cache.os, "replace", crash_on_array)
    with pytest.raises(OSError, match="disk full"):
        ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    monkeypatch.setattr(data_cache.os, "replace", real_replace)
    ds = ClipDataset(clips, classes, CFG, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(ds[ds.clips.index(clips[0])][0].numpy(),
                                  np.full(1600, 0.125, np.float32))


