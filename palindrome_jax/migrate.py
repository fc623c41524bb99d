"""Brings a results directory of an older format to this one, once.

    python -m experiments.migrate --results_dir=results/horizon

The readers (:mod:`palindrome_jax.results`, the horizon search, the compare
and evaluate tools) read one format, :data:`results.FORMAT_VERSION`, and fill
nothing in: a file of another is refused with the command above. What an
older format left out is said here, and only here:

- **Format 1** (before the format had a number): a run record, ``config.json``
  and ``horizon.json`` lacked the training settings added after they were
  written. Such a run trained with the setting's value from before it
  existed (:data:`FORMAT_1_SETTINGS`: for most, the default then and now;
  ``confirm_batches`` 0, since solve checks were not confirmed; version 1 of
  the training program). A horizon search lacked ``resolution`` (it searched
  exactly: 1). A record lacked ``trained_on``: its machine is the one its
  directory's ``config.json`` names (the machine the reports named for it).

A migration writes each file once, atomically, and leaves a file already of
this format as it is, so running it twice changes nothing. It holds the
directory alone (refused while a tool uses it). A new training setting is a
new format: add its step here (what runs recorded before it trained with) and
bump :data:`results.FORMAT_VERSION`; a test checks that every setting is
covered.
"""

import contextlib
import dataclasses
import fcntl
import os
from typing import Any, Callable, Iterator, Optional

from absl import logging

from palindrome_jax import files as io
from palindrome_jax import horizon
from palindrome_jax import results as results_lib

# What a format-1 record that lacks a training setting trained with.
FORMAT_1_SETTINGS: dict[str, Any] = {
    "batch_size": 128, "num_hidden": 128, "num_layers": 1, "block": "stack",
    "learning_rate": 1e-3, "optimizer": "adam", "max_norm": 1.0,
    "lr_step_size": 0, "lr_gamma": 0.1, "encoding": "scalar",
    "forget_bias": 0.0, "chrono_t_max": None, "chrono_per_digit": None,
    "unroll": 1, "training_program": 1, "train_steps": 10_000,
    "log_every": 100, "eval_batches": 100, "stop_when_solved": False,
    "solved_accuracy": 0.99, "eval_every": 500, "confirm_batches": 0}
# What a format-1 horizon search that lacks a search setting searched with.
FORMAT_1_SEARCH: dict[str, Any] = {"resolution": 1}
# Where a format-1 record's run trained, when config.json does not say.
UNKNOWN = "unknown"


@dataclasses.dataclass
class Migrated:
  """What one migration did to a directory, file by file."""

  migrated: list[str] = dataclasses.field(default_factory=list)
  current: list[str] = dataclasses.field(default_factory=list)
  moved_aside: list[str] = dataclasses.field(default_factory=list)

  def summary(self, root: str) -> str:
    return (f"{root}: {len(self.migrated)} files migrated to results format "
            f"{results_lib.FORMAT_VERSION}, {len(self.current)} already in it"
            + (f", {len(self.moved_aside)} not results, moved aside"
               if self.moved_aside else ""))


def _filled(values: dict, absent: dict) -> dict:
  """``values`` with the keys of ``absent`` it lacks, appended."""
  return {**values, **{k: v for k, v in absent.items() if k not in values}}


def _versioned(content: dict, **changes: Any) -> dict:
  return {"format_version": results_lib.FORMAT_VERSION, **content, **changes}


def config_from_1(config: dict) -> dict:
  """``config.json`` of format 1, in this format."""
  return _versioned(config, training_settings=_filled(
      config["training_settings"], FORMAT_1_SETTINGS))


def machine_of(config: Optional[dict]) -> dict[str, str]:
  """Where the format-1 runs of a directory trained, as ``trained_on``
  says it: what its ``config.json`` names (a CPU's device kind is
  ``cpu``)."""
  config = config or {}
  backend = config.get("backend", UNKNOWN)
  return {"jax": config.get("jax_version", UNKNOWN), "backend": backend,
          "device_kind": "cpu" if backend == "cpu" else UNKNOWN,
          "matmul_precision": "default"}


