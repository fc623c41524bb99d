"""The memory leaderboard: per cell and model size, its best recipe's horizon.

A *standing* is one row: a cell at one depth, block and width (or parameter
budget), with every other training setting but the learning rate fixed. Its
recipes (:class:`compare.Recipe`) are the learning rates it was searched
with, usually the points of a grid (``--learning_rate=3e-4,1e-3,3e-3``);
the standing reads its best: the longest N known solved by every seed (a
search under way counts the longest length it has passed, a lower bound of
its horizon), an ended search before one under way at the same N, then the
fewest median steps to solve there. A standing whose best is still
searching is marked so.

Each standing gives the model's width, its parameter count and its state size
(the floats one example carries between steps), all from the model's own
``init`` (:mod:`sizing`), and, where a benchmark measured it, the cost of
training: core-seconds per 1,000 steps at N = :data:`COST_LENGTH` (the
sweep's compiled loop, one run per core as the sweep runs them; from the
``benchmark.json`` of ``experiments.benchmark``).
"""

import dataclasses
import os
from typing import Any, Iterable, Mapping, Optional, Sequence

from palindrome_jax import compare
from palindrome_jax import config as config_lib
from palindrome_jax import data
from palindrome_jax import files as io
from palindrome_jax import plots
from palindrome_jax import report
from palindrome_jax import sizing

# How near a model's parameter count must be to a budget to stand in the
# table at equal parameters: --num_params picks the width closest to it,
# within a fraction of a percent for the cells here.
EQUAL_PARAMS_TOLERANCE = 0.01

# The length at which a standing's cost is read from a benchmark.
COST_LENGTH = 100
# The benchmark method whose rate the cost is: what the sweep trains with.
COST_METHOD = "compiled_loop"


@dataclasses.dataclass(frozen=True)
class Standing:
  """One row of the leaderboard (see the module doc)."""

  cell: str
  num_layers: int
  block: str
  num_hidden: Optional[int]  # None for a cell this process cannot build.
  num_params: Optional[int]
  state_size: Optional[int]
  best: compare.Recipe
  tried: tuple[compare.Recipe, ...]  # Every learning rate, best first.
  cost: Optional[float] = None  # Core-seconds per 1,000 steps at N=100.

  @property
  def learning_rate(self) -> float:
    return self.best.settings["training"]["learning_rate"]

  @property
  def learning_rates(self) -> list[float]:
    return sorted({r.settings["training"]["learning_rate"]
                   for r in self.tried})

  @property
  def bound(self) -> Optional[int]:
    """The longest N every seed of the best search solves (see
    :func:`lower_bound`)."""
    return lower_bound(self.best)

  @property
  def steps_at_bound(self) -> Optional[float]:
    """The median steps to solve of the best search's seeds at
    :attr:`bound`."""
    return self.best.steps_at(self.bound)

  @property
  def searching(self) -> bool:
    """Whether the best search of this standing has not ended yet."""
    return not compare.ended(self.best)

  @property
  def horizon_text(self) -> str:
    """The best search's horizon as its table states it, marked where the
    search has not ended (and its text does not say so already)."""
    text = self.best.horizon
    if self.searching and "so far" not in text:
      return f"{text} (searching)"
    return text

  @property
  def label(self) -> str:
    """The recipe's name without its learning rate, with its size."""
    named = {k: v for k, v in self.best.changes.items()
             if k not in ("learning_rate", "num_layers", "num_hidden",
                          "num_params", "block")}
    extra = ", ".join(f"{k}={v}" for k, v in sorted(named.items()))
    return f"{self.cell}{f' ({extra})' if extra else ''}"


def _group_key(recipe: compare.Recipe) -> tuple:
  training = recipe.settings["training"]
  return (recipe.cell,) + tuple(sorted(
      (k, repr(v)) for k, v in training.items()
      if k not in ("learning_rate",) + compare.PROTOCOL + compare.VERSIONS))


def run_config(recipe: compare.Recipe) -> Optional[config_lib.RunConfig]:
  """The recipe's settings as a run of its cell (its width set from
  ``num_params`` where it gives one); None if this process cannot build
  it (a cell from a ``--cell_module`` not imported here)."""
  fields = {f.name for f in dataclasses.fields(config_lib.RunConfig)}
  training = {k: v for k, v in recipe.settings["training"].items()
              if k in fields}
  try:
    return config_lib.RunConfig(cell=recipe.cell, **training)
  except (config_lib.ConfigError, TypeError, ValueError):
    return None


def standings(found: Sequence[compare.Recipe],
              benchmarks: Iterable[dict[str, Any]] = ()) -> list["Standing"]:
  """The leaderboard of ``found``: a :class:`Standing` per cell and size,
  the longest horizon first (a standing still searching by its bound so
  far; one with no horizon last), each with its cost where one of
  ``benchmarks`` (``benchmark.json`` contents) timed its model at N =
  :data:`COST_LENGTH`."""
  groups: dict[tuple, list[compare.Recipe]] = {}
  for recipe in found:
    groups.setdefault(_group_key(recipe), []).append(recipe)
  benchmarks = list(benchmarks)
  rows = []
  for recipes in groups.values():
    ranked = sorted(recipes, key=_standing_key)
    best = ranked[0]
    cfg = run_config(best)
    training = best.settings["training"]
    width = cfg.num_hidden if cfg is not None else training.get("num_hidden")
    params = state = None
    if cfg is not None:
      params = sizing.count_params(best.cell, width, cfg.input_dim,
                                   cfg.num_layers, cfg.block)
      state = sizing.state_size(best.cell, width, cfg.num_layers)
    rows.append(Standing(
        best.cell, training.get("num_layers", 1),
        training.get("block", "stack"), width, params, state, best,
        tuple(ranked), cost_of(best.cell, training, width, benchmarks)))
  return sorted(rows, key=_order)


