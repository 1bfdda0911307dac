"""ESTM: ESTgram features -> dual-path (time / frequency) Mamba -> fusion -> ArcFace.

Glossary (code name -> paper symbol; choices in docs/design.md):

    d_model          D      token width of both paths and of the fused embedding H
    d_state          N      SSM state size per channel (not the paper's N frames)
    n_time_patches   I      time patches per clip (12), each K frames wide
    n_freq_patches   J      frequency patches per clip (16), each H mel bins high
    patch_frames     K      frames per time patch: n_frames // I = 26
    patch_mels       H      mel bins per frequency patch: n_mels // J = 8 (not the fused H)
    tsg_alpha        alpha  TSG gate scale (2)
    mu               mu     per-clip mean over frames of s_n = median + RMS + variance
    tmamba / smamba         TMamba (time path) / SMamba (frequency path)
    align_t / align_s       Linear_align of Algorithm 1; embedding = H = align_s(h_S) + align_t(h_T)

Choices the paper leaves open (ours): the last of the 313 frames is dropped so that
I * K = 312; the class token sits at the end of the sequence by default
(cls_position="tail") so that a causal scan's last output has seen every patch;
"head" and "middle" require bidirectional=True (a forward-only causal scan would hide
all, resp. half, of the patches from the token) and are rejected otherwise; SMamba
scans from the lowest mel band to the highest; the patch projections have a bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from estm_ref.config import FeatureConfig, ModelConfig
from estm_ref.model.features import Tgram, emel, log_mel
from estm_ref.model.mamba import MambaBlock
from estm_ref.model.patching import class_token_index, freq_patches, time_patches


class MambaPath(nn.Module):
    """One path (TMamba or SMamba): patch projection, class token, Mamba stack, LayerNorm.

    Raises ValueError for cls_position "head" or "middle" without bidirectional=True.
    patches: (batch, n_patches, patch_dim) -> class-token output (batch, d_model).
    """

    def __init__(self, patch_dim: int, n_patches: int, cfg: ModelConfig):
        super().__init__()
        if cfg.cls_position != "tail" and not cfg.bidirectional:
            raise ValueError(
                f"cls_position={cfg.cls_position!r} needs bidirectional=True: a forward-only "
                f"causal scan never shows the class token the patches after it "
                f"({'all' if cfg.cls_position == 'head' else 'half'} of them)")
        if cfg.depth < 1:
            raise ValueError(f"depth must be >= 1 Mamba block per path, got {cfg.depth}")
        self.n_patches = n_patches
        self.cls_index = class_token_index(n_patches, cfg.cls_position)
        self.patch_embed = nn.Linear(patch_dim, cfg.d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, cfg.d_model))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            MambaBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.d_model)

    def tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """(batch, n_patches, patch_dim) -> (batch, n_patches + 1, d_model), eqs. (4)-(5)."""
        x = self.patch_embed(patches)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        i = self.cls_index
        return torch.cat([x[:, :i], cls, x[:, i:]], dim=1) + self.pos_embed

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(batch, n_patches, patch_dim) -> (batch, d_model): the class token's output."""
        x = self.tokens(patches)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, self.cls_index])


