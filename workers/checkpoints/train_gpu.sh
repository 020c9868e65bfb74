#!/bin/bash
# Trains the bundled TRM/HRM checkpoints that need a GPU, six runs side by side on one GPU for
# $M minutes each, then packs checkpoints, model cards and logs into $OUT/checkpoints.tgz.
# mf30 is the maze frame model for every grid up to 30x30 (maze.route-trm-f30: the family mixture
# of workers/kits/maze_families.py, sides 5..30, sub-frames per batch; its card holds exact
# accuracy per family and size, including perfect 31x31 ringed mazes, the Maze-Hard class; the
# recipe's 3x3 grid-conv mixer reads any side). s9a/s9b mix the hard band (22-29 givens) into half
# of the 9x9 sudoku pool; their cards hold `eval_hard` next to the 30-40 givens eval.
# Run from the repository root on a machine with CUDA torch:  OUT=/tmp/out bash workers/checkpoints/train_gpu.sh
# On a machine without pydantic, put its wheels in .whl/ first (pip download pydantic pydantic_core
# annotated-types typing-inspection typing_extensions); LOCAL=1 skips that install (a dry run on CPU).
# The 9x9 sudoku pool (60k puzzles) is cached in .cache/pools; generate it ahead on a CPU machine with
#   tinyfleet train --skill sudoku.solve --model trm --size 9 --set pool=60000 --data-cache .cache/pools --minutes 0.01 --out /tmp/scratch
# or let the runs build it (--workers processes each).
set -u
[ -n "${LOCAL:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TINYFLEET_TORCH_THREADS=1
M=${M:-7.0}
W=/tmp/ck; mkdir -p $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pydantic', pydantic.__version__)" || exit 4
start=$(date +%s)
run() {  # name, then train args
  local name=$1; shift
  mkdir -p $W/$name
  timeout ${TMO:-490} python3 -m workers.training.trainer train --seed 0 --minutes $M --out $W/$name --data-cache .cache/pools "$@" > $W/$name/log.txt 2>&1 &
}
run s9a  --skill sudoku.solve --model trm --size 9 --workers 2 --set hard=0.5
run s9b  --skill sudoku.solve --model trm --size 9 --workers 2 --set d=192 --set hard=0.5
run m11  --skill maze.route  --model trm --size 11 --workers 4
run hm11 --skill maze.route  --model hrm --size 11 --workers 4
run hs6  --skill sudoku.solve --model hrm --size 6 --workers 4
run mf30 --skill maze.route  --model trm --frame 30 --workers 4 --set pool=150000 --report-n 300
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; tail -n 2 $W/*/log.txt
wait
echo "all done after $(( $(date +%s) - start ))s"
for f in $W/*/log.txt; do echo "== $f"; grep -E "params|\[eval\]|wrote|Error|error" $f | tail -n 12; done
cd $W && tar czf $OUT/checkpoints.tgz . && ls -la $OUT
