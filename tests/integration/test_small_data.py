"""The small-data preset: what it sets, that training runs with its augmentation, and the
warning that points to it."""

import json
import logging
from pathlib import Path

import pytest

from estm_ref.cli.main import main
from estm_ref.config import PRESETS, SMALL_DATA_CLIPS_PER_ID, Config, with_overrides
from estm_ref.data import ClipInfo

pytest.importorskip("soundfile", reason="the pipeline reads and writes WAV files")

# a tiny model for speed: these flags override the preset's model and batch size
TINY = ["--d-model", "32", "--depth", "1", "--d-state", "8", "--scan-backend", "ref",
        "--batch-size", "8", "--no-cache-audio", "--no-progress", "--clip-samples", "16000"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from estm_ref.synth.generate import generate

    root = tmp_path_factory.mktemp("data")
    generate(root, seed=5, ids_per_type=2, train_per_id=4, test_per_id=2, types=["pump"],
             duration_s=1.0, progress=False)
    return root


def test_the_preset_sets_its_settings_and_flags_beside_it_win(tiny_data, tmp_path, caplog):
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--data-root", str(tiny_data), "--out", str(run_dir),
                     "--preset", "small-data", "--epochs", "2", "--mixup-alpha", "0.4",
                     "--mask-mel-bands", "8", "--mask-frames", "4", "--no-time-shift", *TINY]) == 0
    assert "--preset small-data" not in caplog.text
    saved = json.loads((run_dir / "config.json").read_text())
    given = {"epochs": 2, "d_model": 32, "depth": 1, "batch_size": 8, "mixup_alpha": 0.4,
             "mask_mel_bands": 8, "mask_frames": 4, "time_shift": False}
    assert PRESETS["small-data"]["train"]["time_shift"] is True
    for section, values in PRESETS["small-data"].items():
        for key, value in values.items():
            assert saved[section][key] == given.get(key, value), key
    assert {k: saved["train"][k] for k in ("mixup_alpha", "mask_mel_bands", "mask_frames")} \
        == {"mixup_alpha": 0.4, "mask_mel_bands": 8, "mask_frames": 4}
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 augmented epochs (training stops on a non-finite loss)


def test_bad_preset_use_is_a_one_line_error(tiny_data, tmp_path, caplog):
    base = ["--quiet", "train", "--data-root", str(tiny_data), "--out", str(tmp_path / "r")]
    assert main([*base, "--preset", "tiny-data"]) == 2
    assert "unknown preset 'tiny-data'; choose one of small-data" in caplog.text
    (tmp_path / "c.toml").write_text("[train]\nlr = 0.001\n")
    assert main([*base, "--preset", "small-data", "--config", str(tmp_path / "c.toml")]) == 2
    assert main([*base, "--resume", "--preset", "small-data"]) == 2
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def _clips(per_id: int) -> list:
    return [ClipInfo(Path(f"pump/train/normal_id_0{i}_{n:08d}.wav"), "pump", f"0{i}", "train", 0)
            for i in range(3) for n in range(per_id)]


@pytest.mark.parametrize("per_id, preset, warned", [
    (SMALL_DATA_CLIPS_PER_ID, False, True),
    (SMALL_DATA_CLIPS_PER_ID + 1, False, False),
    (30, True, False),
])
def test_the_papers_settings_on_few_clips_per_id_name_the_preset(per_id, preset, warned, caplog):
    from estm_ref.pipeline.train import _warn_if_small_data

    cfg = with_overrides(Config(), PRESETS["small-data"]) if preset else Config()
    with caplog.at_level(logging.WARNING):
        _warn_if_small_data(_clips(per_id), cfg)
    assert ("estm train --preset small-data" in caplog.text) == warned
    if warned:
        assert f"{per_id} training clips per ID" in caplog.text


def test_a_run_trained_with_speed_classes_tests_and_scores(tiny_data, tmp_path):
    """The head holds one class per ID and speed view; testing and scoring load it and score
    every clip against its own ID as recorded."""
    import torch

    run_dir = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_data), "--out", str(run_dir), "--epochs", "1",
                 "--speed-classes", "1", "--speed-prob", "1.0", *TINY]) == 0
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    head = next(v for k, v in state["model"].items() if k.endswith("head.weight"))
    assert head.shape[0] == 2 * 3  # 2 IDs x (as recorded, faster, slower)
    assert main(["test", "--run", str(run_dir), "--data-root", str(tiny_data), "--no-progress",
                 "--scorer", "nll"]) == 0
    wav = next((tiny_data / "pump" / "test").glob("*.wav"))
    assert main(["--quiet", "score", "--run", str(run_dir), "--scorer", "nll", str(wav)]) == 0
