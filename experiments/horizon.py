r"""Finds each cell's memory horizon: the longest N it learns within a budget.

    python -m experiments.horizon --cells=rnn,lstm,gru --seeds=3

For each cell, N doubles from --min_length until the mean test accuracy over
the seeds falls below --threshold (or N reaches --max_length), then bisects.
Writes horizon.json, horizon.md and horizon.png in --results_dir; rerunning
the same command there reuses the lengths already trained.
"""

from absl import flags

from experiments import common
from palindrome_jax import horizon
from palindrome_jax import sweep
from palindrome_jax import validation

THRESHOLD = flags.DEFINE_float(
    "threshold", 0.99, "Test accuracy (a fraction, mean over seeds) that a "
    "length must reach to count as remembered.")
MIN_LENGTH = flags.DEFINE_integer("min_length", 5,
                                  "Shortest N tried; the search doubles from "
                                  "here.")
MAX_LENGTH = flags.DEFINE_integer("max_length", 200, "Longest N tried.")
RESULTS_DIR = flags.DEFINE_string("results_dir", "results/horizon",
                                  "Where horizon.json, .md and .png go.")
OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Replace a search in --results_dir made with other settings (otherwise "
    "that is refused).")


def main(argv):
  del argv
  cells = common.cell_names()
  base = common.base_run_config()
  if not 0 < THRESHOLD.value <= 1:
    raise validation.FlagError("threshold", "must be in (0, 1], got "
                               f"{THRESHOLD.value}")
  if MIN_LENGTH.value < 1:
    raise validation.FlagError("min_length", f"must be >= 1, got "
                               f"{MIN_LENGTH.value}")
  if MAX_LENGTH.value < MIN_LENGTH.value:
    raise validation.FlagError(
        "max_length", f"{MAX_LENGTH.value} is below --min_length "
        f"({MIN_LENGTH.value})")
  config = horizon.HorizonConfig(
      cells=cells, seeds=common.seed_values(), base=base,
      threshold=THRESHOLD.value, min_length=MIN_LENGTH.value,
      max_length=MAX_LENGTH.value)
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  devices = common.configure_devices()
  try:
    content = horizon.run_horizon(config, results_dir,
                                  overwrite=OVERWRITE.value, devices=devices)
  except sweep.ConfigMismatchError as error:
    raise validation.FlagError("results_dir", str(error)) from None
  print(horizon.summary_table(content))
  print(f"Results in {results_dir}/")


if __name__ == "__main__":
  common.run(main)
