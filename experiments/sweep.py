r"""Trains every cell at every length and leaves results, plots and a table.

    python -m experiments.sweep --lengths=5,10,15,20

Rerunning the same command in the same --results_dir skips finished runs.
Exit status: 0 when every run trained (diverged runs are results), 1 when a
run failed or could not be saved, 130 after Ctrl-C, 143 after SIGTERM.
"""

import sys

from experiments import common
from palindrome_jax import cli
from palindrome_jax import sweep
from palindrome_jax import validation

COMMAND = common.command(__doc__)
RESULTS_DIR, OVERWRITE = common.define_results_flags(
    COMMAND, "results", "Where results, plots and tables go.")
SWEEP_FLAGS = cli.define_flags(sweep.SweepConfig,
                               skip=("cells", "seeds", "base"),
                               flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  base = common.base_run_config(
      cli.flag_field(sweep.SweepConfig, SWEEP_FLAGS, "lengths"))
  config = cli.from_flags(sweep.SweepConfig, SWEEP_FLAGS,
                          cells=common.cell_names(),
                          seeds=common.seed_values(), base=base)
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  with common.training(base, config.cells, config.lengths,
                       config.vmap_seeds) as (devices, stop):
    outcome = sweep.run_sweep(config, results_dir, overwrite=OVERWRITE.value,
                              devices=devices, stop=stop)
    print(sweep.summary_table(outcome.rows))
    print(f"Results in {results_dir}/")
    counts = outcome.counts
    print(f"this run: {counts['ok']} ok, {counts['diverged']} diverged, "
          f"{counts['failed']} failed"
          + (f", {len(outcome.write_errors)} not saved"
             if outcome.write_errors else ""))
  if counts["failed"] or outcome.write_errors:
    sys.exit(1)

if __name__ == "__main__":
  COMMAND.run(main)
