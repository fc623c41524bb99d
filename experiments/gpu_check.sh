#!/bin/bash
# The GPU checks behind the README's GPU figures, as one script (a lent GPU
# machine's time is short): the environment, a smoke run, the benchmark, the
# default sweep, and per-seed vs vmapped seeds (speed and numbers).
#
#   OUT=/tmp/gpu_out bash experiments/gpu_check.sh        # on the GPU machine
#   QUICK=1 OUT=/tmp/gpu_out bash experiments/gpu_check.sh  # a dry run on CPU
#   TESTS_ONLY=1 ...   # the test suite alone (about 5 min on one H200)
#
# $OUT gets env.txt and results.tgz (every part's log and results directory,
# rewritten after each part, so a run stopped at its limit still returns them).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/gpu_out}
W=${WORK:-/tmp/gpu_work}
PY=${PY:-python3}
mkdir -p "$OUT" "$W/logs"
if [ -n "${QUICK:-}" ]; then
  STEPS=200; SEED_STEPS=100; BENCH="--lengths=5 --repeats=2 --steps=100 --eager_steps=1"
else
  STEPS=10000; SEED_STEPS=2000; BENCH="--lengths=5,20 --repeats=5 --steps=200 --eager_steps=2"
fi

part() {  # part NAME TIMEOUT COMMAND...: runs it, logs it, says how long
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$W/logs/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$W/logs/$name.log"
  echo "=== $name: rc=$rc, wall $((SECONDS - start)) s" | tee -a "$W/logs/walls.txt"
  tar czf "$OUT/results.tgz" -C "$W" .
  return $rc
}

{ nvidia-smi -L 2>&1; $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; nproc; } 2>&1 | tee "$OUT/env.txt"

if [ -z "${TESTS_ONLY:-}" ]; then
part smoke 90 $PY -m experiments.sweep --cells=lstm --lengths=5 \
  --train_steps=200 --results_dir="$W/smoke" || exit 1

part benchmark 200 $PY -m experiments.benchmark --cells=rnn,lstm $BENCH \
  --results_dir="$W/benchmark"

part sweep 200 $PY -m experiments.sweep --lengths=5,10,15,20 \
  --train_steps=$STEPS --results_dir="$W/sweep"

# Four seeds of LSTM N=20, 2,000 steps: one program per seed, then one vmapped
# program; then seed 42 alone again (the same program on the same device).
part seeds_per_run 120 $PY -m experiments.sweep --cells=lstm --lengths=20 \
  --seeds=4 --train_steps=$SEED_STEPS --results_dir="$W/seeds_per_run"
part seeds_vmapped 120 $PY -m experiments.sweep --cells=lstm --lengths=20 \
  --seeds=4 --train_steps=$SEED_STEPS --vmap_seeds --results_dir="$W/seeds_vmapped"
part seed42_alone 60 $PY -m experiments.sweep --cells=lstm --lengths=20 \
  --seeds=1 --train_steps=$SEED_STEPS --results_dir="$W/seed42_alone"
$PY - "$W" <<'EOF' 2>&1 | tee "$W/logs/seeds_compare.txt"
import csv, sys
root = sys.argv[1]
KEYS = ("test_accuracy", "test_loss", "final_train_loss", "steps_per_second")
def rows(name):
  try:
    with open(f"{root}/{name}/results.csv") as f:
      return {r["seed"]: r for r in csv.DictReader(f)}
  except OSError:
    return {}
per, vm, alone = rows("seeds_per_run"), rows("seeds_vmapped"), rows("seed42_alone")
for seed in sorted(per):
  a, b = per[seed], vm.get(seed, {})
  print(f"seed {seed}: per-run", [a.get(k) for k in KEYS], "vmapped",
        [b.get(k) for k in KEYS], "equal:",
        all(a.get(k) == b.get(k) for k in KEYS[:3]))
if "42" in alone and "42" in per:
  print("seed 42 alone equals seed 42 beside three others:",
        all(alone["42"].get(k) == per["42"].get(k) for k in KEYS[:3]))
EOF

fi

# The whole suite, 8 workers. On a GPU, JAX runs float32 matmuls as TF32 by
# default; JAX_DEFAULT_MATMUL_PRECISION=highest (set it before calling this
# script) makes them full float32. -rf lists the failures by name.
XLA_PYTHON_CLIENT_PREALLOCATE=false part tests 300 $PY -m pytest -q -rf -n 8 \
  -p no:cacheprovider -p no:benchmark tests

tar czf "$OUT/results.tgz" -C "$W" .
ls -la "$OUT"
