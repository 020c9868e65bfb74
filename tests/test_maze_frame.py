"""One maze model for every grid up to a frame: the grid families, the canonical label, the
frame encoding (padding, ring cropping, sub-frames), the strict exact check, the bundled frame
checkpoint answering rectangular ringless grids and declining larger ones, a fleet run
settling such grids at the trm tier, and the eval command's family flags."""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch

from orchestrator import Fleet, Task
from tinyfleet_core.errors import InputError
from workers.base import Job, Tier
from workers.builtin import maze_skill
from workers.kits import maze
from workers.kits import maze_families as mf
from workers.models.trm import IGNORE, TRM, TRMConfig, run_recursive
from workers.registry import SkillRegistry
from workers.serving.neural import (
    MAZE_PAD,
    TRMMazeWorker,
    available_frames,
    checkpoint_path,
    decode_maze,
    dihedral,
    exact_path,
    frame_embed,
    frame_labels,
    frame_side,
    frame_state,
    frame_tokens,
    frame_view,
    load_checkpoint,
    maze_accepts,
    maze_decline,
    served_frames,
    sub_model,
)
from workers.training.data import FrameMazeData
from workers.training.evaluation import eval_command

torch.set_num_threads(1)

FRAMES = available_frames("maze.route", "trm")  # bundled, served or not
SERVED = served_frames("maze.route", "trm")
needs_frame = pytest.mark.skipif(not FRAMES, reason="no TRM maze frame checkpoint is bundled")
needs_served = pytest.mark.skipif(not SERVED, reason="the bundled frame checkpoint measures below the serving floor")


def _card() -> dict[str, Any]:
    return json.loads(checkpoint_path("maze.route", "trm", FRAMES[-1], frame=True).with_suffix(".json").read_text())


def _card_exact(family: str, rows: int, cols: int) -> float:
    """The card's held-out exact accuracy on that family and shape, as the workers serve it
    (calibrated halting) where the card has it, else halting on the head."""
    for row in _card()["takes"]["exact_by_family"]:
        if (row["family"], row["rows"], row["cols"]) == (family, rows, cols):
            return float(row.get("exact_calibrated", row["exact"]))
    raise AssertionError(f"the card has no {family} {rows}x{cols} row")


# ------------------------------------------------------------------------ families and labels


@pytest.mark.parametrize("family", mf.FAMILIES)
def test_every_family_gives_connected_grids_of_the_asked_shape(family: str) -> None:
    rng = random.Random(f"tests:families:{family}")
    for rows, cols in [(5, 5), (6, 9), (12, 7), (15, 15)]:
        for _ in range(5):
            g = mf.generate_family(family, rows, cols, rng)
            assert (len(g), len(g[0])) == (rows, cols)
            assert maze.check_path(g, maze.bfs_path(g)) is None  # S and G exist and are connected


def test_perfect_family_has_one_shortest_path_and_random_ones_have_many() -> None:
    rng = random.Random("tests:unique")
    for _ in range(10):
        g = mf.generate_family("perfect", 9, 12, rng)
        assert maze.canonical_path(g) == maze.bfs_path(g)  # a tree: only one path
    open_grid = maze.with_endpoints(["." * 6] * 6, (0, 0), (5, 5))
    assert maze.canonical_path(open_grid)[:6] == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]  # down first (up is off)


def test_the_label_is_a_function_of_the_grid_after_any_transform() -> None:
    rng = random.Random("tests:canonical")
    for _ in range(20):
        g = mf.generate_family("random", rng.randint(5, 12), rng.randint(5, 12), rng, density=0.1)
        for k in range(8):
            t = mf.transform(g, k)
            path = maze.canonical_path(t)
            assert maze.check_path(t, path) is None  # a shortest path of the transformed grid
            assert path == maze.canonical_path(list(t))  # and always the same one


