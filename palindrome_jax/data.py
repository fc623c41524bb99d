"""Random palindromes, made on the device from a key.

A palindrome of ``N + 1`` digits is read one digit per time step for its first
``N`` digits; the target is the last digit, which equals the first. So the task
is "remember one of 10 symbols across N steps"; chance is 10%.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

NUM_CLASSES = 10
ENCODINGS = ("scalar", "onehot")


class Batch(NamedTuple):
  """A batch of examples: ``inputs_BxTxD`` digits, ``targets_B`` labels."""

  inputs: jax.Array
  targets: jax.Array


def input_dim(encoding: str) -> int:
  """Width of one time step's input for ``encoding``."""
  if encoding == "scalar":
    return 1
  if encoding == "onehot":
    return NUM_CLASSES
  raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def palindromes(key: jax.Array, length: int, batch_size: int) -> jax.Array:
  """Integer palindromes of ``length + 1`` digits, shape ``[batch, length + 1]``.

  Draws ``length + 1`` digits and mirrors them: position ``i`` takes the digit
  drawn for ``min(i, length - i)``, so each half is the other's reflection for
  odd and even lengths alike, and every palindrome is equally likely.
  """
  if length < 1:
    raise ValueError(f"length must be >= 1, got {length}")
  digits_BxP = jax.random.randint(key, (batch_size, length + 1), 0, NUM_CLASSES)
  positions_P = jnp.arange(length + 1)
  return digits_BxP[:, jnp.minimum(positions_P, length - positions_P)]


def encode(digits: jax.Array, encoding: str) -> jax.Array:
  """Digits ``[..., T]`` to float inputs ``[..., T, D]`` in ``encoding``."""
  if encoding == "scalar":
    return digits.astype(jnp.float32)[..., None]
  if encoding == "onehot":
    return jax.nn.one_hot(digits, NUM_CLASSES, dtype=jnp.float32)
  raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def make_batch(key: jax.Array, length: int, batch_size: int,
               encoding: str = "scalar") -> Batch:
  """One batch: inputs are the first ``length`` digits, target the last."""
  full_BxP = palindromes(key, length, batch_size)
  return Batch(inputs=encode(full_BxP[:, :length], encoding),
               targets=full_BxP[:, length])
