"""The baselines: the official DCASE 2020 autoencoder recipe and the clip-statistics detectors."""

import numpy as np
import pytest
import torch

from estm_ref.baselines.autoencoder import (FLOAT_EPS, AutoencoderConfig, DenseAutoencoder,
                                            baseline_log_mel, clip_score, divergences,
                                            frame_vectors, reconstruction_errors,
                                            train_autoencoder)
from estm_ref.baselines.statistics import id_classifier_scores, mahalanobis_scores, rms_scores

SR = 16000


def official_vectors(log_mel: np.ndarray, frames: int) -> np.ndarray:
    """The baseline's own loop (common.py, file_to_vector_array), written out directly."""
    n_mels = log_mel.shape[0]
    size = log_mel.shape[1] - frames + 1
    out = np.zeros((size, n_mels * frames))
    for t in range(frames):
        out[:, n_mels * t:n_mels * (t + 1)] = log_mel[:, t:t + size].T
    return out


@pytest.mark.parametrize("n_mels, n_frames, frames", [(128, 313, 5), (7, 5, 5), (3, 9, 2)])
def test_frame_vectors_match_the_official_loop(n_mels, n_frames, frames):
    log_mel = np.random.default_rng(0).standard_normal((n_mels, n_frames))
    got = frame_vectors(torch.from_numpy(log_mel), frames).numpy()
    np.testing.assert_array_equal(got, official_vectors(log_mel, frames))


def test_a_clip_shorter_than_the_context_has_no_vectors():
    assert frame_vectors(torch.zeros(128, 4), 5).shape == (0, 640)
    with pytest.raises(ValueError):
        clip_score(DenseAutoencoder(AutoencoderConfig()), torch.zeros(0, 640))


def test_log_mel_matches_librosa_with_the_baselines_settings():
    librosa = pytest.importorskip("librosa")
    y = np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.05
    y[:4000] *= np.linspace(0, 1, 4000, dtype=np.float32)  # not stationary
    cfg = AutoencoderConfig()
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=1024, hop_length=512, n_mels=128,
                                         power=2.0, pad_mode="reflect")
    expected = 10.0 * np.log10(mel.astype(np.float64) + FLOAT_EPS)
    got = baseline_log_mel(torch.from_numpy(y)[None], SR, cfg)[0].numpy()
    assert got.shape == expected.shape == (128, 32)
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_clip_score_is_the_mean_squared_reconstruction_error():
    cfg = AutoencoderConfig(n_mels=6, frames=3, hidden=5, bottleneck=2)
    torch.manual_seed(0)
    model = DenseAutoencoder(cfg)
    model.train()
    model(torch.randn(64, 18))  # move the BatchNorm running statistics off their defaults
    model.eval()
    vectors = torch.randn(11, 18, dtype=torch.float64)
    with torch.no_grad():
        recon = model(vectors.float()).double().numpy()
    per_vector = [np.mean((v - r) ** 2) for v, r in zip(vectors.numpy(), recon)]
    np.testing.assert_allclose(reconstruction_errors(model, vectors).numpy(), per_vector,
                               rtol=1e-6)
    assert clip_score(model, vectors) == pytest.approx(np.mean(per_vector), rel=1e-6)


