"""One results directory for every tool: nothing lost, mixed or blocked.

Layout of a directory (the sweep's; the horizon search keeps the same)::

    config.json            the training settings every run here shares
    runs/<run>.json        one record per finished run, with its settings
    params/<run>.msgpack   its final parameters (Flax serialization)
    checkpoints/<run>.msgpack   the state of a run in progress (with
                           --vmap_seeds: <cell>_N<N>_seeds<a>-<b>-....msgpack,
                           the state of one cell and N's seeds together)
    tensorboard/<run>/     its curves as it trains: TensorBoard event files
                           and metrics.jsonl (:mod:`palindrome_jax.metrics`)
    .lock                  held (shared) by every process using the directory

What it promises:

- **Atomic.** Every file is written to a temporary file and renamed.
- **Never mixed.** Each run, and each checkpoint, records the settings it
  trained with; it is reused only when they equal the current ones. A
  directory whose ``config.json`` or any run's record holds other settings
  is refused (with what differs, and where) unless ``overwrite``; a
  checkpoint of other settings is moved aside.
- **One format.** ``config.json`` and every record say their format
  (:data:`FORMAT_VERSION`); a directory of an older one is refused, naming
  the command that migrates it once (:mod:`palindrome_jax.migrate`).
- **Never blocked.** A file that cannot be read (truncated by a crash, a
  full disk), or a record that is not one (a field missing or of the wrong
  type, :func:`record_problem`), is moved aside to ``*.corrupt`` with one
  warning naming it (and the field), and what it held is trained again.
- **Traceable.** ``config.json`` and every record give their provenance
  (:func:`provenance`): the commit and whether the tree was dirty, the
  command line, the host, the start and end time and the library versions.
  It is not a setting: runs of the same settings from two commits share a
  directory.
- **Never twice.** Processes that share the directory (several identical
  sweeps, or the processes of one multi-process sweep) claim each run with a
  lock file before training it and skip runs claimed by another; a sweep
  with other settings is refused while one is running.
"""

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import functools
from importlib import metadata
import json
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
from typing import Any, Callable, Iterator, Optional, Sequence

from absl import logging
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from palindrome_jax import files as io
from palindrome_jax.status import Kind, Status

# The format of config.json, of every run record and of a horizon search's
# horizon.json. 1: before the format had a number (a record left out the
# settings added after it was written); 2: every setting recorded, and the
# version. Reading another is a FormatError. Records and config.json written
# since also give their "provenance" (optional on read: older ones lack it).
FORMAT_VERSION = 2

# A run's result row; ``runs/*.json`` also holds its format, its history,
# its settings and where it trained (``trained_on``): RECORD_SCHEMA.
ROW_FIELDS = ("cell", "length", "seed", "status", "test_accuracy", "test_loss",
              "steps_to_solve", "final_train_loss", "final_train_accuracy",
              "train_steps", "wall_seconds", "compile_seconds",
              "steps_per_second", "num_params", "num_hidden", "state_size",
              "seeds_in_program")


def trained_on() -> dict[str, str]:
  """Where this process trains, as each run's record keeps it.

  Settings decide a run's numbers on one kind of device, whatever the layout;
  across kinds float32 rounds differently (a GPU runs float32 matmuls as TF32
  unless ``JAX_DEFAULT_MATMUL_PRECISION=highest``), so a directory continued
  on another machine says which runs trained where.
  """
  return {"jax": jax.__version__, "backend": jax.default_backend(),
          "device_kind": jax.devices()[0].device_kind,
          "matmul_precision": str(jax.config.jax_default_matmul_precision
                                  or "default")}


def utc_now() -> str:
  """The time now, UTC, ISO 8601 to the second: ``2026-12-02T04:20:21Z``."""
  return datetime.datetime.now(datetime.timezone.utc).strftime(
      "%Y-%m-%dT%H:%M:%SZ")


# The libraries whose versions a record names.
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy")
GIT_TIMEOUT_SECONDS = 5.0


def library_versions() -> dict[str, str]:
  """The installed version of each of :data:`LIBRARIES`."""
  versions = {}
  for name in LIBRARIES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = "unknown"
  return versions


