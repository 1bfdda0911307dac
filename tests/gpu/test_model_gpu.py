"""The whole model on CUDA: Triton scan vs reference scan with the same weights, in float32
(every gradient, element by element) and over bf16 training steps (the GPU training path:
the two loss curves must agree). The GPU tests are skipped without CUDA; the comparisons
they use are checked on CPU here, against a scan broken on purpose."""

import copy

import pytest
import torch
import torch.nn.functional as F

from estm_ref.config import FeatureConfig, ModelConfig
from estm_ref.model import ESTM

# float32, Triton vs reference through the whole model: sums of up to ~1e5 terms in another
# order, and cuDNN's TF32 convolutions (its default) in the Tgram of both, differ by ~1e-4 of
# an element. An element smaller than GRAD_FLOOR x its tensor's RMS is held to the floor:
# there a difference of summation order is no longer small next to the element.
GRAD_RTOL, GRAD_FLOOR = 5e-3, 0.05
# bf16 training: two correct scans round their bf16 outputs differently, which moves a
# 10-step loss curve by ~0.3% of the first loss (measured on CPU with one-ulp noise on every
# scan output); a scan without its D term moves it by ~30%, one 1% off by ~1%.
CURVE_RTOL = 1e-2


def elementwise_mismatch(got: torch.Tensor, want: torch.Tensor, rtol: float,
                         floor: float) -> str | None:
    """None if every |got - want| <= rtol * max(|want|, floor * RMS(want)); else a line naming
    how many elements are off and the worst one."""
    want64, got64 = want.detach().double(), got.detach().double()
    rms = want64.pow(2).mean().sqrt()
    scale = torch.maximum(want64.abs(), floor * rms)
    ratio = (got64 - want64).abs() / (rtol * scale).clamp_min(torch.finfo(torch.float64).tiny)
    if bool((ratio <= 1).all()):
        return None
    worst = int(ratio.argmax())
    return (f"{int((ratio > 1).sum())} of {ratio.numel()} elements off; worst at flat index "
            f"{worst}: {got64.flatten()[worst].item():.6g} vs {want64.flatten()[worst].item():.6g} "
            f"(RMS {rms.item():.3g})")


def curve_gap(losses: list[float], reference: list[float]) -> float:
    """The largest gap between two loss curves, as a fraction of the reference's first loss."""
    assert len(losses) == len(reference)
    return max(abs(a - b) for a, b in zip(losses, reference)) / abs(reference[0])


def bf16_training_losses(model, wave: torch.Tensor, labels: torch.Tensor,
                         steps: int = 10) -> list[float]:
    """The loss of each of `steps` AdamW steps (lr 1e-3) under bf16 autocast."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        with torch.autocast(wave.device.type, dtype=torch.bfloat16):
            out = model(wave, labels)
        loss = F.cross_entropy(out.logits.float(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _two_sound_batch(n_samples: int, device: str):
    """Eight clips in four classes: noise, and noise with a tone for the second half."""
    torch.manual_seed(2)
    wave = 0.1 * torch.randn(8, n_samples, device=device)
    wave[4:] += 0.2 * torch.sin(torch.arange(n_samples, device=device) * 0.2)
    return wave, torch.tensor([0, 1, 2, 3] * 2, device=device)


def _models(feature_cfg=None, model_cfg=None, n_classes=41, device="cuda"):
    torch.manual_seed(0)
    ref = ESTM(feature_cfg or FeatureConfig(), model_cfg or ModelConfig(scan_backend="ref"),
               n_classes).to(device)
    tri = copy.deepcopy(ref)
    for module in tri.modules():  # same weights, other scan backend
        if hasattr(module, "scan_backend"):
            module.scan_backend = "triton"
    return ref, tri


@pytest.fixture
def strict_float32():
    """Float32 as float32: cuDNN's convolutions default to TF32 (10-bit mantissa), which
    turns the scans' last-bit differences into per-mille differences of the Tgram gradient."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.gpu
