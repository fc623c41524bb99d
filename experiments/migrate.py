r"""Migrates a results directory of an older format to this one, once.

    python -m experiments.migrate --results_dir=results/horizon

The tools refuse a directory written before its results format changed,
naming this command. It fills in what the older format left out (what its
runs trained with: see palindrome_jax.migrate), in config.json, every
runs/*.json and a search's horizon.json; a file already migrated is left as it
is. Nothing is trained and no result changes.
"""

import sys

from absl import flags

from experiments import common
from palindrome_jax import migrate
from palindrome_jax import results
from palindrome_jax import validation

COMMAND = common.command(__doc__, shared=())  # It trains nothing.
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "The results directory to migrate.",
    flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  if not RESULTS_DIR.value:
    raise validation.FlagError("results_dir", "give the directory to migrate")
  try:
    done = migrate.migrate(RESULTS_DIR.value)
  except (FileNotFoundError, results.BusyError, results.FormatError) as error:
    raise validation.FlagError("results_dir", str(error)) from None
  print(done.summary(RESULTS_DIR.value))
  if done.moved_aside:
    print(f"moved aside (the warnings above say why): "
          f"{', '.join(done.moved_aside)}", file=sys.stderr)


if __name__ == "__main__":
  COMMAND.run(main)
