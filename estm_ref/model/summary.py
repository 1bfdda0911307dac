"""Model summary: the shape after every stage and the parameter count per component.

Shapes come from one real forward pass of a single clip (CPU, reference scan), recorded
with forward hooks, so they cannot drift from the model's code.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from estm_ref.config import FEATURE_CHANNELS, FEATURE_NAMES, FeatureConfig, ModelConfig
from estm_ref.model.estm import ESTM, MambaPath
from estm_ref.model.features import emel, log_mel

PATH_NAMES = ("tmamba", "smamba")


def model_summary(feature_cfg: FeatureConfig, model_cfg: ModelConfig, n_classes: int) -> dict:
    """Run one silent clip through a freshly built model and describe it.

    Returns {"stages": [(stage, shape tuple)], "params": [(component, count)],
    "total": int}; shapes have batch 1 first.
    """
    model_cfg = dataclasses.replace(model_cfg, scan_backend="ref")
    model = ESTM(feature_cfg, model_cfg, n_classes).eval()
    waveform = torch.zeros(1, feature_cfg.clip_samples)
    recorded: dict[str, tuple[int, ...]] = {}
    handles = []

    # hooks must return None, or they would replace the module's input or output
    def record(name):
        def hook(module, args, output):
            recorded[name] = tuple(output.shape)
        return hook

    def record_input(name):
        def hook(module, args):
            recorded[name] = tuple(args[0].shape)
        return hook

    handles.append(model.tgram.register_forward_hook(record("Tgram")))
    for attr in PATH_NAMES:
        path = getattr(model, attr)
        if path is None:
            continue
        handles.append(path.register_forward_pre_hook(record_input(f"{attr} patches")))
        handles.append(path.blocks[0].register_forward_pre_hook(record_input(f"{attr} tokens")))
        for k, block in enumerate(path.blocks):
            handles.append(block.register_forward_hook(record(f"{attr} block {k + 1}")))
        handles.append(path.register_forward_hook(record(f"{attr} class-token output")))
    with torch.no_grad():
        out = model(waveform)
        mel = log_mel(waveform, feature_cfg)
        features = model.features(waveform)
    for handle in handles:
        handle.remove()

    stages = [("waveform", tuple(waveform.shape)), ("log-mel", tuple(mel.shape))]
    if feature_cfg.features == "estgram":
        stages.append(("EMel (TSG)", tuple(emel(mel, feature_cfg.tsg_alpha, feature_cfg.tsg_norm).shape)))
    stages.append(("Tgram", recorded["Tgram"]))
    name = feature_cfg.features
    stages.append((f"{FEATURE_NAMES[name]} ({', '.join(FEATURE_CHANNELS[name])})", tuple(features.shape)))
    for attr in PATH_NAMES:
        if getattr(model, attr) is None:
            continue
        stages += [(name, shape) for name, shape in recorded.items() if name.startswith(attr + " ")]
    stages += [("fused embedding H", tuple(out.embedding.shape)), ("logits", tuple(out.logits.shape))]
    params = parameter_counts(model)
    return {"stages": stages, "params": params, "total": sum(p.numel() for p in model.parameters())}


def parameter_counts(model: ESTM) -> list[tuple[str, int]]:
    """(component, parameter count) for every top-level part; each path is broken down."""
    rows = []
    for name, child in model.named_children():
        if isinstance(child, MambaPath):
            rows.append((f"{name}.patch_embed", _count(child.patch_embed)))
            rows.append((f"{name}.cls_token + pos_embed", child.cls_token.numel() + child.pos_embed.numel()))
            rows.append((f"{name}.blocks ({len(child.blocks)} x {_count(child.blocks[0]):,})", _count(child.blocks)))
            rows.append((f"{name}.norm", _count(child.norm)))
        else:
            rows.append((name, _count(child)))
    return rows


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def format_summary(summary: dict) -> str:
    """The summary as two aligned plain-text tables."""
    lines = ["stage                               shape"]
    lines += [f"{name:<35} {' x '.join(map(str, shape))}" for name, shape in summary["stages"]]
    lines += ["", "component                           parameters"]
    lines += [f"{name:<35} {count:>12,}" for name, count in summary["params"]]
    lines.append(f"{'total':<35} {summary['total']:>12,}")
    return "\n".join(lines)
