"""The audio front end: log-mel, TriStat-Gating (TSG), EMel and the Tgram.

Small functions on plain tensors; the Tgram is the one `nn.Module` because it has
weights. Every number comes from `FeatureConfig` (docs/design.md, "Features").

Shapes: a clip is `clip_samples` samples (160000 = 10 s at 16 kHz); its log-mel is
(n_mels, n_frames) = (128, 313) with n_frames = 1 + clip_samples // hop_length.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from estm_ref.config import FeatureConfig

# relative offset added to the per-clip std of s_n for tsg_norm="std" (ours)
TSG_STD_EPS = 1e-5
# a gate value below LOW or above HIGH counts as saturated in `tsg_saturation`
SATURATION_LOW, SATURATION_HIGH = 0.05, 0.95
_CPU = torch.device("cpu")


MEL_SCALES = ("htk", "slaney")
# Slaney's scale (librosa's default): linear below 1 kHz at 200/3 Hz per mel, logarithmic above
_SLANEY_HZ_PER_MEL, _SLANEY_BREAK_HZ, _SLANEY_LOG_STEP = 200.0 / 3.0, 1000.0, math.log(6.4) / 27.0


def hz_to_mel(hz: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """HTK: 2595 * log10(1 + f / 700); Slaney: f / (200/3) below 1 kHz, log-spaced above."""
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    _check_scale(scale)
    break_mel = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    log_part = break_mel + torch.log(torch.clamp(hz, min=_SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) \
        / _SLANEY_LOG_STEP
    return torch.where(hz >= _SLANEY_BREAK_HZ, log_part, hz / _SLANEY_HZ_PER_MEL)


def mel_to_hz(mel: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Inverse of `hz_to_mel`."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    _check_scale(scale)
    break_mel = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
    return torch.where(mel >= break_mel,
                       _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOG_STEP * (mel - break_mel)),
                       _SLANEY_HZ_PER_MEL * mel)


def _check_scale(scale: str) -> None:
    if scale not in MEL_SCALES:
        raise ValueError(f"mel scale must be one of {MEL_SCALES}, got {scale!r}")


def mel_band_edges(n_mels: int, f_min: float, f_max: float, scale: str = "htk",
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n_mels + 2,) Hz: edges equally spaced on the mel scale from f_min to f_max, computed
    in `dtype`; filter m rises from edge m to edge m+1 and falls to edge m+2."""
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min, dtype=dtype), scale)),
                          float(hz_to_mel(torch.tensor(f_max, dtype=dtype), scale)),
                          n_mels + 2, dtype=dtype)
    return mel_to_hz(mels, scale)


def mel_filterbank(cfg: FeatureConfig, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The front end's filters: `mel_filters` on the HTK scale without area normalisation
    (`librosa.filters.mel(htk=True, norm=None)`), over cfg's f_min to f_max."""
    return mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.f_min),
                       float(cfg.f_max), device=torch.device(device), dtype=dtype)


@functools.lru_cache(maxsize=16)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float,
                scale: str = "htk", area_norm: bool = False, device: torch.device = _CPU,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1) between `mel_band_edges`; with
    `area_norm` each filter is scaled by 2 / (its upper edge - its lower edge) (Slaney's
    normalisation: `librosa.filters.mel(htk=False)` is scale "slaney", area_norm True).
    Built in float64, then cast. Cached per arguments; treat the result as read-only."""
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel range must satisfy 0 <= f_min < f_max <= sample_rate/2, "
                         f"got f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}")
    fft_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_hz = mel_band_edges(n_mels, f_min, f_max, scale)  # (n_mels + 2,)
    widths = edges_hz.diff()  # (n_mels + 1,)
    offsets = edges_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freqs)
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if area_norm:
        filters = filters * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return filters.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=16)
def _hann_window(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(length, periodic=True, device=device, dtype=dtype)


def compute_dtype(waveform: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 input: features never run in half precision."""
    return torch.float64 if waveform.dtype == torch.float64 else torch.float32


