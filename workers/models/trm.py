"""The Tiny Recursive Model (TRM, arXiv 2510.04871) in one readable file.

Two states ride along a fixed-length token sequence: the answer ``y`` and the latent ``z``.
One tiny network ``net`` (2 layers) serves both updates. One improvement round is::

    for _ in range(n):  z = net(z, y + x)      # refine the latent from the input and answer
    y = net(y, z)                               # refine the answer from the latent

A *supervision step* runs ``T`` rounds, the first ``T - 1`` without gradient and the last with
full backprop, then reads the answer from ``y`` (one class per cell) and a halting logit from
the first (prefix) position. Training applies deep supervision: up to ``N_sup`` supervision
steps per example with the state carried *detached* between them and one optimizer step per
supervision step; the halting head is trained with BCE against "the whole answer is correct",
so its sigmoid is the worker's confidence. At inference each row runs supervision steps until
its halting head says stop (``run_recursive``), and rows that halt leave the batch.

Shapes: B batch, P prefix tokens, S cells, L = P + S, D model width, C answer classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EMA",
    "TRM",
    "Inference",
    "RecursiveModel",
    "StepOut",
    "TRMConfig",
    "IGNORE",
    "all_correct",
    "cell_loss",
    "run_recursive",
    "stablemax_cross_entropy",
]

Mixer = Literal["mlp", "attn", "conv"]
LossKind = Literal["softmax", "stablemax"]


@dataclass
class TRMConfig:
    """Everything that fixes a TRM's shape and recursion. ``vocab`` counts input tokens,
    ``classes`` answer classes per cell, ``seq_len`` cells (prefix tokens come on top)."""

    vocab: int
    classes: int
    seq_len: int
    d: int = 64
    layers: int = 2
    n: int = 4  # latent updates per round
    T: int = 2  # rounds per supervision step (first T-1 without gradient)
    N_sup: int = 8  # supervision steps (training); default inference cap
    mixer: Mixer = "mlp"  # "mlp": sequence-MLP (small fixed grids); "attn": self-attention; "conv": 3x3 grid conv
    heads: int = 4
    expansion: float = 2.0  # channel MLP width factor
    seq_expansion: float = 2.0  # sequence MLP width factor (mixer="mlp")
    prefix: int = 1  # learned prefix tokens; the halting head reads position 0
    loss: LossKind = "softmax"
    kind: str = field(default="trm")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TRMConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------------------- #
# building blocks


def rms_norm(h: Tensor, eps: float = 1e-5) -> Tensor:
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


class SwiGLU(nn.Module):
    """(..., dim) -> (..., dim) through a gated hidden layer of width ``hidden``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        g, u = self.gate_up(h).chunk(2, dim=-1)
        out: torch.Tensor = self.down(F.silu(g) * u)
        return out


class SequenceMLP(nn.Module):
    """Mixes across positions: (B, L, D) -> transpose (B, D, L) -> SwiGLU over L -> back."""

    def __init__(self, length: int, expansion: float) -> None:
        super().__init__()
        self.mlp = SwiGLU(length, max(8, int(length * expansion)))

    def forward(self, h: Tensor) -> Tensor:
        out: torch.Tensor = self.mlp(h.transpose(1, 2)).transpose(1, 2)  # (B, L, D)
        return out


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention; positions come from the learned embedding."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        B, L, D = h.shape
        q, k, v = self.qkv(h).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, Dh)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh)
        out: torch.Tensor = self.out(a.transpose(1, 2).reshape(B, L, D))
        return out


class GridConv(nn.Module):
    """Mixes each cell with its 8 neighbours, for a square grid of any side: the cells
    (B, P + s*s, D) -> (B, D, s, s) -> depthwise 3x3 conv -> back; the prefix tokens read the
    mean of the cells. No positions: the same weights run every side and placement (a frame
    model's sub-frames, a grid anywhere in it), and information moves one cell per block, so
    recursion depth is what carries it across a grid."""

    def __init__(self, d: int, prefix: int) -> None:
        super().__init__()
        self.prefix = prefix
        self.conv = nn.Conv2d(d, d, 3, padding=1, groups=d, bias=False)
        self.pool = nn.Linear(d, d, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        B, L, D = h.shape
        P = self.prefix
        side = math.isqrt(L - P)
        cells = h[:, P:].transpose(1, 2).reshape(B, D, side, side)  # (B, D, s, s)
        mixed = self.conv(cells).reshape(B, D, side * side).transpose(1, 2)  # (B, s*s, D)
        pre = self.pool(h[:, P:].mean(1, keepdim=True)).expand(B, P, D)  # (B, P, D)
        return torch.cat([pre, mixed], 1)  # (B, L, D)


class Block(nn.Module):
    """Post-norm block: h = norm(h + mix(h)); h = norm(h + mlp(h))."""

    def __init__(self, cfg: TRMConfig, length: int) -> None:
        super().__init__()
        self.mix: nn.Module
        if cfg.mixer == "mlp":
            self.mix = SequenceMLP(length, cfg.seq_expansion)
        elif cfg.mixer == "conv":
            if math.isqrt(cfg.seq_len) ** 2 != cfg.seq_len:
                raise ValueError(f"a conv TRM reads a square grid; seq_len {cfg.seq_len} is not a square")
            self.mix = GridConv(cfg.d, cfg.prefix)
        else:
            self.mix = SelfAttention(cfg.d, cfg.heads)
        self.mlp = SwiGLU(cfg.d, int(cfg.d * cfg.expansion))

    def forward(self, h: Tensor) -> Tensor:
        h = rms_norm(h + self.mix(h))
        return rms_norm(h + self.mlp(h))


class Net(nn.Module):
    """The one tiny network: net(state, injection) = blocks(state + injection)."""

    def __init__(self, cfg: TRMConfig, length: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg, length) for _ in range(cfg.layers))

    def forward(self, state: Tensor, injection: Tensor) -> Tensor:
        h = state + injection  # (B, L, D)
        for blk in self.blocks:
            h = blk(h)
        return h


