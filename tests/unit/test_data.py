"""The DCASE 2020 Task 2 loader: names, layout, audio rules, skipping bad files."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile", reason="the WAV reader and writer need soundfile")

from estm_ref.errors import InputError
from estm_ref.data import (ClipDataset, ClipInfo, build_class_list, load_clip, parse_clip_path,
                           scan_roots, summary_table)

from data_files import CFG, add_bad_clips, bad_files, clip_tree, touch, write  # noqa: E402


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


def test_machine_type_folder_given_as_root_gets_a_hint(two_roots, caplog):
    with caplog.at_level(logging.WARNING, logger="estm_ref.data"):
        index = scan_roots([two_roots[0] / "fan"])
    assert index.clips == [] and len(index.unmatched) == 8
    assert "looks like a machine-type folder" in caplog.text


def test_a_single_file_is_identified_as_the_index_parses_it(tmp_path):
    """`identify_clip` (estm score's files) reads the same type and ID as `parse_clip_path`
    (the index) for every DCASE name, and names the pair as the thresholds do."""
    from estm_ref.data import clip_key, identify_clip

    for name in ("normal_id_04_00000012.wav", "anomaly_id_00_7.wav", "id_06_00000001.wav"):
        path = tmp_path / "ToyCar" / "test" / name
        parsed = parse_clip_path(path, "ToyCar", "test")
        assert identify_clip(path) == (parsed.machine_type, parsed.machine_id) == \
            ("ToyCar", name.split("id_")[1][:2])
    assert identify_clip(tmp_path / "x.wav", "fan", "03") == ("fan", "03")
    assert clip_key("fan", "03") == "fan/id_03"
    with pytest.raises(InputError, match="no id_XX in the file name"):
        identify_clip(tmp_path / "fan" / "test" / "clip.wav")
