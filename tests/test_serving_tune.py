"""Serving near the limit (issue 23, part 2): a model card's "serving" block (the measured best
batch) is read and checked, the workers run a handed batch in chunks of it with the same
answers as one big batch, the tuning command writes the block on a copy of a checkpoint without
touching anything else, and the serving benchmark's tiny mode runs."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tinyfleet_core.errors import ConfigError
from workers.base import Job
from workers.kits import maze, sudoku
from workers.serving import neural
from workers.serving.neural import HRMMazeWorker, TRMSudokuWorker, checkpoint_path
from workers.serving.serving_tune import ServingProfile, chunk_spans

torch.set_num_threads(1)


def copy_checkpoint(tmp: Path, skill: str, model: str, size: int, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
    src = checkpoint_path(skill, model, size)
    dst = tmp / src.name
    shutil.copy(src, dst)
    card = json.loads(src.with_suffix(".json").read_text())
    dst.with_suffix(".json").write_text(json.dumps(edit(card), indent=2, sort_keys=True) + "\n")
    return dst


def with_batch(best: object) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda card: card | {"serving": {"best_batch": best, "at_best": 1.0}}


def worker(cls: type, tmp: Path, **kw: Any) -> Any:
    w = cls(learned_dir=tmp / "learned", **kw)
    w.checkpoint_dir = tmp
    w.setup("cpu")
    return w


# --------------------------------------------------------------------------------------- #
# the block


def test_chunk_spans_cover_every_row_once_in_order() -> None:
    assert chunk_spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_spans(10, None) == [(0, 10)] == chunk_spans(10, 16)
    assert chunk_spans(0, 4) == []
    for n in (1, 7, 256):
        for b in (1, 3, 16, 300):
            spans = chunk_spans(n, b)
            assert [i for a, z in spans for i in range(a, z)] == list(range(n))
            assert all(z - a <= b for a, z in spans)


def test_a_serving_block_round_trips_and_keeps_what_was_measured() -> None:
    block = {"best_batch": 16, "at_batch_1": 95.0, "at_best": 106.0, "at_256": 60.0, "items_per_cpu_s": {"1": 95.0, "16": 106.0},
             "machine": {"cpus": 2}, "command": "python -m workers.training.tune_serving ..."}
    prof = ServingProfile.from_card({"serving": block})
    assert prof is not None and prof.best_batch == 16
    assert prof.to_dict() == block
    assert ServingProfile.from_card({"config": {}}) is None  # no block: served as before
    card = {"config": {"d": 64}, "eval": {"exact": 1.0}}
    assert prof.into_card(card) == card | {"serving": block} and "serving" not in card


@pytest.mark.parametrize(
    ("block", "says"),
    [
        ([16], "must be an object"),
        ({"at_best": 1.0}, "best_batch must be an integer"),
        ({"best_batch": 0}, "best_batch must be an integer in [1,"),
        ({"best_batch": 16.5}, "best_batch must be an integer"),
        ({"best_batch": True}, "best_batch must be an integer"),
        ({"best_batch": 16, "at_best": "fast"}, "at_best must be a non-negative number"),
        ({"best_batch": 16, "items_per_cpu_s": {"sixteen": 1.0}}, "items_per_cpu_s must map batch sizes"),
    ],
)
def test_a_bad_block_is_one_clear_config_error(block: object, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        ServingProfile.from_card({"serving": block}, "model card x.json")
    assert says in str(e.value) and "model card x.json 'serving'" in str(e.value)
    assert "workers.training.tune_serving" in str(e.value)  # and what to do


def test_a_worker_reads_the_block_and_a_bad_one_fails_at_setup_naming_the_file(tmp_path: Path) -> None:
    copy_checkpoint(tmp_path, "sudoku.solve", "trm", 4, with_batch(3))
    assert worker(TRMSudokuWorker, tmp_path).serving[4].best_batch == 3
    copy_checkpoint(tmp_path, "sudoku.solve", "trm", 4, with_batch("big"))
    with pytest.raises(ConfigError, match=r"sudoku\.solve-trm-4\.json 'serving'\.best_batch must be an integer"):
        worker(TRMSudokuWorker, tmp_path)
    copy_checkpoint(tmp_path, "sudoku.solve", "trm", 4, lambda c: {k: v for k, v in c.items() if k != "serving"})
    assert worker(TRMSudokuWorker, tmp_path).serving[4] is None  # a card without it: one pass, as before


# --------------------------------------------------------------------------------------- #
# chunking


def _same(a: list[Any], b: list[Any]) -> None:
    assert [x.output for x in a] == [y.output for y in b]
    assert [x.cost.recursion_steps for x in a] == [y.cost.recursion_steps for y in b]
    np.testing.assert_allclose([x.confidence for x in a], [y.confidence for y in b], rtol=1e-4, atol=1e-6)


def test_chunked_sudoku_gives_the_answers_of_one_big_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_checkpoint(tmp_path, "sudoku.solve", "trm", 4, with_batch(3))  # 3: chunks that do not divide the batch
    rng = random.Random("tests:serving:sudoku")
    jobs = [Job(sudoku.SudokuInput(puzzle=sudoku.generate(4, rng, 6)[0]), particle=k % 3) for k in range(20)]
    chunked, whole = worker(TRMSudokuWorker, tmp_path), worker(TRMSudokuWorker, tmp_path, use_serving=False)
    calls: list[int] = []
    run_rows = neural.run_rows

    def counting(model: Any, tokens: torch.Tensor, caps: torch.Tensor, cal: Any) -> Any:
        calls.append(len(tokens))  # a spy: the real forward pass runs
        return run_rows(model, tokens, caps, cal)

    monkeypatch.setattr(neural, "run_rows", counting)
    got = chunked.solve_batch(jobs)
    assert calls == [3, 3, 3, 3, 3, 3, 2]  # 20 rows in chunks of the card's best batch
    calls.clear()
    want = whole.solve_batch(jobs)
    assert calls == [20]  # use_serving=False: one pass, as before
    _same(got, want)
    assert all(a.output is not None for a in got)


def test_chunked_hrm_mazes_give_the_answers_of_one_big_batch(tmp_path: Path) -> None:
    copy_checkpoint(tmp_path, "maze.route", "hrm", 7, with_batch(4))
    rng = random.Random("tests:serving:maze")
    jobs = [Job(maze.MazeInput(grid=maze.generate(7, rng)), particle=k % 8) for k in range(18)]
    got = worker(HRMMazeWorker, tmp_path).solve_batch(jobs)
    want = worker(HRMMazeWorker, tmp_path, use_serving=False).solve_batch(jobs)
    _same(got, want)
    assert sum(a.output is not None for a in got) >= 15


# --------------------------------------------------------------------------------------- #
# the tuning command and the benchmark


def test_the_tuning_command_writes_only_the_serving_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from workers.training.tune_serving import main

    path = copy_checkpoint(tmp_path, "sudoku.solve", "trm", 4, lambda c: {k: v for k, v in c.items() if k != "serving"})
    before = json.loads(path.with_suffix(".json").read_text())
    weights = path.read_bytes()
    assert main(["--checkpoint", str(path), "--n", "8", "--rounds", "1", "--batches", "1,4"]) == 0
    after = json.loads(path.with_suffix(".json").read_text())
    assert {k: v for k, v in after.items() if k != "serving"} == before and path.read_bytes() == weights
    block = after["serving"]
    assert block["best_batch"] in (1, 4) and set(block["items_per_cpu_s"]) == {"1", "4"}
    assert block["at_batch_1"] > 0 and block["at_best"] >= block["at_batch_1"] * 0.97 and block["at_256"] is None
    assert block["n"] == 8 and block["machine"]["torch_threads"] == 1 and block["command"].endswith("--batches 1,4")
    assert ServingProfile.from_card(after) is not None  # the worker reads what the command writes
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["serving"]["best_batch"] == block["best_batch"]


def test_the_tuning_command_rejects_bad_options(tmp_path: Path) -> None:
    from tinyfleet_core.errors import InputError
    from workers.training.tune_serving import main

    with pytest.raises(InputError, match="name a checkpoint"):
        main([])
    with pytest.raises(InputError, match="--batches must be comma-separated integers"):
        main(["--checkpoint", "x.safetensors", "--batches", "1,two"])
    with pytest.raises(ConfigError, match="does not exist"):
        main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--n", "4"])


def test_the_bundled_served_cards_carry_a_serving_block() -> None:
    from workers.serving.catalog import served_sizes

    for skill in ("sudoku.solve", "maze.route"):
        for model in ("trm", "hrm"):
            for size in served_sizes(skill, model):
                card = json.loads(checkpoint_path(skill, model, size).with_suffix(".json").read_text())
                prof = ServingProfile.from_card(card, f"{skill}-{model}-{size}")
                assert prof is not None, f"{skill}-{model}-{size} has no serving block"
                assert prof.measured["at_best"] >= prof.measured["at_256"] * 0.97


def test_the_serving_benchmark_tiny_mode_runs() -> None:
    from tinyfleet.bench.serving import run

    res = run(True, tiny=True)
    assert isinstance(res["ok"], bool) and res["summary"]
    (row,) = res["rows"]
    assert row["checkpoint"] == "sudoku.solve-trm-4" and row["items"] == 16
    assert row["pool exact %"] >= 90 and row["unchunked exact %"] >= 90
    assert row["pool vs ideal (CPU)"] > 0 and row["pool items/s"] > 0
