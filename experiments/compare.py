r"""Compares recipes: the horizon searches of several results directories.

    python -m experiments.compare \
        --dirs=results/horizon,results/chrono --results_dir=results/compare

Each cell of each search is a recipe, named by its cell and the settings that
differ from experiments.horizon's defaults. Writes compare.md (per recipe: its
horizon and the lengths tried, seeds solved and steps to solve), compare.json
and compare.png in --results_dir. Reads only what the searches recorded:
nothing is trained, and a search still running can be compared as it stands.
"""

from absl import flags

from experiments import common
from palindrome_jax import cli
from palindrome_jax import compare
from palindrome_jax import validation

COMMAND = common.command(__doc__, shared=())  # It trains nothing.
DIRS = flags.DEFINE_string(
    "dirs", None, "Comma-separated results directories of "
    "experiments.horizon, each holding a horizon.json.",
    flag_values=COMMAND.flag_values)
ONLY_CELLS = flags.DEFINE_string(
    "only_cells", None, "Comma-separated cells to keep; default: every cell "
    "of every search.", flag_values=COMMAND.flag_values)
LABELS = flags.DEFINE_string(
    "labels", None, "Comma-separated names, one per recipe in order, in place "
    "of the generated ones.", flag_values=COMMAND.flag_values)
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", "results/compare",
    "Where compare.md, .json and .png go (rewritten on each run: they hold "
    "nothing the searches do not).", flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  directories = cli.parse_items("dirs", DIRS.value, str)
  if not directories:
    raise validation.FlagError("dirs", "give the searches to compare")
  searches = []
  for directory in directories:
    try:
      searches.append((directory, compare.load(directory)))
    except (FileNotFoundError, NotADirectoryError):  # Or its file given.
      raise validation.FlagError(
          "dirs", f"{directory!r} holds no horizon search (no horizon.json)"
      ) from None
    except (OSError, ValueError) as error:
      problem = (f"{directory!r}: cannot read it: {error.strerror or error}"
                 if isinstance(error, OSError) else str(error))
      raise validation.FlagError("dirs", problem) from None
  cells = (cli.parse_items("only_cells", ONLY_CELLS.value, str)
           if ONLY_CELLS.value is not None else None)
  labels = (cli.parse_items("labels", LABELS.value, str)
            if LABELS.value is not None else None)
  try:
    found = compare.recipes(searches, cells, labels)
  except compare.CompareError as error:
    flag = {"searches": "dirs", "cells": "only_cells"}.get(error.about,
                                                           error.about)
    raise validation.FlagError(flag, str(error)) from None
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  compare.write(found, results_dir)
  print(compare.summary_table(found))
  print(f"Results in {results_dir}/")


if __name__ == "__main__":
  COMMAND.run(main)
