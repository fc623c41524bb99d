"""Tests for palindrome_jax.validation: one-line flag errors."""

import pytest

from palindrome_jax import validation


def test_writable_dir(tmp_path):
  assert validation.writable_dir("results_dir", str(tmp_path / "a" / "b"))
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(validation.FlagError, match="^--results_dir: cannot"):
    validation.writable_dir("results_dir", str(blocker / "c"))
