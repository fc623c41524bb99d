"""Tests for palindrome_jax.validation: one-line flag errors."""

import pytest

from palindrome_jax import validation


@pytest.mark.parametrize("text, problem", [
    ("", "must not be empty"), ("5,,6", "empty item"),
    ("5,x", "'x' is not an integer"), ("0", "below the minimum 1"),
    ("5,5", "repeated value")])
def test_int_list_rejects(text, problem):
  with pytest.raises(validation.FlagError, match=f"^--lengths: .*{problem}"):
    validation.int_list("lengths", text)


def test_int_list_and_name_list_parse():
  assert validation.int_list("lengths", " 5, 10 ,15") == (5, 10, 15)
  assert validation.name_list("cells", "rnn,lstm", ("lstm", "rnn")) == (
      "rnn", "lstm")
  with pytest.raises(validation.FlagError, match="unknown 'gru'"):
    validation.name_list("cells", "rnn,gru", ("lstm", "rnn"))


def test_writable_dir(tmp_path):
  assert validation.writable_dir("results_dir", str(tmp_path / "a" / "b"))
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(validation.FlagError, match="^--results_dir: cannot"):
    validation.writable_dir("results_dir", str(blocker / "c"))
