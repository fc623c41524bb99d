"""A grid over training settings: every combination, each point on its own.

A training flag given several values (``--learning_rate=3e-4,1e-3``) makes a
grid: the cartesian product of the values of every such flag
(:func:`points`). The tool (the sweep, the horizon search) trains each
*point* in turn as it trains one set of settings, into a results directory
of its own (:mod:`palindrome_jax.results`: its lock, its resume, its
settings check) under the one given, the grid's *parent*::

    grid.json                      this module's record of the grid
    learning_rate=0.0003/          a point's results directory
    learning_rate=0.001/
    num_layers=2,learning_rate=0.0003/   (two flags: in RunConfig's order)

A point's directory is named by its settings, as ``name=value`` joined by
commas in the order of :class:`~palindrome_jax.config.RunConfig`'s fields
(:func:`point_name`): the same point has the same name whatever the order of
the flags or of their values, and no two points share one.

``grid.json`` (:data:`FORMAT_VERSION`, written whole: :mod:`files`) says
which tool made the grid, its flags and their values, the training settings
every point shares, and each point with its directory; it is what
``experiments.compare`` reads to find the points. Rerunning the same command
resumes every point. A rerun with the same flags and shared settings but
other values adds its new points (the grid's record then holds both); a grid
over other flags, with other shared settings or of the other tool is
refused (:class:`GridError`), unless ``overwrite`` records the new grid in
the old one's place (the old points' directories stay on disk, unlisted).
A parent holds only points: one that holds runs of its own is refused, and
:func:`check_not_a_grid` refuses to train one set of settings into a grid's
parent.
"""

import fcntl
import itertools
import math
import os
from typing import Any, Mapping, Optional, Sequence
import urllib.parse

from absl import logging

from palindrome_jax import files as io
from palindrome_jax import results as results_lib

# The format of grid.json. 1: the first.
FORMAT_VERSION = 1
GRID_FILE = "grid.json"
# What a directory of runs holds (results.py, horizon.py): not a grid's
# parent.
RUN_FILES = ("config.json", "runs", "horizon.json")

Point = dict[str, Any]  # One value per flag of the grid, by field name.


class GridError(ValueError):
  """A grid that cannot train into a directory: a one-line reason."""


def points(values: Mapping[str, Sequence[Any]]) -> list[Point]:
  """The cartesian product of ``values`` (``{field: its values}``), in
  order: the last field's values vary fastest. ``[{}]`` (one point, the
  flags' own settings) when ``values`` is empty."""
  names = list(values)
  return [dict(zip(names, combination))
          for combination in itertools.product(*values.values())]


def spell(value: Any) -> str:
  """A value as a directory's name spells it: the shortest text that reads
  back as the same number (``0.0003``, ``3e-05``, ``2``), a string as it is;
  any character that is not a letter, a digit or one of ``_.-+`` escaped as
  ``%XX``, so the name is one safe path component."""
  if isinstance(value, float) and math.isfinite(value):
    text = repr(value)
  else:
    text = str(value)
  return urllib.parse.quote(text, safe="+")


def point_name(point: Mapping[str, Any]) -> str:
  """``num_layers=2,learning_rate=0.0003``: the directory of ``point``
  (fields in the order given: :func:`points` keeps RunConfig's)."""
  return ",".join(f"{name}={spell(value)}" for name, value in point.items())


def read(parent: str) -> Optional[dict[str, Any]]:
  """``parent``'s ``grid.json``; None if it has none. ValueError naming the
  file if it is not a grid's record (damaged, another format)."""
  path = os.path.join(parent, GRID_FILE)
  try:
    content = io.read_json(path)
  except FileNotFoundError:
    return None
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{path} is not readable JSON "
                     f"({str(error).splitlines()[0]})") from None
  problem = record_problem(content)
  if problem:
    raise ValueError(f"{path} is not a grid's record: {problem}")
  return content


def record_problem(content: Any) -> Optional[str]:
  """What makes ``content`` not a ``grid.json`` of this format; None if it
  is one."""
  if not isinstance(content, dict):
    return "not an object"
  if content.get("format_version") != FORMAT_VERSION:
    return f"format_version is {content.get('format_version')!r}"
  if not isinstance(content.get("tool"), str):
    return "tool is not a string"
  flags = content.get("flags")
  if not (isinstance(flags, dict) and flags
          and all(isinstance(v, list) for v in flags.values())):
    return "flags is not an object of lists"
  if not isinstance(content.get("settings"), dict):
    return "settings is not an object"
  entries = content.get("points")
  if not isinstance(entries, list):
    return "points is not a list"
  for k, entry in enumerate(entries):
    if not (isinstance(entry, dict) and isinstance(entry.get("settings"), dict)
            and entry.get("directory") == point_name(entry["settings"])):
      return (f"points[{k}] is not a point (its settings and the directory "
              "they name)")
  return None


