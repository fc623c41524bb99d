"""How a run ended: ok, diverged at a step, failed with an error, or not
trained.

A record keeps its status as the words a person reads (``"ok"``,
``"diverged at step 40"``, ``"error: MemoryError: ..."``, ``"not trained
(init_only)"``). :class:`Status` is those words parsed once, where a record
is made or read: code asks for its :class:`Kind` (and the step or the
message) instead of matching prefixes. It is a ``str`` of the same words, so
a record holding it is written to JSON as before and compares equal to them.
"""

import enum
import re
from typing import Optional


class Kind(enum.Enum):
  """What a status says, without its details."""

  OK = "ok"  # Trained to the end of its budget, or until solved.
  DIVERGED = "diverged"  # Its loss or parameters turned non-finite.
  ERROR = "error"  # It raised: no result.
  UNTRAINED = "not trained"  # Measured without training (init_only).
  MISSING = "missing"  # No record (another process had it, or it was lost).


_DIVERGED = re.compile(r"diverged at step (\d+)")
_UNTRAINED = re.compile(r"not trained(?: \((.+)\))?")
_ERROR = "error: "


class Status(str):
  """A status as its record spells it: its ``kind``, with the ``step`` of a
  divergence or the ``message`` of an error (or why it was not trained).

  ``Status(text)`` parses ``text`` (ValueError if it is no status); the
  constants and constructors below spell each kind.
  """

  OK: "Status"
  MISSING: "Status"

  kind: Kind
  step: Optional[int]
  message: Optional[str]

  def __new__(cls, text: str) -> "Status":
    if isinstance(text, Status):
      return text
    if not isinstance(text, str):
      raise ValueError(f"a status is a string, got {text!r}")
    step = message = None
    if text in (Kind.OK.value, Kind.MISSING.value):
      kind = Kind(text)
    elif match := _DIVERGED.fullmatch(text):
      kind, step = Kind.DIVERGED, int(match[1])
    elif text.startswith(_ERROR):
      kind, message = Kind.ERROR, text[len(_ERROR):]
    elif match := _UNTRAINED.fullmatch(text):
      kind, message = Kind.UNTRAINED, match[1]
    else:
      raise ValueError(f"unknown status {text!r}")
    status = super().__new__(cls, text)
    status.kind, status.step, status.message = kind, step, message
    return status

  @classmethod
  def diverged(cls, step: int) -> "Status":
    return cls(f"diverged at step {step}")

  @classmethod
  def error(cls, message: str) -> "Status":
    """An error's status; ``message`` is its first line."""
    return cls(_ERROR + message.splitlines()[0] if message else _ERROR)

  @classmethod
  def untrained(cls, reason: Optional[str] = None) -> "Status":
    return cls(Kind.UNTRAINED.value + (f" ({reason})" if reason else ""))

  @property
  def trained(self) -> bool:
    """Whether the run trained (to its end or to its divergence), so it
    has parameters."""
    return self.kind in (Kind.OK, Kind.DIVERGED)


Status.OK = Status(Kind.OK.value)
Status.MISSING = Status(Kind.MISSING.value)
