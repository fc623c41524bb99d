"""Recipes side by side: several horizon searches in one table and one figure.

A *recipe* is one cell of one horizon search (:mod:`palindrome_jax.horizon`):
the cell and the training settings it was searched with. :func:`recipes`
reads the searches' ``horizon.json`` files; each recipe is named by its cell
and the settings in which it differs from the horizon tool's defaults
(``lstm: chrono_per_digit=1``), so a table cannot drift from the records it
summarises. Recipes are compared at one budget and one solve criterion
(``train_steps`` and ``solved_accuracy``): a length solved in 20,000 steps
and one solved in 10,000 are different claims, so such a mix is refused.
Settings that only change how a run is checked (``eval_every``,
``confirm_batches``, ...) may differ; the table says where they do. The
version of the training program names no recipe: it changes how a run's
float32 numbers round, not what it learns with.

A grid of horizon searches (``experiments.horizon`` with a training flag
given several values: :mod:`palindrome_jax.grid`) is given by its parent
directory: :func:`load_all` expands it into its points' searches, each
recipe then named by its point's values too (``lstm: learning_rate=0.001``,
the default spelled out), and :func:`best_of_grids` names, per grid and
cell, the best point: the largest horizon, a tie broken by the fewest median
steps to solve at that horizon. A sweep's directory stands for a search of
each of its cells over the sweep's lengths (:func:`horizon.sweep_as_search`):
its horizon bounded between them; so does each point of a grid of sweeps.
"""

import dataclasses
import math
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from palindrome_jax import grid as grid_lib
from palindrome_jax import horizon
from palindrome_jax import files as io
from palindrome_jax import plots
from palindrome_jax import report

# Settings that decide how a run is checked and logged, not what it learns.
PROTOCOL = ("log_every", "eval_batches", "stop_when_solved", "eval_every",
            "confirm_batches", "unroll")
# Settings every compared recipe must share: the budget and the criterion.
SHARED = ("train_steps", "solved_accuracy")
# Versions of the code, not of the recipe: never in a recipe's name.
VERSIONS = ("training_program",)


class CompareError(ValueError):
  """Searches that cannot be compared: a one-line reason, and the argument
  of :func:`recipes` that it is about (``searches``, ``cells`` or
  ``labels``)."""

  def __init__(self, about: str, problem: str):
    super().__init__(problem)
    self.about = about


