"""The flags every entrypoint shares, and what each does around its one call.

Training options are defined once here, generated from the configs' fields
(:mod:`palindrome_jax.cli`); ``sweep``, ``horizon``, ``gradients`` and
``benchmark`` all read them, so a recipe carries from one tool to another.
Each entrypoint's own flags live on its :func:`command`. The sweep and the
horizon search also take several values of a training flag, a grid
(:mod:`palindrome_jax.grid`): :func:`grid_values`, :class:`Points`.
"""

import contextlib
import dataclasses
import importlib
import sys
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from absl import flags

from palindrome_jax import cli
from palindrome_jax import config
from palindrome_jax import devices as devices_lib
from palindrome_jax import grid as grid_lib
from palindrome_jax import results as results_lib
from palindrome_jax import runner
from palindrome_jax import sweep as sweep_lib
from palindrome_jax import train
from palindrome_jax import validation

# Every training setting: one flag per field of RunConfig, each (but the
# bool) taking one value or several (a grid, in the sweep and the search).
RUN_FLAGS = cli.define_flags(config.RunConfig, skip=("cell", "length"),
                             several=True)
# What to train: --cells (the tools' ``cells`` field), --seeds and --seed.
CELL_FLAGS = cli.define_flags(sweep_lib.SweepConfig, only=("cells",))
CELL_MODULE = flags.DEFINE_string(
    "cell_module", None,
    "Python module to import before anything else, e.g. my_cells: it may "
    "register cells with palindrome_jax.cells.register(name, cell).")
SEEDS = flags.DEFINE_integer(
    "seeds", 1, "Number of seeds per (cell, length): seeds --seed, --seed+1, "
    "...; each trains as its own run (see --vmap_seeds).")
SEED = flags.DEFINE_integer("seed", config.FIRST_SEED,
                            "First seed; seeds are seed, seed+1, ...")
CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0,
    "On CPU, expose this many devices so independent runs use every core "
    "(one run per device; a run waits until its estimated memory fits "
    "beside the others'); 0: one per core. Ignored on GPU/TPU.")

COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for a run over several processes or hosts "
    "(jax.distributed); absent: one process. Each process trains its share "
    "of the runs on its own devices into the shared --results_dir.")
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 1, "With --coordinator_address: how many processes.")
PROCESS_ID = flags.DEFINE_integer(
    "process_id", 0, "With --coordinator_address: this process's index, "
    "0 to --num_processes - 1 (0 writes the summaries).")
COORDINATOR_TIMEOUT = flags.DEFINE_integer(
    "coordinator_timeout", 300,
    "With --coordinator_address: seconds every process waits for all of "
    "them to connect, and then to open --results_dir; past it, it exits "
    "(status 75) saying which is missing. A process lost later (killed, a "
    "host gone) is seen within seconds: the others stop at the end of their "
    "chunk, name it and exit 75; the same command continues.")

COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", "~/.cache/palindrome_jax/xla",
    "Keep compiled programs here (JAX's persistent cache), so a rerun, a "
    "resumed sweep or another tool with the same shapes skips compiling; "
    "empty: off.")

FLAGS = flags.FLAGS

# The flags above: what the training tools' --help lists beside their own.
SHARED = tuple(holder.name for holder in (
    *RUN_FLAGS.values(), *CELL_FLAGS.values(), CELL_MODULE, SEEDS, SEED,
    CPU_DEVICES, COORDINATOR_ADDRESS, NUM_PROCESSES, PROCESS_ID,
    COORDINATOR_TIMEOUT, COMPILATION_CACHE_DIR))

# --help shows an entrypoint's flags in these groups; the rest of its own
# flags come first, under "This tool".
TRAINING_GROUP = "Training (palindrome_jax.config.RunConfig)"
HELP_GROUPS = (
    ("Runs", ("cells", "lengths", "length", "seeds", "seed", "cell_module")),
    (TRAINING_GROUP,
     tuple(cli.flag_name(config.RunConfig, name) for name in RUN_FLAGS)),
    ("Results", ("results_dir", "overwrite", "checkpoint_every",
                 "profile_dir")),
    ("Devices and processes",
     ("cpu_devices", "vmap_seeds", "coordinator_address", "num_processes",
      "process_id", "coordinator_timeout", "compilation_cache_dir")),
)


# What the --help of a tool that trains a grid says of the training flags.
GRID_HELP = (
    "Each takes one value, or several comma-separated "
    "(--learning_rate=3e-4,1e-3; --stop_when_solved takes one): several make "
    "a grid, every combination trained in turn, each into a subdirectory of "
    "--results_dir named by its values (learning_rate=0.0003/), listed in "
    "its grid.json; rerun to resume, and give experiments.compare the "
    "directory to name each cell's best.")


