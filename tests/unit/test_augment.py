"""Training augmentation on waveforms: band and frame masks, mixup."""

import numpy as np
import pytest
import torch

from estm_ref.config import FeatureConfig, TrainConfig
from estm_ref.model.features import hz_to_mel, mel_to_hz
from estm_ref.pipeline.augment import (augment, build_augmentations, mask_frames, mask_mel_bands,
                                       mixup)

CFG = FeatureConfig(clip_samples=16000)


def _band_edges_hz():
    mels = np.linspace(0.0, float(hz_to_mel(torch.tensor(CFG.f_max))), CFG.n_mels + 2)
    return mel_to_hz(torch.tensor(mels)).numpy()


def test_the_papers_protocol_builds_no_augmentation_and_draws_nothing():
    wave = torch.randn(3, CFG.clip_samples)
    cls = torch.tensor([0, 1, 2])
    state = torch.get_rng_state()
    assert build_augmentations(TrainConfig(), CFG, n_ids=3) == []
    batch = augment([], wave, cls)
    assert batch.wave is wave and batch.other is cls and batch.lam == 1.0
    assert torch.equal(torch.get_rng_state(), state)  # the paper's protocol draws nothing


def test_augmentations_apply_in_order_as_the_functions_called_by_hand():
    """Every augmentation on: the objects give what the functions give, called in the
    documented order from the same generator state; the speed classes count the IDs."""
    from estm_ref.pipeline.augment import shift_time, speed_views

    train = TrainConfig(mixup_alpha=0.4, mask_mel_bands=5, mask_frames=4, time_shift=True,
                        speed_classes=1)
    wave, cls = torch.randn(6, CFG.clip_samples), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(5)
    batch = augment(build_augmentations(train, CFG, n_ids=3), wave, cls)
    torch.manual_seed(5)
    w, c = speed_views(wave, cls, 3, 3, train.speed_step, train.speed_prob)
    w = mask_frames(mask_mel_bands(shift_time(w), CFG, 5), CFG, 4)
    w, other, lam = mixup(w, c, 0.4)
    assert torch.equal(batch.wave, w) and torch.equal(batch.cls, c)
    assert torch.equal(batch.other, other) and batch.lam == lam < 1.0
    assert int(batch.cls.max()) < train.head_classes(3) and not torch.equal(c, cls)


def test_band_mask_removes_one_block_of_mel_bands_and_keeps_the_rest():
    torch.manual_seed(0)
    wave = torch.randn(16, CFG.clip_samples, dtype=torch.float64)
    out = mask_mel_bands(wave, CFG, max_bands=12)
    spec_in, spec_out = torch.fft.rfft(wave), torch.fft.rfft(out)
    freqs = np.fft.rfftfreq(CFG.clip_samples, 1.0 / CFG.sample_rate)
    edges = _band_edges_hz()
    widths = []
    for row in range(len(wave)):
        removed = (spec_out[row].abs() < 1e-9 * spec_in[row].abs().max()).numpy()
        kept = ~removed
        torch.testing.assert_close(spec_out[row][kept], spec_in[row][kept], rtol=1e-9, atol=1e-9)
        if not removed.any():
            widths.append(0)
            continue
        idx = np.flatnonzero(removed)
        assert np.all(np.diff(idx) == 1), "one contiguous block"
        low, high = freqs[idx[0]], freqs[idx[-1]]
        # the block runs from the lower edge of a band's filter to the upper edge of another's
        first = np.searchsorted(edges, low - 1e-9) - 1
        last = np.searchsorted(edges, high + 1e-9) - 2
        widths.append(last - first + 1)
        assert edges[first] <= low and high <= edges[last + 2]
    assert max(widths) <= 12 and len(set(widths)) > 3  # widths vary up to the limit


def test_frame_mask_zeroes_one_block_of_whole_hops():
    torch.manual_seed(1)
    wave = torch.randn(16, CFG.clip_samples) + 3.0  # no sample is zero by chance
    out = mask_frames(wave, CFG, max_frames=5)
    for row in range(len(wave)):
        zero = (out[row] == 0).numpy()
        assert torch.equal(out[row][~zero], wave[row][~zero])
        if zero.any():
            idx = np.flatnonzero(zero)
            assert np.all(np.diff(idx) == 1) and idx[0] % CFG.hop_length == 0
            assert len(idx) % CFG.hop_length == 0 or idx[-1] == CFG.clip_samples - 1
            assert len(idx) <= 5 * CFG.hop_length


