"""Training and evaluation: data streams are valid and split by seed, a few seconds of
training lower the loss, the train and eval commands write and read real checkpoints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator import InputError
from workers.kits import maze, sudoku
from workers.serving.neural import crop_border, load_checkpoint, maze_labels
from workers.training.trainer import (
    DeepSupervision,
    MazeData,
    Recipe,
    SudokuData,
    _lr_at,
    _make_model,
    eval_command,
    evaluate,
    split_overrides,
    train,
    train_command,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("n", [4, 6])
def test_augmented_sudoku_samples_are_valid_puzzles_with_their_solutions(n: int) -> None:
    data = SudokuData(n, seed=0, pool=30)
    xs, ys = data.sample(50)
    assert xs.shape == ys.shape == (50, n * n)
    for x, y in zip(xs, ys):
        puzzle = x.reshape(n, n).tolist()
        solution = (y + 1).reshape(n, n).tolist()
        assert sudoku.check_solution(puzzle, solution) is None
    assert len({tuple(x) for x in xs.tolist()}) > 30  # augmentation makes 30 puzzles into many


def test_maze_samples_label_the_shortest_path_inside_the_border() -> None:
    data = MazeData(9, seed=0, pool=20)
    xs, ys = data.sample(200)
    assert xs.shape == ys.shape == (200, 49)  # the 7x7 interior: the wall ring is cropped
    assert set(np.unique(xs.numpy())) <= {0, 1, 2, 3} and (xs == 2).sum(1).tolist() == [1] * 200
    for x, y in zip(xs.tolist(), ys.tolist()):  # symmetries keep the label the shortest path
        inner = ["".join("#.SG"[v] for v in x[r * 7 : (r + 1) * 7]) for r in range(7)]
        assert maze_labels([inner])[0].tolist() == y
    assert 100 < len({tuple(x) for x in xs.tolist()}) <= 160  # 20 mazes x 8 symmetries
    grids = data.items(4, "valid", 0)
    tokens = data.encode(grids)
    labels = np.stack([maze_labels([crop_border(g)])[0] for g in grids])  # type: ignore[list-item]
    assert data.correct(grids, labels) == [True] * 4  # the true labels decode into shortest paths
    assert data.correct(grids, np.zeros_like(tokens)) == [False] * 4
    with pytest.raises(InputError):
        MazeData(10, seed=0)


def test_splits_never_share_puzzles() -> None:
    data = SudokuData(6, seed=0, pool=200)
    train_set = {tuple(p) for p in data.pool()[0].tolist()}
    for split in ("valid", "eval"):
        held = {tuple(v for row in p for v in row) for p, _ in data.items(100, split, 0)}
        assert not held & train_set
    assert data.items(3, "eval", 1) != data.items(3, "eval", 2)


def test_a_few_seconds_of_training_lower_the_loss() -> None:
    torch.manual_seed(0)
    data = SudokuData(4, seed=0, pool=300)
    model = _make_model("trm", data, {"d": 32, "n": 2, "T": 2, "N_sup": 4})
    trainer = DeepSupervision(model, data, Recipe(batch=48, warmup=10, lr=3e-3), seed=0, device="cpu")
    losses = [float(trainer.step()["loss"]) for _ in range(40)]
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])


def test_hrm_trains_through_the_same_loop() -> None:
    torch.manual_seed(0)
    data = SudokuData(4, seed=0, pool=300)
    model = _make_model("hrm", data, {"d": 32, "N": 2, "T": 1, "N_sup": 4})
    trainer = DeepSupervision(model, data, Recipe(batch=48, warmup=10, lr=3e-3), seed=0, device="cpu")
    losses = [float(trainer.step()["loss"]) for _ in range(30)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_train_and_eval_commands_write_and_read_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(skill="sudoku.solve", model="trm", size=4, minutes=0.04, seed=3, out=str(tmp_path), resume=None, eval_n=20)
    assert train_command(args) == 0
    ckpt = tmp_path / "sudoku.solve-trm-4.safetensors"
    card = json.loads(ckpt.with_suffix(".json").read_text())
    for key in ("config", "recipe", "seed", "steps", "wall_s", "hardware", "eval", "date"):
        assert key in card
    assert card["seed"] == 3 and card["steps"] > 0
    model, _ = load_checkpoint(ckpt)
    assert model.cfg.seq_len == 16
    capsys.readouterr()
    ev = argparse.Namespace(skill="sudoku.solve", model="trm", size=4, n=20, seed=7, out=str(tmp_path), json=True, halt=True)
    assert eval_command(ev) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("exact", "confident_exact", "confident_share", "mean_steps", "items_per_s"):
        assert key in r
    assert r["n"] == 20 and 0.0 <= r["exact"] <= 1.0
    # the CLI's shape: --model omitted (trm), --checkpoint names the file, the card gives the size
    cli = argparse.Namespace(skill="sudoku.solve", model=None, size=None, n=10, seed=7, checkpoint=str(ckpt), json=True, halt=False)
    assert eval_command(cli) == 0
    r2 = json.loads(capsys.readouterr().out)
    assert r2["size"] == 4 and r2["mean_steps"] == card["config"]["N_sup"]
    # resume continues the step count and the wall clock
    card2 = train("sudoku.solve", "trm", 4, 0.02, 3, tmp_path, resume=ckpt, final_eval_n=10)
    assert card2["steps"] > card["steps"] and card2["wall_s"] > card["wall_s"]


def test_bad_arguments_are_input_errors() -> None:
    with pytest.raises(InputError, match="--skill"):
        train_command(argparse.Namespace(skill="code.function", model="trm", size=4, minutes=1, seed=0, out=None, resume=None))
    with pytest.raises(InputError, match="--model"):
        train_command(argparse.Namespace(skill="sudoku.solve", model="gpt", size=4, minutes=1, seed=0, out=None, resume=None))
    with pytest.raises(InputError, match="sudoku size"):
        train("sudoku.solve", "trm", 5, 0.01)


def test_evaluate_uses_the_kit_checker() -> None:
    data = MazeData(7, seed=0)
    model = _make_model("trm", data, {"d": 16, "n": 1, "T": 1, "N_sup": 2})
    r = evaluate(model, data, 8, seed=0, halt=False)
    assert r["mean_steps"] == 2.0 and r["n"] == 8
    grids = data.items(8, "eval", 0)
    assert all(maze.check_path(g, maze.bfs_path(g)) is None for g in grids)


def test_the_pool_is_the_same_for_any_worker_count_and_comes_back_from_the_cache(tmp_path: Path) -> None:
    serial = SudokuData(4, seed=5, pool=1100).pool(workers=1)  # three chunks
    parallel = SudokuData(4, seed=5, pool=1100).pool(workers=2, cache=tmp_path)
    assert all((a == b).all() for a, b in zip(serial, parallel, strict=True))
    [cached] = tmp_path.iterdir()
    assert cached.name == "sudoku.solve-4-seed5-n1100.npz"
    again = SudokuData(4, seed=5, pool=1100)
    again.prepare("cpu", cache=tmp_path)
    assert all((a == b).all() for a, b in zip(serial, again.pool(), strict=True))
    assert not (SudokuData(4, seed=6, pool=1100).pool()[0] == serial[0]).all()  # another seed, another pool


def test_set_overrides_reach_the_model_and_the_recipe(tmp_path: Path) -> None:
    assert split_overrides(["d=24", "lr=5e-4", "mixer=attn", "amp=true"]) == {"d": 24, "lr": 5e-4, "mixer": "attn", "amp": True}
    with pytest.raises(InputError, match="KEY=VALUE"):
        split_overrides(["d"])
    card = train("sudoku.solve", "trm", 4, 0.01, 0, tmp_path, overrides={"d": 24, "n": 1, "batch": 16, "pool": 60, "warmup": 5},
                 final_eval_n=5)
    assert card["config"]["d"] == 24 and card["config"]["n"] == 1
    assert card["recipe"]["batch"] == 16 and card["recipe"]["pool"] == 60
    with pytest.raises(InputError, match="unknown trm setting.*'width'"):
        train("sudoku.solve", "trm", 4, 0.01, 0, tmp_path, overrides={"width": 24, "pool": 60})


def test_learning_rate_warms_up_then_decays_by_cosine_to_its_floor() -> None:
    r = Recipe(lr=1e-3, warmup=10, min_lr=0.1)
    assert _lr_at(0, r, 0.0) == pytest.approx(1e-4)
    assert _lr_at(50, r, 0.0) == pytest.approx(1e-3)
    assert _lr_at(50, r, 0.5) == pytest.approx(0.55e-3)
    assert _lr_at(50, r, 1.0) == pytest.approx(1e-4)
    assert _lr_at(50, Recipe(lr=1e-3, warmup=10), 0.9) == pytest.approx(1e-3)  # min_lr 1.0: constant


def test_train_without_out_writes_to_a_user_directory_not_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers.serving.neural import CHECKPOINT_DIR

    monkeypatch.chdir(tmp_path)
    bundled = {p.name: p.stat().st_mtime_ns for p in CHECKPOINT_DIR.iterdir()}
    args = argparse.Namespace(skill="sudoku.solve", model="trm", size=4, minutes=0.01, seed=1, out=None, resume=None, eval_n=8)
    assert train_command(args) == 0
    written = tmp_path / "checkpoints" / "sudoku.solve-trm-4.safetensors"
    assert written.exists() and written.with_suffix(".json").exists()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint"] == str(Path("checkpoints") / written.name)
    assert {p.name: p.stat().st_mtime_ns for p in CHECKPOINT_DIR.iterdir()} == bundled  # nothing bundled changed


def test_train_help_states_where_checkpoints_go() -> None:
    from tinyfleet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["train"].format_help()
    assert "./checkpoints" in text and "--out names it" in " ".join(text.split())
    assert "--frame" in text and "--report-n" in text
    assert "--family" in sub.choices["eval"].format_help()


def test_a_frame_model_trains_on_sub_frames_and_writes_a_card_saying_what_it_takes(tmp_path: Path) -> None:
    from workers.serving.neural import checkpoint_path

    card = train("maze.route", "trm", 9, 0.03, 2, tmp_path, frame=9, final_eval_n=8, report_n=4,
                 overrides={"pool": 400, "d": 32})
    path = checkpoint_path("maze.route", "trm", 9, tmp_path, frame=True)
    assert path.name == "maze.route-trm-f9.safetensors" and path.exists()
    takes = card["takes"]
    assert card["frame"] == takes["frame"] == 9 and card["config"]["seq_len"] == 81 and card["config"]["vocab"] == 5
    shapes = {(r["family"], r["rows"], r["cols"]) for r in takes["exact_by_family"]}
    assert ("perfect", 11, 11) in shapes and ("random", 6, 8) in shapes  # a ringed 11x11 fits a 9 frame
    assert ("perfect", 15, 15) not in shapes  # larger than the frame: not reported
    assert {"batch_1", "batch_256"} <= set(takes["items_per_s"])


def test_the_hard_sudoku_band_is_mixed_into_training_and_measured_by_eval(capsys: pytest.CaptureFixture[str]) -> None:
    def clues(tokens: np.ndarray) -> np.ndarray:
        return (tokens > 0).sum(1)

    plain, mixed = SudokuData(9, seed=0, pool=40), SudokuData(9, seed=0, pool=40, hard=0.5)
    easy, hard = clues(plain.pool()[0]), clues(mixed.pool()[0])
    assert easy.min() >= 30 and (hard <= 29).sum() >= 8 and (hard >= 30).sum() >= 8  # both bands in the mix
    assert mixed.tag != plain.tag  # a cached pool of one is never read as the other
    band = SudokuData(9, seed=0, givens=(22, 29)).items(6, "eval", 1)
    assert all(22 <= sum(v > 0 for row in p for v in row) <= 29 for p, _ in band)
    with pytest.raises(InputError, match="hard share"):
        SudokuData(4, seed=0, hard=0.5)
    with pytest.raises(InputError, match="givens"):
        SudokuData(9, seed=0, givens=(40, 30))
    ev = argparse.Namespace(skill="sudoku.solve", model="trm", size=9, n=4, seed=2, checkpoint=None, json=True, halt=True, givens="22-29")
    assert eval_command(ev) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["givens"] == "22-29" and r["n"] == 4
    with pytest.raises(InputError, match="LO-HI"):
        eval_command(argparse.Namespace(**{**vars(ev), "givens": "hard"}))
