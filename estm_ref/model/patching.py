"""Patching of the (channels, n_mels, n_frames) feature stack into token sequences (docs/design.md, "Model").

Time patches: I patches of K = n_frames // I frames (trailing frames dropped); frequency
patches: J patches of H = n_mels // J mel bins over the I * K frames kept.
"""

from __future__ import annotations

import torch


def time_patches(x: torch.Tensor, n_patches: int) -> torch.Tensor:
    """Split along time: (batch, C, n_mels, n_frames) -> (batch, I, C * n_mels * K).

    K = n_frames // I; trailing frames beyond I * K are dropped. Patch i is
    x[:, :, :, iK:(i+1)K] flattened in (C, n_mels, K) order.
    """
    batch, channels, n_mels, n_frames = x.shape
    k = n_frames // n_patches
    if k == 0:
        raise ValueError(f"{n_frames} frames cannot make {n_patches} time patches")
    x = x[..., :n_patches * k].reshape(batch, channels, n_mels, n_patches, k)
    return x.permute(0, 3, 1, 2, 4).reshape(batch, n_patches, channels * n_mels * k)


def freq_patches(x: torch.Tensor, n_patches: int, n_frames_kept: int) -> torch.Tensor:
    """Split along mel bins: (batch, C, n_mels, n_frames) -> (batch, J, C * H * n_frames_kept).

    H = n_mels // J (must divide). Patch j is x[:, :, jH:(j+1)H, :n_frames_kept]
    flattened in (C, H, frames) order; patch 0 is the lowest mel band.
    """
    batch, channels, n_mels, _ = x.shape
    if n_mels % n_patches:
        raise ValueError(f"{n_mels} mel bins do not split into {n_patches} frequency patches")
    h = n_mels // n_patches
    x = x[..., :n_frames_kept].reshape(batch, channels, n_patches, h, n_frames_kept)
    return x.permute(0, 2, 1, 3, 4).reshape(batch, n_patches, channels * h * n_frames_kept)


def class_token_index(n_patches: int, cls_position: str) -> int:
    """Where the class token sits in the sequence of n_patches + 1 tokens."""
    return {"head": 0, "middle": n_patches // 2, "tail": n_patches}[cls_position]