def test_mixup_mixes_each_clip_with_the_clip_whose_class_it_returns():
    torch.manual_seed(2)
    wave = torch.randn(8, 100)
    cls = torch.arange(8) * 10
    out, other, lam = mixup(wave, cls, alpha=0.4)
    assert 0.0 < lam < 1.0
    for i in range(8):
        j = int((cls == other[i]).nonzero())
        torch.testing.assert_close(out[i], lam * wave[i] + (1 - lam) * wave[j])
    assert sorted(other.tolist()) == cls.tolist()  # a permutation of the batch


@pytest.mark.parametrize("alpha", [0.2, 2.0])
def test_mixup_weights_follow_the_beta_distribution(alpha):
    torch.manual_seed(3)
    lams = [mixup(torch.zeros(2, 1), torch.tensor([0, 1]), alpha)[2] for _ in range(2000)]
    assert np.mean(lams) == pytest.approx(0.5, abs=0.03)
    assert np.var(lams) == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.15)


def _peak_hz(x: torch.Tensor, sr: int) -> float:
    spectrum = torch.fft.rfft(x.double()).abs()
    return float(torch.fft.rfftfreq(x.shape[-1], 1.0 / sr)[spectrum.argmax()])


def test_play_faster_scales_every_frequency_and_keeps_the_length():
    from estm_ref.pipeline.augment import play_faster

    sr, n = 16000, 16000
    t = torch.arange(n, dtype=torch.float64) / sr
    wave = torch.sin(2 * np.pi * 500.0 * t)[None].repeat(3, 1)
    out = play_faster(wave, torch.tensor([1.0, 1.04, 0.96]))
    assert out.shape == wave.shape
    assert torch.equal(out[0], wave[0])
    assert [_peak_hz(x, sr) for x in out] == [500.0, 520.0, 480.0]
    assert torch.allclose(play_faster(wave, torch.tensor([2.0, 2.0, 2.0]))[0, :100], wave[0, :200:2])


def test_speed_views_label_each_shift_as_a_class_of_its_own():
    from estm_ref.pipeline.augment import speed_views

    torch.manual_seed(0)
    sr, n, n_classes, step = 16000, 16000, 5, 0.04
    t = torch.arange(n, dtype=torch.float64) / sr
    wave = torch.sin(2 * np.pi * 500.0 * t)[None].repeat(64, 1)
    cls = torch.arange(64) % n_classes
    out, labels = speed_views(wave, cls, n_classes, views=5, step=step, prob=0.5)
    view = labels // n_classes
    assert torch.equal(labels % n_classes, cls)
    assert set(view.tolist()) == {0, 1, 2, 3, 4}
    expected = {0: 500.0, 1: 520.0, 2: 540.0, 3: 480.0, 4: 460.0}  # +1, +2, -1, -2 steps
    for x, v in zip(out, view.tolist()):
        assert _peak_hz(x, sr) == expected[v]
        if v == 0:
            assert torch.equal(x, wave[0])
    assert 0.3 < (view > 0).float().mean() < 0.7
    state = torch.get_rng_state()
    same, same_cls = speed_views(wave, cls, n_classes, views=1, step=step, prob=0.5)
    assert same is wave and same_cls is cls and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("settings", [{"speed_classes": -1}, {"speed_classes": 4, "speed_step": 0.2},
                                      {"speed_prob": 1.5}])
def test_bad_speed_settings_are_refused(settings):
    from estm_ref.config import TrainConfig
    from estm_ref.errors import InputError

    with pytest.raises(InputError):
        TrainConfig(**settings)


def test_time_shift_rolls_each_clip_by_its_own_offset():
    torch.manual_seed(2)
    wave = torch.randn(8, 1000)
    batch = augment(build_augmentations(TrainConfig(time_shift=True), CFG, 8), wave,
                    torch.arange(8))
    out = batch.wave
    assert batch.other.tolist() == list(range(8)) and batch.lam == 1.0
    offsets = []
    for row in range(len(wave)):
        match = [k for k in range(1000) if torch.equal(out[row], torch.roll(wave[row], -k))]
        assert len(match) == 1, "each row is a circular roll of its own clip"
        offsets.append(match[0])
    assert len(set(offsets)) == len(offsets)  # drawn per clip, not one for the batch