@dataclasses.dataclass(frozen=True)
class GridPoint:
  """Where a search sits in a grid: the grid's parent directory, and the
  values of the grid's flags at the search's point (by field)."""

  grid: str
  values: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One cell of one horizon search."""

  label: str
  directory: str
  cell: str
  changes: dict[str, Any]  # What it learns with, where not the default.
  protocol: dict[str, Any]  # How it was checked, where not the default.
  settings: dict[str, Any]  # The search's settings (horizon.json).
  entry: dict[str, Any]  # The cell's search (horizon.json).
  point: Optional[GridPoint] = None  # Its point, if of a grid.

  @property
  def horizon(self) -> str:
    return report.horizon_text(self.entry, self.settings)

  @property
  def steps_at_horizon(self) -> Optional[float]:
    """The median steps to solve of the seeds at the horizon; None without
    one (not even ``min_length`` solved)."""
    return self.steps_at(self.entry.get("horizon"))

  def steps_at(self, length: Optional[int]) -> Optional[float]:
    """The median steps to solve of the seeds that solved ``length``; None
    where none did (or ``length`` is None)."""
    steps = [s for e in self.entry["evaluations"] if e["length"] == length
             for s in e["steps_to_solve"] if s is not None]
    return float(np.median(steps)) if steps else None

  @property
  def wall_seconds(self) -> float:
    """The wall time of its runs, summed over every length tried (runs
    that trained side by side each count their own)."""
    return sum(e.get("wall_seconds") or 0.0 for e in self.entry["evaluations"])

  def rows(self) -> list[dict[str, Any]]:
    """A run-like row per seed and length tried, for the figures: a seed
    that did not solve a length has no steps to solve."""
    return [{"cell": self.label, "length": e["length"], "seed": seed,
             "status": status,
             "steps_to_solve": steps if solved else None}
            for e in self.entry["evaluations"]
            for seed, status, steps, solved in zip(
                e["seeds"], e["statuses"], e["steps_to_solve"], e["solved"])]


def load(directory: str) -> dict[str, Any]:
  """A search's ``horizon.json`` (:func:`horizon.read_search`), or a sweep
  read as searches of its lengths (:func:`horizon.read_sweep`) where the
  directory holds a sweep instead; FileNotFoundError if it holds neither,
  ValueError if what it holds is not one (damaged, another tool's, or of
  another format: :class:`results.FormatError`)."""
  path = os.path.join(directory, "horizon.json")
  if not os.path.exists(path) and os.path.exists(
      os.path.join(directory, "config.json")):
    return horizon.read_sweep(directory)
  return horizon.read_search(path)


def load_all(directory: str) -> tuple[list[tuple[str, dict[str, Any]]],
                                       dict[str, GridPoint], list[str]]:
  """The searches ``directory`` holds: ``([(search directory, its
  horizon.json)], {search directory: its GridPoint}, [points not searched
  yet])``. A search's directory holds one (:func:`load`, and its errors);
  a grid's parent (``grid.json``), one per point searched so far, each
  with its point (a grid of sweeps: each point's sweep read as searches,
  :func:`load`). A grid of which no point has a search yet is a
  :class:`CompareError`; a damaged ``grid.json`` a ValueError naming it."""
  content = grid_lib.read(directory)
  if content is None:
    return [(directory, load(directory))], {}, []
  searches, points, missing = [], {}, []
  for entry in content["points"]:
    path = os.path.join(directory, entry["directory"])
    try:
      searches.append((path, load(path)))
    except FileNotFoundError:
      missing.append(path)
      continue
    points[path] = GridPoint(directory, entry["settings"])
  if not searches:
    raise CompareError("searches", f"{directory!r}: no point of its grid has "
                       "been searched yet (no horizon.json)"
                       if content["tool"] == "experiments.horizon" else
                       f"{directory!r}: no point of its grid has been swept "
                       "yet (no config.json)")
  return searches, points, missing


def defaults() -> dict[str, Any]:
  """The training settings of ``experiments.horizon`` run without flags."""
  return horizon.HorizonConfig().base.training_settings()


def recipes(searches: Sequence[tuple[str, dict[str, Any]]],
            cells: Optional[Iterable[str]] = None,
            labels: Optional[Sequence[str]] = None,
            points: Optional[Mapping[str, GridPoint]] = None) -> list[Recipe]:
  """The recipes of ``searches`` (directory, ``horizon.json`` content), in
  order, keeping only ``cells`` if given; ``labels`` replaces the names.
  ``points`` gives the searches of a grid their point (:func:`load_all`):
  a point's values name its recipes even where they are the defaults."""
  reference = defaults()
  points = points or {}
  found = []
  for directory, content in searches:
    settings = content["settings"]
    training = settings["training"]
    point = points.get(directory)
    differ = {k: v for k, v in training.items()
              if k not in SHARED + VERSIONS
              and reference.get(k, object()) != v}
    changes = {k: v for k, v in differ.items() if k not in PROTOCOL}
    protocol = {k: v for k, v in differ.items() if k in PROTOCOL}
    named = changes if point is None else {
        k: v for k, v in training.items() if k in changes or k in point.values}
    for cell, entry in content["cells"].items():
      if cells is not None and cell not in cells:
        continue
      label = f"{cell}: {report.describe(named)}" if named else cell
      found.append(Recipe(label, directory, cell, changes, protocol,
                          settings, entry, point))
  if not found:
    raise CompareError(
        "cells" if cells is not None else "searches",
        "no recipe to compare" + (f": no search has cells {sorted(cells)}"
                                  if cells is not None else ""))
  if labels is not None:
    if len(labels) != len(found):
      raise CompareError(
          "labels", f"{len(labels)} labels for {len(found)} recipes ("
          + "; ".join(r.label for r in found) + ")")
    found = [dataclasses.replace(r, label=l) for r, l in zip(found, labels)]
  _check(found)
  return found


def _check(found: list[Recipe]) -> None:
  for key in SHARED:
    values = {r.settings["training"][key] for r in found}
    if len(values) > 1:
      raise CompareError(
          "searches", f"the searches differ in {key} ("
          + ", ".join(f"{r.directory}: "
                      f"{report.flag_value(r.settings['training'][key])}"
                      for r in found)
          + "); compare searches run with one budget and one criterion")
  seen = {}
  for r in found:
    if r.label in seen:
      raise CompareError(
          "labels", f"{seen[r.label]} and {r.directory} both hold the recipe "
          f"{r.label!r}; give --labels, or compare one of them")
    seen[r.label] = r.directory


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One cell of one grid judged: its points' recipes, best first
  (``ranked``: the searches that ended), and those not judged (still
  searching, or ended by an error)."""

  grid: str
  cell: str
  ranked: list[Recipe]
  unjudged: list[Recipe]

  @property
  def best(self) -> Optional[Recipe]:
    """The first ranked, if it has a horizon; None if no search ended, or
    no point's seeds all solve the shortest length."""
    if self.ranked and self.ranked[0].entry.get("horizon") is not None:
      return self.ranked[0]
    return None

  @property
  def tied(self) -> list[Recipe]:
    """The recipes ranked as high as :attr:`best` (itself included): the
    same horizon and the same median steps to solve at it."""
    return [r for r in self.ranked if rank_key(r) == rank_key(self.best)]

  def why(self) -> str:
    """Why :attr:`best` won, in words, against the next best."""
    return report.grid_verdict_text(self)