def record_from_1(record: dict, machine: dict[str, str]) -> dict:
  """A run record of format 1, in this format; ``machine``: where it
  trained if it does not say (:func:`machine_of`)."""
  return _versioned(record, settings=_filled(record["settings"],
                                             FORMAT_1_SETTINGS),
                    trained_on=record.get("trained_on") or machine)


def search_from_1(content: dict) -> dict:
  """A horizon search's ``horizon.json`` of format 1, in this format."""
  settings = _filled(content["settings"], FORMAT_1_SEARCH)
  settings["training"] = _filled(settings["training"], FORMAT_1_SETTINGS)
  return _versioned(content, settings=settings)


def migrate(root: str) -> Migrated:
  """Migrates the results directory ``root`` (its ``config.json``, every
  ``runs/*.json`` and a search's ``horizon.json``) to this format.

  A file that is valid JSON but not what its name says, before or after
  (a record without settings, or one the reader's schema refuses:
  :func:`results.record_problem`), is moved aside with one warning, as the
  reader would. Refused before anything is written: a directory holding a
  file of a newer format (:class:`results.FormatError`), or one in use by
  another process (:class:`results.BusyError`).
  """
  with _alone(root):
    config_path = os.path.join(root, "config.json")
    plans = [_plan(config_path, config_from_1,
                   lambda c: isinstance(c.get("training_settings"), dict),
                   lambda c: None)]
    machine = machine_of(plans[0][1])
    runs = os.path.join(root, "runs")
    for name in sorted(os.listdir(runs) if os.path.isdir(runs) else []):
      if name.endswith(".json") and not name.startswith("."):
        plans.append(_plan(os.path.join(runs, name),
                           lambda r: record_from_1(r, machine),
                           lambda r: isinstance(r.get("settings"), dict),
                           results_lib.record_problem))
    plans.append(_plan(
        os.path.join(root, "horizon.json"), search_from_1,
        lambda c: isinstance(c.get("settings"), dict)
        and isinstance(c["settings"].get("training"), dict)
        and isinstance(c.get("cells"), dict),
        horizon.search_problem))
    done = Migrated()
    for action, content, path, why in plans:
      if action == "migrate":
        io.write_json(path, content)
        done.migrated.append(path)
      elif action == "current":
        done.current.append(path)
      elif action == "move":
        moved = io.move_aside(path)
        logging.warning("%s cannot be migrated (%s), moved to %s", path, why,
                        moved)
        done.moved_aside.append(path)
  return done


def _plan(path: str, from_1: Callable[[dict], dict],
          fillable: Callable[[dict], bool],
          problem: Callable[[dict], Optional[str]]
          ) -> tuple[str, Optional[dict], str, Optional[str]]:
  """What to do with ``path``: ``(action, its content in this format, path,
  why it moves)``. The action: ``migrate`` (of format 1, ``fillable``: it
  has what ``from_1`` fills in; ``problem``, the reader's schema, accepts
  the result), ``current``, ``move`` aside, or ``absent``. A file of a newer
  format raises :class:`results.FormatError`."""
  content = results_lib.read_json_or_move_aside(path)
  if content is None:
    return "absent", None, path, None
  version = (content.get("format_version", 1) if isinstance(content, dict)
             else None)
  if version == results_lib.FORMAT_VERSION:
    return "current", content, path, None
  if isinstance(version, int) and version > results_lib.FORMAT_VERSION:
    results_lib.check_format(content, path, os.path.dirname(path))  # Raises.
  if version != 1 or not fillable(content):
    return "move", None, path, "not an object of what it should hold"
  migrated = from_1(content)
  why = problem(migrated)
  return ("move", None, path, why) if why else (
      "migrate", migrated, path, None)


@contextlib.contextmanager
def _alone(root: str) -> Iterator[None]:
  """Holds ``root``'s lock exclusively, as ``--overwrite`` does: no tool
  reads the directory while its files change format."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{root} is not a directory")
  with open(os.path.join(root, ".lock"), "a+") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise results_lib.BusyError(
          f"{root} is in use by another process; migrate it once that is "
          "done") from None
    yield
