"""The DCASE 2020 Task 2 loader: names, layout, audio rules, skipping, the audio cache."""

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile", reason="the WAV reader and writer need soundfile")

from estm_ref.data import audio as data_audio
from estm_ref.data import cache as data_cache
from estm_ref.errors import InputError
from estm_ref.config import FeatureConfig
from estm_ref.data import (ClipDataset, ClipInfo, build_class_list, load_clip, parse_clip_path,
                           scan_roots, summary_table)

SR = 16000
CFG = FeatureConfig(clip_samples=1600)  # 0.1 s keeps every file and cache tiny


def write(path: Path, samples=None, sr=SR, subtype="PCM_16", seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples is None:
        samples = np.random.default_rng(seed).uniform(-0.5, 0.5, 2000)
    sf.write(path, samples, sr, subtype=subtype, format="WAV")
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ----------------------------------------------------------------------------- names

@pytest.mark.parametrize("name, split, machine_id, label", [
    ("normal_id_00_00000000.wav", "train", "00", 0),
    ("normal_id_06_00000123.wav", "test", "06", 0),
    ("anomaly_id_04_00000007.wav", "test", "04", 1),
    ("id_05_00000012.wav", "test", "05", None),  # evaluation set: no label
    ("normal_id_01_12.wav", "test", "01", 0),  # counters of any width
])
def test_parse_clip_path(name, split, machine_id, label):
    path = Path("root") / "fan" / split / name
    assert parse_clip_path(path, "fan", split) == ClipInfo(path, "fan", machine_id, split, label)


@pytest.mark.parametrize("name", [
    "normal_id_0_00000000.wav", "normal_id_000_00000000.wav", "normal_id_00_.wav",
    "normal_id_00_00000000.flac", "normal_id_00_00000000.wav.bak", "Normal_id_00_00000000.wav",
    "abnormal_id_00_00000000.wav", "normal_00_00000000.wav", "normal_id_ab_00000000.wav",
    "normal_id_00_0000000a.wav", ".normal_id_00_00000000.wav.tmp", "README.md",
])
def test_parse_clip_path_rejects_malformed_names(name):
    with pytest.raises(ValueError, match="does not match"):
        parse_clip_path(Path("fan/test") / name, "fan", "test")


@pytest.mark.parametrize("name", ["anomaly_id_00_00000000.wav", "id_00_00000000.wav"])
def test_training_clips_must_be_normal(name):
    with pytest.raises(ValueError, match="training clips must be named normal"):
        parse_clip_path(Path("fan/train") / name, "fan", "train")


def test_parse_clip_path_rejects_unknown_split():
    with pytest.raises(ValueError, match="split"):
        parse_clip_path(Path("fan/valid/normal_id_00_00000000.wav"), "fan", "valid")


# ----------------------------------------------------------------------------- layout

@pytest.fixture
def two_roots(tmp_path):
    """A development root and an additional-training/evaluation root, names only."""
    dev, extra = tmp_path / "dev", tmp_path / "eval"
    for machine_type, ids in [("fan", ["00", "02"]), ("ToyCar", ["01"]), ("valve", ["00"])]:
        for i in ids:
            touch(dev / machine_type / "train" / f"normal_id_{i}_00000000.wav")
            touch(dev / machine_type / "train" / f"normal_id_{i}_00000001.wav")
            touch(dev / machine_type / "test" / f"normal_id_{i}_00000000.wav")
            touch(dev / machine_type / "test" / f"anomaly_id_{i}_00000000.wav")
    touch(extra / "fan" / "train" / "normal_id_01_00000000.wav")
    touch(extra / "fan" / "test" / "id_01_00000000.wav")
    touch(dev / "pump" / "test" / "normal_id_03_00000000.wav")  # test-only ID: no class
    return dev, extra


def test_scan_roots_merges_roots_sorted(two_roots):
    index = scan_roots(list(two_roots))
    keys = [(c.machine_type, c.machine_id, c.split, c.path.name) for c in index.clips]
    assert keys == sorted(keys) and len(keys) == 4 * 4 + 2 + 1
    assert index.unmatched == []
    unlabelled = [c for c in index.clips if c.label is None]
    assert [(c.machine_type, c.machine_id, c.split) for c in unlabelled] == [("fan", "01", "test")]
    assert scan_roots(list(reversed(two_roots))).clips == index.clips
    assert scan_roots(two_roots[0]).clips == scan_roots([str(two_roots[0])]).clips


def test_class_list_is_sorted_training_pairs(two_roots):
    index = scan_roots(two_roots)
    assert build_class_list(index.clips) == [("ToyCar", "01"), ("fan", "00"), ("fan", "01"),
                                             ("fan", "02"), ("valve", "00")]
    assert build_class_list(index.select(split="test")) == []


def test_select(two_roots):
    index = scan_roots(two_roots)
    fan_test = index.select(split="test", machine_type="fan")
    assert {(c.machine_id, c.label) for c in fan_test} == {("00", 0), ("00", 1), ("02", 0),
                                                           ("02", 1), ("01", None)}
    assert len(index.select(machine_type="fan", machine_id="02")) == 4
    assert index.select(machine_type="slider") == []
    with pytest.raises(ValueError, match="split"):
        index.select(split="eval")


def test_unmatched_files_are_listed_and_logged(two_roots, caplog):
    dev, _ = two_roots
    odd = [touch(dev / "README.txt"), touch(dev / "fan" / "notes.txt"),
           touch(dev / "fan" / "train" / "abnormal_id_00_00000000.wav"),
           touch(dev / "fan" / "train" / "anomaly_id_00_00000000.wav"),
           touch(dev / "fan" / "valid" / "normal_id_00_00000000.wav"),
           touch(dev / "fan" / "test" / "deeper" / "normal_id_00_00000009.wav")]
    with caplog.at_level(logging.WARNING, logger="estm_ref.data"):
        index = scan_roots([dev])
    assert sorted(index.unmatched) == sorted(odd)
    assert "6 file(s) do not match" in caplog.text
    assert all(c.path not in odd for c in index.clips)


def test_same_root_twice_counts_each_file_once(two_roots, caplog):
    dev, _ = two_roots
    with caplog.at_level(logging.WARNING, logger="estm_ref.data"):
        assert scan_roots([dev, dev]).clips == scan_roots([dev]).clips
    assert "reached twice" in caplog.text


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(InputError, match="nope"):
        scan_roots([tmp_path / "nope"])


def test_summary_table_counts(two_roots):
    table = summary_table(scan_roots(two_roots).clips)
    lines = {tuple(line.split()[:2]): line.split()[2:] for line in table.splitlines()[1:]}
    assert lines[("fan", "id_00")] == ["2", "1", "1", "0"]
    assert lines[("fan", "id_01")] == ["1", "0", "0", "1"]
    assert lines[("fan", "all")] == ["5", "2", "2", "1"]
    total = next(line for line in table.splitlines() if line.startswith("total")).split()[1:]
    assert total == ["9", "5", "4", "1"]


# ----------------------------------------------------------------------------- audio rules

def test_load_clip_crops_and_tiles(tmp_path):
    x = np.round(np.random.default_rng(1).uniform(-0.5, 0.5, 2500) * 32768) / 32768
    long = load_clip(write(tmp_path / "long.wav", x), CFG)
    assert long.dtype == np.float32 and long.shape == (1600,)
    np.testing.assert_array_equal(long, x[:1600].astype(np.float32))
    short = load_clip(write(tmp_path / "short.wav", x[:700]), CFG)
    tiled = np.concatenate([x[:700], x[:700], x[:200]]).astype(np.float32)
    np.testing.assert_array_equal(short, tiled)


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """A file breaking each audio rule, with the words the error must contain."""
    stereo = np.zeros((2000, 2))
    nan = np.zeros(2000)
    nan[5] = np.nan
    inf = np.zeros(2000)
    inf[7] = np.inf
    tmp_path.mkdir(parents=True, exist_ok=True)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + np.random.default_rng(0).bytes(200))
    text = tmp_path / "text.wav"
    text.write_text("not audio at all\n")
    return {
        "rate": (write(tmp_path / "rate.wav", sr=22050), "sample rate 22050 Hz"),
        "stereo": (write(tmp_path / "stereo.wav", stereo), "2 channels"),
        "empty": (write(tmp_path / "empty.wav", np.zeros(0)), "no samples"),
        "nan": (write(tmp_path / "nan.wav", nan, subtype="FLOAT"), "non-finite"),
        "inf": (write(tmp_path / "inf.wav", inf, subtype="DOUBLE"), "non-finite"),
        "garbage": (garbage, "unreadable"),
        "text": (text, "unreadable"),
        "missing": (tmp_path / "missing.wav", "unreadable"),
    }


