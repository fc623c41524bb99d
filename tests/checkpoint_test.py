"""Tests for palindrome_jax.checkpoint: exact round trip, and files that
cannot be read, or that were saved with other settings, are moved aside."""

import dataclasses
import logging

import jax
import numpy as np

from palindrome_jax import checkpoint
from palindrome_jax import train

TINY = train.RunConfig(cell="lstm", length=3, batch_size=4, num_hidden=5,
                       train_steps=20, log_every=10)


def _states(seeds=(0, 1)):
  return train.init_states(TINY, seeds)


def _trained():
  """A state some steps in, so the optimizer's moments are not zero."""
  state = _states()
  active = np.ones((2,), bool)
  state, _ = train.compile_chunk(TINY, state, 10, active)(state, active)
  return state


def _leaves_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact(tmp_path):
  path = str(tmp_path / "run.msgpack")
  state = _trained()
  loop = {"history": {"step": [10], "loss": [2.3]}, "solved_at": [None, 10]}
  checkpoint.save(path, state, loop)
  restored, restored_loop = checkpoint.restore(path, _states())
  assert restored_loop == loop
  assert int(restored.step[0]) == int(state.step[0]) == 10
  _leaves_equal(restored.params, state.params)
  _leaves_equal(restored.opt_state, state.opt_state)
  assert restored.tx is not None


def test_no_checkpoint_is_none(tmp_path):
  assert checkpoint.restore(str(tmp_path / "absent.msgpack"), _states()) is None


def test_a_truncated_checkpoint_is_moved_aside(tmp_path):
  path = tmp_path / "run.msgpack"
  checkpoint.save(str(path), _trained(), {})
  path.write_bytes(path.read_bytes()[:100])
  assert checkpoint.restore(str(path), _states()) is None
  assert not path.exists()
  assert (tmp_path / "run.msgpack.corrupt").exists()


def test_a_checkpoint_of_other_shapes_is_moved_aside(tmp_path):
  # Saved with 5 hidden units, restored into a state with 6.
  path = tmp_path / "run.msgpack"
  checkpoint.save(str(path), _trained(), {})
  other = train.init_states(dataclasses.replace(TINY, num_hidden=6), (0, 1))
  assert checkpoint.restore(str(path), other) is None
  assert (tmp_path / "run.msgpack.corrupt").exists()


SETTINGS = {"cell": "lstm", "length": 3, "seeds": [0, 1], "learning_rate": 1e-3}


def test_a_checkpoint_is_restored_only_with_the_settings_it_was_saved_with(
    tmp_path):
  path = tmp_path / "run.msgpack"
  checkpoint.save(str(path), _trained(), {"step": 10}, SETTINGS)
  restored = checkpoint.restore(str(path), _states(), dict(SETTINGS))
  assert restored is not None and restored[1] == {"step": 10}
  assert int(restored[0].step[0]) == 10
  other = {**SETTINGS, "learning_rate": 2e-3}
  assert checkpoint.restore(str(path), _states(), other) is None
  assert not path.exists()
  assert (tmp_path / "run.msgpack.corrupt").exists()


def test_a_checkpoint_that_records_no_settings_is_not_continued(tmp_path,
                                                                caplog):
  # As written before checkpoints kept their settings: which they were is
  # unknown, so it is moved aside rather than continued as these.
  path = tmp_path / "run.msgpack"
  checkpoint.save(str(path), _trained(), {})
  with caplog.at_level(logging.WARNING):
    assert checkpoint.restore(str(path), _states(), SETTINGS) is None
  assert (tmp_path / "run.msgpack.corrupt").exists()
  (message,) = [r.getMessage() for r in caplog.records]
  assert message == (f"checkpoint {path} records no settings (saved by an "
                     f"older version), moved to {path}.corrupt; the run "
                     "starts from scratch")
