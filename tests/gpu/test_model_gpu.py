"""The whole model on CUDA: Triton scan vs reference scan with the same weights, and bf16
training steps with the Triton scan (the GPU training path). Skipped without CUDA."""

import copy

import pytest
import torch
import torch.nn.functional as F

from estm_ref.config import FeatureConfig, ModelConfig
from estm_ref.model import ESTM

pytestmark = pytest.mark.gpu


def _models(n_classes=41):
    torch.manual_seed(0)
    ref = ESTM(FeatureConfig(), ModelConfig(scan_backend="ref"), n_classes).cuda()
    tri = copy.deepcopy(ref)
    for module in tri.modules():  # same weights, other scan backend
        if hasattr(module, "scan_backend"):
            module.scan_backend = "triton"
    return ref, tri


def test_default_model_triton_matches_reference_fp32():
    ref, tri = _models()
    torch.manual_seed(1)
    wave = 0.1 * torch.randn(4, 160000, device="cuda")
    labels = torch.randint(0, 41, (4,), device="cuda")
    losses = []
    for model in (ref, tri):
        out = model(wave, labels)
        loss = F.cross_entropy(out.logits, labels)
        loss.backward()
        losses.append((out.logits.detach(), loss.detach()))
    torch.testing.assert_close(losses[1][0], losses[0][0], rtol=6e-4, atol=30 * 2e-3)
    for (name, p_ref), (_, p_tri) in zip(ref.named_parameters(), tri.named_parameters()):
        scale = p_ref.grad.abs().max().clamp_min(1e-6)
        torch.testing.assert_close(p_tri.grad / scale, p_ref.grad / scale, rtol=0, atol=5e-3,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_bf16_training_steps_with_triton_reduce_the_loss():
    _, model = _models(n_classes=4)
    torch.manual_seed(2)
    wave = 0.1 * torch.randn(8, 160000, device="cuda")
    wave[4:] += 0.2 * torch.sin(torch.arange(160000, device="cuda") * 0.2)
    labels = torch.tensor([0, 1, 2, 3] * 2, device="cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(wave, labels)
        loss = F.cross_entropy(out.logits.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