def log_mel(waveform: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Log-mel power spectrogram in dB. waveform: (batch, samples) -> (batch, n_mels, n_frames).

    STFT (n_fft, win_length, periodic Hann, hop_length, centred with reflect padding),
    power 2, mel filters from `mel_filterbank`, then 10 * log10(max(x, log_floor)).
    Runs in float32 (float64 for float64 input) with autocast disabled, on the
    waveform's device; n_frames = 1 + samples // hop_length (313 for a 10 s clip).
    """
    if waveform.dim() != 2:
        raise ValueError(f"waveform must have shape (batch, samples), got {tuple(waveform.shape)}")
    dtype = compute_dtype(waveform)
    with torch.autocast(device_type=waveform.device.type, enabled=False):
        x = waveform.to(dtype)
        spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=_hann_window(cfg.win_length, x.device, dtype), center=True,
                          pad_mode="reflect", return_complex=True)  # (batch, n_freqs, n_frames)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(mel_filterbank(cfg, x.device, dtype), power)  # (batch, n_mels, n_frames)
        return 10.0 * torch.log10(torch.clamp(mel, min=cfg.log_floor))


def tsg_statistic(log_mel_db: torch.Tensor) -> torch.Tensor:
    """s_n = median + RMS + population variance over the mel bins of each frame.

    log_mel_db: (batch, n_mels, n_frames) -> s: (batch, n_frames). The median is
    `torch.quantile(.., 0.5)`: the mean of the two middle values for an even n_mels.
    """
    if log_mel_db.dim() != 3:
        raise ValueError(f"log_mel must have shape (batch, n_mels, n_frames), got {tuple(log_mel_db.shape)}")
    median = torch.quantile(log_mel_db, 0.5, dim=1)
    rms = log_mel_db.square().mean(dim=1).sqrt()
    variance = log_mel_db.var(dim=1, correction=0)
    return median + rms + variance


def tsg_gate(log_mel_db: torch.Tensor, alpha: float, norm: str = "none") -> torch.Tensor:
    """TriStat gate of eq. (1): sigmoid(alpha * (s_n - mu)), one value per frame.

    log_mel_db: (batch, n_mels, n_frames) -> gate: (batch, n_frames) in (0, 1).
    mu is the mean of s_n over the frames of each clip. norm="std" (ours) divides
    s_n - mu by the clip's population std of s_n over frames + 1e-5; norm="none" is
    the paper's formula. Computed in float32 (float64 for float64 input), autocast off.
    """
    if norm not in ("none", "std"):
        raise ValueError(f"norm must be 'none' or 'std', got {norm!r}")
    with torch.autocast(device_type=log_mel_db.device.type, enabled=False):
        s = tsg_statistic(log_mel_db.to(compute_dtype(log_mel_db)))
        centred = s - s.mean(dim=-1, keepdim=True)
        if norm == "std":
            centred = centred / (s.std(dim=-1, correction=0, keepdim=True) + TSG_STD_EPS)
        return torch.sigmoid(alpha * centred)


def emel(log_mel_db: torch.Tensor, alpha: float, norm: str = "none") -> torch.Tensor:
    """EMel of eq. (2): the gate broadcast over the mel bins times the log-mel.

    log_mel_db: (batch, n_mels, n_frames) -> (batch, n_mels, n_frames).
    """
    gate = tsg_gate(log_mel_db, alpha, norm)
    return gate[:, None, :] * log_mel_db.to(gate.dtype)


def tsg_saturation(gate: torch.Tensor, low: float = SATURATION_LOW,
                   high: float = SATURATION_HIGH) -> torch.Tensor:
    """Fraction of frames whose gate is below `low` or above `high`.

    gate: (batch, n_frames) from `tsg_gate` -> (batch,) in [0, 1]. Near 1 the gate is a
    binary frame mask rather than a soft weighting.
    """
    if gate.dim() != 2:
        raise ValueError(f"gate must have shape (batch, n_frames), got {tuple(gate.shape)}")
    return ((gate < low) | (gate > high)).float().mean(dim=-1)


class Tgram(nn.Module):
    """The learnable raw-waveform front end of STgram-MFN.

    Conv1d(1, n_mels, win_length, stride hop_length, padding win_length // 2, no bias)
    turns (batch, samples) into (batch, n_mels, n_frames); then 3 x [LayerNorm over the
    n_frames axis, LeakyReLU(0.2), Conv1d(n_mels, n_mels, 3, padding 1, no bias)].
    """

    n_blocks = 3

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.n_frames = cfg.n_frames
        self.encoder = nn.Conv1d(1, cfg.n_mels, cfg.win_length, stride=cfg.hop_length,
                                 padding=cfg.win_length // 2, bias=False)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.n_frames) for _ in range(self.n_blocks))
        self.convs = nn.ModuleList(nn.Conv1d(cfg.n_mels, cfg.n_mels, 3, padding=1, bias=False)
                                   for _ in range(self.n_blocks))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform: (batch, samples) -> (batch, n_mels, n_frames)."""
        x = self.encoder(waveform[:, None, :])
        if x.shape[-1] != self.n_frames:
            raise ValueError(f"Tgram expects {self.n_frames} frames, the waveform of "
                             f"shape {tuple(waveform.shape)} gives {x.shape[-1]}")
        for norm, conv in zip(self.norms, self.convs):
            x = conv(F.leaky_relu(norm(x), 0.2))
        return x