def test_the_mixture_is_seeded_and_covers_families_and_sizes() -> None:
    a = [mf.mixture(random.Random(f"m{k}")) for k in range(200)]
    b = [mf.mixture(random.Random(f"m{k}")) for k in range(200)]
    assert a == b
    fams = Counter(f for f, _ in a)
    assert set(fams) == set(mf.FAMILIES)
    shapes = {(len(g), len(g[0])) for _, g in a}
    assert any(h != w for h, w in shapes) and min(min(s) for s in shapes) >= 5
    assert all(not isinstance(frame_view(g, 15), str) for _, g in a)  # every item fits a 15 frame


def test_bad_family_arguments_are_input_errors() -> None:
    with pytest.raises(InputError, match="family"):
        mf.generate_family("spiral", 7, 7, random.Random(0))
    with pytest.raises(InputError, match="rows and cols"):
        mf.generate_family("perfect", 3, 9, random.Random(0))


# ------------------------------------------------------------------------------- the frame


def test_frame_view_crops_a_ring_pads_the_rest_and_declines_what_does_not_fit() -> None:
    ringed = maze.generate(17, random.Random(1))
    seen, off = frame_view(ringed, 15)  # type: ignore[misc]
    assert (len(seen), len(seen[0]), off) == (15, 15, 1)
    rect = mf.generate_family("random", 6, 8, random.Random(2))
    if maze.check_path(rect, maze.bfs_path(rect)) is None and set(rect[0]) != {"#"}:
        seen, off = frame_view(rect, 15)  # type: ignore[misc]
        assert seen == rect and off == 0
    reason = frame_view(mf.generate_family("random", 16, 9, random.Random(3)), 15)
    assert isinstance(reason, str) and "16x9" in reason and "15x15" in reason
    tokens, labels = frame_tokens([rect], 15)[0].reshape(15, 15), frame_labels([rect], 15)[0].reshape(15, 15)
    assert (tokens[6:, :] == MAZE_PAD).all() and (tokens[:, 8:] == MAZE_PAD).all()
    assert (labels[6:, :] == IGNORE).all() and (labels[:6, :8] >= 0).all()
    assert labels[:6, :8].sum() == len(maze.canonical_path(rect))


def test_exact_counts_only_a_marked_set_that_is_itself_a_shortest_path() -> None:
    g = maze.with_endpoints(["." * 5] * 4, (0, 0), (0, 4))
    marks = np.zeros((4, 5), dtype=np.int64)
    for r, c in maze.canonical_path(g):
        marks[r, c] = 1
    assert exact_path(g, marks) == maze.canonical_path(g)
    superset = marks.copy()
    superset[1, 0] = superset[1, 1] = 1  # connected to the path: the lenient decoder still walks it
    assert decode_maze(g, superset) is not None and exact_path(g, superset) is None
    other = np.zeros_like(marks)
    for c in range(5):
        other[0, c] = 1
    assert exact_path(g, other) is not None  # another shortest path also counts (the verifier's rule)


def test_a_sub_frame_runs_exactly_like_the_frame_positions_it_covers() -> None:
    torch.manual_seed(0)
    model = TRM(TRMConfig(vocab=5, classes=2, seq_len=15 * 15, d=32, mixer="attn")).eval()
    grid = mf.generate_family("rooms", 7, 9, random.Random(4))
    side = frame_side(7, 9, 15)
    assert side == 10
    tokens = torch.from_numpy(frame_tokens([grid], side))
    sub = sub_model(model, 15, side)
    with torch.no_grad():
        a = model.step(frame_embed(model, tokens, 15, side), frame_state(model, 1, side))
        b = sub.step(sub.embed(tokens), sub.init_state(1))
    assert torch.allclose(a.logits, b.logits) and torch.allclose(a.halt, b.halt)
    assert run_recursive(sub, tokens, 2).pred.shape == (1, side * side)