class ArcFace(nn.Module):
    """Additive angular margin head: logits = s * cos(theta_c (+ m for the label)).

    cos(theta_c) is the cosine between the L2-normalised embedding and the
    L2-normalised weight of class c. For the label class, cos(theta + m) replaces
    cos(theta) where theta + m < pi, else cos(theta) - m * sin(m) (keeps the logit
    decreasing in theta past pi - m).
    """

    def __init__(self, d_model: int, n_classes: int, margin: float, scale: float):
        super().__init__()
        self.margin, self.scale = margin, scale
        self.weight = nn.Parameter(torch.empty(n_classes, d_model))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        """embedding: (batch, d_model) -> cos(theta): (batch, n_classes), in float32 (autocast off)."""
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            return F.linear(F.normalize(embedding.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """embedding: (batch, d_model), labels: (batch,) int or None -> logits (batch, n_classes)."""
        cos = self.cosine(embedding)
        if labels is None:
            return self.scale * cos
        return self.scale * margin_logits(cos, labels, self.margin)


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """cos: (batch, n_classes) -> the same with the ArcFace margin on each row's label.

    cos(theta + m) = cos * cos(m) - sin(theta) * sin(m) where theta + m < pi
    (cos(theta) > cos(pi - m)), else cos(theta) - m * sin(m).
    """
    if labels.shape != cos.shape[:1]:
        raise ValueError(f"labels must have shape ({cos.shape[0]},), got {tuple(labels.shape)}")
    sin = torch.sqrt(torch.clamp(1.0 - cos.square(), min=1e-12))
    with_margin = cos * math.cos(margin) - sin * math.sin(margin)
    fallback = cos - margin * math.sin(margin)
    target = torch.where(cos > math.cos(math.pi - margin), with_margin, fallback)
    one_hot = F.one_hot(labels.long(), cos.shape[1]).bool()
    return torch.where(one_hot, target, cos)


@dataclass
class ESTMOutput:
    """logits: (batch, n_classes) scaled ArcFace logits; embedding: (batch, d_model) = H."""

    logits: torch.Tensor
    embedding: torch.Tensor


class ESTM(nn.Module):
    """The whole model: waveform (batch, clip_samples) in [-1, 1] -> `ESTMOutput`.

    Variants: model_cfg.paths = "both" (STMamba) | "spectral" (SMamba) | "temporal"
    (TMamba); feature_cfg.features = "estgram" (Mel, EMel, Tgram) | "stgram" (Mel, Tgram).
    A single-path model's embedding is that path's aligned class-token output.
    """

    def __init__(self, feature_cfg: FeatureConfig, model_cfg: ModelConfig, n_classes: int):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.feature_cfg, self.model_cfg, self.n_classes = feature_cfg, model_cfg, n_classes
        n_frames, n_mels, channels = feature_cfg.n_frames, feature_cfg.n_mels, feature_cfg.n_channels
        self.patch_frames = n_frames // model_cfg.n_time_patches  # K
        self.n_frames_kept = model_cfg.n_time_patches * self.patch_frames  # I * K = 312
        if n_mels % model_cfg.n_freq_patches:
            raise ValueError(f"n_mels={n_mels} is not a multiple of n_freq_patches={model_cfg.n_freq_patches}")
        self.patch_mels = n_mels // model_cfg.n_freq_patches  # H
        self.tgram = Tgram(feature_cfg)
        d = model_cfg.d_model
        self.tmamba = self.align_t = self.smamba = self.align_s = None
        if model_cfg.paths in ("both", "temporal"):
            self.tmamba = MambaPath(channels * n_mels * self.patch_frames, model_cfg.n_time_patches, model_cfg)
            self.align_t = nn.Linear(d, d)
        if model_cfg.paths in ("both", "spectral"):
            self.smamba = MambaPath(channels * self.patch_mels * self.n_frames_kept,
                                    model_cfg.n_freq_patches, model_cfg)
            self.align_s = nn.Linear(d, d)
        self.head = ArcFace(d, n_classes, model_cfg.arcface_margin, model_cfg.arcface_scale)

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform: (batch, clip_samples) -> ESTgram (batch, 3, n_mels, n_frames) or STgram (batch, 2, ...).

        Log-mel and TSG run in float32 with autocast off; the Tgram follows autocast
        and is cast back to float32 for the stack.
        """
        cfg = self.feature_cfg
        if waveform.dim() != 2 or waveform.shape[1] != cfg.clip_samples:
            raise ValueError(f"waveform must have shape (batch, {cfg.clip_samples}), got {tuple(waveform.shape)}")
        mel = log_mel(waveform, cfg)
        channels = [mel]
        if cfg.features == "estgram":
            channels.append(emel(mel, cfg.tsg_alpha, cfg.tsg_norm))
        channels.append(self.tgram(waveform.to(self.tgram.encoder.weight.dtype)).to(mel.dtype))
        return torch.stack(channels, dim=1)

    def embed(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform: (batch, clip_samples) -> fused embedding H: (batch, d_model)."""
        x = self.features(waveform)
        embedding = None
        if self.tmamba is not None:
            embedding = self.align_t(self.tmamba(time_patches(x, self.model_cfg.n_time_patches)))
        if self.smamba is not None:
            h_s = self.align_s(self.smamba(freq_patches(x, self.model_cfg.n_freq_patches, self.n_frames_kept)))
            embedding = h_s if embedding is None else h_s + embedding
        return embedding

    def forward(self, waveform: torch.Tensor, labels: torch.Tensor | None = None) -> ESTMOutput:
        """waveform: (batch, clip_samples); labels: (batch,) class indices or None.

        logits carry the ArcFace margin on `labels` when given (training), plain
        s * cos(theta) otherwise.
        """
        embedding = self.embed(waveform)
        return ESTMOutput(logits=self.head(embedding, labels), embedding=embedding)


def own_class_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[label] per row: (batch, n_classes), (batch,) -> (batch,) float64.

    Computed as softplus(logsumexp over the other classes - own logit) in float64, which
    stays exact for confident clips: there -log p = -log(1 - eps) ~ eps, and a float32
    log_softmax rounds every eps below ~6e-8 to 0, tying the scores of all such clips.
    """
    x = logits.double()
    labels = labels.long()[:, None]
    own = x.gather(1, labels)[:, 0]
    others = torch.logsumexp(x.scatter(1, labels, float("-inf")), dim=1)  # -inf for one class
    return F.softplus(others - own, threshold=50.0)


def build_model(feature_cfg: FeatureConfig, model_cfg: ModelConfig, n_classes: int,
                device: torch.device | str = "cpu") -> ESTM:
    """A freshly initialised ESTM on `device`."""
    return ESTM(feature_cfg, model_cfg, n_classes).to(device)
