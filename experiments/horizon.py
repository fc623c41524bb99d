r"""Finds each cell's memory horizon: the longest N every seed learns.

    python -m experiments.horizon --cells=rnn,lstm,gru --seeds=3

For each cell, N doubles from --min_length until some seed fails to solve it
(or N reaches --max_length), then bisects (to --resolution). A seed solves N
when a solve check reaches --solved_accuracy on held-out batches and more
batches confirm it (--confirm_batches); it then stops training
(--stop_when_solved is on here), and its final test accuracy is reported
beside it. Writes horizon.json, horizon.md, horizon.png and
steps_to_solve.png in --results_dir; rerunning the same command there reuses
every run already trained. A training flag given several values
(--learning_rate=3e-4,1e-3) searches a grid: each combination in turn, as a
search of its own in a subdirectory of --results_dir (learning_rate=0.0003/,
...), listed in its grid.json; experiments.compare --dirs=<--results_dir>
then names each cell's best value.
"""

import os
import sys

from absl import flags

from experiments import common
from palindrome_jax import cli
from palindrome_jax import grid
from palindrome_jax import horizon
from palindrome_jax import validation

COMMAND = common.command(__doc__, defaults={"stop_when_solved": True},
                         grid=True)
flags.DEFINE_alias("threshold", "solved_accuracy",
                   flag_values=COMMAND.flag_values)
RESULTS_DIR, OVERWRITE = common.define_results_flags(
    COMMAND, "results/horizon", "Where horizon.json, .md and .png go.")
HORIZON_FLAGS = cli.define_flags(horizon.HorizonConfig,
                                 skip=("cells", "seeds", "base"),
                                 flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  cells = common.cell_names()
  shortest = (  # The search trains no shorter length.
      cli.flag_field(horizon.HorizonConfig, HORIZON_FLAGS, "min_length"),)
  values = common.grid_values()
  configs = [cli.from_flags(horizon.HorizonConfig, HORIZON_FLAGS, cells=cells,
                            seeds=common.seed_values(),
                            base=common.base_run_config(shortest, point=point))
             for point in grid.points(values)]
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  points = common.Points(configs, values, results_dir, "experiments.horizon",
                         OVERWRITE.value)
  failed = []
  with common.training(points.bases, cells, (configs[0].max_length,),
                       configs[0].vmap_seeds) as (devices, stop):
    for config, directory in points.each(stop):
      content = horizon.run_horizon(config, directory,
                                    overwrite=OVERWRITE.value,
                                    devices=devices, stop=stop)
      print(horizon.summary_table(content))
      print(f"Results in {directory}/")
      where = (f" ({os.path.basename(directory)})" if values else "")
      failed += [f"{cell}{where}" for cell in cells  # Not earlier searches'.
                 if content["cells"].get(cell, {}).get(
                     "message", "").startswith("error")]
  if failed:  # A run raised, or a trained run could not be saved.
    print(f"failed: {', '.join(failed)} (the error is above; the same "
          f"command retries {'it' if len(failed) == 1 else 'them'})",
          file=sys.stderr)
    sys.exit(1)

if __name__ == "__main__":
  COMMAND.run(main)
