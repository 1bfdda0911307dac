"""The small-data preset: what it sets, that training runs with its augmentation, and the
warning that points to it."""

import json
import logging
from pathlib import Path

import pytest

from estm_ref.cli.main import main
from estm_ref.config import PRESETS, SMALL_DATA_CLIPS_PER_ID, Config, with_overrides
from estm_ref.data import ClipInfo

from conftest import TINY_IDS, TINY_TRAIN

pytest.importorskip("soundfile", reason="the pipeline reads and writes WAV files")


def test_the_preset_sets_its_settings_and_flags_beside_it_win(tiny_data, tmp_path, caplog):
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--data-root", str(tiny_data), "--out", str(run_dir),
                     "--preset", "small-data", "--epochs", "2", "--mixup-alpha", "0.4",
                     "--mask-mel-bands", "8", "--mask-frames", "4", "--no-time-shift",
                     *TINY_TRAIN]) == 0
    assert "--preset small-data" not in caplog.text
    saved = json.loads((run_dir / "config.json").read_text())
    given = {"epochs": 2, "d_model": 32, "depth": 1, "batch_size": 8, "lr": 1e-3, "mixup_alpha": 0.4,
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


def test_a_run_trained_with_speed_classes_scores_each_clip_on_its_own_ids_recorded_class(
        tiny_data, tmp_path, capsys):
    """The head holds one class per ID and speed view (v = 0, the clip as recorded, first);
    `estm test` and `estm score` give each clip -log softmax of its own ID's recorded class
    over every class of the head, recomputed here from the checkpoint and the WAV file."""
    import csv

    import numpy as np
    import soundfile as sf
    import torch
    from scipy.special import logsumexp

    from estm_ref.model import build_model

    run_dir = tmp_path / "run"
    assert main(["--quiet", "train", "--data-root", str(tiny_data), "--out", str(run_dir),
                 "--epochs", "1", "--speed-classes", "1", "--speed-prob", "1.0",
                 *TINY_TRAIN]) == 0
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["model"]["head.weight"].shape[0] == TINY_IDS * 3  # as recorded, faster, slower
    cfg = Config.from_dict(state["config"])
    model = build_model(cfg.features, cfg.model, TINY_IDS * 3)
    model.load_state_dict(state["model"])
    model.eval()
    ids = sorted({(p.parts[-3], p.name.split("_id_")[1][:2])
                  for p in tiny_data.glob("*/train/*.wav")})

    assert main(["--quiet", "test", "--run", str(run_dir), "--data-root", str(tiny_data),
                 "--out", str(tmp_path / "test"), "--no-progress", "--no-plots",
                 "--scorer", "nll"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "test" / "scores.csv")))
    assert len(rows) == len(list(tiny_data.glob("*/test/*.wav")))
    # the loader's crop: the first clip_samples samples
    wave = torch.from_numpy(np.stack([sf.read(r["path"], dtype="float32")[0]
                                      for r in rows])[:, :cfg.features.clip_samples])
    own = torch.tensor([ids.index((r["machine_type"], r["machine_id"])) for r in rows])
    with torch.no_grad():
        logits = model.head(model(wave).embedding, own).double().numpy()  # margin on `own`
    expected = logsumexp(logits, axis=1) - logits[np.arange(len(rows)), own.numpy()]
    # one batch here, batches of 8 there: float32 rounding
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-4, atol=1e-6)

    capsys.readouterr()
    assert main(["--quiet", "score", "--run", str(run_dir), "--scorer", "nll", "--json",
                 rows[0]["path"]]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["score"] == pytest.approx(expected[0], rel=1e-4, abs=1e-6)