def test_default_model_triton_matches_reference_fp32(strict_float32):
    ref, tri = _models()
    torch.manual_seed(1)
    wave = 0.1 * torch.randn(4, 160000, device="cuda")
    labels = torch.randint(0, 41, (4,), device="cuda")
    logits = []
    for model in (ref, tri):
        out = model(wave, labels)
        F.cross_entropy(out.logits, labels).backward()
        logits.append(out.logits.detach())
    torch.testing.assert_close(logits[1], logits[0], rtol=6e-4, atol=30 * 2e-3)
    off = {}
    for (name, p_ref), (_, p_tri) in zip(ref.named_parameters(), tri.named_parameters()):
        message = elementwise_mismatch(p_tri.grad, p_ref.grad, GRAD_RTOL, GRAD_FLOOR)
        if message:
            off[name] = message
    assert not off, off


@pytest.mark.gpu
def test_bf16_training_with_triton_follows_the_reference_scans_loss_curve():
    ref, tri = _models(n_classes=4)
    wave, labels = _two_sound_batch(160000, "cuda")
    reference = bf16_training_losses(ref, wave, labels)
    losses = bf16_training_losses(tri, wave, labels)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert reference[-1] < reference[0]
    assert curve_gap(losses, reference) <= CURVE_RTOL, (losses, reference)


def test_elementwise_check_holds_small_gradient_entries_to_the_floor():
    want = torch.tensor([10.0, -4.0, 1e-3, 0.0, 2.5])
    rms = want.pow(2).mean().sqrt()
    close = want * (1 + 1e-3) + 1e-4 * rms
    assert elementwise_mismatch(close, want, GRAD_RTOL, GRAD_FLOOR) is None
    # a small entry 100% wrong: within 5e-3 of the largest gradient, as once accepted,
    # but far from its own value at the floor
    wrong_small = want.clone()
    wrong_small[2] = 0.04
    assert (wrong_small - want).abs().max() / want.abs().max() < 5e-3
    message = elementwise_mismatch(wrong_small, want, GRAD_RTOL, GRAD_FLOOR)
    assert message is not None and message.startswith("1 of 5 elements off; worst at flat index 2")
    wrong_large = want.clone()
    wrong_large[0] *= 1.01
    assert elementwise_mismatch(wrong_large, want, GRAD_RTOL, GRAD_FLOOR) is not None


@pytest.mark.slow  # four small models trained for ten steps each
def test_loss_curve_check_tells_a_broken_scan_from_rounding(monkeypatch):
    """The bf16 training comparison on CPU with a tiny model: rounding-sized noise on every
    scan output passes; a scan without its D term, or 3% off, fails."""
    import estm_ref.model.mamba as mamba

    scan = mamba.selective_scan
    n_samples = 16000
    features = FeatureConfig(clip_samples=n_samples)
    tiny = ModelConfig(d_model=32, depth=1, d_state=8, scan_backend="ref")
    wave, labels = _two_sound_batch(n_samples, "cpu")

    def curve(scan_fn):
        monkeypatch.setattr(mamba, "selective_scan", scan_fn)
        model, _ = _models(features, tiny, n_classes=4, device="cpu")
        return bf16_training_losses(model, wave, labels)

    def one_ulp_noise(*args, **kwargs):  # bf16 keeps 8 significant bits
        y = scan(*args, **kwargs)
        return y + y.detach() * 2.0 ** -8 * torch.sign(torch.randn_like(y))

    def without_d(u, delta, A, B, C, D=None, *args, **kwargs):
        return scan(u, delta, A, B, C, None, *args, **kwargs)

    reference = curve(scan)
    assert reference[-1] < reference[0]
    assert curve_gap(curve(one_ulp_noise), reference) <= CURVE_RTOL
    assert curve_gap(curve(without_d), reference) > CURVE_RTOL
    assert curve_gap(curve(lambda *a, **k: 1.03 * scan(*a, **k)), reference) > CURVE_RTOL