@pytest.mark.parametrize("case", ["rate", "stereo", "empty", "nan", "inf", "garbage", "text",
                                  "missing"])
def test_load_clip_rejects_bad_audio_naming_the_file(tmp_path, case):
    path, words = bad_files(tmp_path)[case]
    with pytest.raises(ValueError, match=words) as err:
        load_clip(path, CFG)
    assert str(path) in str(err.value)


def test_float_wav_with_finite_samples_is_fine(tmp_path):
    x = np.linspace(-0.9, 0.9, 2000)
    np.testing.assert_allclose(load_clip(write(tmp_path / "f.wav", x, subtype="FLOAT"), CFG),
                               x[:1600], atol=1e-7)


# ----------------------------------------------------------------------------- dataset

def clip_tree(root: Path, n: int = 3) -> list[ClipInfo]:
    for i in range(n):
        write(root / "fan" / "train" / f"normal_id_00_{i:08d}.wav", seed=i)
        write(root / "fan" / "train" / f"normal_id_01_{i:08d}.wav", seed=10 + i)
        write(root / "fan" / "test" / f"anomaly_id_00_{i:08d}.wav", seed=20 + i)
    write(root / "fan" / "test" / "id_01_00000000.wav", seed=30)
    return scan_roots([root]).clips


def add_bad_clips(root: Path) -> list[Path]:
    folder = root / "fan" / "train"
    paths = []
    for k, (src, _) in enumerate(bad_files(root / "src").values()):
        if src.exists():
            dst = folder / f"normal_id_00_{90 + k:08d}.wav"
            os.replace(src, dst)
            paths.append(dst)
    return paths


