r"""Compares recipes: the horizon searches of several results directories.

    python -m experiments.compare \
        --dirs=results/horizon,results/chrono --results_dir=results/compare

Each cell of each search is a recipe, named by its cell and the settings that
differ from experiments.horizon's defaults. Writes compare.md (per recipe: its
horizon and the lengths tried, seeds solved and steps to solve), compare.json
and compare.png in --results_dir. Reads only what the searches recorded:
nothing is trained, and a search still running can be compared as it stands.

A directory of --dirs that holds a grid (experiments.horizon with a training
flag given several values, e.g. --learning_rate=3e-4,1e-3) stands for its
points' searches; per cell, compare.md and compare.json then name the
grid's best point (the largest horizon; a tie broken by the fewest median
steps to solve at it) and say why it won.

A directory of experiments.sweep stands for a search of each of its cells
over the sweep's lengths: the horizon is bounded between the lengths it
tried ("≥ 20, < 100 (sweep: N = 5, 20, 100)"), as a search would bound it
before bisecting, so the first numbers of a cell join the leaderboard
before its search is run; a grid of sweeps, for each point's.
"""

import os
import re
from typing import Optional

from absl import flags

from experiments import common
from palindrome_jax import cli
from palindrome_jax import compare
from palindrome_jax import files as io
from palindrome_jax import leaderboard
from palindrome_jax import report
from palindrome_jax import validation

COMMAND = common.command(__doc__, shared=())  # It trains nothing.
DIRS = flags.DEFINE_string(
    "dirs", None, "Comma-separated results directories of "
    "experiments.horizon, each holding a horizon.json, or a grid of "
    "searches (a grid.json): each of its points; or of experiments.sweep "
    "(or a grid of sweeps), read as a search of its lengths.",
    flag_values=COMMAND.flag_values)
ONLY_CELLS = flags.DEFINE_string(
    "only_cells", None, "Comma-separated cells to keep; default: every cell "
    "of every search.", flag_values=COMMAND.flag_values)
LABELS = flags.DEFINE_string(
    "labels", None, "Comma-separated names, one per recipe in order, in place "
    "of the generated ones.", flag_values=COMMAND.flag_values)
LEADERBOARD = flags.DEFINE_boolean(
    "leaderboard", False, "Also write leaderboard.md, .json and .png: per "
    "cell and model size, the best learning rate's horizon, with the "
    "model's width, parameters, state size and (with --costs) its cost.",
    flag_values=COMMAND.flag_values)
COSTS = flags.DEFINE_string(
    "costs", None, "With --leaderboard: comma-separated benchmark.json files "
    "of experiments.benchmark at N=100; a row's cost is core-seconds per "
    "1,000 steps of the sweep's compiled loop for its model.",
    flag_values=COMMAND.flag_values)
EQUAL_PARAMS = flags.DEFINE_integer(
    "equal_params", None, "With --leaderboard: the table at equal "
    "parameters, its rows the models within 1% of this many (sized to it "
    "by --num_params, or that size at their width), e.g. 67850, the "
    "original LSTM's.", flag_values=COMMAND.flag_values)