# --------------------------------------------------------------------------------------- #
# the interface shared with HRM


@dataclass
class StepOut:
    """One supervision step's result: the new (detached) state, answer logits (B, S, C),
    the halting logit (B,) and model-specific extras (HRM's Q values)."""

    state: tuple[Tensor, ...]
    logits: Tensor
    halt: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)


class RecursiveModel(Protocol):
    """What TRM and HRM both offer to the trainer, the inference loop and the workers."""

    cfg: Any

    def embed(self, tokens: Tensor) -> Tensor: ...
    def init_state(self, batch: int) -> tuple[Tensor, ...]: ...
    def step(self, x: Tensor, state: tuple[Tensor, ...]) -> StepOut: ...
    def loss(self, out: StepOut, labels: Tensor, x: Tensor, steps: Tensor) -> tuple[Tensor, dict[str, Tensor]]: ...
    def should_halt(self, out: StepOut) -> Tensor: ...
    def confidence(self, out: StepOut) -> Tensor: ...


# --------------------------------------------------------------------------------------- #
# losses


def stablemax_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy under stable-max, s(x) = x + 1 (x >= 0) or 1 / (1 - x) (x < 0), which
    avoids the softmax collapse seen when small data is fit for long. (N, C), (N,) -> (N,)."""
    logits = logits.double()
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - logits.clamp(max=0)))
    logp = torch.log(s / s.sum(-1, keepdim=True))
    return -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).float()


IGNORE = -100
"""Label of a cell outside the grid (a frame's padding): no loss, and not part of "the whole
answer is correct"."""


def cell_loss(logits: Tensor, labels: Tensor, kind: LossKind) -> Tensor:
    """Mean cross-entropy over the cells whose label is not IGNORE, per row: (B, S, C), (B, S) -> (B,)."""
    B, S, C = logits.shape
    keep = labels != IGNORE  # (B, S)
    flat, lab = logits.reshape(B * S, C), labels.clamp(min=0).reshape(B * S)
    ce = stablemax_cross_entropy(flat, lab) if kind == "stablemax" else F.cross_entropy(flat, lab, reduction="none")
    return (ce.view(B, S) * keep).sum(-1) / keep.sum(-1).clamp(min=1)


def all_correct(logits: Tensor, labels: Tensor) -> Tensor:
    """(B,) float: 1 where every cell not labelled IGNORE is predicted right."""
    return ((logits.argmax(-1) == labels) | (labels == IGNORE)).all(-1).float()


# --------------------------------------------------------------------------------------- #
# the model


class TRM(nn.Module):
    """Tiny Recursive Model over a fixed-length grid of tokens."""

    y0: Tensor  # (D,) initial answer state (a fixed buffer)
    z0: Tensor  # (D,) initial latent state

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        L = cfg.prefix + cfg.seq_len
        self.tok = nn.Embedding(cfg.vocab, cfg.d)
        self.pos = nn.Parameter(torch.randn(L, cfg.d) * 0.02)
        self.prefix = nn.Parameter(torch.randn(max(cfg.prefix, 1), cfg.d) * 0.02)
        self.net = Net(cfg, L)
        self.out_head = nn.Linear(cfg.d, cfg.classes, bias=False)
        self.halt_head = nn.Linear(cfg.d, 1)
        with torch.no_grad():
            self.halt_head.weight.zero_()
            self.halt_head.bias.fill_(-5.0)  # start out "not done"
        # fixed initial states, as in the reference code (buffers: saved, not trained)
        self.register_buffer("y0", torch.randn(cfg.d), persistent=True)
        self.register_buffer("z0", torch.randn(cfg.d), persistent=True)

    # x: the input injection, computed once per batch
    def embed(self, tokens: Tensor) -> Tensor:
        B = tokens.shape[0]  # tokens: (B, S) ints in [0, vocab)
        cells = self.tok(tokens) * math.sqrt(self.cfg.d)  # (B, S, D)
        pre = self.prefix[: self.cfg.prefix].expand(B, -1, -1)  # (B, P, D)
        h = torch.cat([pre, cells], 1)  # (B, L, D)
        return h if self.cfg.mixer == "conv" else h + self.pos  # a conv TRM has no positions

    def init_state(self, batch: int) -> tuple[Tensor, Tensor]:
        L = self.cfg.prefix + self.cfg.seq_len
        y = self.y0.expand(batch, L, -1).clone()  # (B, L, D)
        z = self.z0.expand(batch, L, -1).clone()  # (B, L, D)
        return y, z

    def _round(self, x: Tensor, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        for _ in range(self.cfg.n):
            z = self.net(z, y + x)  # latent update (B, L, D)
        y = self.net(y, z)  # answer update (B, L, D)
        return y, z

    def step(self, x: Tensor, state: tuple[Tensor, ...]) -> StepOut:
        y, z = state
        with torch.no_grad():
            for _ in range(self.cfg.T - 1):
                y, z = self._round(x, y, z)
        y, z = self._round(x, y, z)  # the one round that gets gradients
        P = self.cfg.prefix
        logits = self.out_head(y[:, P:])  # (B, S, C)
        halt = self.halt_head(y[:, 0]).squeeze(-1)  # (B,)
        return StepOut((y.detach(), z.detach()), logits, halt)

    def loss(self, out: StepOut, labels: Tensor, x: Tensor, steps: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cells' cross-entropy plus BCE of the halting head against "whole answer correct"."""
        ce = cell_loss(out.logits, labels, self.cfg.loss)  # (B,)
        correct = all_correct(out.logits, labels)  # (B,)
        bce = F.binary_cross_entropy_with_logits(out.halt, correct)
        return ce.mean() + 0.5 * bce, {"ce": ce.mean().detach(), "halt_bce": bce.detach()}

    def confidence(self, out: StepOut) -> Tensor:
        """P(whole answer correct) by the halting head: (B,)."""
        return torch.sigmoid(out.halt)

    def should_halt(self, out: StepOut) -> Tensor:
        return out.halt > 0  # (B,) bool: the head thinks the answer is right


# --------------------------------------------------------------------------------------- #
# inference with per-row halting


@dataclass
class Inference:
    """Per row: predicted classes (B, S), confidence (B,) and supervision steps used (B,)."""

    pred: Tensor
    confidence: Tensor
    steps: Tensor


@torch.inference_mode()
def run_recursive(
    model: RecursiveModel,
    tokens: Tensor,
    max_steps: int | Tensor,
    *,
    halt: bool = True,
    calibrate: Callable[[Tensor], Tensor] | None = None,
    halt_threshold: float | None = None,
) -> Inference:
    """Run supervision steps until each row's halting head says stop (or its step cap); rows that halt leave the batch and answer from their halting step.
    ``max_steps`` is one cap for all rows or a (B,) tensor of caps. ``halt=False`` runs
    every row to its cap.

    ``calibrate`` maps the raw halting logits (b,) to the confidence reported (default: the
    model's own, ``sigmoid``); with ``halt_threshold`` a row halts once that confidence is
    >= the threshold instead of by the model's own rule (TRM: logit > 0; HRM: q_halt >
    q_continue). Both come from a checkpoint's calibration (workers.serving.calibration)."""
    B = tokens.shape[0]
    dev = tokens.device
    caps = max_steps.to(dev) if isinstance(max_steps, Tensor) else torch.full((B,), int(max_steps), device=dev)
    caps = caps.clamp(min=1)
    pred = torch.zeros(tokens.shape, dtype=torch.long, device=dev)  # (B, S)
    conf = torch.zeros(B, device=dev)
    steps = torch.zeros(B, dtype=torch.long, device=dev)
    live = torch.arange(B, device=dev)  # rows still running
    x = model.embed(tokens)  # (B, L, D)
    state = model.init_state(B)
    while live.numel():
        out = model.step(x, state)
        p = (calibrate(out.halt) if calibrate is not None else model.confidence(out)).float()  # (b,)
        steps[live] += 1
        done = steps[live] >= caps[live]
        if halt:
            done |= (p >= halt_threshold) if halt_threshold is not None else model.should_halt(out)
        idx = live[done]
        pred[idx] = out.logits[done].argmax(-1)
        conf[idx] = p[done]
        keep = ~done
        live, x = live[keep], x[keep]
        state = tuple(s[keep] for s in out.state)
    return Inference(pred, conf, steps)


# --------------------------------------------------------------------------------------- #
# EMA of weights (optional; short CPU runs do better without it)


class EMA:
    """Exponential moving average of a model's float parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v, 1 - self.decay)

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        sd = dict(model.state_dict())
        sd.update(self.shadow)
        return sd