def test_the_architecture_is_the_official_one():
    model = DenseAutoencoder(AutoencoderConfig())
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == \
        [(640, 128), (128, 128), (128, 128), (128, 128), (128, 8), (8, 128), (128, 128),
         (128, 128), (128, 128), (128, 640)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 9 and all(m.eps == 1e-3 for m in norms)
    assert isinstance(model.net[-1], torch.nn.Linear)  # linear output


def test_divergences_name_every_changed_setting():
    assert divergences(AutoencoderConfig(seed=3)) == []
    assert divergences(AutoencoderConfig(epochs=20, n_mels=64)) == [
        "n_mels: 64 (official: 128)", "epochs: 20 (official: 100)"]
    with pytest.raises(ValueError):
        AutoencoderConfig(validation_split=1.0)


def _noise_clip(rng, n, tone_hz=None):
    """Brown-ish noise with a slow level wobble; optionally a tone in one second of it."""
    x = np.cumsum(rng.standard_normal(n)) * 0.002
    x = x - np.convolve(x, np.ones(64) / 64, mode="same") + 0.01 * rng.standard_normal(n)
    if tone_hz is not None:
        t = np.arange(n) / SR
        x += 0.02 * np.sin(2 * np.pi * tone_hz * t) * (t > 0.5) * (t < 1.5)
    return x.astype(np.float32)


@pytest.fixture
def one_thread():
    """Small matrices train far faster on one thread than on contended cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_trained_autoencoder_ranks_a_clip_with_a_tone_above_normal_clips(one_thread):
    rng = np.random.default_rng(2)
    # enough steps (~400) for BatchNorm's running statistics (momentum 0.99) to settle
    cfg = AutoencoderConfig(epochs=10, batch_size=16, lr=3e-3)
    torch.manual_seed(0)

    def vectors(x):
        return frame_vectors(baseline_log_mel(torch.from_numpy(x)[None], SR, cfg)[0], cfg.frames)

    n = 3 * SR // 2
    train = torch.cat([vectors(_noise_clip(rng, n)) for _ in range(16)])
    model, history = train_autoencoder(train, cfg)
    assert len(history) == 10 and history[-1]["loss"] < history[0]["loss"]
    normal = [clip_score(model, vectors(_noise_clip(rng, n))) for _ in range(8)]
    tone = clip_score(model, vectors(_noise_clip(rng, n, tone_hz=3000.0)))
    assert tone > max(normal), (tone, normal)


def test_one_training_step_is_the_recipes_adam_update(one_thread):
    """lr 1e-3, Keras' epsilon 1e-7, the default betas: after one step from the initial
    weights every parameter moved by -lr * g / (|g| + eps) (bias-corrected first step)."""
    cfg = AutoencoderConfig(n_mels=8, frames=2, epochs=1, batch_size=512, validation_split=0.1)
    vectors = torch.randn(40, cfg.input_dim, generator=torch.Generator().manual_seed(3)) * 5.0
    torch.manual_seed(cfg.seed)
    start = DenseAutoencoder(cfg)  # the weights train_autoencoder starts from
    start.train()
    train = vectors[:36]  # one batch: the last 10 % are the validation split
    torch.mean((start(train) - train) ** 2).backward()
    trained, _ = train_autoencoder(vectors, cfg)
    for (name, p0), p1 in zip(start.named_parameters(), trained.parameters()):
        g = p0.grad
        # a bias in front of BatchNorm has a gradient of rounding size, whose ratio to
        # |g| + eps rounding decides: compare where the gradient is well above eps
        clear = g.abs() > 1e-4
        assert clear.any() or name.endswith("bias"), name
        expected = p0.detach() - cfg.lr * g / (g.abs() + 1e-7)
        torch.testing.assert_close(p1.detach()[clear], expected[clear], rtol=0, atol=2e-6,
                                   msg=name)
        assert torch.all((p1.detach() - p0.detach()).abs() <= cfg.lr * (1 + 1e-4)), name


def test_mahalanobis_finds_the_shifted_clip_and_rms_ignores_spectral_shape():
    rng = np.random.default_rng(3)
    train = rng.standard_normal((40, 6))
    test = rng.standard_normal((5, 6))
    test[2, 4] += 6.0
    scores = mahalanobis_scores(train, np.zeros(40), test, np.zeros(5))
    assert int(np.argmax(scores)) == 2
    db = rms_scores(np.array([-30.0, -31.0, -32.0]), np.zeros(3), np.array([-31.0, -40.0]),
                    np.zeros(2))
    np.testing.assert_allclose(db, [0.0, 9.0 / np.std([-30.0, -31.0, -32.0])], rtol=1e-6)
    with pytest.raises(ValueError):
        mahalanobis_scores(train, np.zeros(40), test, np.ones(5))


def test_mahalanobis_is_the_distance_under_each_ids_own_ledoit_wolf_gaussian():
    """Recomputed with scikit-learn's LedoitWolf on each ID's training rows, features unscaled."""
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(4)
    scale = np.array([0.3, 1.0, 5.0, 20.0, 2.0, 0.1, 8.0, 1.5])  # features of unlike scales
    train_y, test_y = np.repeat([3, 7], [30, 12]), np.repeat([7, 3], [5, 6])
    train_x = -40.0 + scale * rng.standard_normal((42, 8)) + 10.0 * train_y[:, None]
    test_x = -40.0 + 1.5 * scale * rng.standard_normal((11, 8)) + 10.0 * test_y[:, None]
    scores = mahalanobis_scores(train_x, train_y, test_x, test_y)
    for cls in (3, 7):
        expected = LedoitWolf().fit(train_x[train_y == cls]).mahalanobis(test_x[test_y == cls])
        np.testing.assert_allclose(scores[test_y == cls], expected, rtol=1e-7)


def test_baseline_detectors_rank_shifted_clips_higher():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    centres = 3.0 * rng.standard_normal((3, 6))  # three IDs, six features
    train_y = np.repeat(np.arange(3), 40)
    train_x = centres[train_y] + rng.standard_normal((120, 6))
    test_y = np.repeat(np.arange(3), 20)
    label = np.tile(np.r_[np.zeros(10), np.ones(10)], 3)
    # anomalies move halfway towards the next ID: off their own ID, and less like it
    shift = 0.5 * (centres[(test_y + 1) % 3] - centres[test_y])
    test_x = centres[test_y] + rng.standard_normal((60, 6)) + label[:, None] * shift
    for scorer in (id_classifier_scores, mahalanobis_scores):
        scores = scorer(train_x, train_y, test_x, test_y)
        assert scores.shape == (60,) and np.isfinite(scores).all()
        assert roc_auc_score(label, scores) > 0.8, scorer.__name__


def test_run_baselines_scores_every_readable_clip_and_reports_bad_ones(tmp_path, one_thread):
    from estm_ref.baselines.run import BASELINES, run_baselines
    from estm_ref.data import scan_roots
    from estm_ref.synth.generate import generate

    generate(tmp_path, types=["valve"], ids_per_type=2, train_per_id=3, test_per_id=2,
             duration_s=1.0, progress=False)
    (tmp_path / "valve" / "test" / "normal_id_00_00000099.wav").write_bytes(b"not a wav file")
    index = scan_roots([tmp_path])
    run = run_baselines(index.select(split="train"), index.select(split="test"),
                        AutoencoderConfig(epochs=1), progress=False)
    assert [p.name for p, _ in run.skipped] == ["normal_id_00_00000099.wav"]
    assert set(run.scores) == set(BASELINES) and (run.n_train, run.n_test) == (6, 4)
    for rows in run.scores.values():
        assert sorted((t, i, y) for t, i, y, _ in rows) == \
            [("valve", "00", 0), ("valve", "00", 1), ("valve", "01", 0), ("valve", "01", 1)]
        assert all(np.isfinite(s) for *_, s in rows)
    with pytest.raises(ValueError, match="unknown baselines"):
        run_baselines(index.select(split="train"), index.select(split="test"), baselines=["x"])


def test_an_ids_statistics_scores_do_not_depend_on_other_types(tmp_path, one_thread):
    """The per-ID Mahalanobis detector is fitted on that ID's clips alone: adding a machine
    type to the data leaves the scores of the others as they were."""
    from estm_ref.baselines.run import run_baselines
    from estm_ref.data import scan_roots
    from estm_ref.synth.generate import generate

    runs = []
    for name, types in (("alone", ["valve"]), ("with_fan", ["valve", "fan"])):
        generate(tmp_path / name, types=types, ids_per_type=2, train_per_id=4, test_per_id=2,
                 duration_s=1.0, progress=False)
        index = scan_roots([tmp_path / name])
        runs.append(run_baselines(index.select(split="train"), index.select(split="test"),
                                  baselines=["mahalanobis"], progress=False).scores["mahalanobis"])
    valve = [row for row in runs[1] if row[0] == "valve"]
    assert len(valve) == len(runs[0]) == 4 and len(runs[1]) == 8
    assert valve == runs[0]


def test_autoencoders_trained_in_worker_processes_give_the_same_scores(tmp_path, one_thread):
    from estm_ref.baselines.run import run_baselines
    from estm_ref.data import scan_roots
    from estm_ref.synth.generate import generate

    generate(tmp_path, types=["valve", "fan"], ids_per_type=1, train_per_id=2, test_per_id=2,
             duration_s=1.0, progress=False)
    index = scan_roots([tmp_path])
    runs = [run_baselines(index.select(split="train"), index.select(split="test"),
                          AutoencoderConfig(epochs=2), ["autoencoder"], progress=False, jobs=jobs)
            for jobs in (1, 2)]
    assert runs[0].scores == runs[1].scores and len(runs[0].scores["autoencoder"]) == 4
    assert runs[0].ae_history == runs[1].ae_history
    with pytest.raises(ValueError, match="jobs"):
        run_baselines(index.select(split="train"), index.select(split="test"), jobs=0)
