"""The liquid forecaster (CfC or LTC cell from ``ncps``) in one readable file.

A window of the last ``context`` values of a series, already deseasonalised and normalised
(``workers/serving/liquid_inference.py`` builds it), is read step by step by a continuous-time
cell whose ``timespans`` are the sample gaps in units of the median step (so irregular series
are read as they are). A linear head on the cell's last output, plus a linear skip straight from
the normalised window (a residual path that starts at zero), gives ``horizon`` x 3 numbers: the
median and two positive spreads, so p10 <= p50 <= p90 holds by construction. Training minimises
the pinball loss of the three quantiles.

Two cells share the frame:

- **CfC** (closed-form continuous-time): a fully connected cell of ``units`` neurons; its output
  is its whole state.
- **LTC** (liquid time-constant): ``units`` neurons wired by ``AutoNCP(units, motor)``, unrolled
  ``ode_unfolds`` ODE steps per input step; its output is the ``motor`` neurons.

Shapes: B batch, L = ``context`` steps, N = ``N_FEATURES`` (normalised value, valid mask),
S the cell's state size (``units``), O its output size (``units`` for CfC, ``motor`` for LTC),
H = ``horizon``, Q = 3 quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["N_FEATURES", "QUANTILES", "LiquidConfig", "LiquidForecaster", "pinball_loss"]

QUANTILES = (0.1, 0.5, 0.9)
N_FEATURES = 2  # normalised value, valid-mask


@dataclass(frozen=True)
class LiquidConfig:
    """Architecture of a liquid forecaster."""

    cell: Literal["cfc", "ltc"] = "cfc"
    units: int = 64
    motor: int = 16  # AutoNCP output neurons (ltc)
    context: int = 72
    horizon: int = 24
    ode_unfolds: int = 3  # ltc


class LiquidForecaster(nn.Module):
    """CfC (fully connected, ``units`` neurons) or LTC (``AutoNCP(units, motor)`` wiring) cell
    over a window; a linear head on its last state plus a linear skip from the normalised
    window give ordered quantiles."""

    def __init__(self, cfg: LiquidConfig) -> None:
        super().__init__()
        from ncps.torch import LTC, CfC  # imported with the model: only a placed tiny tier needs ncps
        from ncps.wirings import AutoNCP

        self.cfg = cfg
        self.rnn: Any
        if cfg.cell == "cfc":
            self.rnn = CfC(N_FEATURES, cfg.units, return_sequences=False)  # cell: (B, N), (B, S) -> (B, O=S)
            out_dim = cfg.units
        else:
            self.rnn = LTC(N_FEATURES, AutoNCP(cfg.units, cfg.motor), return_sequences=False, ode_unfolds=cfg.ode_unfolds)
            out_dim = cfg.motor  # cell: (B, N), (B, S) -> (B, O=motor)
        self.head = nn.Linear(out_dim, cfg.horizon * 3)  # (B, O) -> (B, H*Q)
        # linear skip from the normalised window (a residual path; starts at zero): (B, L) -> (B, H*Q)
        self.skip = nn.Linear(cfg.context, cfg.horizon * 3)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def forward(self, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        # x: (B, L, N), ts: (B, L, 1) -> (B, H, Q) quantiles p10 <= p50 <= p90
        # ncps' own loop squeezes timespans to (B,), which breaks broadcasting; step the cell here.
        b, steps, _ = x.shape
        h = torch.zeros(b, int(self.rnn.state_size), dtype=x.dtype, device=x.device)  # (B, S)
        out = h
        for t in range(steps):
            out, h = self.rnn.rnn_cell(x[:, t], h, ts[:, t])  # (B, N), (B, S), (B, 1) -> out (B, O), h (B, S)
        q = (self.head(out) + self.skip(x[..., 0])).view(b, self.cfg.horizon, 3)  # (B, H, Q)
        mid = q[..., 1]  # (B, H)
        lo = mid - nn.functional.softplus(q[..., 0])  # spreads are positive, so the order holds
        hi = mid + nn.functional.softplus(q[..., 2])
        return torch.stack([lo, mid, hi], dim=-1)  # (B, H, Q)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of (B, H, 3) quantile predictions against (B, H) targets."""
    qs = torch.tensor(QUANTILES, dtype=pred.dtype, device=pred.device)  # (Q,)
    diff = target.unsqueeze(-1) - pred  # (B, H, Q)
    return torch.maximum(qs * diff, (qs - 1) * diff).mean()
