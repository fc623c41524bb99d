"""Flags shared by every entrypoint, their validation, and the CLI wrapper.

Training options are defined once here; ``sweep``, ``horizon``, ``gradients``
and ``benchmark`` all read them, so a recipe carries from one tool to another.
"""

import contextlib
import os
import dataclasses
import importlib
import sys
import textwrap
from typing import Any, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from palindrome_jax import config
from palindrome_jax import devices as devices_lib
from palindrome_jax import results as results_lib
from palindrome_jax import sweep as sweep_lib
from palindrome_jax import train
from palindrome_jax import validation


def define_flags(config_class, skip=(), only=None,
                 flag_values=None) -> dict[str, Any]:
  """One flag per field of ``config_class`` that has help text (see
  :func:`palindrome_jax.config.setting`): same name (or the field's
  ``flag``), its default, its help. A tuple field is a comma-separated
  string flag. ``only``: just these fields. Returns
  ``{field name: FlagHolder}``. ``flag_values``: where to define them
  (default absl's ``FLAGS``)."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  holders = {}
  for field in dataclasses.fields(config_class):
    if (field.name in skip or (only is not None and field.name not in only)
        or not field.metadata.get("help")):
      continue
    name = field.metadata.get("flag") or field.name
    default = field.default
    if isinstance(default, tuple):
      holders[field.name] = flags.DEFINE_string(
          name, ",".join(map(str, default)), field.metadata["help"],
          flag_values=flag_values)
      continue
    kind = field.metadata.get("flag_type") or type(default)
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
              float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
    holders[field.name] = define(name, default, field.metadata["help"],
                                 flag_values=flag_values)
  return holders


def flag_name(config_class, field_name: str) -> str:
  """The flag that sets ``field_name`` of ``config_class``."""
  for field in dataclasses.fields(config_class):
    if field.name == field_name:
      return field.metadata.get("flag") or field.name
  return field_name


def parse_items(flag: str, text: Optional[str], kind: type) -> tuple:
  """``"5, 10,15"`` to ``(5, 10, 15)`` (``kind`` int) or names (``kind``
  str); an empty text is ``()``, for the field's check to refuse."""
  if not text or not text.strip():
    return ()
  values = []
  for item in (item.strip() for item in text.split(",")):
    if not item:
      raise validation.FlagError(flag, f"empty item in {text!r}")
    try:
      values.append(kind(item))
    except ValueError:
      what = "an integer" if kind is int else f"a {kind.__name__}"
      raise validation.FlagError(
          flag, f"{item!r} is not {what} (in {text!r})") from None
  return tuple(values)


def checked(flag: str, value: Any, check: config.Check) -> Any:
  """``value`` if ``check`` passes it, else the one-line flag error."""
  problem = check(value)
  if problem:
    raise validation.FlagError(flag, problem)
  return value


def _flag_value(config_class, field_name: str, holder) -> Any:
  """The value a flag gives its field: for a tuple field, its
  comma-separated items as the type of its default's items."""
  default = next(f.default for f in dataclasses.fields(config_class)
                 if f.name == field_name)
  if not isinstance(default, tuple):
    return holder.value
  return parse_items(holder.name, holder.value,
                     type(default[0]) if default else str)


def from_flags(config_class, holders: dict[str, Any], **values):
  """``config_class(**values, **flag values)``; a bad value is a
  :class:`FlagError` naming its flag."""
  try:
    return config_class(**values, **{
        name: _flag_value(config_class, name, holder)
        for name, holder in holders.items()})
  except config.ConfigError as error:
    raise validation.FlagError(flag_name(config_class, error.field),
                               error.problem) from None


# Every training setting: one flag per field of RunConfig.
RUN_FLAGS = define_flags(config.RunConfig, skip=("cell", "length"))
# What to train: --cells (the tools' ``cells`` field), --seeds and --seed.
CELL_FLAGS = define_flags(sweep_lib.SweepConfig, only=("cells",))
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


def define_results_flags(default: str, help: str):  # pylint: disable=redefined-builtin
  """``--results_dir`` (this tool's default and help) and ``--overwrite``,
  for the tools that train into a results directory. Call before
  ``flags.adopt_module_key_flags(common)``."""
  return (flags.DEFINE_string("results_dir", default, help),
          flags.DEFINE_bool(
              "overwrite", False, "Replace the runs in --results_dir trained "
              "with other training settings (otherwise that is refused)."))


