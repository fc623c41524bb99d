#!/bin/bash
# The moonshot search (experiments/recipes/horizon_moonshot.flags) on a lent
# GPU, as one prepared command: it trains until LIMIT seconds, then stops
# the search with SIGINT (each run saves its checkpoint at the end of its
# chunk) and leaves the results directory in $OUT as a tarball, to unpack
# over experiments/results/ and commit. The next call continues it.
#
#   OUT=/tmp/gpu_out LIMIT=540 bash experiments/gpu_moonshot.sh   # on the GPU
#   QUICK=1 OUT=/tmp/gpu_out bash experiments/gpu_moonshot.sh     # a dry run
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/gpu_out}
LIMIT=${LIMIT:-540}
PY=${PY:-python3}
DIR=experiments/results/horizon_moonshot
EXTRA=()
if [ -n "${QUICK:-}" ]; then  # Tiny lengths and budget, out of the tree.
  DIR=$OUT/quick/horizon_moonshot LIMIT=120
  EXTRA=(--min_length=3 --max_length=6 --train_steps=100 --eval_every=50
         --log_every=50 --num_hidden=16 --batch_size=16 --eval_batches=2
         --confirm_batches=2)
fi
mkdir -p "$OUT"
{ nvidia-smi -L 2>&1; $PY -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/env.txt" 2>&1
start=$SECONDS
timeout -s INT -k 120 "$LIMIT" $PY -m experiments.horizon \
  --flagfile=experiments/recipes/horizon_moonshot.flags \
  --results_dir="$DIR" "${EXTRA[@]}" > "$OUT/horizon.log" 2>&1
rc=$?
echo "horizon: rc=$rc, wall $((SECONDS - start)) s" | tee -a "$OUT/horizon.log"
tar czf "$OUT/horizon_moonshot.tgz" -C "$(dirname "$DIR")" "$(basename "$DIR")"
grep -v '^\[' "$OUT/horizon.log" | tail -n 30