def command(doc: Optional[str], shared: Sequence[str] = SHARED,
            defaults: Optional[dict[str, Any]] = None,
            grid: bool = False) -> cli.Command:
  """An entrypoint's :class:`~palindrome_jax.cli.Command`: ``doc`` (its
  module's docstring) heads its --help, which lists its own flags and
  ``shared`` (default: every flag above) in :data:`HELP_GROUPS`. With
  ``grid`` (a tool that trains a grid: :class:`Points`) the training
  flags' group says they take several values."""
  return cli.Command(doc, shared, HELP_GROUPS, defaults,
                     notes={TRAINING_GROUP: GRID_HELP} if grid else None)


def define_results_flags(tool: cli.Command, default: str, about: str):
  """``--results_dir`` (this tool's default and help, ``about``) and
  ``--overwrite``, for the tools that train into a results directory."""
  values = tool.flag_values
  return (flags.DEFINE_string("results_dir", default, about,
                              flag_values=values),
          flags.DEFINE_bool(
              "overwrite", False, "Replace the runs in --results_dir trained "
              "with other training settings (otherwise that is refused).",
              flag_values=values))


def configure_devices() -> list:
  """:func:`palindrome_jax.devices.configure` as the device flags say: the
  local devices of the default backend."""
  return devices_lib.configure(
      CPU_DEVICES.value, COMPILATION_CACHE_DIR.value,
      COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value,
      COORDINATOR_TIMEOUT.value)


def import_cell_module() -> None:
  """Imports ``--cell_module`` so the cells it registers can be named."""
  if not CELL_MODULE.value:
    return
  if "" not in sys.path and "." not in sys.path:
    sys.path.insert(0, "")  # Modules in the working directory, as python -m.
  try:
    importlib.import_module(CELL_MODULE.value)
  except Exception as error:  # pylint: disable=broad-except
    raise validation.FlagError(
        "cell_module", f"cannot import {CELL_MODULE.value!r}: "
        f"{type(error).__name__}: {error}") from None


def cell_names() -> tuple[str, ...]:
  """--cells, once --cell_module has registered its cells, checked."""
  import_cell_module()
  return cli.flag_field(sweep_lib.SweepConfig, CELL_FLAGS, "cells")


def seed_values() -> tuple[int, ...]:
  if SEEDS.value < 1:
    raise validation.FlagError("seeds", f"must be >= 1, got {SEEDS.value}")
  if SEED.value < 0:
    raise validation.FlagError("seed", f"must be >= 0, got {SEED.value}")
  if SEED.value + SEEDS.value > config.LARGEST_SEED + 1:
    raise validation.FlagError(
        "seed", f"seeds {SEED.value}..{SEED.value + SEEDS.value - 1} exceed "
        f"the largest seed, {config.LARGEST_SEED}")
  return tuple(range(SEED.value, SEED.value + SEEDS.value))


def grid_values() -> dict[str, tuple]:
  """The training flags given several values, ``{field: its values}`` in
  RunConfig's order (empty: no grid); each value checked
  (:func:`palindrome_jax.cli.several_values`)."""
  return cli.several_values(config.RunConfig, RUN_FLAGS)


def base_run_config(lengths: Sequence[int], cell: str = "lstm",
                    point: Optional[Mapping[str, Any]] = None
                    ) -> train.RunConfig:
  """The :class:`RunConfig` the training flags say, at the shortest of
  ``lengths``, the lengths the tool will train (each run then sets its own),
  with the values of ``point`` (a point of the grid, :func:`grid_values`)
  in place of their flags'. Every cell of --cells is checked to build there:
  a setting that depends on N (--chrono_per_digit: T_max = c x N, which
  grows with N) is checked at the lengths asked for, not at one they do not
  include."""
  length = min(lengths)
  point = dict(point or {})
  if RUN_FLAGS["num_params"].present and RUN_FLAGS["num_hidden"].present:
    raise validation.FlagError(
        "num_params", "sets each cell's --num_hidden; give one of the two")
  base = cli.from_flags(config.RunConfig, RUN_FLAGS, cell=cell, length=length,
                        **point)
  for name in cell_names():
    cli.from_flags(config.RunConfig, RUN_FLAGS, cell=name, length=length,
                   **point)
  return base


