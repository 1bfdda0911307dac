"""The Mamba block (Algorithm 1 of the paper; docs/design.md, "Model"), in plain PyTorch.

    x -> LayerNorm -> in_proj -> (u, z)
      u -> causal depthwise conv -> SiLU -> x_proj -> (dt, B, C); delta = dt_proj.weight @ dt
      y = selective_scan(u, delta, A = -exp(A_log), B, C, D, z, delta_bias = dt_proj.bias,
                         delta_softplus = True)
    out = x + out_proj(y)

Sizes: d_model = D, d_inner = E = expand * D, d_state = N, dt_rank = ceil(D / 16),
d_conv = width of the causal conv. The scan runs through `estm_ref.scan.selective_scan`
with an explicit backend.

Bidirectional (ours, Vision Mamba style): a second, independently parameterised
conv + SSM scans the reversed sequence; in_proj, the gate z and out_proj are shared,
and the two directions' outputs are averaged (not summed) so that the residual
branch keeps the scale of the one-directional block at initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from estm_ref.config import ModelConfig
from estm_ref.scan import selective_scan

# Mamba's initialisation of the step size: dt ~ log-uniform in [DT_MIN, DT_MAX], floored.
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise causal convolution: output step t sees input steps <= t only.

    x: (batch, channels, L); weight: (channels, 1, width); bias: (channels,) or None.
    y[b, c, t] = bias[c] + sum_k weight[c, 0, k] * x[b, c, t - (width - 1) + k],
    with x = 0 before t = 0 (left padding by width - 1). Returns (batch, channels, L).
    """
    channels, _, width = weight.shape
    if x.dim() != 3 or x.shape[1] != channels:
        raise ValueError(f"x must have shape (batch, {channels}, L), got {tuple(x.shape)}")
    return F.conv1d(F.pad(x, (width - 1, 0)), weight, bias, groups=channels)


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y, for y > 0: y + log(-expm1(-y))."""
    return y + torch.log(-torch.expm1(-y))


class SelectiveSSM(nn.Module):
    """One scan direction: causal conv, SiLU, input-dependent (delta, B, C), selective scan.

    Parameters follow Mamba: conv1d (depthwise, bias), x_proj Linear(E, dt_rank + 2N, no
    bias), dt_proj Linear(dt_rank, E) whose bias is the scan's delta_bias, A_log (E, N),
    D (E,). A_log and D carry `_no_weight_decay = True` (as in Mamba).
    """

    def __init__(self, d_inner: int, d_state: int, dt_rank: int, d_conv: int):
        super().__init__()
        self.d_state, self.dt_rank = d_state, dt_rank
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32))
                                  .repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_dt_parameters()

    @torch.no_grad()
    def reset_dt_parameters(self) -> None:
        """dt_proj weight ~ U(+-dt_rank^-0.5); bias = inverse-softplus of dt ~ logU[1e-3, 1e-1]."""
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(self.dt_proj.out_features) * (math.log(DT_MAX) - math.log(DT_MIN)) \
            + math.log(DT_MIN)
        self.dt_proj.bias.copy_(inverse_softplus(torch.exp(log_dt).clamp(min=DT_FLOOR)))

    def forward(self, u: torch.Tensor, z: torch.Tensor, backend: str) -> torch.Tensor:
        """u, z: (batch, E, L) -> y: (batch, E, L) = scan(silu(conv(u)), ...) * silu(z)."""
        u = F.silu(causal_conv1d(u, self.conv1d.weight, self.conv1d.bias))
        x_dbl = self.x_proj(u.transpose(1, 2))  # (batch, L, dt_rank + 2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (batch, E, L), bias in the scan
        return selective_scan(
            u, delta.contiguous(), -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
            self.D.float(), z.contiguous(), delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True, backend=backend)


class MambaBlock(nn.Module):
    """Pre-norm residual Mamba block on token sequences: (batch, L, d_model) -> same.

    Sizes, direction and scan backend come from `cfg` (d_model, d_state, expand, d_conv,
    bidirectional, scan_backend); the other ModelConfig fields are not used here.

    With bidirectional=True a second `SelectiveSSM` scans the flipped sequence and the
    two outputs are averaged before out_proj (see the module docstring).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.scan_backend = cfg.scan_backend
        self.norm = nn.LayerNorm(cfg.d_model)
        self.in_proj = nn.Linear(cfg.d_model, 2 * cfg.d_inner, bias=False)
        self.ssm = SelectiveSSM(cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv)
        self.ssm_reverse = SelectiveSSM(cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv) \
            if cfg.bidirectional else None
        self.out_proj = nn.Linear(cfg.d_inner, cfg.d_model, bias=False)

    @property
    def bidirectional(self) -> bool:
        return self.ssm_reverse is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, L, d_model) -> (batch, L, d_model)."""
        # (batch, 2E, L), contiguous along L for the scan
        uz = self.in_proj(self.norm(x)).transpose(1, 2).contiguous()
        u, z = uz.chunk(2, dim=1)
        y = self.ssm(u, z, self.scan_backend)
        if self.ssm_reverse is not None:
            y_rev = self.ssm_reverse(u.flip(-1), z.flip(-1), self.scan_backend)
            y = 0.5 * (y + y_rev.flip(-1))
        return x + self.out_proj(y.transpose(1, 2))
