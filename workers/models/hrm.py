"""The Hierarchical Reasoning Model (HRM, arXiv 2506.21734), same interface as TRM.

Two recurrent modules over the token sequence: a slow high-level ``H`` and a fast low-level
``L``. One supervision step runs ``N`` high-level cycles of ``T`` low-level updates each::

    for i in range(N * T):
        zL = L(zL, zH + x)                      # fast: every update
        if (i + 1) % T == 0: zH = H(zH, zL)     # slow: once per cycle

Everything but the very last L and H update runs without gradient (the *one-step gradient
approximation*: backprop through the final update only, treating the rest as a fixed point).
The answer is read from ``zH``; a Q head on the first position gives ``(q_halt, q_continue)``,
trained by Q-learning: ``q_halt`` against "whole answer correct", ``q_continue`` against the
sigmoid of the next step's best Q value (bootstrapped with one extra forward step) times a
discount. A row halts when ``q_halt > q_continue``; its confidence is ``sigmoid(q_halt)``.

The discount (``discount`` < 1) is what makes halting pay: undiscounted, a row whose answer is
already right values "continue" as much as "halt" (the next step is right too), the two heads
agree, and rows run to ``N_sup``. With it, a right answer now beats a right answer later.

Shapes: B batch, P prefix tokens, S cells, L = P + S, D width, C classes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workers.models.trm import LossKind, Mixer, Net, StepOut, TRMConfig, all_correct, cell_loss

__all__ = ["HRM", "HRMConfig"]


@dataclass
class HRMConfig:
    """Shape and recursion of an HRM. ``N`` high-level cycles of ``T`` low-level updates per
    supervision step; ``N_sup`` supervision steps at most."""

    vocab: int
    classes: int
    seq_len: int
    d: int = 64
    layers: int = 2  # per module
    N: int = 2
    T: int = 2
    N_sup: int = 8
    mixer: Mixer = "mlp"
    heads: int = 4
    expansion: float = 2.0
    seq_expansion: float = 2.0
    prefix: int = 1
    loss: LossKind = "softmax"
    discount: float = 0.9  # Q-learning discount for "continue" (1.0: the undiscounted target)
    kind: str = field(default="hrm")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HRMConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def _net_config(self) -> TRMConfig:
        return TRMConfig(
            vocab=self.vocab, classes=self.classes, seq_len=self.seq_len, d=self.d, layers=self.layers,
            mixer=self.mixer, heads=self.heads, expansion=self.expansion, seq_expansion=self.seq_expansion,
            prefix=self.prefix,
        )


class HRM(nn.Module):
    """Hierarchical Reasoning Model over a fixed-length grid of tokens."""

    h0: Tensor  # (D,) initial high-level state (a fixed buffer)
    l0: Tensor  # (D,) initial low-level state

    def __init__(self, cfg: HRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        L = cfg.prefix + cfg.seq_len
        net_cfg = cfg._net_config()
        self.tok = nn.Embedding(cfg.vocab, cfg.d)
        self.pos = nn.Parameter(torch.randn(L, cfg.d) * 0.02)
        self.prefix = nn.Parameter(torch.randn(max(cfg.prefix, 1), cfg.d) * 0.02)
        self.H = Net(net_cfg, L)  # slow module
        self.L = Net(net_cfg, L)  # fast module
        self.out_head = nn.Linear(cfg.d, cfg.classes, bias=False)
        self.q_head = nn.Linear(cfg.d, 2)  # (q_halt, q_continue)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        self.register_buffer("h0", torch.randn(cfg.d), persistent=True)
        self.register_buffer("l0", torch.randn(cfg.d), persistent=True)

    def embed(self, tokens: Tensor) -> Tensor:
        B = tokens.shape[0]  # tokens: (B, S)
        cells = self.tok(tokens) * math.sqrt(self.cfg.d)  # (B, S, D)
        pre = self.prefix[: self.cfg.prefix].expand(B, -1, -1)  # (B, P, D)
        return torch.cat([pre, cells], 1) + self.pos  # (B, L, D)

    def init_state(self, batch: int) -> tuple[Tensor, Tensor]:
        L = self.cfg.prefix + self.cfg.seq_len
        return self.h0.expand(batch, L, -1).clone(), self.l0.expand(batch, L, -1).clone()  # zH, zL (B, L, D)

    def step(self, x: Tensor, state: tuple[Tensor, ...]) -> StepOut:
        zH, zL = state
        cfg = self.cfg
        with torch.no_grad():
            for i in range(cfg.N * cfg.T - 1):
                zL = self.L(zL, zH + x)
                if (i + 1) % cfg.T == 0:
                    zH = self.H(zH, zL)
        zL = self.L(zL, zH + x)  # one-step gradient: only the final L and H updates
        zH = self.H(zH, zL)
        logits = self.out_head(zH[:, cfg.prefix :])  # (B, S, C)
        q = self.q_head(zH[:, 0])  # (B, 2)
        return StepOut((zH.detach(), zL.detach()), logits, q[:, 0], {"q_continue": q[:, 1]})

    def loss(self, out: StepOut, labels: Tensor, x: Tensor, steps: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cells' cross-entropy plus the Q-learning halting loss. ``steps`` (B,) counts the
        supervision steps each row has done, this one included."""
        ce = cell_loss(out.logits, labels, self.cfg.loss)  # (B,)
        correct = all_correct(out.logits, labels)  # (B,)
        q_halt, q_cont = out.halt, out.extra["q_continue"]
        with torch.no_grad():  # bootstrap target for "continue" from the next step
            nxt = self.step(x.detach(), out.state)
            nh, nc = nxt.halt, nxt.extra["q_continue"]
            last = steps >= self.cfg.N_sup
            target_cont = self.cfg.discount * torch.sigmoid(torch.where(last, nh, torch.maximum(nh, nc)))
        bce_h = F.binary_cross_entropy_with_logits(q_halt, correct)
        bce_c = F.binary_cross_entropy_with_logits(q_cont, target_cont)
        loss = ce.mean() + 0.5 * (bce_h + bce_c)
        return loss, {"ce": ce.mean().detach(), "halt_bce": bce_h.detach(), "cont_bce": bce_c.detach()}

    def confidence(self, out: StepOut) -> Tensor:
        return torch.sigmoid(out.halt)  # (B,)

    def should_halt(self, out: StepOut) -> Tensor:
        return out.halt > out.extra["q_continue"]  # (B,) bool
