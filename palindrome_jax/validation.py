"""Checks on user input that run before anything is compiled.

Each failure is a :class:`FlagError` whose message is one line naming the flag
(``--lengths: ...``); the entrypoints print it and exit non-zero.
"""

import math
import os
import tempfile
from typing import Iterable, Optional

from palindrome_jax import cells as cells_lib
from palindrome_jax import data
from palindrome_jax import train


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


def choice(flag: str, value: str, allowed: Iterable[str]) -> str:
  allowed = tuple(allowed)
  if value not in allowed:
    raise FlagError(flag, f"unknown {value!r}; choose from {', '.join(allowed)}")
  return value


def run_config(cfg: train.RunConfig) -> train.RunConfig:
  """Checks every field of ``cfg`` (flag names as the entrypoints spell them)."""
  if cfg.cell not in cells_lib.names():
    raise FlagError("cells", f"unknown {cfg.cell!r}; choose from "
                    f"{', '.join(cells_lib.names())}")
  if cfg.length < 1:
    raise FlagError("lengths", f"{cfg.length} is below the minimum 1")
  for flag in ("batch_size", "num_hidden", "train_steps", "log_every",
               "eval_batches", "unroll", "eval_every"):
    value = getattr(cfg, flag)
    if not isinstance(value, int) or value < 1:
      raise FlagError(flag, f"must be a positive integer, got {value}")
  positive("learning_rate", cfg.learning_rate)
  positive("max_norm", cfg.max_norm)
  choice("optimizer", cfg.optimizer, train.OPTIMIZERS)
  choice("encoding", cfg.encoding, data.ENCODINGS)
  positive("lr_step_size", cfg.lr_step_size, allow_zero=True)
  if cfg.lr_step_size and cfg.optimizer != "rmsprop":
    raise FlagError("lr_step_size", "the step decay applies to "
                    "--optimizer=rmsprop only")
  if not 0 < cfg.lr_gamma <= 1:
    raise FlagError("lr_gamma", f"must be in (0, 1], got {cfg.lr_gamma}")
  if not 0 < cfg.solved_accuracy <= 1:
    raise FlagError("solved_accuracy", "must be in (0, 1], got "
                    f"{cfg.solved_accuracy}")
  if not math.isfinite(cfg.forget_bias):
    raise FlagError("forget_bias", f"must be finite, got {cfg.forget_bias}")
  if cfg.chrono_t_max is not None and not cfg.chrono_t_max > 2:
    raise FlagError("chrono_t_max", f"must be > 2, got {cfg.chrono_t_max}")
  try:
    cfg.make_cell()
  except Exception as error:  # pylint: disable=broad-except
    # A user's factory (--cell_module) that rejects the init options.
    raise FlagError("cells", f"cannot build {cfg.cell!r}: "
                    f"{type(error).__name__}: {error}") from None
  return cfg


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


def divisible(flag: str, value: int, divisor: int, what: str) -> None:
  if value % divisor:
    raise FlagError(flag, f"{value} is not divisible by {what} ({divisor})")


def optional_float(flag: str, text: Optional[str]) -> Optional[float]:
  if text is None or text == "":
    return None
  try:
    return float(text)
  except ValueError:
    raise FlagError(flag, f"{text!r} is not a number") from None
