"""A cell unrolled over time with ``jax.lax.scan``, then a linear readout.

The model returns logits (no softmax): the loss applies log-softmax itself.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp

from palindrome_jax import cells as cells_lib
from palindrome_jax.data import NUM_CLASSES

Params = Any


def init(key: jax.Array, cell: cells_lib.Cell, input_dim: int, hidden_dim: int,
         num_classes: int = NUM_CLASSES) -> Params:
  """``{"cell": ..., "readout": {"W", "b"}}``; readout as the original's."""
  key_cell, key_out = jax.random.split(key)
  return {
      "cell": cell.init(key_cell, input_dim, hidden_dim),
      "readout": {
          "W": cells_lib.uniform_fan_in(key_out, (hidden_dim, num_classes)),
          "b": jnp.zeros((num_classes,), jnp.float32),
      },
  }


def unroll(cell: cells_lib.Cell, cell_params: Params, inputs_BxTxD: jax.Array,
           hidden_dim: int, carry_offsets: Optional[Any] = None, unroll_steps: int = 1):
  """Runs ``cell`` over time; returns ``(final carry, h_TxBxH)``.

  ``carry_offsets``, a carry pytree with a leading time axis, is added to the
  carry after each step: all zeros it changes nothing, and the gradient of the
  loss with respect to it is ``dL/dcarry_t`` (see :mod:`gradients`).
  """
  carry0, xs_TxBxD = _scan_inputs(cell, cell_params, inputs_BxTxD,
                                  hidden_dim)
  if cell.sequence is not None and carry_offsets is None:
    return cell.sequence(cell_params, carry0, xs_TxBxD)

  def body(carry, xs):
    x_t, offset_t = xs
    carry, h_t = cell.step(cell_params, carry, x_t)
    if offset_t is not None:
      carry = jax.tree.map(jnp.add, carry, offset_t)
    return carry, h_t

  return jax.lax.scan(body, carry0, (xs_TxBxD, carry_offsets),
                      unroll=unroll_steps)


def _scan_inputs(cell: cells_lib.Cell, cell_params: Params,
                 inputs_BxTxD: jax.Array, hidden_dim: int):
  """``(carry0, xs_TxBx*)``: the zero carry and the time-major inputs, projected
  if ``cell`` projects."""
  xs_TxBxD = jnp.swapaxes(inputs_BxTxD, 0, 1)
  if cell.project is not None:
    # Linear in x: one [T*B, D] x [D, G] matmul for all steps, out of the loop.
    xs_TxBxD = cell.project(cell_params, xs_TxBxD)
  carry0 = cell.initial_carry(inputs_BxTxD.shape[0], hidden_dim)
  # The carry takes the parameters' precision (float64 in gradient checks).
  dtype = jnp.result_type(*jax.tree.leaves(cell_params))
  return jax.tree.map(lambda c: c.astype(dtype), carry0), xs_TxBxD


def apply(cell: cells_lib.Cell, params: Params, inputs_BxTxD: jax.Array,
          **unroll_kwargs) -> jax.Array:
  """Logits ``[B, num_classes]`` from the last hidden state."""
  hidden_dim = params["readout"]["W"].shape[0]
  if cell.last is not None and unroll_kwargs.get("carry_offsets") is None:
    _, h_BxH = cell.last(params["cell"], *_scan_inputs(
        cell, params["cell"], inputs_BxTxD, hidden_dim))
    return readout(params, h_BxH)
  _, h_TxBxH = unroll(cell, params["cell"], inputs_BxTxD, hidden_dim,
                      **unroll_kwargs)
  return readout(params, h_TxBxH[-1])


def readout(params: Params, h_BxH: jax.Array) -> jax.Array:
  return h_BxH @ params["readout"]["W"] + params["readout"]["b"][None, :]


def num_params(params: Params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
