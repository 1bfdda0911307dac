"""Log-mel against librosa (and torchaudio where it imports), the TSG gate against numpy, Tgram shapes."""

import numpy as np
import pytest
import torch

from estm_ref.config import FeatureConfig
from estm_ref.data.audio import fit_clip_length
from estm_ref.model.features import (Tgram, emel, log_mel, mel_filterbank, tsg_gate,
                               tsg_saturation, tsg_statistic)

librosa = pytest.importorskip("librosa")

CFG = FeatureConfig()
SR = CFG.sample_rate


def sine_sweep(seconds=10.0, f0=20.0, f1=7900.0):
    t = np.arange(int(seconds * SR)) / SR
    return 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t ** 2))


def white_noise(seed=0):
    return np.random.default_rng(seed).uniform(-0.3, 0.3, CFG.clip_samples)


SIGNALS = {"sweep": sine_sweep, "noise": white_noise, "silence": lambda: np.zeros(CFG.clip_samples)}


def librosa_log_mel(y: np.ndarray) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=1024, hop_length=512, win_length=1024, window="hann", center=True,
        pad_mode="reflect", power=2.0, n_mels=128, fmin=0.0, fmax=8000.0, htk=True, norm=None)
    return 10 * np.log10(np.maximum(power, 1e-10))


@pytest.mark.slow  # the first librosa call compiles its numba kernels
def test_filterbank_matches_librosa():
    ours = mel_filterbank(CFG, dtype=torch.float64).numpy()
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=128, fmin=0.0, fmax=8000.0, htk=True,
                              norm=None, dtype=np.float64)
    assert ours.shape == (128, 513)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_log_mel_matches_librosa_float64(name):
    y = SIGNALS[name]()
    ours = log_mel(torch.from_numpy(y)[None], CFG)[0].numpy()
    ref = librosa_log_mel(y)
    assert ours.shape == ref.shape == (128, 313)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)
    if name == "silence":
        assert (ours == -100.0).all()


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_log_mel_float32_within_float32_dynamic_range(name):
    # float32 STFT rounding is ~1e-7 of a frame's peak power, so bins far below the
    # frame's loudest bin (the sweep's stopband reaches -140 dB) carry relative error;
    # within 60 dB of the frame maximum the float32 result must still match to 1e-3 dB.
    y = SIGNALS[name]()
    ours = log_mel(torch.from_numpy(y).float()[None], CFG)[0].double().numpy()
    ref = librosa_log_mel(y)
    within = ref >= ref.max(axis=0, keepdims=True) - 60.0
    np.testing.assert_allclose(ours[within], ref[within], rtol=0, atol=1e-3)


def test_log_mel_matches_torchaudio():
    try:
        import torchaudio
    except ImportError as exc:
        pytest.skip(f"torchaudio does not import: {exc}")
    y = torch.from_numpy(white_noise()).double()[None]
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=1024, win_length=1024, hop_length=512, f_min=0.0, f_max=8000.0,
        n_mels=128, power=2.0, center=True, pad_mode="reflect", norm=None, mel_scale="htk").double()
    ref = 10 * torch.log10(torch.clamp(mel(y), min=1e-10))
    torch.testing.assert_close(log_mel(y, CFG), ref, rtol=0, atol=1e-3)


def test_log_mel_batch_and_autocast():
    x = torch.rand(3, CFG.clip_samples) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = log_mel(x, CFG)
    assert out.dtype == torch.float32 and out.shape == (3, 128, 313)
    torch.testing.assert_close(out[1], log_mel(x[1:2], CFG)[0])


def test_fit_clip_length():
    x = torch.arange(5.0)
    assert fit_clip_length(x, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert fit_clip_length(x, 3).tolist() == [0, 1, 2]
    assert fit_clip_length(torch.ones(2, 7), 10).shape == (2, 10)
    assert fit_clip_length(np.arange(5.0), 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    with pytest.raises(ValueError, match="empty"):
        fit_clip_length(torch.zeros(0), 4)


def numpy_gate(x: np.ndarray, alpha: float, norm: str) -> np.ndarray:
    """x: (n_mels, n_frames) for one clip, written independently of the torch code."""
    gate = np.empty(x.shape[1])
    s = np.empty(x.shape[1])
    for n in range(x.shape[1]):
        col = np.sort(x[:, n])
        m = len(col)
        median = col[m // 2] if m % 2 else 0.5 * (col[m // 2 - 1] + col[m // 2])
        rms = np.sqrt(np.mean(col ** 2))
        var = np.mean((col - col.mean()) ** 2)
        s[n] = median + rms + var
    centred = s - s.mean()
    if norm == "std":
        centred = centred / (s.std() + 1e-5)
    gate[:] = 1 / (1 + np.exp(-alpha * centred))
    return gate


@pytest.mark.parametrize("norm", ["none", "std"])
@pytest.mark.parametrize("n_mels", [8, 7])
def test_tsg_gate_matches_numpy(norm, n_mels):
    rng = np.random.default_rng(1)
    x = rng.normal(-20, 1.5, size=(2, n_mels, 11))
    gate = tsg_gate(torch.from_numpy(x), alpha=2.0, norm=norm)
    assert gate.shape == (2, 11) and gate.dtype == torch.float64
    for b in range(2):
        np.testing.assert_allclose(gate[b].numpy(), numpy_gate(x[b], 2.0, norm), rtol=1e-10, atol=1e-12)


def test_tsg_statistic_and_emel():
    x = torch.randn(2, 128, 313) * 5 - 30
    s = tsg_statistic(x)
    assert s.shape == (2, 313)
    col = x[0, :, 0].sort().values
    expected = 0.5 * (col[63] + col[64]) + col.square().mean().sqrt() + col.var(correction=0)
    torch.testing.assert_close(s[0, 0], expected)
    e = emel(x, 2.0, "std")
    gate = tsg_gate(x, 2.0, "std")
    torch.testing.assert_close(e, gate[:, None, :] * x)
    assert e.shape == x.shape


def test_tsg_saturation():
    gate = torch.tensor([[0.01, 0.5, 0.97, 0.94], [0.5, 0.5, 0.5, 0.5]])
    torch.testing.assert_close(tsg_saturation(gate), torch.tensor([0.5, 0.0]))
    # a constant spectrogram has s_n = mu: every gate is exactly 0.5
    assert tsg_saturation(tsg_gate(torch.full((1, 16, 9), -40.0), 2.0)).item() == 0.0


def test_tgram_shape_and_layer_norm_axis():
    tgram = Tgram(CFG)
    assert tgram.norms[0].normalized_shape == (313,)
    out = tgram(torch.rand(2, CFG.clip_samples) * 2 - 1)
    assert out.shape == (2, 128, 313)
    with pytest.raises(ValueError, match="313 frames"):
        tgram(torch.zeros(1, 16000))
