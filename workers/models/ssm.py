"""The state-space forecaster: a tiny selective state-space model (Mamba's S6 scan) in one file.

It reads the same window as the liquid forecasters (``workers/models/liquid.py``): the last
``context`` values of a series, deseasonalised and normalised, with a valid mask and the sample
gaps as timespans (``workers/serving/liquid_inference.py`` builds it), and it answers the same
thing: ``horizon`` x 3 ordered quantiles (p10 <= p50 <= p90 by construction).

One block (Gu and Dao, "Mamba", arXiv 2312.00752, section 3 and algorithm 2), pure PyTorch:

    u -> in_proj -> (v, gate)                          expand D -> 2E
    v -> causal depthwise conv (kernel K) -> SiLU
    v -> x_proj -> (dt, B_t, C_t)                      the *selective* part: all depend on the input
    delta = softplus(dt_proj(dt)) * timespan           continuous-time step, scaled by the sample gap
    h_t = exp(delta A) * h_{t-1} + delta B_t v_t       the scan, A = -exp(A_log) < 0 (stable)
    y_t = C_t . h_t + Dskip * v_t
    out = out_proj(y * SiLU(gate)); residual; RMSNorm

Multiplying ``delta`` by the gap (in units of the median step) is the zero-order-hold
discretisation of the same continuous system over a longer interval, so irregular series are
read as they are, as CfC reads them. The scan is a plain loop over time: for L <= 96 steps
and a few thousand channels x states it is faster on a CPU than any parallel-scan trick.

Shapes: B batch, L = ``context`` steps, N = ``N_FEATURES`` (normalised value, valid mask),
D = ``d_model``, E = ``d_inner`` (expanded channels), S = ``d_state``, R = ``dt_rank``,
K = ``d_conv``, H = ``horizon``, Q = 3 quantiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as fn

from workers.models.liquid import N_FEATURES

__all__ = ["SSMConfig", "StateSpaceForecaster", "SelectiveSSM", "selective_scan"]


@dataclass(frozen=True)
class SSMConfig:
    """Architecture of a selective state-space forecaster."""

    cell: Literal["ssm"] = "ssm"
    d_model: int = 32
    d_inner: int = 64
    d_state: int = 16
    dt_rank: int = 4
    d_conv: int = 4
    layers: int = 2
    context: int = 96
    horizon: int = 24


def selective_scan(v: torch.Tensor, delta: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                   d: torch.Tensor) -> torch.Tensor:
    """The S6 recurrence, step by step.

    v: (B, L, E) input, delta: (B, L, E) positive steps, a: (E, S) negative rates,
    b, c: (B, L, S) input-dependent projections, d: (E,) skip -> y: (B, L, E)."""
    bsz, _, e = v.shape
    da = torch.exp(delta.unsqueeze(-1) * a)  # (B, L, E, S): per-step decay in (0, 1)
    dbv = (delta * v).unsqueeze(-1) * b.unsqueeze(2)  # (B, L, E, S): delta_t * B_t * v_t
    h = v.new_zeros(bsz, e, a.shape[1])  # (B, E, S)
    hs = []
    # unbind, not da[:, t]: an indexed slice's backward would allocate the whole (B, L, E, S) per step
    for da_t, dbv_t in zip(da.unbind(1), dbv.unbind(1), strict=True):
        h = da_t * h + dbv_t  # (B, E, S)
        hs.append(h)
    y = (torch.stack(hs, dim=1) * c.unsqueeze(2)).sum(-1)  # (B, L, E, S) . (B, L, 1, S) -> (B, L, E)
    return y + v * d  # (B, L, E)


class SelectiveSSM(nn.Module):
    """One Mamba block with a pre-norm residual: (B, L, D), (B, L, 1) -> (B, L, D)."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        e, s, r = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.dt_rank = r
        self.norm = nn.RMSNorm(cfg.d_model)
        self.in_proj = nn.Linear(cfg.d_model, 2 * e, bias=False)  # (B, L, D) -> (B, L, 2E)
        self.conv = nn.Conv1d(e, e, cfg.d_conv, groups=e, padding=cfg.d_conv - 1)  # depthwise, causal after the cut
        self.x_proj = nn.Linear(e, r + 2 * s, bias=False)  # (B, L, E) -> (B, L, R + 2S)
        self.dt_proj = nn.Linear(r, e)  # (B, L, R) -> (B, L, E)
        # S4D-real init: A_n = -(n + 1); dt bias so softplus(bias) spans 1e-3 .. 1e-1 (Mamba's choice)
        self.a_log = nn.Parameter(torch.log(torch.arange(1, s + 1, dtype=torch.float32)).repeat(e, 1))  # (E, S)
        dt = torch.exp(torch.rand(e) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.d = nn.Parameter(torch.ones(e))  # (E,)
        self.out_proj = nn.Linear(e, cfg.d_model, bias=False)  # (B, L, E) -> (B, L, D)

    def forward(self, u: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        # u: (B, L, D), ts: (B, L, 1) sample gaps -> (B, L, D)
        steps = u.shape[1]
        v, gate = self.in_proj(self.norm(u)).chunk(2, dim=-1)  # (B, L, E) each
        v = fn.silu(self.conv(v.transpose(1, 2))[..., :steps].transpose(1, 2))  # (B, L, E), causal
        dt, b, c = self.x_proj(v).split([self.dt_rank, self.a_log.shape[1], self.a_log.shape[1]], dim=-1)
        delta = fn.softplus(self.dt_proj(dt)) * ts  # (B, L, E), longer gaps decay more
        y = selective_scan(v, delta, -torch.exp(self.a_log), b, c, self.d)  # (B, L, E)
        return u + self.out_proj(y * fn.silu(gate))  # (B, L, D)


class StateSpaceForecaster(nn.Module):
    """Stacked selective SSM blocks over the window; a linear head on the last position plus
    a linear skip from the normalised window (a residual path that starts at zero) give ordered
    quantiles, exactly as in :class:`workers.models.liquid.LiquidForecaster`."""

    def __init__(self, cfg: SSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(N_FEATURES + 1, cfg.d_model)  # (value, mask, log gap) -> (B, L, D)
        self.blocks = nn.ModuleList(SelectiveSSM(cfg) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.horizon * 3)  # (B, D) -> (B, H*Q)
        self.skip = nn.Linear(cfg.context, cfg.horizon * 3)  # (B, L) -> (B, H*Q), starts at zero
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def forward(self, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        # x: (B, L, N), ts: (B, L, 1) -> (B, H, Q) quantiles p10 <= p50 <= p90
        b = x.shape[0]
        u = self.embed(torch.cat([x, torch.log(ts)], dim=-1))  # (B, L, D)
        for block in self.blocks:
            u = block(u, ts)  # (B, L, D)
        q = (self.head(self.norm(u[:, -1])) + self.skip(x[..., 0])).view(b, self.cfg.horizon, 3)  # (B, H, Q)
        mid = q[..., 1]  # (B, H)
        lo = mid - fn.softplus(q[..., 0])  # spreads are positive, so the order holds
        hi = mid + fn.softplus(q[..., 2])
        return torch.stack([lo, mid, hi], dim=-1)  # (B, H, Q)
