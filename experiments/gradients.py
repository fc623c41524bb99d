r"""How much the loss still depends on each earlier hidden state, per cell.

    python -m experiments.gradients --cells=rnn,lstm --length=20

For every cell, trains at --length and measures the mean over a batch of
||d loss / d carry_t|| for every step t, at initialisation and after
training. Writes gradients.json, gradients.md and gradients.png in
--results_dir. With --init_only it trains nothing and measures at
initialisation only, in seconds: how an initialisation (--forget_bias,
--chrono_per_digit, ...) starts the gradient at length N. Exit status: 1
when a run or a summary could not be written (each file is named; no
summary is written then), 130 after Ctrl-C, 143 after SIGTERM.
"""

import sys

from absl import flags

from experiments import common
from palindrome_jax import gradients
from palindrome_jax import runner
from palindrome_jax import validation

COMMAND = common.command(__doc__)
LENGTH = flags.DEFINE_integer("length", 20, "Palindrome length N to train "
                              "and measure at.",
                              flag_values=COMMAND.flag_values)
INIT_ONLY = flags.DEFINE_boolean(
    "init_only", False, "Measure at initialisation only: train nothing "
    "(seconds, not minutes); the training flags other than the "
    "initialisation's are then unused.", flag_values=COMMAND.flag_values)
RESULTS_DIR, OVERWRITE = common.define_results_flags(
    COMMAND, "results/gradients", "Where gradients.json and .png go (and the "
    "trained runs, reused by a rerun).")


def main(argv):
  del argv
  cells = common.cell_names()
  if LENGTH.value < 1:
    raise validation.FlagError("length", f"must be >= 1, got {LENGTH.value}")
  base = common.base_run_config((LENGTH.value,))
  seeds = common.seed_values()
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  with common.training(base, cells, (LENGTH.value,)) as (devices, stop):
    try:
      results = gradients.run_gradients(base, cells, LENGTH.value, seeds,
                                        results_dir, devices=devices,
                                        overwrite=OVERWRITE.value, stop=stop,
                                        init_only=INIT_ONLY.value)
    except runner.NotSaved as error:  # Each file is named above.
      print(error, file=sys.stderr)
      sys.exit(1)
    if not stop():
      print(gradients.summary_table(results))
      print(f"Results in {results_dir}/")

if __name__ == "__main__":
  COMMAND.run(main)
