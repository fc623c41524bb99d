"""Tests for palindrome_jax.status: every status a record holds, parsed once,
written back as the same words."""

import json

import pytest

from palindrome_jax.status import Kind, Status


@pytest.mark.parametrize("text, kind, step, message", [
    ("ok", Kind.OK, None, None),
    ("diverged at step 40", Kind.DIVERGED, 40, None),
    ("diverged at step 0", Kind.DIVERGED, 0, None),
    ("error: MemoryError: RESOURCE_EXHAUSTED: x", Kind.ERROR, None,
     "MemoryError: RESOURCE_EXHAUSTED: x"),
    ("not trained", Kind.UNTRAINED, None, None),
    ("not trained (init_only)", Kind.UNTRAINED, None, "init_only"),
    ("missing", Kind.MISSING, None, None),
])
def test_each_status_parses_to_its_kind_and_writes_its_words(text, kind, step,
                                                             message):
  status = Status(text)
  assert (status.kind, status.step, status.message) == (kind, step, message)
  assert status == text and str(status) == text
  assert json.dumps({"status": status}) == json.dumps({"status": text})
  assert Status(json.loads(json.dumps(status))).kind is kind
  assert status.trained == (kind in (Kind.OK, Kind.DIVERGED))


def test_the_constructors_spell_what_the_records_hold():
  assert Status.OK == "ok" and Status.MISSING == "missing"
  assert Status.diverged(40) == "diverged at step 40"
  # An error's message is its first line, as a record's status line.
  assert Status.error("ValueError: bad\nmore") == "error: ValueError: bad"
  assert Status.untrained("init_only") == "not trained (init_only)"
  assert Status.untrained() == "not trained"
  assert Status(Status.OK) is Status.OK


@pytest.mark.parametrize("text", ["", "fine", "diverged at 3", "error",
                                  "diverged at step x", "OK", None, 3])
def test_anything_else_is_not_a_status(text):
  with pytest.raises(ValueError):
    Status(text)