def git_state(path: str) -> dict[str, Any]:
  """``{"commit": ..., "dirty": ...}`` of the git checkout that tracks the
  file ``path``: its HEAD, and whether a tracked file differs from it
  (untracked files, results among them, do not count). Empty when ``path``
  is in no checkout, git is missing, or it does not answer within
  :data:`GIT_TIMEOUT_SECONDS`: never an error."""
  directory = os.path.dirname(os.path.abspath(path))

  def git(*args: str) -> Optional[str]:
    try:
      done = subprocess.run(
          ["git", "--no-optional-locks", "-C", directory, *args],
          capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS,
          check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
      return None
    return done.stdout if done.returncode == 0 else None

  commit = git("rev-parse", "--verify", "HEAD")
  # A checkout of something else (a site-packages inside some repository)
  # does not track the file.
  if not commit or git("ls-files", "--error-unmatch", "--",
                       os.path.basename(path)) is None:
    return {}
  status = git("status", "--porcelain", "--untracked-files=no")
  if status is None:
    return {}
  return {"commit": commit.strip(), "dirty": bool(status.strip())}


@functools.lru_cache(maxsize=None)
def code_version() -> dict[str, Any]:
  """:func:`git_state` of this package, asked once per process (the code a
  process runs is what it imported)."""
  return git_state(__file__)


def provenance(started: str, ended: Optional[str] = None) -> dict[str, Any]:
  """Where a result comes from: the commit and whether the tree was dirty
  (absent outside a git checkout), the command line, the host, the start
  and end time (:func:`utc_now`) and the versions of :data:`LIBRARIES`."""
  return {**code_version(), "command": list(sys.argv),
          "host": socket.gethostname(), "started": started, "ended": ended,
          "versions": library_versions()}


@dataclasses.dataclass(frozen=True, order=True)
class Run:
  """Which run: a cell at a length with a seed."""

  cell: str
  length: int
  seed: int

  @property
  def name(self) -> str:
    return f"{self.cell}_N{self.length}_seed{self.seed}"


def program_name(program: Sequence[Run]) -> str:
  """The name of the runs that train as one program: the run's, or
  ``<cell>_N<N>_seeds<a>-<b>-...`` for the seeds of one cell and N."""
  first = program[0]
  return (first.name if len(program) == 1 else
          f"{first.cell}_N{first.length}_seeds"
          + "-".join(str(run.seed) for run in program))


class SettingsMismatchError(ValueError):
  """The directory holds results made with other training settings."""


class FormatError(SettingsMismatchError):
  """A results file in another format than :data:`FORMAT_VERSION`: refused,
  as results of other settings are, until it is migrated."""


def migrate_command(root: str) -> str:
  """The command that migrates the results directory ``root`` once."""
  return f"python -m experiments.migrate --results_dir={shlex.quote(root)}"


def check_format(content: Any, path: str, root: str) -> None:
  """Raises :class:`FormatError` if ``content``, read from ``path`` in the
  results directory ``root``, is a file of another format (one without a
  version is of format 1). A version that is not an integer is left to the
  file's schema (:func:`record_problem`): the file is damaged."""
  if not isinstance(content, dict):
    return
  version = content.get("format_version", 1)
  if not is_int(version) or version == FORMAT_VERSION:
    return
  if version < FORMAT_VERSION:
    raise FormatError(
        f"{path} is in results format {version}, which this version no "
        f"longer reads (it reads {FORMAT_VERSION}); migrate the directory "
        f"once with: {migrate_command(root)}")
  raise FormatError(
      f"{path} is in results format {version}, newer than this version's "
      f"({FORMAT_VERSION}); read it with a newer palindrome_jax")


# Schemas: what each field of a results file must hold, as ``{field: (what
# it is, in words; a check)}``.
Schema = dict[str, tuple[str, Callable[[Any], bool]]]


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def or_null(valid: Callable[[Any], bool]) -> Callable[[Any], bool]:
  """``valid``, or null: JSON's spelling of a NaN too (what a run that
  failed or diverged has for its accuracy)."""
  return lambda value: value is None or valid(value)


def list_of(valid: Callable[[Any], bool]) -> Callable[[Any], bool]:
  return lambda value: isinstance(value, list) and all(map(valid, value))


def is_status(value: Any, kinds: Sequence[Kind] = tuple(Kind)) -> bool:
  """Whether ``value`` is a status (:class:`Status`) of one of ``kinds``."""
  try:
    return Status(value).kind in kinds
  except ValueError:
    return False


def schema_problem(value: Any, schema: Schema, where: str = "",
                   optional: Sequence[str] = ()) -> Optional[str]:
  """The first field of ``value`` that ``schema`` refuses, named with its
  place (``where``: ``cells.lstm.``) and what it holds; None if none is."""
  if not isinstance(value, dict):
    return f"{where.rstrip('.') or 'it'} is not an object"
  for field, (what, valid) in schema.items():
    if field not in value:
      if field not in optional:
        return f"{where}{field} is missing"
    elif not valid(value[field]):
      return f"{where}{field} is not {what}: {_short(value[field])}"
  return None


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 40 else text[:37] + "..."


def _is_str(value: Any) -> bool:
  return isinstance(value, str)


# A record's or config.json's "provenance" (:func:`provenance`).
PROVENANCE_SCHEMA: Schema = {
    "commit": ("a string", _is_str),
    "dirty": ("a boolean", lambda v: isinstance(v, bool)),
    "command": ("a list of strings", list_of(_is_str)),
    "host": ("a string", _is_str),
    "started": ("a time", _is_str),
    "ended": ("a time or null", or_null(_is_str)),
    "versions": ("an object of strings", lambda v: isinstance(v, dict) and all(
        map(_is_str, v.values()))),
}
# Absent outside a git checkout.
PROVENANCE_OPTIONAL = ("commit", "dirty")

# A run record (format 2).
RECORD_SCHEMA: Schema = {
    "format_version": ("an integer", is_int),
    "cell": ("a string", lambda v: isinstance(v, str)),
    "length": ("an integer", is_int),
    "seed": ("an integer", is_int),
    "status": ("a run's status (ok, diverged at step N, error: ...)",
               lambda v: is_status(v, (Kind.OK, Kind.DIVERGED, Kind.ERROR))),
    **{field: ("a number or null", or_null(is_number)) for field in (
        "test_accuracy", "test_loss", "final_train_loss",
        "final_train_accuracy", "wall_seconds", "compile_seconds",
        "steps_per_second", "num_params")},
    **{field: ("an integer or null", or_null(is_int))
       for field in ("steps_to_solve", "train_steps", "num_hidden",
                     "state_size")},
    "seeds_in_program": ("an integer", is_int),
    "history": ("an object of lists", lambda v: isinstance(v, dict) and all(
        isinstance(x, list) for x in v.values())),
    "settings": ("an object", lambda v: isinstance(v, dict)),
    "trained_on": ("an object", lambda v: isinstance(v, dict)),
    "provenance": ("an object", lambda v: isinstance(v, dict)),
}
# Records written before provenance, the width and the state size were kept
# lack them.
RECORD_OPTIONAL = ("provenance", "num_hidden", "state_size")
# What a run that ended ok must have measured (finite parameters always
# give an accuracy; a loss may overflow).
OK_MEASURES = ("test_accuracy",)


def record_problem(record: Any) -> Optional[str]:
  """What makes ``record`` not a run record of this format, naming the
  field (``test_accuracy is not a number or null: 'abc'``); None if it is
  one."""
  if not isinstance(record, dict):
    return f"a JSON {type(record).__name__}, not an object"
  problem = (schema_problem(record, RECORD_SCHEMA, optional=RECORD_OPTIONAL)
             or ("provenance" in record and schema_problem(
                 record["provenance"], PROVENANCE_SCHEMA, "provenance.",
                 PROVENANCE_OPTIONAL)))
  if problem:
    return problem
  if record["format_version"] != FORMAT_VERSION:
    return f"format_version is {record['format_version']}"
  if Status(record["status"]).kind is Kind.OK:
    for field in OK_MEASURES:
      if record[field] is None:
        return f"{field} is null in a run that ended ok"
  return None


class BusyError(RuntimeError):
  """Another process holds the directory in a way that forbids this use."""


def jsonable(value: Any) -> Any:
  return json.loads(json.dumps(value))


def differing(previous: dict, current: dict) -> list[str]:
  return sorted(k for k in set(previous) | set(current)
                if previous.get(k) != current.get(k))


def read_json_or_move_aside(path: str) -> Optional[Any]:
  """The JSON in ``path``; None if absent, or if unreadable: then the file
  is moved to ``*.corrupt`` and one warning names it."""
  try:
    return io.read_json(path)
  except FileNotFoundError:
    return None
  except (ValueError, UnicodeDecodeError, OSError) as error:
    if isinstance(error, OSError) and error.errno != errno.EIO:
      raise
    moved = io.move_aside(path)
    logging.warning("unreadable %s (%s), moved to %s", path,
                    str(error).splitlines()[0], moved)
    return None


class ResultsDir:
  """A results directory of runs trained with one set of ``settings``.

  Use as a context manager (:meth:`open`) around the work: it takes the
  directory's lock, checks the settings and records them.
  """

  def __init__(self, root: str, settings: dict[str, Any],
               what: str = "a sweep"):
    self.root = root
    self.settings = jsonable(settings)
    self.what = what

  def same_settings(self, other: Optional[dict]) -> bool:
    return other == self.settings

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  @contextlib.contextmanager
  def exclusively(self):
    """A short exclusive lock on the directory's shared files
    (``config.json``, a search's ``horizon.json``), held by one process at
    a time, so that a read, merge and write by one is never interleaved
    with another's."""
    with open(self.path(".settings.lock"), "a+") as settings_lock:
      fcntl.flock(settings_lock, fcntl.LOCK_EX)
      yield

  def run_file(self, run: Run) -> str:
    return self.path("runs", run.name + ".json")

  def params_file(self, run: Run) -> str:
    return self.path("params", run.name + ".msgpack")

  def checkpoint_file(self, program: Sequence[Run]) -> str:
    """Where the runs that train as one program (one seed, or the seeds of
    one cell and N under ``--vmap_seeds``) keep their checkpoint."""
    return self.path("checkpoints", program_name(program) + ".msgpack")

  def curves_dir(self, run: Run) -> str:
    """Where ``run`` writes its curves as it trains (TensorBoard's event
    files and ``metrics.jsonl``, :mod:`palindrome_jax.metrics`)."""
    return self.path("tensorboard", run.name)

  def remove_checkpoint(self, program: Sequence[Run]) -> None:
    """Once every run of ``program`` is saved, its checkpoint goes."""
    path = self.checkpoint_file(program)
    if os.path.exists(path):
      os.remove(path)

  # The directory as a whole.

  @contextlib.contextmanager
  def open(self, overwrite: bool = False,
           config: Optional[dict[str, Any]] = None) -> Iterator["ResultsDir"]:
    """Holds the directory for the ``with`` block.

    Refuses (:class:`SettingsMismatchError`) a directory whose runs were
    trained with other settings, or (:class:`FormatError`) one of another
    format, unless ``overwrite``: then they are removed, which is refused
    (:class:`BusyError`) while another process uses it. ``config`` (cells,
    lengths, seeds, ...) is merged into ``config.json``, with this call's
    :func:`provenance` (its end time written as the block ends).
    """
    self.provenance = provenance(started=utc_now())
    os.makedirs(self.root, exist_ok=True)
    # Held shared for the whole block by every process using the directory.
    lock = open(self.path(".lock"), "a+")  # pylint: disable=consider-using-with
    try:
      # The check and the record happen under a short exclusive lock, so two
      # processes that start at once cannot both find the directory empty.
      with self.exclusively():
        try:
          previous, where = self._previous_settings()
        except FormatError:
          if not overwrite:
            raise
          previous, where = {}, ""  # Replaced, as other settings are.
        if previous is not None and not self.same_settings(previous):
          if not overwrite:
            raise SettingsMismatchError(
                f"{self.root} holds {self.what} with other settings "
                f"({', '.join(differing(previous, self.settings))}{where}); "
                "use --overwrite to replace it, or another --results_dir")
          try:  # Only when no other process has the directory open.
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
          except BlockingIOError:
            raise BusyError(
                f"{self.root} is in use by another process; cannot "
                "--overwrite it now") from None
          self._remove_runs()
        self._write_config(config or {})
        fcntl.flock(lock, fcntl.LOCK_SH)
      yield self
      self._record_end()
    finally:
      lock.close()

  def _record_end(self) -> None:
    """Writes this call's end time into ``config.json``'s provenance, if
    the provenance there is still this call's (another process may have
    opened the directory since); a failure to write is logged."""
    started = self.provenance
    self.provenance = {**started, "ended": utc_now()}
    try:
      with self.exclusively():
        config = self._read_config()
        if config is not None and config.get("provenance") == started:
          io.write_json(self.path("config.json"),
                        {**config, "provenance": self.provenance})
    except OSError as error:
      logging.warning("cannot write the end time into %s: %s",
                      self.path("config.json"), error)

  def _previous_settings(self) -> tuple[Optional[dict], str]:
    """The settings of what the directory holds (None if nothing), and
    where they differ from these if they do (``", in <record>"`` for a
    run's record): ``config.json``'s, unless a record's differ (config.json
    lost, or a record of other settings beside it)."""
    config = self._read_config()
    previous = config and config["training_settings"]
    if previous is not None and not self.same_settings(previous):
      return previous, ""
    for record in self._records():  # Each run says its own.
      if not self.same_settings(record["settings"]):
        run = Run(record["cell"], record["length"], record["seed"])
        return record["settings"], f", in {self.run_file(run)}"
    return previous, ""

  def _read_config(self) -> Optional[dict]:
    """``config.json``; None if absent or damaged (then moved aside)."""
    path = self.path("config.json")
    config = read_json_or_move_aside(path)
    check_format(config, path, self.root)
    if config is None:
      return None
    if not (isinstance(config, dict)
            and config.get("format_version") == FORMAT_VERSION
            and isinstance(config.get("training_settings"), dict)):
      _move_aside(path, "no training_settings object or format_version",
                  "a results directory's config")
      return None
    return config

  def _remove_runs(self) -> None:
    """Removes the runs of other settings (the caller holds the directory
    exclusively)."""
    for sub in ("runs", "params", "checkpoints", "tensorboard", ".claims"):
      shutil.rmtree(self.path(sub), ignore_errors=True)
    if os.path.exists(self.path("config.json")):
      os.remove(self.path("config.json"))

  def _write_config(self, config: dict[str, Any]) -> None:
    previous = self._read_config() or {}
    merged = {"format_version": FORMAT_VERSION, **previous}
    for key, value in config.items():
      if isinstance(value, (list, tuple)) and isinstance(previous.get(key),
                                                         list):
        merged[key] = sorted(set(previous[key]) | set(value))
      else:
        merged[key] = value
    merged.update(
        training_settings=self.settings, jax_version=jax.__version__,
        backend=jax.default_backend(),
        devices=[str(d) for d in jax.devices()], provenance=self.provenance)
    io.write_json(self.path("config.json"), jsonable(merged))

  # Runs.

  def finished(self, run: Run) -> Optional[dict]:
    """The record of ``run`` if it finished (ok or diverged) with these
    settings; None if it must train (absent, failed, unreadable, or not a
    record: then moved aside)."""
    record = self._read_record(self.run_file(run))
    if record is None or record["status"].kind is Kind.ERROR:
      return None
    if not self.same_settings(record["settings"]):
      return None
    return record

  def _read_record(self, path: str) -> Optional[dict]:
    """The run record in ``path`` (of this format: else FormatError), its
    status parsed; None if absent, or unreadable or not a record: then moved
    aside with one warning naming the file and the field."""
    record = read_json_or_move_aside(path)
    check_format(record, path, self.root)
    if record is None:
      return None
    problem = record_problem(record)
    if problem is None and Run(record["cell"], record["length"],
                               record["seed"]).name + ".json" != (
                                   os.path.basename(path)):
      problem = (f"it holds {record['cell']} N={record['length']} seed "
                 f"{record['seed']}")
    if problem is not None:
      _move_aside(path, problem)
      return None
    return {**record, "status": Status(record["status"])}

  @contextlib.contextmanager
  def claim(self, run: Run) -> Iterator[bool]:
    """Yields True if this process may train ``run`` now, False if another
    process is training it."""
    os.makedirs(self.path(".claims"), exist_ok=True)
    path = self.path(".claims", run.name + ".lock")
    with open(path, "a+") as f:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        yield False
        return
      try:
        yield True
      finally:
        fcntl.flock(f, fcntl.LOCK_UN)

  def claimed_elsewhere(self, run: Run) -> bool:
    """Whether another process is training ``run`` now (holds its claim)."""
    with self.claim(run) as mine:
      return not mine

  def save_run(self, run: Run, row: dict[str, Any], params: Any) -> dict:
    """Writes the parameters, then the record that marks the run finished:
    if either write fails, the run counts as not trained. The record (it is
    returned) is ``row`` with the format, the settings and where the run
    trained (:func:`trained_on`)."""
    record = {"format_version": FORMAT_VERSION, **row,
              "status": Status(row["status"]), "settings": self.settings,
              "trained_on": trained_on()}
    if params is not None:
      io.atomic_write_bytes(self.params_file(run),
                            flax.serialization.msgpack_serialize(params))
    io.write_json(self.run_file(run), record)
    self.remove_checkpoint((run,))
    return record

  def _records(self) -> list[dict]:
    runs_dir = self.path("runs")
    if not os.path.isdir(runs_dir):
      return []
    records = []
    for name in sorted(os.listdir(runs_dir)):
      if name.endswith(".json") and not name.startswith("."):
        record = self._read_record(os.path.join(runs_dir, name))
        if record is not None:
          records.append(record)
    return records

  def all_runs(self) -> list[dict]:
    """Every run recorded here with these settings, sorted."""
    records = [r for r in self._records()
               if self.same_settings(r["settings"])]
    return sorted(records, key=lambda r: (r["cell"], r["length"], r["seed"]))

  def params_problem(self, run: Run, record: dict) -> Optional[str]:
    """Why the parameters of ``run``, finished as ``record`` says, cannot be
    loaded (``"missing"``, ``"unreadable"``); None if they can, or if the
    run failed (a failure has none)."""
    if record["status"].kind is Kind.ERROR:
      return None
    try:
      with open(self.params_file(run), "rb") as f:
        flax.serialization.msgpack_restore(f.read())
    except FileNotFoundError:
      return "missing"
    except Exception:  # pylint: disable=broad-except
      return "unreadable"
    return None

  def load_params(self, run: Run) -> Any:
    """The saved parameters of ``run`` (raises if missing or unreadable)."""
    with open(self.params_file(run), "rb") as f:
      return jax.tree.map(jnp.asarray,
                          flax.serialization.msgpack_restore(f.read()))


def write_each(writers: dict[str, Callable[[str], None]],
               root: str) -> list[str]:
  """Calls each of ``writers`` (by file name) with its path in ``root``;
  one that fails to write (a full disk) does not stop the others. Returns a
  line for each file not written, each also logged as an error."""
  problems = []
  for name, write in writers.items():
    path = os.path.join(root, name)
    try:
      write(path)
    except OSError as error:
      problems.append(f"cannot write {path}: {error.strerror or error}")
      logging.error("%s", problems[-1])
  return problems


def _move_aside(path: str, problem: str, what: str = "a run record") -> None:
  """Moves a file that is valid JSON but not ``what`` aside, with one
  warning naming it and its ``problem``."""
  moved = io.move_aside(path)
  logging.warning("%s is not %s (%s), moved to %s", path, what, problem,
                  moved)


def error_row(run: Run, error: BaseException) -> dict[str, Any]:
  """The record of a run that raised: its status names the error."""
  row = {field: math.nan for field in ROW_FIELDS}
  row.update(cell=run.cell, length=run.length, seed=run.seed,
             status=Status.error(f"{type(error).__name__}: {error}"),
             train_steps=0, steps_to_solve=None,
             seeds_in_program=1,
             history={"step": [], "loss": [], "accuracy": []})
  return row


def solved(record: dict) -> bool:
  """Whether a run's ``record`` (its status parsed) solved its length: a
  confirmed solve check, without diverging."""
  return (record["status"].kind is Kind.OK
          and record.get("steps_to_solve") is not None)


def finite_mean(values, axis: Optional[int] = None):
  """Mean of the finite entries (NaN, inf and None left out) of ``values``,
  over ``axis`` (default all); NaN where there are none. The one helper for
  averaging over seeds that may have diverged."""
  array = np.array(values, dtype=object if axis is None else None)
  array = np.asarray(np.where(np.equal(array, None), np.nan, array), float)
  finite = np.isfinite(array)
  count = finite.sum(axis)
  total = np.where(finite, array, 0.0).sum(axis)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
  return float(mean) if np.ndim(mean) == 0 else mean


def status_counts(rows: list[dict]) -> dict[str, int]:
  """How many runs are ok, diverged, failed."""
  counts = {"ok": 0, "diverged": 0, "failed": 0}
  for row in rows:
    counts[{Kind.OK: "ok", Kind.DIVERGED: "diverged"}.get(
        row["status"].kind, "failed")] += 1
  return counts
