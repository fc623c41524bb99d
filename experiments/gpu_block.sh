#!/bin/bash
# A block of the leaderboard's searches on a lent GPU, as one prepared
# command: it runs each recipe of RECIPES (a sweep's or a horizon search's
# flagfile; default: the moonshot) in turn until LIMIT seconds in all, then
# stops the one running with SIGINT (each run saves its checkpoint at the
# end of its chunk) and leaves each results directory in $OUT as a tarball,
# to unpack over experiments/results/ and commit. The next call continues
# where this one stopped: finished runs are read back, not retrained.
#
#   OUT=/tmp/gpu_out LIMIT=540 bash experiments/gpu_block.sh          # on the GPU
#   RECIPES="experiments/recipes/new_cells_2layers.flags experiments/recipes/horizon_gru_long.flags" \
#     OUT=/tmp/gpu_out LIMIT=540 bash experiments/gpu_block.sh
#   QUICK=1 OUT=/tmp/gpu_out bash experiments/gpu_block.sh            # a dry run, tiny settings
#   DRY=1 bash experiments/gpu_block.sh                               # print the commands only
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/gpu_out}
LIMIT=${LIMIT:-540}
PY=${PY:-python3}
RECIPES=${RECIPES:-experiments/recipes/horizon_moonshot.flags}
[ -n "${QUICK:-}" ] && LIMIT=$((LIMIT < 240 ? LIMIT : 240))

# Prints the command for one recipe, one argument per line.
command_for() {
  local recipe=$1 tool name dir
  tool=$(sed -n 's/^# tool: *//p' "$recipe" | head -n 1)
  name=$(sed -n 's/^--results_dir=//p' "$recipe" | tail -n 1)
  case "$tool" in
    experiments.sweep|experiments.horizon) ;;
    *) echo "gpu_block: $recipe: its '# tool:' line names '$tool', not experiments.sweep or experiments.horizon" >&2
       return 2 ;;
  esac
  if [ -z "$name" ]; then
    echo "gpu_block: $recipe: no --results_dir" >&2
    return 2
  fi
  dir=experiments/results/$(basename "$name")
  [ -n "${QUICK:-}" ] && dir=$OUT/quick/$(basename "$name")
  printf '%s\n' "$PY" -m "$tool" "--flagfile=$recipe" "--results_dir=$dir"
  if [ -n "${QUICK:-}" ]; then  # Tiny lengths and budget, out of the tree.
    printf '%s\n' --train_steps=100 --eval_every=50 --log_every=50 \
      --batch_size=16 --eval_batches=2 --confirm_batches=2
    grep -q '^--num_params=' "$recipe" || printf '%s\n' --num_hidden=16
    if [ "$tool" = experiments.horizon ]; then
      printf '%s\n' --min_length=3 --max_length=6
    else
      printf '%s\n' --lengths=3,4
    fi
  fi
}

for recipe in $RECIPES; do  # Every recipe checked before anything runs.
  command_for "$recipe" > /dev/null || exit 2
done
if [ -n "${DRY:-}" ]; then
  for recipe in $RECIPES; do
    command_for "$recipe" | paste -sd ' '
  done
  exit 0
fi

mkdir -p "$OUT"
{ nvidia-smi -L 2>&1; $PY -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/env.txt" 2>&1
start=$SECONDS
for recipe in $RECIPES; do
  name=$(basename "$recipe" .flags)
  left=$((LIMIT - (SECONDS - start)))
  if [ "$left" -lt 30 ]; then
    echo "$name: not started, $left s left" | tee -a "$OUT/block.log"
    continue
  fi
  mapfile -t cmd < <(command_for "$recipe")
  dir=${cmd[4]#--results_dir=}
  begun=$SECONDS
  timeout -s INT -k 120 "$left" "${cmd[@]}" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name: rc=$rc, wall $((SECONDS - begun)) s" | tee -a "$OUT/block.log"
  [ -d "$dir" ] && tar czf "$OUT/$(basename "$dir").tgz" -C "$(dirname "$dir")" "$(basename "$dir")"
  grep -v '^\[' "$OUT/$name.log" | tail -n 20
done