def test_a_conv_trm_runs_any_side_with_one_set_of_weights_and_no_positions() -> None:
    torch.manual_seed(0)
    model = TRM(TRMConfig(vocab=5, classes=2, seq_len=15 * 15, d=16, n=1, mixer="conv")).eval()
    grid = mf.generate_family("random", 6, 6, random.Random(2))
    side = frame_side(6, 6, 15, "conv")
    assert side == 6
    tokens = torch.from_numpy(frame_tokens([grid], side))
    sub = sub_model(model, 15, side)
    with torch.no_grad():
        a = model.step(frame_embed(model, tokens, 15, side), frame_state(model, 1, side))
        b = sub.step(sub.embed(tokens), sub.init_state(1))
        model.pos.normal_()  # positions are not read: the same answer with any
        c = model.step(frame_embed(model, tokens, 15, side), frame_state(model, 1, side))
    assert torch.allclose(a.logits, b.logits) and torch.allclose(a.halt, b.halt)
    assert torch.allclose(a.logits, c.logits) and torch.allclose(a.halt, c.halt)
    assert run_recursive(sub, tokens, 2).pred.shape == (1, side * side)
    with pytest.raises(ValueError, match="square"):
        TRM(TRMConfig(vocab=5, classes=2, seq_len=50, mixer="conv"))


def test_frame_data_samples_per_sub_frame_with_padding_ignored() -> None:
    data = FrameMazeData(15, seed=0, pool=300)
    data.prepare()
    assert abs(sum(data.side_share().values()) - 1) < 1e-9
    for side in data.sides:
        if data.side_share()[side] == 0:
            continue
        xs, ys = data.sample_side(20, side)
        assert xs.shape == ys.shape == (20, side * side)
        assert ((xs == MAZE_PAD) == (ys == IGNORE)).all()  # the label ignores exactly the padding
    with pytest.raises(InputError, match="does not fit"):
        FrameMazeData(15, 0, family="random", rows=16, cols=9)


def test_dihedral_particles_map_rectangular_answers_back() -> None:
    g = mf.generate_family("random", 6, 11, random.Random(5), density=0.2)
    for particle in range(8):
        tf = dihedral(particle)
        seen = tf.apply(g)
        path = maze.canonical_path(seen)
        back = [tf.invert_cell(c, (len(g), len(g[0]))) for c in path]
        assert maze.check_path(g, back) is None


# ------------------------------------------------------------------ the bundled checkpoint


class _AnyFrameWorker(TRMMazeWorker):
    """The maze worker serving the bundled frame checkpoint whatever its card measured."""

    min_exact = 0.0


@pytest.fixture(scope="module")
def worker() -> TRMMazeWorker:
    w = _AnyFrameWorker()
    w.setup("cpu")
    return w


@needs_frame
def test_the_frame_checkpoint_is_small_and_its_card_says_what_it_takes() -> None:
    path = checkpoint_path("maze.route", "trm", FRAMES[-1], frame=True)
    assert path.stat().st_size < 2_000_000
    card = _card()
    takes = card["takes"]
    for key in ("frame", "grids", "families_seen", "sizes_seen", "exact_by_family", "items_per_s"):
        assert key in takes
    assert {"batch_1", "batch_256"} <= set(takes["items_per_s"])
    model, _ = load_checkpoint(path)
    assert model.cfg.seq_len == FRAMES[-1] ** 2 and model.cfg.vocab == 5


@needs_frame
def test_the_frame_model_answers_rectangular_ringless_grids(worker: TRMMazeWorker) -> None:
    rng = random.Random("tests:frame:rect")
    grids = [mf.generate_family("random", 6, 8, rng) for _ in range(100)]
    attempts = worker.solve_batch([Job(maze.MazeInput(grid=g)) for g in grids])
    assert all(a.error != "no trm checkpoint for 6x8 mazes" for a in attempts)
    assert all("frame" in a.info for a in attempts if a.output is not None)
    ok = sum(a.output is not None and maze.check_path(g, a.output["path"]) is None for g, a in zip(grids, attempts, strict=True))
    floor = _card_exact("random", 6, 8) - 0.05  # 100 grids: a few points of noise; any shortest path counts
    assert ok >= floor * len(grids), (ok, _card_exact("random", 6, 8))