def configure_devices() -> list:
  """Applies --cpu_devices (before JAX starts its backends) and returns the
  devices of the default backend."""
  import jax  # pylint: disable=g-import-not-at-top
  if CPU_DEVICES.value < 0:
    raise validation.FlagError("cpu_devices",
                               f"must be >= 0, got {CPU_DEVICES.value}")
  count = CPU_DEVICES.value or os.cpu_count() or 1
  if count != jax.config.jax_num_cpu_devices:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    if xla_bridge.backends_are_initialized():
      # Called again in one process (tests): the devices stay as they are.
      logging.warning("JAX already started; --cpu_devices=%d ignored", count)
    else:
      jax.config.update("jax_num_cpu_devices", count)
  if COMPILATION_CACHE_DIR.value and not os.environ.get(
      "JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser(COMPILATION_CACHE_DIR.value))
  if COORDINATOR_ADDRESS.value:
    if NUM_PROCESSES.value < 1:
      raise validation.FlagError("num_processes", "must be >= 1, got "
                                 f"{NUM_PROCESSES.value}")
    if not 0 <= PROCESS_ID.value < NUM_PROCESSES.value:
      raise validation.FlagError(
          "process_id", f"must be in [0, {NUM_PROCESSES.value - 1}], got "
          f"{PROCESS_ID.value}")
    jax.distributed.initialize(COORDINATOR_ADDRESS.value, NUM_PROCESSES.value,
                               PROCESS_ID.value)
  elif NUM_PROCESSES.value != 1 or PROCESS_ID.value != 0:
    raise validation.FlagError("num_processes", "several processes need "
                               "--coordinator_address")
  return jax.local_devices()


def describe_devices(devices: list) -> None:
  """One line on stderr: where the runs will train."""
  import jax  # pylint: disable=g-import-not-at-top
  where = (f"process {jax.process_index()} of {jax.process_count()}, "
           if jax.process_count() > 1 else "")
  print(f"JAX {jax.__version__} on {len(devices)} {jax.default_backend()} "
        f"device(s) ({where}{len(jax.devices())} in all)", file=sys.stderr,
        flush=True)


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


def flag_field(config_class, holders: dict[str, Any], name: str) -> Any:
  """The value the flag of ``config_class``'s field ``name`` gives it,
  checked as the field checks it (one-line :class:`FlagError`): for a value
  needed before the whole config can be built."""
  field = next(f for f in dataclasses.fields(config_class) if f.name == name)
  value = _flag_value(config_class, name, holders[name])
  check = field.metadata.get("check")
  return checked(flag_name(config_class, name), value, check) if check else value


def cell_names() -> tuple[str, ...]:
  """--cells, once --cell_module has registered its cells, checked."""
  import_cell_module()
  return flag_field(sweep_lib.SweepConfig, CELL_FLAGS, "cells")


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
  base = from_flags(config.RunConfig, RUN_FLAGS, cell=cell, length=length)
  for name in cell_names():
    from_flags(config.RunConfig, RUN_FLAGS, cell=name, length=length)
  return base


def check_memory(base: train.RunConfig, cells: tuple[str, ...],
                 lengths: tuple[int, ...], devices: list) -> None:
  """Refuses, before anything compiles, runs that cannot fit on a device."""
  available = devices_lib.device_memory(devices[0])
  if available is None:
    return
  vmap = FLAGS["vmap_seeds"].value if "vmap_seeds" in FLAGS else False
  seeds = len(seed_values()) if vmap else 1
  for cell in cells:
    cfg = dataclasses.replace(base, cell=cell, length=max(lengths))
    try:
      needed = train.estimate_memory(cfg, seeds)
    except Exception:  # pylint: disable=broad-except
      continue  # A cell that cannot be traced fails as a run, recorded.
    if needed > available:
      flag = ("batch_size" if base.batch_size > 4096 and max(lengths) < 10_000
              else "lengths")
      raise validation.FlagError(
          flag, f"{cell} at N={cfg.length} with --batch_size="
          f"{base.batch_size} and --num_hidden={base.num_hidden} needs about "
          f"{needed / 1e9:.1f} GB to train (estimated); {devices[0]} has "
          f"{available / 1e9:.1f} GB available")


@contextlib.contextmanager
def training(base: train.RunConfig, cells: tuple[str, ...],
             lengths: tuple[int, ...]):
  """What every training entrypoint does around its one library call:
  devices set up and announced once the runs are known to fit, Ctrl-C
  handled, and SIGTERM like it (yields ``(devices, stop)``), a results
  directory that refuses the run reported as a ``--results_dir`` error, and
  after the signal the line to rerun and exit status 128 + its number (130
  for Ctrl-C, 143 for SIGTERM)."""
  devices = configure_devices()
  check_memory(base, cells, lengths, devices)
  describe_devices(devices)
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
  return sweep_lib.StopRequest().on_signals()


# --help shows the flags an entrypoint uses in these groups; the rest of its
# own flags come first, under "This tool".
HELP_GROUPS = (
    ("Runs", ("cells", "lengths", "length", "seeds", "seed", "cell_module")),
    ("Training (palindrome_jax.config.RunConfig)",
     tuple(flag_name(config.RunConfig, name) for name in RUN_FLAGS)),
    ("Results", ("results_dir", "overwrite", "checkpoint_every")),
    ("Devices and processes",
     ("cpu_devices", "vmap_seeds", "coordinator_address", "num_processes",
      "process_id", "compilation_cache_dir")),
)


def help_text() -> str:
  """The main module's docstring, then its key flags, grouped, each with
  its help and default (``--helpfull`` still lists absl's own too)."""
  main = sys.modules["__main__"]
  names = {f.name for f in FLAGS.get_key_flags_for_module(main)}
  names |= {f.name for f in FLAGS.get_key_flags_for_module(sys.argv[0])}
  grouped = {n for _, group in HELP_GROUPS for n in group}
  groups = [("This tool", sorted(names - grouped))]
  groups += [(title, [n for n in group if n in names])
             for title, group in HELP_GROUPS]
  lines = [(main.__doc__ or "").strip(), ""]
  for title, group in groups:
    if not group:
      continue
    lines.append(f"{title}:")
    for name in group:
      flag = FLAGS[name]
      default = ("" if flag.default is None else
                 f" (default: {flag.default_as_str or repr('')})")
      lines.append(textwrap.fill(f"--{name}: {flag.help}{default}", width=79,
                                 initial_indent="  ",
                                 subsequent_indent="      "))
    lines.append("")
  lines.append("--helpfull lists absl's own flags too.")
  return "\n".join(lines)


def _parse_flags(argv):
  """absl's parser, with its errors as one line and exit status 2.

  ``--help`` prints the flags and exits 0 (absl's own exits 1).
  """
  if "--helpfull" in argv[1:]:
    app.usage(shorthelp=False, writeto_stdout=True, exitcode=0)
  if any(arg in ("-h", "-help", "--help", "-?", "--helpshort")
         for arg in argv[1:]):
    try:
      print(help_text(), flush=True)
    except BrokenPipeError:  # `--help | head`: the reader has what it wants.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  try:
    return FLAGS(argv)
  except flags.Error as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def call_main(main, argv) -> int:
  """Runs ``main`` on parsed flags as the command line does: a
  :class:`FlagError` or :class:`ConfigError` prints one line
  (``error: --flag: problem``) and gives status 2, no traceback. Returns the
  exit status."""
  if len(argv) > 1:
    print(f"error: unexpected arguments {' '.join(argv[1:])!r} "
          "(flags are written --name=value)", file=sys.stderr)
    return 2
  try:
    main(argv)
  except validation.FlagError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except config.ConfigError as error:  # A check of a tool's own config.
    print(f"error: --{error.field}: {error.problem}", file=sys.stderr)
    return 2
  except SystemExit as exit_:
    return exit_.code if isinstance(exit_.code, int) else 1
  return 0


def execute(main, argv) -> int:
  """Parses ``argv`` and calls ``main`` (:func:`call_main`) in this process,
  as ``python -m`` would; returns the exit status. For tests: flags keep
  their values until ``FLAGS.unparse_flags()``."""
  try:
    argv = FLAGS(argv)
  except flags.Error as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return call_main(main, argv)


def run(main) -> None:
  """``app.run(main)`` with one-line errors (:func:`call_main`)."""
  # Progress is drawn by palindrome_jax.progress; the log keeps warnings and
  # errors (--verbosity=0 brings back JAX's and absl's informational lines).
  logging.set_verbosity(logging.WARNING)
  app.run(lambda argv: sys.exit(call_main(main, argv)),
          flags_parser=_parse_flags)
