r"""Trains every cell at every length and leaves results, plots and a table.

    python -m experiments.sweep --lengths=5,10,15,20

Rerunning the same command in the same --results_dir skips finished runs.
"""

from absl import flags

from experiments import common
from palindrome_jax import sweep
from palindrome_jax import validation

LENGTHS = flags.DEFINE_string("lengths", "5,10,15,20",
                              "Comma-separated palindrome lengths N (digits "
                              "read before predicting the last).")
RESULTS_DIR = flags.DEFINE_string("results_dir", "results",
                                  "Where results, plots and tables go.")
OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Replace the runs in a --results_dir that holds a sweep with other "
    "training settings (otherwise that is refused).")
CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 0,
    "Save the training state every this many steps (a multiple of "
    "--log_every) so a killed run continues from there; 0: never.")


def main(argv):
  del argv
  cells = common.cell_names()
  lengths = validation.int_list("lengths", LENGTHS.value, minimum=1)
  base = common.base_run_config()
  validation.positive("checkpoint_every", CHECKPOINT_EVERY.value,
                      allow_zero=True)
  if CHECKPOINT_EVERY.value % base.log_every:
    raise validation.FlagError(
        "checkpoint_every", f"{CHECKPOINT_EVERY.value} is not a multiple of "
        f"--log_every ({base.log_every})")
  config = sweep.SweepConfig(cells=cells, lengths=lengths,
                             seeds=common.seed_values(), base=base,
                             checkpoint_every=CHECKPOINT_EVERY.value)
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  devices = common.configure_devices()
  try:
    rows = sweep.run_sweep(config, results_dir, overwrite=OVERWRITE.value,
                           devices=devices)
  except sweep.ConfigMismatchError as error:
    raise validation.FlagError("results_dir", str(error)) from None
  print(sweep.summary_table(rows))
  print(f"Results in {results_dir}/")


if __name__ == "__main__":
  common.run(main)