@needs_frame
def test_particles_on_rectangular_grids_map_back_to_valid_paths(worker: TRMMazeWorker) -> None:
    rng = random.Random("tests:frame:particles")
    grids = [mf.generate_family("random", 5, 7, rng) for _ in range(12)]
    jobs = [Job(maze.MazeInput(grid=g), particle=p) for g in grids for p in range(8)]
    attempts = worker.solve_batch(jobs)
    answered = [(j, a) for j, a in zip(jobs, attempts, strict=True) if a.output is not None]
    assert answered
    for job, a in answered:  # every answer is a legal walk on the original grid, whatever its particle
        path = a.output["path"]  # type: ignore[index]
        grid = job.input.grid  # type: ignore[attr-defined]
        assert all(grid[r][c] != "#" for r, c in path)
        assert tuple(path[0]) == maze.find_cell(grid, "S") and tuple(path[-1]) == maze.find_cell(grid, "G")


@needs_frame
def test_grids_larger_than_the_frame_are_declined_with_a_reason(worker: TRMMazeWorker) -> None:
    big = mf.generate_family("random", 16, 9, random.Random(6))
    (a,) = worker.solve_batch([Job(maze.MazeInput(grid=big))])
    assert a.output is None and "16x9" in (a.error or "") and "frame" in (a.error or "")
    assert maze_decline(big) is not None and not maze_accepts()(maze.MazeInput(grid=big))
    if SERVED:
        assert maze_decline(mf.generate_family("random", 9, 14, random.Random(7))) is None


def _frame_registry() -> SkillRegistry:
    """The maze skill with its trm tier taking what the frame model reads (maze_accepts)."""
    skill = maze_skill()
    skill.ladder = [
        Tier(t.name, t.worker, t.kind, t.pool, maze_accepts("trm")) if t.name == "trm" else t for t in skill.ladder
    ]
    return SkillRegistry([skill])


@needs_served
async def test_a_fleet_settles_most_small_rectangular_random_grids_at_the_trm_tier() -> None:
    """One task of 60 rectangular random grids of mixed shapes (one step per grid, as
    ``tinyfleet run`` plans an ``items`` task): every route verified, and the share settled at
    the trm tier within a few points of what the card measures on such grids."""
    rng = random.Random("tests:frame:fleet")
    grids = [mf.generate_family("random", rng.randint(5, 8), rng.randint(5, 8), rng) for _ in range(60)]
    async with Fleet(registry=_frame_registry(), executor="local") as fleet:
        report = await fleet.run(Task(skill="maze.route", inputs={"items": [{"grid": g} for g in grids]}))
    assert report.status == "succeeded" and len(report.steps) == len(grids)
    for g, out in zip(grids, report.output, strict=True):  # type: ignore[arg-type]
        assert maze.check_path(g, out["path"]) is None  # every route verified
    at_trm = sum(st.tier == "trm" for st in report.steps)
    card = min(_card_exact("random", 5, 5), _card_exact("random", 6, 8))
    assert at_trm >= (card - 0.1) * len(grids), (at_trm, card)


# ------------------------------------------------------------------------- the eval flags


@needs_frame
def test_eval_reports_exact_accuracy_per_family_and_shape(capsys: pytest.CaptureFixture[str]) -> None:
    base: dict[str, Any] = dict(skill="maze.route", model="trm", n=30, seed=3, checkpoint=None, json=True, halt=True, frame=None)
    assert eval_command(argparse.Namespace(**base, family="random", rows=6, cols=8, size=None)) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["family"], r["rows"], r["cols"], r["frame"], r["n"]) == ("random", 6, 8, FRAMES[-1], 30)
    assert 0.0 <= r["exact"] <= 1.0 and r["checkpoint"].endswith(f"-f{FRAMES[-1]}.safetensors")
    assert eval_command(argparse.Namespace(**base, family="perfect", rows=None, cols=None, size=7)) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["family"], r["rows"], r["cols"]) == ("perfect", 7, 7)
    with pytest.raises(InputError, match="fit"):
        eval_command(argparse.Namespace(**base, family="random", rows=20, cols=8, size=None))
    with pytest.raises(InputError, match="--family"):
        eval_command(argparse.Namespace(**{**base, "frame": None}, family=None, rows=6, cols=8, size=None))