def check_not_a_grid(directory: str) -> None:
  """Refuses (:class:`GridError`) to train one set of settings into the
  parent of a grid: its points live in its subdirectories."""
  try:
    content = read(directory)
  except ValueError:
    content = {"flags": {}}
  if content is None:
    return
  over = ", ".join(f"--{name}" for name in content["flags"]) or "settings"
  raise GridError(
      f"{directory} holds a grid over {over} ({GRID_FILE}); give those flags "
      "several values to train its points, or another --results_dir")


def check(parent: str, values: Mapping[str, Sequence[Any]], tool: str,
          settings: Mapping[str, Any], overwrite: bool = False) -> None:
  """Refuses (:class:`GridError`) what :func:`open_points` would refuse,
  writing nothing: to refuse a grid before anything starts."""
  _check_parent(parent)
  try:
    earlier = read(parent)
  except ValueError:
    return  # Moved aside and recorded anew by open_points.
  if earlier is not None and not overwrite:
    _refuse_other(parent, earlier, _record(values, tool, settings))


def open_points(parent: str, values: Mapping[str, Sequence[Any]], tool: str,
                settings: Mapping[str, Any], overwrite: bool = False
                ) -> list[tuple[Point, str]]:
  """Records the grid of ``values``, made by ``tool``, in ``parent``'s
  ``grid.json`` and returns each of its :func:`points` (in order) with the
  directory it trains into. ``settings`` are a point's training settings
  (:meth:`RunConfig.training_settings`): those of the grid's flags left
  out, what every point shares.

  An earlier record of the same tool, flags and shared settings keeps its
  points and gains this grid's; any other is refused (:class:`GridError`)
  unless ``overwrite`` replaces it. A ``grid.json`` that cannot be read is
  moved aside (one warning) and the grid recorded anew.
  """
  _check_parent(parent)
  content = _record(values, tool, settings)
  os.makedirs(parent, exist_ok=True)
  # Two commands that start at once on one parent record both grids.
  with open(os.path.join(parent, ".grid.lock"), "a+") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    earlier = _read_or_move_aside(parent)
    if earlier is not None and not overwrite:
      _refuse_other(parent, earlier, content)
      content = _merged(earlier, content)
    io.write_json(os.path.join(parent, GRID_FILE), content)
  return [(p, os.path.join(parent, point_name(p))) for p in points(values)]


def _check_parent(parent: str) -> None:
  for name in RUN_FILES:
    if os.path.exists(os.path.join(parent, name)):
      raise GridError(
          f"{parent} holds runs of its own ({name}); a grid trains each "
          "point into a subdirectory of a directory that holds only them: "
          "give another --results_dir")


def _record(values: Mapping[str, Sequence[Any]], tool: str,
            settings: Mapping[str, Any]) -> dict[str, Any]:
  """``grid.json``'s content for the grid of ``values`` alone."""
  return results_lib.jsonable({
      "format_version": FORMAT_VERSION, "tool": tool,
      "flags": {name: list(v) for name, v in values.items()},
      "settings": {k: v for k, v in settings.items() if k not in values},
      "points": [{"directory": point_name(p), "settings": p}
                 for p in points(values)]})


def _refuse_other(parent: str, earlier: dict[str, Any],
                  content: dict[str, Any]) -> None:
  problem = _other_grid(earlier, content)
  if problem:
    raise GridError(
        f"{parent} holds {problem}; give another --results_dir, or "
        "--overwrite to record this grid there in its place")


def _read_or_move_aside(parent: str) -> Optional[dict[str, Any]]:
  try:
    return read(parent)
  except ValueError as error:
    moved = io.move_aside(os.path.join(parent, GRID_FILE))
    logging.warning("%s, moved to %s", error, moved)
    return None


def _other_grid(earlier: dict[str, Any], content: dict[str, Any]
                ) -> Optional[str]:
  """What makes the ``earlier`` record another grid than ``content``'s (in
  words, after "<parent> holds"); None if ``content`` may join it."""
  if earlier["tool"] != content["tool"]:
    return f"a grid of {earlier['tool']}, not of {content['tool']}"
  if set(earlier["flags"]) != set(content["flags"]):
    return (f"a grid over {_flags(earlier)}, not over {_flags(content)}")
  if earlier["settings"] != content["settings"]:
    differ = results_lib.differing(earlier["settings"], content["settings"])
    return (f"a grid over {_flags(earlier)} whose points share other "
            f"settings ({', '.join(differ)})")
  return None


def _flags(content: dict[str, Any]) -> str:
  return ", ".join(f"--{name}" for name in content["flags"])


def _merged(earlier: dict[str, Any], content: dict[str, Any]
            ) -> dict[str, Any]:
  """``earlier``'s record with the values and points of ``content`` it
  lacks, after its own."""
  flags = {name: list(values) + [v for v in content["flags"][name]
                                 if v not in values]
           for name, values in earlier["flags"].items()}
  known = {entry["directory"] for entry in earlier["points"]}
  return {**earlier, "flags": flags, "points": earlier["points"] + [
      entry for entry in content["points"] if entry["directory"] not in known]}
