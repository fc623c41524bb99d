"""Checks on user input that run before anything is compiled.

Each failure is a :class:`FlagError` whose message is one line naming the flag
(``--lengths: ...``); the entrypoints print it and exit non-zero.
"""

import math
import os
import tempfile
from typing import Iterable



class FlagError(ValueError):
  """Bad user input, with a one-line message that names the flag."""

  def __init__(self, flag: str, problem: str):
    super().__init__(f"--{flag}: {problem}")
    self.flag = flag


def int_list(flag: str, text: str, minimum: int = 1) -> tuple[int, ...]:
  """``"5,10,15"`` to ``(5, 10, 15)``; rejects empty items, non-integers,
  values below ``minimum`` and duplicates."""
  items = [item.strip() for item in (text or "").split(",")]
  if not text or not text.strip():
    raise FlagError(flag, "must not be empty")
  values = []
  for item in items:
    if not item:
      raise FlagError(flag, f"empty item in {text!r}")
    try:
      value = int(item)
    except ValueError:
      raise FlagError(flag, f"{item!r} is not an integer (in {text!r})") from None
    if value < minimum:
      raise FlagError(flag, f"{value} is below the minimum {minimum}")
    values.append(value)
  if len(set(values)) != len(values):
    raise FlagError(flag, f"repeated value in {text!r}")
  return tuple(values)


def name_list(flag: str, text: str, allowed: Iterable[str]) -> tuple[str, ...]:
  """``"rnn,lstm"`` to ``("rnn", "lstm")``, each one of ``allowed``."""
  allowed = tuple(allowed)
  if not text or not text.strip():
    raise FlagError(flag, "must not be empty")
  names = [item.strip() for item in text.split(",")]
  for name in names:
    if not name:
      raise FlagError(flag, f"empty item in {text!r}")
    if name not in allowed:
      raise FlagError(flag, f"unknown {name!r}; choose from {', '.join(allowed)}")
  if len(set(names)) != len(names):
    raise FlagError(flag, f"repeated name in {text!r}")
  return tuple(names)


def positive(flag: str, value, allow_zero: bool = False):
  if value is None or not math.isfinite(value) or not (
      value >= 0 if allow_zero else value > 0):
    raise FlagError(flag, f"must be {'>= 0' if allow_zero else '> 0'}, "
                    f"got {value}")
  return value


def writable_dir(flag: str, path: str) -> str:
  """Creates ``path`` if needed and checks a file can be written in it."""
  if not path:
    raise FlagError(flag, "must not be empty")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
      pass
  except OSError as error:
    raise FlagError(flag, f"cannot write to {path!r}: "
                    f"{error.strerror or error}") from None
  return path