@pytest.mark.parametrize("cached", [False, True])
def test_dataset_skips_and_counts_bad_files(tmp_path, caplog, cached):
    good = clip_tree(tmp_path / "d")
    bad = add_bad_clips(tmp_path / "d")
    clips = scan_roots([tmp_path / "d"]).clips
    with caplog.at_level(logging.WARNING, logger="estm_ref.data"):
        ds = ClipDataset(clips, build_class_list(clips), CFG, progress=False,
                         cache_dir=tmp_path / "cache" if cached else None)
    assert ds.clips == good
    assert sorted(p for p, _ in ds.skipped) == sorted(bad)
    assert all(str(p) in reason for p, reason in ds.skipped)
    assert f"{len(bad)} of {len(clips)} file(s) skipped" in caplog.text
    assert all(str(p) in caplog.text for p in bad)
    assert len(ds) == len(good)


@pytest.mark.parametrize("cached", [False, True])
def test_dataset_items(tmp_path, cached):
    clips = clip_tree(tmp_path / "d")
    classes = build_class_list(clips)
    ds = ClipDataset(clips, classes, CFG, progress=False,
                     cache_dir=tmp_path / "cache" if cached else None)
    for i, clip in enumerate(ds.clips):
        wave, cls, label, path = ds[i]
        assert wave.dtype == torch.float32 and wave.shape == (CFG.clip_samples,)
        np.testing.assert_array_equal(wave.numpy(), load_clip(clip.path, CFG))  # exact for PCM_16
        assert classes[cls] == (clip.machine_type, clip.machine_id)
        assert label == (-1 if clip.label is None else clip.label)
        assert path == str(clip.path)
    assert {ds[i][2] for i in range(len(ds))} == {-1, 0, 1}


def test_unknown_class_is_an_error(tmp_path):
    clips = clip_tree(tmp_path / "d")
    with pytest.raises(ValueError, match="fan/id_01"):
        ClipDataset(clips, [("fan", "00")], CFG, progress=False)


# ----------------------------------------------------------------------------- cache

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
    monkeypatch.setattr(data_audio.sf, "info", no_decoding)
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


def test_machine_type_folder_given_as_root_gets_a_hint(two_roots, caplog):
    with caplog.at_level(logging.WARNING, logger="estm_ref.data"):
        index = scan_roots([two_roots[0] / "fan"])
    assert index.clips == [] and len(index.unmatched) == 8
    assert "looks like a machine-type folder" in caplog.text
