"""Training-time augmentation (ours, off in the paper's protocol), on waveforms so that the
log-mel, the TSG gate and the Tgram all see the same change.

- `mask_mel_bands`: silence a block of up to `max_bands` adjacent mel bands of each clip
  (its frequency range zeroed in the clip's spectrum), as SpecAugment's frequency masks.
- `mask_frames`: silence a block of up to `max_frames` adjacent STFT frames (time mask).
- `speed_views`: play some clips a few percent faster or slower and give each shift a class
  of its own beside the ID (self-supervised classes, as the DCASE 2020 winning system
  classified the augmentation with the ID): the classifier can no longer tell the IDs
  apart by cues that survive a small change of speed, pitch and resonance, which is what
  wear and many faults change.
- `shift_time`: roll each clip by a random number of samples (circularly), so that no
  feature can rest on where in the clip a sound happens. Machine sound is stationary or
  cyclic, so a rolled clip is another plausible clip of the same unit; the one seam it
  adds is a single sample step. Without it the patch projections (one weight per frame and
  mel bin) let a model trained on tens of clips per ID tell its training clips apart by
  the time course of their noise rather than by the unit's sound (docs/design.md, "Small data").
- `mixup`: mix each clip with another of the batch, weight lam ~ Beta(alpha, alpha); the
  loss mixes the ArcFace losses of both classes with the same weights (Noisy-ArcMix,
  arXiv 2310.06364, without its noise).

Each is an `Augmentation` object built from `TrainConfig` (`build_augmentations`), applied
in the order of `AUGMENTATIONS`. Randomness comes from torch's global generator, seeded and checkpointed by training,
so that `train --resume` reproduces the same augmented batches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, ClassVar, Sequence

import torch

from estm_ref.config import FeatureConfig, TrainConfig
from estm_ref.model.features import mel_band_edges


def _block(batch: int, max_width: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row a width in [0, max_width] and a start such that the block fits in [0, length)."""
    width = torch.randint(0, max_width + 1, (batch,)).clamp(max=length)
    start = (torch.rand(batch) * (length - width + 1)).long()
    return start.to(device), width.to(device)


def mask_mel_bands(wave: torch.Tensor, cfg: FeatureConfig, max_bands: int) -> torch.Tensor:
    """wave: (batch, clip_samples) -> the same with the frequencies of a block of up to
    `max_bands` adjacent mel bands (from the lower edge of the first band's filter to the
    upper edge of the last's) removed from each clip."""
    if max_bands <= 0:
        return wave
    batch, n = wave.shape
    start, width = _block(batch, max_bands, cfg.n_mels, wave.device)
    edges = mel_band_edges(cfg.n_mels, cfg.f_min, cfg.f_max, dtype=torch.float32).to(wave.device)
    low, high = edges[start], edges[start + width + 1]
    freqs = torch.fft.rfftfreq(n, d=1.0 / cfg.sample_rate).to(wave.device)
    keep = ~((freqs[None] >= low[:, None]) & (freqs[None] <= high[:, None]) & (width[:, None] > 0))
    return torch.fft.irfft(torch.fft.rfft(wave) * keep, n=n)


def mask_frames(wave: torch.Tensor, cfg: FeatureConfig, max_frames: int) -> torch.Tensor:
    """wave: (batch, clip_samples) -> the same with up to `max_frames` hops of samples
    (one block per clip) set to zero."""
    if max_frames <= 0:
        return wave
    batch, n = wave.shape
    start, width = _block(batch, max_frames, cfg.n_frames, wave.device)
    t = torch.arange(n, device=wave.device)[None]
    hop = cfg.hop_length
    inside = (t >= start[:, None] * hop) & (t < (start + width)[:, None] * hop)
    return wave.masked_fill(inside, 0.0)


