"""The official DCASE 2020 Task 2 autoencoder baseline, reimplemented in PyTorch.

The recipe (task description and the organisers' baseline code, Keras):
- features: librosa's default mel spectrogram of the clip at its own sample rate
  (n_fft 1024, hop 512, periodic Hann, centred, power 2, 128 Slaney-scale mel bands
  with Slaney area normalisation from 0 Hz to Nyquist), then 10 * log10(mel + eps),
  eps = float64 machine epsilon;
- vectors: `frames` (5) consecutive log-mel frames concatenated, n_mels * frames (640)
  values, one vector per start frame (n_frames - frames + 1 per clip);
- model: Dense 640-128-128-128-128-8-128-128-128-128-640, BatchNorm + ReLU after every
  hidden layer, linear output; Glorot-uniform weights, zero biases (the Keras defaults),
  BatchNorm with Keras' momentum 0.99 and epsilon 1e-3;
- training: one model per machine type on all normal training vectors of all its IDs,
  MSE, Adam (lr 1e-3, Keras' epsilon 1e-7), batch 512, 100 epochs, shuffled every epoch,
  the last 10 % of the vectors (Keras' `validation_split`) held out for the validation loss;
- score of a clip: the mean over its vectors of the mean squared reconstruction error.

`AutoencoderConfig` holds the recipe; `divergences` lists every field that differs from
the official value, so a run that shortens training says so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from estm_ref.model.features import mel_filters

log = logging.getLogger(__name__)

FLOAT_EPS = float(np.finfo(np.float64).eps)  # Python's sys.float_info.epsilon


@dataclass(frozen=True)
class AutoencoderConfig:
    """The official recipe; any other value is a divergence (see `divergences`)."""

    n_mels: int = 128
    frames: int = 5
    n_fft: int = 1024
    hop_length: int = 512
    power: float = 2.0
    hidden: int = 128
    bottleneck: int = 8
    epochs: int = 100
    batch_size: int = 512
    lr: float = 1e-3
    validation_split: float = 0.1
    seed: int = 0

    def __post_init__(self):
        for name in ("n_mels", "frames", "n_fft", "hop_length", "hidden", "bottleneck",
                     "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"autoencoder {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {self.validation_split}")
        if not self.lr > 0 or not self.power > 0:
            raise ValueError("autoencoder lr and power must be > 0")

    @property
    def input_dim(self) -> int:
        return self.n_mels * self.frames


def divergences(cfg: AutoencoderConfig) -> list[str]:
    """'name: value (official: value)' for every setting that is not the official one
    (the seed is not part of the recipe)."""
    official = AutoencoderConfig()
    return [f"{f.name}: {getattr(cfg, f.name)} (official: {getattr(official, f.name)})"
            for f in fields(cfg)
            if f.name != "seed" and getattr(cfg, f.name) != getattr(official, f.name)]


# ----------------------------------------------------------------------------- features

def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) float32: `librosa.filters.mel(sr=sample_rate, n_fft=n_fft,
    n_mels=n_mels)` with its defaults (Slaney scale, Slaney area normalisation, 0 Hz to
    Nyquist). Treat the result as read-only."""
    return mel_filters(sample_rate, n_fft, n_mels, 0.0, sample_rate / 2.0, scale="slaney",
                       area_norm=True)


def baseline_log_mel(waveform: torch.Tensor, sample_rate: int,
                     cfg: AutoencoderConfig) -> torch.Tensor:
    """The baseline's log-mel energies. waveform: (batch, samples) float32 ->
    (batch, n_mels, n_frames) float64 dB, n_frames = 1 + samples // hop_length.

    Centring pads with reflection, as librosa did when the baseline was published
    (librosa 0.10 changed its default padding to zeros)."""
    if waveform.dim() != 2:
        raise ValueError(f"waveform must have shape (batch, samples), got {tuple(waveform.shape)}")
    x = waveform.to(torch.float32)
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float32)
    spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    power = spec.abs() ** cfg.power
    mel = torch.matmul(slaney_mel_filterbank(sample_rate, cfg.n_fft, cfg.n_mels), power)
    return 10.0 * torch.log10(mel.to(torch.float64) + FLOAT_EPS)