def at_params(rows: Sequence[Standing], params: int) -> list[Standing]:
  """The standings of ``rows`` whose models have ``params`` parameters to
  within :data:`EQUAL_PARAMS_TOLERANCE`: sized to it (``--num_params``),
  or that size at their width (the LSTM's 67,850 at 128 units)."""
  return [s for s in rows if s.num_params is not None
          and abs(s.num_params - params) <= EQUAL_PARAMS_TOLERANCE * params]


def within(params: int) -> str:
  """How near :func:`at_params` keeps a model to ``params``, in words."""
  return (f"within {100 * EQUAL_PARAMS_TOLERANCE:g}% of {params:,} "
          "parameters")


def lower_bound(recipe: compare.Recipe) -> Optional[int]:
  """The longest N that every seed of ``recipe`` is known to solve: its
  horizon once the search has ended, the longest length passed so far while
  it searches (None if none)."""
  if compare.ended(recipe):
    return recipe.entry.get("horizon")
  passed = [e["length"] for e in recipe.entry["evaluations"] if e["passed"]]
  return max(passed) if passed else None


def _standing_key(recipe: compare.Recipe) -> tuple:
  """Best first: the longest known N (a search under way counts what it has
  passed: its horizon can only be longer), an ended search before one under
  way at the same N, then the fewest median steps to solve at it."""
  bound = lower_bound(recipe)
  steps = recipe.steps_at(bound)
  return (-bound if bound is not None else float("inf"),
          not compare.ended(recipe),
          steps if steps is not None else float("inf"))


def _order(standing: Standing) -> tuple:
  return _standing_key(standing.best) + (standing.cell,)


def cost_of(cell: str, training: dict[str, Any], width: Optional[int],
            benchmarks: Sequence[dict[str, Any]]) -> Optional[float]:
  """Core-seconds per 1,000 steps of ``cell`` at N = :data:`COST_LENGTH`,
  from the first benchmark whose model is this one (depth, block, width,
  encoding, batch): ``1000 / steps/s`` of the compiled loop, which one
  run trains on one core. None where no benchmark timed it."""
  for bench in benchmarks:
    timed = bench.get("settings", {}).get("train_config", {})
    timed_width = timed.get("num_hidden")
    if "num_params" in timed:  # Each cell sized to the budget.
      timed_width = sizing.width_for(
          cell, timed["num_params"],
          data.input_dim(timed.get("encoding", "scalar")),
          timed.get("num_layers", 1), timed.get("block", "stack"))
    same = all(timed.get(k, d) == training.get(k, d) for k, d in (
        ("num_layers", 1), ("block", "stack"), ("encoding", "scalar"),
        ("batch_size", 128))) and timed_width == width
    if not same:
      continue
    for row in bench.get("results", []):
      if (row["cell"] == cell and row["length"] == COST_LENGTH
          and row["method"] == COST_METHOD and row["status"] == "ok"
          and row["steps_per_second"]):
        return 1000.0 / row["steps_per_second"]
  return None


def to_json(standing: Standing,
            commands: Optional[Mapping[str, Optional[str]]] = None
            ) -> dict[str, Any]:
  """A row of ``leaderboard.json``, its sources with their ``commands``."""
  commands = commands or {}
  return {"cell": standing.cell, "label": standing.label,
          "num_layers": standing.num_layers, "block": standing.block,
          "num_hidden": standing.num_hidden,
          "num_params": standing.num_params,
          "state_size": standing.state_size,
          "horizon": standing.best.entry.get("horizon"),
          "horizon_text": standing.best.horizon,
          "searching": standing.searching,
          "lower_bound": standing.bound,
          "median_steps_at_bound": standing.steps_at_bound,
          "learning_rate": standing.learning_rate,
          "learning_rates": standing.learning_rates,
          "cost_core_seconds_per_1000_steps": standing.cost,
          "directories": [r.directory for r in standing.tried],
          "sources": [{"directory": r.directory,
                       "command": commands.get(r.directory),
                       "run_wall_seconds": r.wall_seconds}
                      for r in standing.tried]}


def write(rows: Sequence[Standing], results_dir: str,
          params: Optional[int] = None,
          commands: Optional[Mapping[str, Optional[str]]] = None) -> None:
  """``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.png``; with
  ``params``, the rows are the table at that many parameters
  (:func:`at_params`), and leaderboard.md says so. ``commands``: the
  command that regenerates each results directory, where known (by the
  directory as the recipes name it)."""
  commands = commands or {}
  io.atomic_write_text(os.path.join(results_dir, "leaderboard.md"),
                       report.leaderboard_report(
                           rows, params,
                           within(params) if params is not None else "",
                           commands))
  io.write_json(os.path.join(results_dir, "leaderboard.json"),
                [to_json(s, commands) for s in rows])
  plots.leaderboard(
      list(rows), os.path.join(results_dir, "leaderboard.png"),
      within(params) if params is not None else "")
