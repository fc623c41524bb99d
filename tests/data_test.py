"""Tests for palindrome_jax.data: palindromes, targets, encodings, keys."""

import jax
import numpy as np
import pytest

from palindrome_jax import data

LENGTHS = (1, 2, 5, 6, 15)
BATCH = 64


def _digits_from_inputs(inputs_BxTxD: np.ndarray, encoding: str) -> np.ndarray:
  """The integer digits ``[B, T]`` of encoded inputs, checking the encoding."""
  if encoding == "scalar":
    assert inputs_BxTxD.shape[-1] == 1
    values_BxT = inputs_BxTxD[..., 0]
    np.testing.assert_array_equal(values_BxT, np.round(values_BxT))
    return values_BxT.astype(np.int64)
  assert inputs_BxTxD.shape[-1] == data.NUM_CLASSES
  assert set(np.unique(inputs_BxTxD)) <= {0.0, 1.0}
  np.testing.assert_array_equal(inputs_BxTxD.sum(-1), 1.0)
  return inputs_BxTxD.argmax(-1)


@pytest.mark.parametrize("length", LENGTHS)
def test_palindromes_read_the_same_backwards(length):
  full_BxP = np.asarray(
      data.palindromes(jax.random.PRNGKey(length), length, BATCH))
  assert full_BxP.shape == (BATCH, length + 1)
  assert full_BxP.min() >= 0 and full_BxP.max() < data.NUM_CLASSES
  np.testing.assert_array_equal(full_BxP, full_BxP[:, ::-1])


@pytest.mark.parametrize("encoding", data.ENCODINGS)
@pytest.mark.parametrize("length", LENGTHS)
def test_make_batch_examples_are_palindromes_with_right_target(length,
                                                               encoding):
  key = jax.random.PRNGKey(100 + length)
  batch = data.make_batch(key, length, BATCH, encoding)
  inputs = np.asarray(batch.inputs)
  targets = np.asarray(batch.targets)
  width = 1 if encoding == "scalar" else data.NUM_CLASSES
  assert inputs.shape == (BATCH, length, width)
  assert inputs.dtype == np.float32
  assert targets.shape == (BATCH,)
  assert np.issubdtype(targets.dtype, np.integer)
  assert data.input_dim(encoding) == width

  digits_BxN = _digits_from_inputs(inputs, encoding)
  assert digits_BxN.min() >= 0 and digits_BxN.max() < data.NUM_CLASSES
  full_BxP = np.concatenate([digits_BxN, targets[:, None]], axis=1)
  np.testing.assert_array_equal(full_BxP, full_BxP[:, ::-1])
  # The target is the last digit of the palindrome, so equals the first one.
  np.testing.assert_array_equal(targets, digits_BxN[:, 0])
  # And the batch is the start of data.palindromes with the same key.
  np.testing.assert_array_equal(
      full_BxP, np.asarray(data.palindromes(key, length, BATCH)))


def test_scalar_inputs_equal_the_digits_and_onehot_matches():
  key = jax.random.PRNGKey(3)
  scalar = data.make_batch(key, 6, BATCH, "scalar")
  onehot = data.make_batch(key, 6, BATCH, "onehot")
  expected_BxN = np.asarray(data.palindromes(key, 6, BATCH))[:, :6]
  np.testing.assert_array_equal(np.asarray(scalar.inputs)[..., 0],
                                expected_BxN.astype(np.float32))
  np.testing.assert_array_equal(np.asarray(onehot.inputs),
                                np.eye(data.NUM_CLASSES)[expected_BxN])
  np.testing.assert_array_equal(scalar.targets, onehot.targets)


@pytest.mark.parametrize("encoding", data.ENCODINGS)
def test_same_key_same_batch_different_key_different_batch(encoding):
  a = data.make_batch(jax.random.PRNGKey(7), 5, BATCH, encoding)
  b = data.make_batch(jax.random.PRNGKey(7), 5, BATCH, encoding)
  c = data.make_batch(jax.random.PRNGKey(8), 5, BATCH, encoding)
  np.testing.assert_array_equal(a.inputs, b.inputs)
  np.testing.assert_array_equal(a.targets, b.targets)
  assert not np.array_equal(a.inputs, c.inputs)
  assert not np.array_equal(a.targets, c.targets)


@pytest.mark.parametrize("length", (5, 6))
def test_digits_are_roughly_uniform_and_independent(length):
  num = 20_000
  full_BxP = np.asarray(data.palindromes(jax.random.PRNGKey(0), length, num))
  expected = num / data.NUM_CLASSES  # 2000, standard deviation about 42.
  # Every free position (the first half and the middle) is uniform on 0..9.
  for position in range(length // 2 + 1):
    counts = np.bincount(full_BxP[:, position], minlength=data.NUM_CLASSES)
    assert len(counts) == data.NUM_CLASSES
    np.testing.assert_allclose(counts, expected, rtol=0.1,
                               err_msg=f"position {position}")
  # Distinct free positions are drawn independently: equal 10% of the time.
  same = np.mean(full_BxP[:, 0] == full_BxP[:, 1])
  assert 0.08 < same < 0.12


@pytest.mark.parametrize("length", (0, -1))
def test_invalid_length_raises(length):
  with pytest.raises(ValueError, match="length"):
    data.make_batch(jax.random.PRNGKey(0), length, 4)
  with pytest.raises(ValueError, match="length"):
    data.palindromes(jax.random.PRNGKey(0), length, 4)


def test_unknown_encoding_raises():
  with pytest.raises(ValueError, match="encoding"):
    data.make_batch(jax.random.PRNGKey(0), 5, BATCH, "binary")
  with pytest.raises(ValueError, match="encoding"):
    data.input_dim("binary")
