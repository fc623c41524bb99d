"""The flags every entrypoint shares, and what each does around its one call.

Training options are defined once here, generated from the configs' fields
(:mod:`palindrome_jax.cli`); ``sweep``, ``horizon``, ``gradients`` and
``benchmark`` all read them, so a recipe carries from one tool to another.
Each entrypoint's own flags live on its :func:`command`.
"""

import contextlib
import dataclasses
import importlib
import sys
from typing import Any, Optional, Sequence

from absl import flags

from palindrome_jax import cli
from palindrome_jax import config
from palindrome_jax import devices as devices_lib
from palindrome_jax import results as results_lib
from palindrome_jax import runner
from palindrome_jax import sweep as sweep_lib
from palindrome_jax import train
from palindrome_jax import validation

# Every training setting: one flag per field of RunConfig.
RUN_FLAGS = cli.define_flags(config.RunConfig, skip=("cell", "length"))
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
    "(one run per device); 0: one per core. Ignored on GPU/TPU.")

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
    COMPILATION_CACHE_DIR))

# --help shows an entrypoint's flags in these groups; the rest of its own
# flags come first, under "This tool".
HELP_GROUPS = (
    ("Runs", ("cells", "lengths", "length", "seeds", "seed", "cell_module")),
    ("Training (palindrome_jax.config.RunConfig)",
     tuple(cli.flag_name(config.RunConfig, name) for name in RUN_FLAGS)),
    ("Results", ("results_dir", "overwrite", "checkpoint_every",
                 "profile_dir")),
    ("Devices and processes",
     ("cpu_devices", "vmap_seeds", "coordinator_address", "num_processes",
      "process_id", "compilation_cache_dir")),
)


def command(doc: Optional[str], shared: Sequence[str] = SHARED,
            defaults: Optional[dict[str, Any]] = None) -> cli.Command:
  """An entrypoint's :class:`~palindrome_jax.cli.Command`: ``doc`` (its
  module's docstring) heads its --help, which lists its own flags and
  ``shared`` (default: every flag above) in :data:`HELP_GROUPS`."""
  return cli.Command(doc, shared, HELP_GROUPS, defaults)


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
      COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value)


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


def base_run_config(lengths: Sequence[int],
                    cell: str = "lstm") -> train.RunConfig:
  """The :class:`RunConfig` the training flags say, at the shortest of
  ``lengths``, the lengths the tool will train (each run then sets its own).
  Every cell of --cells is checked to build there: a setting that depends on
  N (--chrono_per_digit: T_max = c x N, which grows with N) is checked at the
  lengths asked for, not at one they do not include."""
  length = min(lengths)
  if RUN_FLAGS["num_params"].present and RUN_FLAGS["num_hidden"].present:
    raise validation.FlagError(
        "num_params", "sets each cell's --num_hidden; give one of the two")
  base = cli.from_flags(config.RunConfig, RUN_FLAGS, cell=cell, length=length)
  for name in cell_names():
    cli.from_flags(config.RunConfig, RUN_FLAGS, cell=name, length=length)
  return base


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
def training(base: train.RunConfig, cells: tuple[str, ...],
             lengths: tuple[int, ...], vmap_seeds: bool = False):
  """What every training entrypoint does around its one library call:
  devices set up and announced once the runs are known to fit, Ctrl-C
  handled, and SIGTERM like it (yields ``(devices, stop)``), a results
  directory that refuses the run reported as a ``--results_dir`` error, and
  after the signal the line to rerun and exit status 128 + its number (130
  for Ctrl-C, 143 for SIGTERM)."""
  devices = configure_devices()
  check_memory(base, cells, lengths, devices, vmap_seeds)
  print(devices_lib.describe(devices), file=sys.stderr, flush=True)
  with stop_on_interrupt() as stop:
    try:
      yield devices, stop
    except (results_lib.SettingsMismatchError, results_lib.BusyError) as error:
      raise validation.FlagError("results_dir", str(error)) from None
  if stop():
    print("interrupted; rerun the same command to continue", file=sys.stderr)
    sys.exit(stop.exit_status)


def stop_on_interrupt():
  """A context whose value, called, says whether Ctrl-C (or SIGTERM) came:
  the first stops every run at the end of its chunk, a second exits at once."""
  return runner.StopRequest().on_signals()