RESULTS_DIR = flags.DEFINE_string(
    "results_dir", "results/compare",
    "Where compare.md, .json and .png go (rewritten on each run: they hold "
    "nothing the searches do not).", flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  directories = cli.parse_items("dirs", DIRS.value, str)
  if not directories:
    raise validation.FlagError("dirs", "give the searches to compare")
  searches, points, not_searched = [], {}, []
  for directory in directories:
    try:
      found, in_grid, missing = compare.load_all(directory)
    except compare.CompareError as error:  # A grid that has no searches.
      raise validation.FlagError("dirs", str(error)) from None
    except (FileNotFoundError, NotADirectoryError):  # Or its file given.
      raise validation.FlagError(
          "dirs", f"{directory!r} holds neither a horizon search "
          "(horizon.json) nor a sweep (config.json with its lengths)"
      ) from None
    except (OSError, ValueError) as error:
      problem = (f"{directory!r}: cannot read it: {error.strerror or error}"
                 if isinstance(error, OSError) else str(error))
      raise validation.FlagError("dirs", problem) from None
    searches += found
    points.update(in_grid)
    not_searched += missing
  cells = (cli.parse_items("only_cells", ONLY_CELLS.value, str)
           if ONLY_CELLS.value is not None else None)
  labels = (cli.parse_items("labels", LABELS.value, str)
            if LABELS.value is not None else None)
  try:
    found = compare.recipes(searches, cells, labels, points)
  except compare.CompareError as error:
    flag = {"searches": "dirs", "cells": "only_cells"}.get(error.about,
                                                           error.about)
    raise validation.FlagError(flag, str(error)) from None
  if COSTS.value is not None and not LEADERBOARD.value:
    raise validation.FlagError("costs", "give --leaderboard too: the costs "
                               "are the leaderboard's")
  if EQUAL_PARAMS.value is not None:
    if not LEADERBOARD.value:
      raise validation.FlagError("equal_params", "give --leaderboard too: "
                                 "it picks the leaderboard's rows")
    if EQUAL_PARAMS.value < 1:
      raise validation.FlagError(
          "equal_params", f"must be >= 1, got {EQUAL_PARAMS.value}")
  benchmarks = [_benchmark(path) for path in
                cli.parse_items("costs", COSTS.value or "", str)]
  standings = (leaderboard.standings(found, benchmarks) if LEADERBOARD.value
               else None)
  if EQUAL_PARAMS.value is not None:
    standings = _at_params(standings, EQUAL_PARAMS.value)
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  compare.write(found, results_dir, not_searched)
  print(compare.summary_table(found))
  if standings is not None:
    commands = recipe_commands()
    leaderboard.write(standings, results_dir, EQUAL_PARAMS.value,
                      {r.directory: command_of(r, commands)
                       for s in standings for r in s.tried})
    print("\n".join(report.leaderboard_table(standings)))
  print(f"Results in {results_dir}/")


RECIPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "recipes")
_TOOL_LINE = re.compile(r"#\s*tool:\s*(experiments\.\w+)\s*$")
_COMMITTED = re.compile(r"Committed:\s*(?:#\s*)?([^\s#]+)")


def recipe_commands(recipes_dir: str = RECIPES_DIR) -> dict[str, str]:
  """The command that regenerates each results directory a recipe commits:
  ``{absolute path: "python -m TOOL --flagfile=experiments/recipes/NAME"}``,
  from each recipe's first line (its tool) and its ``Committed:`` line
  (a path from the checkout's root); several recipes of one directory are
  joined with "; "."""
  root = os.path.dirname(os.path.dirname(recipes_dir))
  commands: dict[str, list[str]] = {}
  for name in sorted(os.listdir(recipes_dir)):
    if not name.endswith(".flags"):
      continue
    with open(os.path.join(recipes_dir, name), encoding="utf-8") as f:
      text = f.read()
    tool = _TOOL_LINE.match(text.split("\n", 1)[0].strip())
    committed = _COMMITTED.search(text)
    if tool and committed:
      path = os.path.abspath(os.path.join(root, committed[1].rstrip(".,")))
      flagfile = os.path.relpath(os.path.join(recipes_dir, name), root)
      commands.setdefault(path, []).append(
          f"python -m {tool[1]} --flagfile={flagfile}")
  return {path: "; ".join(found) for path, found in commands.items()}


def command_of(recipe: compare.Recipe,
               commands: dict[str, str]) -> Optional[str]:
  """The command of ``recipe``'s directory (:func:`recipe_commands`), or,
  for a point of a grid, of the recipe that committed the grid."""
  command = commands.get(os.path.abspath(recipe.directory))
  if command is None and recipe.point is not None:
    command = commands.get(os.path.abspath(recipe.point.grid))
  return command


def _at_params(standings: list, params: int) -> list:
  """The standings at ``params`` parameters, or a FlagError saying which
  sizes the searches have."""
  kept = leaderboard.at_params(standings, params)
  if not kept:
    counts = sorted(s.num_params for s in standings
                    if s.num_params is not None)
    sizes = f" ({counts[0]:,} to {counts[-1]:,})" if counts else ""
    raise validation.FlagError(
        "equal_params", f"no model of the searches has "
        f"{leaderboard.within(params)}{sizes}")
  return kept


def _benchmark(path: str) -> dict:
  """A benchmark.json of experiments.benchmark, or a FlagError naming it."""
  try:
    content = io.read_json(path)
  except (OSError, ValueError) as error:
    raise validation.FlagError(
        "costs", f"{path!r}: cannot read it: "
        f"{getattr(error, 'strerror', None) or error}") from None
  if not isinstance(content, dict) or "results" not in content:
    raise validation.FlagError("costs", f"{path!r} is not a benchmark.json "
                               "of experiments.benchmark")
  return content


if __name__ == "__main__":
  COMMAND.run(main)