def rank_key(recipe: Recipe) -> tuple[float, float]:
  """What ranks the recipes of a grid, the smallest best: the largest
  horizon (none, below ``min_length``, ranks last), then the fewest median
  steps to solve at it."""
  found = recipe.entry.get("horizon")
  steps = recipe.steps_at_horizon
  return (-found if found is not None else math.inf,
          steps if steps is not None else math.inf)


def ended(recipe: Recipe) -> bool:
  """Whether ``recipe``'s search ended with a horizon (not still searching,
  nor stopped by an error): what a grid's verdict judges."""
  message = recipe.entry.get("message")
  return message is not None and not message.startswith("error")


def best_of_grids(found: Sequence[Recipe]) -> list[Verdict]:
  """Per grid and cell of ``found`` (in the order they first appear), its
  points' recipes ranked by :func:`rank_key` (ties kept in the grid's
  order): a :class:`Verdict`."""
  groups: dict[tuple[str, str], list[Recipe]] = {}
  for r in found:
    if r.point is not None:
      groups.setdefault((r.point.grid, r.cell), []).append(r)
  return [Verdict(grid, cell,
                  sorted((r for r in group if ended(r)), key=rank_key),
                  [r for r in group if not ended(r)])
          for (grid, cell), group in groups.items()]


def summary_table(found: list[Recipe]) -> str:
  """Markdown: per recipe its seeds, horizon and lengths tried, then where
  the solve checks differed from the defaults
  (:func:`palindrome_jax.report.compare_table`), then each grid's best per
  cell (:func:`palindrome_jax.report.grid_verdicts`)."""
  table = report.compare_table(found, _default_checks())
  verdicts = best_of_grids(found)
  return table + ("\n" + report.grid_verdicts(verdicts) if verdicts else "")


def _default_checks() -> dict[str, Any]:
  """How a run is checked by default: what a recipe's checks differ from."""
  reference = defaults()
  return {k: reference[k] for k in PROTOCOL}


def write(found: list[Recipe], results_dir: str,
          not_searched: Sequence[str] = ()) -> None:
  """``compare.md``, ``compare.json`` and ``compare.png`` in
  ``results_dir``. A recipe of a grid also gives, in ``compare.json``, its
  grid, its point, its rank among the points (1: the best; None: not
  judged) and whether it is the best, the best also why it won
  (:func:`best_of_grids`). ``not_searched``: the points of the grids that
  have no search yet, listed in ``compare.md``."""
  verdicts = best_of_grids(found)
  io.atomic_write_text(os.path.join(results_dir, "compare.md"),
                       report.compare_report(found, _default_checks(),
                                             verdicts, not_searched))
  judged = {id(r): (v, k) for v in verdicts for k, r in enumerate(v.ranked)}
  io.write_json(os.path.join(results_dir, "compare.json"), [
      {"label": r.label, "directory": r.directory, "cell": r.cell,
       "changes": r.changes, "protocol": r.protocol,
       "horizon": r.entry.get("horizon"), "horizon_text": r.horizon,
       "evaluations": r.entry["evaluations"],
       **({"grid": _grid_record(r, *judged.get(id(r), (None, None)))}
          if r.point is not None else {})} for r in found])
  plots.recipes(found, os.path.join(results_dir, "compare.png"))


def _grid_record(recipe: Recipe, verdict: Optional[Verdict],
                 rank: Optional[int]) -> dict[str, Any]:
  """A grid recipe's place in its grid, as ``compare.json`` gives it."""
  best = verdict is not None and verdict.best is recipe
  return {"directory": recipe.point.grid, "point": recipe.point.values,
          "rank": None if rank is None else rank + 1, "best": best,
          "median_steps_at_horizon": recipe.steps_at_horizon,
          **({"why": verdict.why()} if best else {})}
