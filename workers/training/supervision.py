"""Deep supervision over a carried batch (:class:`DeepSupervision`), one carried batch per
sub-frame side for frame models (:class:`FrameSupervision`), the learning-rate schedule and the
2-D position prior of a frame model. Tensor shapes in comments: B rows, S cells, L = S plus
the model's prefix, D the width."""

from __future__ import annotations

import math

import torch

from workers.models.hrm import HRM
from workers.models.trm import EMA, IGNORE, TRM
from workers.serving.neural import frame_embed, frame_state
from workers.training.data import FrameMazeData, TaskData
from workers.training.recipes import Recipe

__all__ = ["DeepSupervision", "FrameSupervision", "grid_positions", "lr_at"]


@torch.no_grad()
def grid_positions(model: TRM | HRM, frame: int, seed: int) -> None:
    """Start a frame model's learned positions as row + column embeddings (a 2-D prior: cells
    in one row or column start alike), still trained freely afterwards. The prefix keeps its own."""
    g = torch.Generator().manual_seed(seed)
    d = model.pos.shape[1]
    rows, cols = torch.randn(frame, d, generator=g) * 0.02, torch.randn(frame, d, generator=g) * 0.02
    grid = (rows[:, None, :] + cols[None, :, :]).reshape(frame * frame, d)  # (F*F, D)
    model.pos[-frame * frame :] = grid.to(model.pos.device)


def lr_at(step: int, recipe: Recipe, frac: float) -> float:
    """Linear warm-up over ``recipe.warmup`` steps, then cosine from lr to lr * min_lr as
    ``frac`` (the share of the run's wall time spent) goes from 0 to 1."""
    warm = min(1.0, (step + 1) / recipe.warmup)
    cos = 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))
    return recipe.lr * warm * (recipe.min_lr + (1 - recipe.min_lr) * cos)


class DeepSupervision:
    """One optimizer step per supervision step over a carried batch: rows keep their
    detached state between steps; a row that halts (head says so after its minimum depth,
    or ``N_sup`` steps) is replaced by a fresh example with a fresh state. Everything stays
    on the device: no host sync per step (metrics come back as tensors)."""

    def __init__(
        self, model: TRM | HRM, data: TaskData, recipe: Recipe, seed: int, device: str, *,
        side: int | None = None, batch: int | None = None, opt: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model, self.data, self.recipe, self.device = model, data, recipe, device
        self.opt = opt or torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
        self.ema = EMA(model, recipe.ema) if recipe.ema > 0 else None
        self.amp = recipe.amp
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.side = side  # a frame model's sub-frame side: rows are grids that fit side x side
        B = batch or recipe.batch
        self.xs, self.ys = self._sample(B)  # (B, S) each, on the device
        self.state: tuple[torch.Tensor, ...] = self._init(B)
        self.steps = torch.zeros(B, dtype=torch.long, device=device)  # supervision steps done per row
        self.min_halt = torch.ones(B, dtype=torch.long, device=device)
        self.n = 0  # optimizer steps taken
        self.progress = 0.0  # share of the run's wall time spent: drives the lr decay

    def _sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.side is None:
            return self.data.sample(k)
        assert isinstance(self.data, FrameMazeData)
        return self.data.sample_side(k, self.side)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.side is None:
            return self.model.embed(tokens)
        assert isinstance(self.model, TRM) and isinstance(self.data, FrameMazeData)
        return frame_embed(self.model, tokens, self.data.frame, self.side)

    def _init(self, k: int) -> tuple[torch.Tensor, ...]:
        if self.side is None:
            return self.model.init_state(k)
        assert isinstance(self.model, TRM)
        return frame_state(self.model, k, self.side)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.ema.state_dict(self.model) if self.ema else dict(self.model.state_dict())

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def step(self) -> dict[str, torch.Tensor]:
        """One supervision step and one optimizer step; returns loss, token and exact
        accuracy as 0-d tensors (read them with ``float``)."""
        model, recipe, N_sup = self.model, self.recipe, self.model.cfg.N_sup
        self.set_lr(lr_at(self.n, recipe, self.progress))
        self.n += 1
        with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.amp):
            x = self._embed(self.xs)  # (B, L, D), re-embedded: the embedding is trained too
            o = model.step(x, self.state)
            self.steps += 1
            loss, _ = model.loss(o, self.ys, x, self.steps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        self.opt.step()
        if self.ema:
            self.ema.update(model)
        with torch.no_grad():
            valid = self.ys != IGNORE  # (B, S): frame padding is no cell
            hit = (o.logits.argmax(-1) == self.ys) | ~valid  # (B, S)
            halted = (self.steps >= N_sup) | (model.should_halt(o) & (self.steps >= self.min_halt))
            self._replace(halted, o.state)
        tok = (hit & valid).sum() / valid.sum().clamp(min=1)
        return {"loss": loss.detach().float(), "tok": tok.float(), "exact": hit.all(-1).float().mean()}

    def _replace(self, halted: torch.Tensor, state: tuple[torch.Tensor, ...]) -> None:
        """Rows where ``halted`` (B,) start over on a fresh example, without a host sync."""
        B = halted.numel()
        nx, ny = self._sample(B)
        rows = halted[:, None]  # (B, 1)
        self.xs, self.ys = torch.where(rows, nx, self.xs), torch.where(rows, ny, self.ys)
        fresh = self._init(B)
        self.state = tuple(torch.where(rows[:, :, None], f, s.float()) for f, s in zip(fresh, state, strict=True))
        self.steps = torch.where(halted, 0, self.steps)
        explore = torch.rand(B, generator=self.gen, device=self.device) < self.recipe.explore
        mins = torch.randint(2, self.model.cfg.N_sup + 1, (B,), generator=self.gen, device=self.device)
        self.min_halt = torch.where(halted, torch.where(explore, mins, 1), self.min_halt)


class FrameSupervision:
    """Deep supervision for an attention frame model: one carried batch per sub-frame side
    (grids that fit side x side run there, the frame's positions), one shared optimizer, the
    sides taken in turn. A side's batch is ``recipe.batch * (frame / side) ** 2`` rows (at most
    4x), so every optimizer step costs about the same."""

    def __init__(self, model: TRM, data: FrameMazeData, recipe: Recipe, seed: int, device: str) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
        F, B = data.frame, recipe.batch
        share = data.side_share()
        self.parts = [
            DeepSupervision(model, data, recipe, seed + k, device, side=side, opt=opt,
                            batch=int(min(4 * B, B * (F / side) ** 2)))
            for k, side in enumerate(data.sides) if share.get(side, 0.0) > 0
        ]
        self.ema = self.parts[0].ema
        self.n, self.progress = 0, 0.0

    def weights(self) -> dict[str, torch.Tensor]:
        return self.parts[0].weights()

    def step(self) -> dict[str, torch.Tensor]:
        part = self.parts[self.n % len(self.parts)]
        part.n, part.progress = self.n, self.progress  # one lr schedule over all sides
        self.n += 1
        return part.step()