def play_faster(wave: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """wave: (batch, n), factor: (batch,) -> each clip played `factor` times as fast (pitch
    and tempo together, linear interpolation), wrapping around to keep n samples."""
    n = wave.shape[-1]
    pos = torch.arange(n, device=wave.device, dtype=torch.float64)[None] * factor[:, None].double()
    left = torch.floor(pos)
    frac = (pos - left).to(wave.dtype)
    i0 = left.long() % n
    i1 = (i0 + 1) % n
    return torch.lerp(wave.gather(1, i0), wave.gather(1, i1), frac)


def speed_views(wave: torch.Tensor, cls: torch.Tensor, n_classes: int, views: int, step: float,
                prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace about `prob` of the clips by a view played (1 + k * step) times as fast,
    k in +-1..+-(views - 1) / 2, labelled `cls + n_classes * v` (v = 1..views - 1 numbers the
    shifts; v = 0 is the clip as recorded). views <= 1 returns the batch unchanged."""
    if views <= 1 or prob <= 0:
        return wave, cls
    half = (views - 1) // 2
    batch = cls.shape[0]
    shifted = torch.rand(batch) < prob
    v = torch.randint(1, views, (batch,)) * shifted
    k = torch.where(v <= half, v, half - v).to(torch.float64)  # 1..half, then -1..-half
    out = play_faster(wave, (1.0 + step * k).to(wave.device))
    mask = shifted.to(wave.device)
    return torch.where(mask[:, None], out, wave), cls + n_classes * v.to(cls.device)


def shift_time(wave: torch.Tensor) -> torch.Tensor:
    """wave: (batch, n) -> each clip rolled left by its own offset, uniform in [0, n)."""
    batch, n = wave.shape
    offset = torch.randint(0, n, (batch,)).to(wave.device)
    index = (torch.arange(n, device=wave.device)[None] + offset[:, None]) % n
    return wave.gather(1, index)


def mixup(wave: torch.Tensor, cls: torch.Tensor,
          alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(lam * wave + (1 - lam) * wave[perm], cls[perm], lam) with lam ~ Beta(alpha, alpha),
    one lam per batch; alpha <= 0 returns the batch unchanged with lam = 1."""
    if alpha <= 0:
        return wave, cls, 1.0
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(cls)).to(wave.device)
    return lam * wave + (1.0 - lam) * wave[perm], cls[perm], lam


@dataclass
class Batch:
    """A training batch as the loss sees it."""

    wave: torch.Tensor  # (batch, clip_samples)
    cls: torch.Tensor  # (batch,) head class of each clip
    other: torch.Tensor  # (batch,) the class mixed into each clip (= cls without mixup)
    lam: float = 1.0  # the loss weight of `cls`; 1 - lam goes to `other`


class Augmentation:
    """One augmentation: `from_config` builds it from the training config (None when the
    config turns it off), calling it changes a batch. `AUGMENTATIONS` lists them in the
    order they apply; each draws from torch's global generator only when on."""

    @classmethod
    def from_config(cls, train: TrainConfig, features: FeatureConfig,
                    n_ids: int) -> "Augmentation | None":
        raise NotImplementedError

    def __call__(self, batch: Batch) -> Batch:
        raise NotImplementedError


@dataclass
class SpeedViews(Augmentation):
    """`speed_views`: shifted views as classes of their own beside the n_ids ID classes."""

    n_ids: int
    views: int
    step: float
    prob: float

    @classmethod
    def from_config(cls, train, features, n_ids):
        on = train.speed_views > 1 and train.speed_prob > 0
        return cls(n_ids, train.speed_views, train.speed_step, train.speed_prob) if on else None

    def __call__(self, batch: Batch) -> Batch:
        wave, cls = speed_views(batch.wave, batch.cls, self.n_ids, self.views, self.step,
                                self.prob)
        return Batch(wave, cls, cls, batch.lam)


@dataclass
class TimeShift(Augmentation):
    """`shift_time`: each clip rolled by its own random offset."""

    @classmethod
    def from_config(cls, train, features, n_ids):
        return cls() if train.time_shift else None

    def __call__(self, batch: Batch) -> Batch:
        return replace(batch, wave=shift_time(batch.wave))


@dataclass
class _BlockMask(Augmentation):
    """A block of up to `width` units silenced per clip; `width` is the config field
    `config_field`, 0 = off."""

    features: FeatureConfig
    width: int
    config_field: ClassVar[str]
    mask: ClassVar[Callable[[torch.Tensor, FeatureConfig, int], torch.Tensor]]

    @classmethod
    def from_config(cls, train, features, n_ids):
        width = getattr(train, cls.config_field)
        return cls(features, width) if width > 0 else None

    def __call__(self, batch: Batch) -> Batch:
        return replace(batch, wave=type(self).mask(batch.wave, self.features, self.width))


class BandMask(_BlockMask):
    """`mask_mel_bands`: a block of adjacent mel bands silenced per clip."""

    config_field = "mask_mel_bands"
    mask = staticmethod(mask_mel_bands)


class FrameMask(_BlockMask):
    """`mask_frames`: a block of adjacent STFT frames silenced per clip."""

    config_field = "mask_frames"
    mask = staticmethod(mask_frames)


@dataclass
class Mixup(Augmentation):
    """`mixup`: each clip mixed with another of the batch, both classes in the loss."""

    alpha: float

    @classmethod
    def from_config(cls, train, features, n_ids):
        return cls(train.mixup_alpha) if train.mixup_alpha > 0 else None

    def __call__(self, batch: Batch) -> Batch:
        wave, other, lam = mixup(batch.wave, batch.cls, self.alpha)
        return Batch(wave, batch.cls, other, lam)


AUGMENTATIONS: tuple[type[Augmentation], ...] = (SpeedViews, TimeShift, BandMask, FrameMask,
                                                 Mixup)


def build_augmentations(train: TrainConfig, features: FeatureConfig,
                        n_ids: int) -> list[Augmentation]:
    """The augmentations the config turns on, in the order they apply."""
    built = (kind.from_config(train, features, n_ids) for kind in AUGMENTATIONS)
    return [a for a in built if a is not None]


def augment(augmentations: Sequence[Augmentation], wave: torch.Tensor,
            cls: torch.Tensor) -> Batch:
    """Apply `augmentations` in order to a batch of clips and their classes."""
    batch = Batch(wave, cls, cls)
    for augmentation in augmentations:
        batch = augmentation(batch)
    return batch
