"""Files written whole: a crash or a kill never leaves a half-written one.

Atomic writes (a temporary beside the target, then a rename), JSON without
NaN, and moving an unreadable file aside. (Named so as not to shadow the
standard library's ``io``.)
"""

import json
import math
import os
import tempfile
from typing import Any


def atomic_write_bytes(path: str, payload: bytes) -> None:
  """Writes ``payload`` to a temporary file beside ``path``, then renames it."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                             suffix=os.path.basename(path))
  try:
    os.chmod(tmp, 0o644)  # mkstemp makes it private; results are to share.
    with os.fdopen(fd, "wb") as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_text(path: str, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
  """NaN and infinities become ``None``: JSON has no spelling for them."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def write_json(path: str, value: Any) -> None:
  atomic_write_text(path, json.dumps(_json_safe(value), indent=2,
                                     allow_nan=False) + "\n")


def read_json(path: str) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def move_aside(path: str) -> str:
  """Renames an unreadable ``path`` to ``path.corrupt`` (``.corrupt.1``, ...
  if taken), never deleting anything; returns the new name."""
  target = path + ".corrupt"
  n = 0
  while os.path.exists(target):
    n += 1
    target = f"{path}.corrupt.{n}"
  os.replace(path, target)
  return target
