"""Checks on user input that run before anything is compiled.

Each failure is a :class:`FlagError` whose message is one line naming the flag
(``--lengths: ...``); the entrypoints print it and exit non-zero.
"""

import os
import tempfile



class FlagError(ValueError):
  """Bad user input, with a one-line message that names the flag."""

  def __init__(self, flag: str, problem: str):
    super().__init__(f"--{flag}: {problem}")
    self.flag = flag


def writable_dir(flag: str, path: str) -> str:
  """Creates ``path`` if needed and checks a file can be written in it."""
  if not path:
    raise FlagError(flag, "must not be empty")
  if os.path.exists(path) and not os.path.isdir(path):
    raise FlagError(flag, f"{path!r} is a file, not a directory")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
      pass
  except OSError as error:
    raise FlagError(flag, f"cannot write to {path!r}: "
                    f"{error.strerror or error}") from None
  return path