def frame_vectors(log_mel: torch.Tensor, frames: int) -> torch.Tensor:
    """Consecutive frames concatenated. log_mel: (n_mels, n_frames) ->
    (n_frames - frames + 1, n_mels * frames); vector t holds frames t..t+frames-1, frame
    by frame (the first n_mels values are frame t). Empty when the clip is too short."""
    n_mels, n_frames = log_mel.shape
    count = n_frames - frames + 1
    if count < 1:
        return log_mel.new_zeros((0, n_mels * frames))
    windows = log_mel.unfold(1, frames, 1)  # (n_mels, count, frames)
    return windows.permute(1, 2, 0).reshape(count, frames * n_mels)


# ----------------------------------------------------------------------------- model

class DenseAutoencoder(nn.Module):
    """640-128-128-128-128-8-128-128-128-128-640 with BatchNorm + ReLU on hidden layers."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.input_dim] + [cfg.hidden] * 4 + [cfg.bottleneck] + [cfg.hidden] * 4
        layers: list[nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            # Keras BatchNormalization: moving average momentum 0.99, epsilon 1e-3
            layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, eps=1e-3, momentum=0.01),
                       nn.ReLU()]
        layers.append(nn.Linear(widths[-1], cfg.input_dim))
        self.net = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # Keras Dense defaults
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, input_dim) -> reconstruction (batch, input_dim)."""
        return self.net(x)


def train_autoencoder(vectors: torch.Tensor, cfg: AutoencoderConfig, progress: bool = False,
                      desc: str = "autoencoder") -> tuple[DenseAutoencoder, list[dict]]:
    """Fit one model on (n_vectors, input_dim) training vectors in file order; returns the
    model (in eval mode) and per-epoch {'epoch', 'loss', 'val_loss'}."""
    from tqdm.auto import tqdm

    if vectors.dim() != 2 or vectors.shape[1] != cfg.input_dim:
        raise ValueError(f"vectors must be (n, {cfg.input_dim}), got {tuple(vectors.shape)}")
    n_val = int(len(vectors) * cfg.validation_split)
    train, val = vectors[:len(vectors) - n_val].float(), vectors[len(vectors) - n_val:].float()
    if len(train) < 2:
        raise ValueError(f"need at least 2 training vectors, got {len(train)}")
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = DenseAutoencoder(cfg)
    # fused: the same Adam step in one kernel per parameter group, equal up to float
    # rounding, and faster on a CPU than the loop over parameters.
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-7, fused=True)
    history = []
    for epoch in tqdm(range(cfg.epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for start in range(0, len(train), cfg.batch_size):
            batch = train[order[start:start + cfg.batch_size]]
            if len(batch) < 2:  # BatchNorm needs two rows; Keras would use one, we drop it
                continue
            loss = torch.mean((model(batch) - batch) ** 2)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        row = {"epoch": epoch + 1, "loss": total / len(train), "val_loss": math.nan}
        if n_val:
            row["val_loss"] = float(torch.mean(reconstruction_errors(model, val)))
        history.append(row)
    model.eval()
    return model, history


@torch.no_grad()
def reconstruction_errors(model: DenseAutoencoder, vectors: torch.Tensor,
                          batch_size: int = 8192) -> torch.Tensor:
    """Mean squared error of each vector's reconstruction: (n,) float64."""
    model.eval()
    out = [torch.mean((model(v.float()) - v.float()).double() ** 2, dim=1)
           for v in torch.split(vectors, batch_size)]
    return torch.cat(out) if out else vectors.new_zeros(0, dtype=torch.float64)


def clip_score(model: DenseAutoencoder, vectors: torch.Tensor) -> float:
    """The baseline's anomaly score of one clip: mean over its vectors of the vector MSE."""
    if len(vectors) == 0:
        raise ValueError("a clip shorter than the frame context has no vectors to score")
    return float(torch.mean(reconstruction_errors(model, vectors)))
