r"""Reloads a sweep's saved parameters and reports their test accuracy.

    python -m experiments.evaluate --results_dir=results --lengths=10,12,15

Without --lengths each run is tested at the length it trained on. Exit
status: 1 when nothing could be evaluated (no run's parameters readable).
"""

import os
import sys

from absl import flags

from experiments import common
from palindrome_jax import cells as cells_lib
from palindrome_jax import cli
from palindrome_jax import config as config_lib
from palindrome_jax import evaluate
from palindrome_jax import files
from palindrome_jax import results
from palindrome_jax import validation

COMMAND = common.command(__doc__, shared=(
    "cells", "cell_module", "eval_batches", "cpu_devices",
    "compilation_cache_dir"))
RESULTS_DIR = flags.DEFINE_string("results_dir", "results",
                                  "A directory written by experiments.sweep.",
                                  flag_values=COMMAND.flag_values)
LENGTHS = flags.DEFINE_string(
    "lengths", None,
    "Comma-separated lengths N to test at; default: each run's own.",
    flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  common.import_cell_module()
  results_dir = RESULTS_DIR.value
  try:
    config = evaluate.base_config(results_dir)
  except results.FormatError as error:  # Names the migration command.
    raise validation.FlagError("results_dir", str(error)) from None
  except (FileNotFoundError, NotADirectoryError):  # Or a file of it given.
    raise validation.FlagError("results_dir",
                               f"{results_dir!r} holds no sweep results"
                               ) from None
  except OSError as error:
    raise validation.FlagError(
        "results_dir", f"cannot read {error.filename or results_dir!r}: "
        f"{error.strerror or error}") from None
  lengths = (cli.checked("lengths", cli.parse_items(
      "lengths", LENGTHS.value, int), config_lib.length_tuple)
             if LENGTHS.value is not None else None)
  validation.writable_dir("results_dir", results_dir)
  cells = (common.cell_names() if common.FLAGS["cells"].present else None)
  recorded = files.read_json(os.path.join(results_dir, "config.json"))
  missing = [c for c in recorded.get("cells", [])
             if c not in cells_lib.names() and (cells is None or c in cells)]
  if missing:
    raise validation.FlagError(
        "cell_module", f"the sweep used cells {missing} that are not "
        "registered; pass the module that registers them")
  eval_batches = (cli.checked("eval_batches",
                              common.RUN_FLAGS["eval_batches"].value,
                              config_lib.positive_int)
                  if common.FLAGS["eval_batches"].present else None)
  del config
  common.configure_devices()
  try:
    rows = evaluate.evaluate_saved(results_dir, lengths, cells, eval_batches)
  except results.FormatError as error:
    raise validation.FlagError("results_dir", str(error)) from None
  files.write_json(os.path.join(results_dir, "evaluate.json"), rows)
  table = evaluate.table(rows)
  files.atomic_write_text(os.path.join(results_dir, "evaluate.md"), table)
  print(table)
  if not evaluate.evaluated(rows):
    sys.exit("nothing evaluated: " + (
        "no run's parameters could be read (listed above)" if rows else
        f"{results_dir!r} holds no finished run"))


if __name__ == "__main__":
  COMMAND.run(main)
