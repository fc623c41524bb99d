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
"""

import dataclasses
import os
from typing import Any, Iterable, Optional, Sequence

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
class Recipe:
  """One cell of one horizon search."""

  label: str
  directory: str
  cell: str
  changes: dict[str, Any]  # What it learns with, where not the default.
  protocol: dict[str, Any]  # How it was checked, where not the default.
  settings: dict[str, Any]  # The search's settings (horizon.json).
  entry: dict[str, Any]  # The cell's search (horizon.json).

  @property
  def horizon(self) -> str:
    return report.horizon_text(self.entry, self.settings)

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
  """A search's ``horizon.json`` (:func:`horizon.read_search`);
  FileNotFoundError if it has none, ValueError if it is not one (damaged,
  another tool's, or of another format: :class:`results.FormatError`)."""
  return horizon.read_search(os.path.join(directory, "horizon.json"))


def defaults() -> dict[str, Any]:
  """The training settings of ``experiments.horizon`` run without flags."""
  return horizon.HorizonConfig().base.training_settings()


def recipes(searches: Sequence[tuple[str, dict[str, Any]]],
            cells: Optional[Iterable[str]] = None,
            labels: Optional[Sequence[str]] = None) -> list[Recipe]:
  """The recipes of ``searches`` (directory, ``horizon.json`` content), in
  order, keeping only ``cells`` if given; ``labels`` replaces the names."""
  reference = defaults()
  found = []
  for directory, content in searches:
    settings = content["settings"]
    training = settings["training"]
    differ = {k: v for k, v in training.items()
              if k not in SHARED + VERSIONS
              and reference.get(k, object()) != v}
    changes = {k: v for k, v in differ.items() if k not in PROTOCOL}
    protocol = {k: v for k, v in differ.items() if k in PROTOCOL}
    for cell, entry in content["cells"].items():
      if cells is not None and cell not in cells:
        continue
      label = f"{cell}: {report.describe(changes)}" if changes else cell
      found.append(Recipe(label, directory, cell, changes, protocol,
                          settings, entry))
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


def summary_table(found: list[Recipe]) -> str:
  """Markdown: per recipe its seeds, horizon and lengths tried, then where
  the solve checks differed from the defaults
  (:func:`palindrome_jax.report.compare_table`)."""
  return report.compare_table(found, _default_checks())


def _default_checks() -> dict[str, Any]:
  """How a run is checked by default: what a recipe's checks differ from."""
  reference = defaults()
  return {k: reference[k] for k in PROTOCOL}


def write(found: list[Recipe], results_dir: str) -> None:
  """``compare.md``, ``compare.json`` and ``compare.png`` in
  ``results_dir``."""
  io.atomic_write_text(os.path.join(results_dir, "compare.md"),
                       report.compare_report(found, _default_checks()))
  io.write_json(os.path.join(results_dir, "compare.json"), [
      {"label": r.label, "directory": r.directory, "cell": r.cell,
       "changes": r.changes, "protocol": r.protocol,
       "horizon": r.entry.get("horizon"), "horizon_text": r.horizon,
       "evaluations": r.entry["evaluations"]} for r in found])
  plots.recipes(found, os.path.join(results_dir, "compare.png"))