class Points:
  """Where a tool's configs train: each point of the grid of ``values`` (a
  :func:`grid_values`) into its own directory under ``results_dir``, or,
  without a grid, the one config into ``results_dir``, which must then not
  be a grid's parent. ``configs`` are the tool's configs of
  :func:`palindrome_jax.grid.points`, in its order, each with its ``base``.
  A grid that cannot train there is refused when made, as a
  ``--results_dir`` error, before anything starts."""

  def __init__(self, configs: Sequence[Any], values: Mapping[str, tuple],
               results_dir: str, tool: str, overwrite: bool = False):
    self.configs, self.values = list(configs), dict(values)
    self.results_dir, self.tool, self.overwrite = (results_dir, tool,
                                                   overwrite)
    self.bases = [cfg.base for cfg in self.configs]
    with self._results_dir_errors():
      if not self.values:
        grid_lib.check_not_a_grid(results_dir)
      else:
        grid_lib.check(results_dir, self.values, tool, self._settings(),
                       overwrite)

  def each(self, stop: Callable[[], bool] = lambda: False
           ) -> Iterator[tuple[Any, str]]:
    """``(config, directory)`` for each point in turn, the grid recorded
    first (:func:`palindrome_jax.grid.open_points`) and a line on stdout
    heading each point; none more once ``stop()``."""
    placed = [({}, self.results_dir)]
    if self.values:
      with self._results_dir_errors():
        placed = grid_lib.open_points(self.results_dir, self.values,
                                      self.tool, self._settings(),
                                      self.overwrite)
    for k, ((point, directory), cfg) in enumerate(zip(placed, self.configs)):
      if stop():
        return
      if self.values:
        print(f"## {grid_lib.point_name(point)} (point {k + 1} of "
              f"{len(placed)})", flush=True)
      yield cfg, directory

  def _settings(self) -> dict[str, Any]:
    return self.bases[0].training_settings()

  @staticmethod
  @contextlib.contextmanager
  def _results_dir_errors():
    try:
      yield
    except grid_lib.GridError as error:
      raise validation.FlagError("results_dir", str(error)) from None


def check_memory(base: train.RunConfig, cells: tuple[str, ...],
                 lengths: tuple[int, ...], devices: list,
                 vmap_seeds: bool = False) -> None:
  """Refuses, before anything compiles, runs that cannot fit on a device
  (each at the longest of ``lengths``; with ``vmap_seeds``, all of
  --seeds in one program)."""
  seeds = len(seed_values()) if vmap_seeds else 1
  devices_lib.check_memory(
      [dataclasses.replace(base, cell=cell, length=max(lengths))
       for cell in cells], devices[0],
      lambda cfg: train.estimate_memory(cfg, seeds))


@contextlib.contextmanager
def training(base: Union[train.RunConfig, Sequence[train.RunConfig]],
             cells: tuple[str, ...], lengths: tuple[int, ...],
             vmap_seeds: bool = False):
  """What every training entrypoint does around its one library call (or
  its calls, one per point of a grid: ``base`` then lists each point's):
  devices set up and announced once the runs are known to fit, Ctrl-C
  handled, and SIGTERM like it (yields ``(devices, stop)``), a results
  directory that refuses the run reported as a ``--results_dir`` error, and
  after the signal the line to rerun and exit status 128 + its number (130
  for Ctrl-C, 143 for SIGTERM).

  Over several processes the ``stop`` also says true once one is lost
  (:func:`palindrome_jax.devices.lost_processes`): every run stops at the end
  of its chunk, the tool writes what it can, and the line naming the lost
  process ends it with status 75, as one that never came does
  (:func:`palindrome_jax.devices.start_processes`)."""
  devices = configure_devices()
  for each in [base] if isinstance(base, train.RunConfig) else base:
    check_memory(each, cells, lengths, devices, vmap_seeds)
  print(devices_lib.describe(devices), file=sys.stderr, flush=True)
  with stop_on_interrupt() as stop:

    def stop_or_lost() -> bool:
      return stop() or bool(devices_lib.lost_processes())

    try:
      yield devices, stop_or_lost
    except (results_lib.SettingsMismatchError, results_lib.BusyError) as error:
      raise validation.FlagError("results_dir", str(error)) from None
    except devices_lib.ProcessesError as error:
      print(f"error: {error}", file=sys.stderr, flush=True)
      sys.exit(error.exit_status)
  lost = devices_lib.lost_processes()
  if lost:
    print(devices_lib.lost_line(lost), file=sys.stderr, flush=True)
    sys.exit(devices_lib.LOST_STATUS)
  if stop():
    print("interrupted; rerun the same command to continue", file=sys.stderr)
    sys.exit(stop.exit_status)


def stop_on_interrupt():
  """A context whose value, called, says whether Ctrl-C (or SIGTERM) came:
  the first stops every run at the end of its chunk, a second exits at once."""
  return runner.StopRequest().on_signals()
