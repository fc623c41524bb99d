"""Tests for palindrome_jax.files: atomic writes, NaN-free JSON, move aside."""

import os

import pytest

from palindrome_jax import files


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path,
                                                           monkeypatch):
  path = tmp_path / "row.json"
  files.write_json(path, {"a": 1})

  def crash(*args):
    raise KeyboardInterrupt

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(KeyboardInterrupt):
    files.write_json(path, {"a": 2})
  monkeypatch.undo()
  assert files.read_json(path) == {"a": 1}
  assert os.listdir(tmp_path) == ["row.json"]  # No temporary left behind.


def test_non_finite_numbers_are_written_as_null(tmp_path):
  files.write_json(tmp_path / "x.json", {"loss": float("nan"), "ok": [1.5]})
  assert files.read_json(tmp_path / "x.json") == {"loss": None, "ok": [1.5]}


def test_move_aside_never_overwrites(tmp_path):
  for n in range(3):
    (tmp_path / "run.json").write_text(str(n))
    files.move_aside(str(tmp_path / "run.json"))
  assert sorted(os.listdir(tmp_path)) == [
      "run.json.corrupt", "run.json.corrupt.1", "run.json.corrupt.2"]
  assert (tmp_path / "run.json.corrupt.2").read_text() == "2"
