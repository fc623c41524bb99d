r"""Trains every cell at every length and leaves results, plots and a table.

    python -m experiments.sweep --lengths=5,10,15,20

Rerunning the same command in the same --results_dir skips finished runs.
A training flag given several values (--learning_rate=3e-4,1e-3) trains a
grid: each combination in turn, as a sweep of its own in a subdirectory of
--results_dir (learning_rate=0.0003/, ...), listed in its grid.json.
Exit status: 0 when every run trained (diverged runs are results), 1 when a
run failed or a file could not be saved, 75 when another process of a
several-process sweep was lost, 130 after Ctrl-C, 143 after SIGTERM.
"""

import sys

from experiments import common
from palindrome_jax import cli
from palindrome_jax import grid
from palindrome_jax import sweep
from palindrome_jax import validation

COMMAND = common.command(__doc__, grid=True)
RESULTS_DIR, OVERWRITE = common.define_results_flags(
    COMMAND, "results", "Where results, plots and tables go.")
SWEEP_FLAGS = cli.define_flags(sweep.SweepConfig,
                               skip=("cells", "seeds", "base"),
                               flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  lengths = cli.flag_field(sweep.SweepConfig, SWEEP_FLAGS, "lengths")
  values = common.grid_values()
  configs = [cli.from_flags(sweep.SweepConfig, SWEEP_FLAGS,
                            cells=common.cell_names(),
                            seeds=common.seed_values(),
                            base=common.base_run_config(lengths, point=point))
             for point in grid.points(values)]
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  points = common.Points(configs, values, results_dir, "experiments.sweep",
                         OVERWRITE.value)
  failed = False
  with common.training(points.bases, configs[0].cells, lengths,
                       configs[0].vmap_seeds) as (devices, stop):
    for config, directory in points.each(stop):
      outcome = sweep.run_sweep(config, directory, overwrite=OVERWRITE.value,
                                devices=devices, stop=stop)
      print(sweep.summary_table(outcome.rows))
      print(f"Results in {directory}/")
      counts = outcome.counts
      print(f"this run: {counts['ok']} ok, {counts['diverged']} diverged, "
            f"{counts['failed']} failed"
            + (f", {len(outcome.write_errors)} not saved"
               if outcome.write_errors else ""))
      failed = failed or bool(counts["failed"] or outcome.write_errors)
  if failed:
    sys.exit(1)

if __name__ == "__main__":
  COMMAND.run(main)
