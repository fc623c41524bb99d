"""Tests for palindrome_jax.model: the unroll and the readout."""

import jax
import jax.numpy as jnp
import numpy as np

from palindrome_jax import cells
from palindrome_jax import model


def _setup(name="gru", batch=3, steps=4, hidden=5):
  cell = cells.get(name)
  params = model.init(jax.random.PRNGKey(0), cell, 1, hidden)
  inputs_BxTxD = jax.random.uniform(jax.random.PRNGKey(1), (batch, steps, 1))
  return cell, params, inputs_BxTxD


def test_init_readout_and_parameter_count():
  cell, params, inputs_BxTxD = _setup()
  assert params["readout"]["W"].shape == (5, 10)
  assert np.all(params["readout"]["b"] == 0)
  # GRU: 3 gates of (1 + 5) x 5 weights, 3 x 5 biases, 5 more (b_hn).
  gru = 3 * (1 * 5 + 5 * 5) + 3 * 5 + 5
  assert model.num_params(params) == gru + 5 * 10 + 10
  assert model.apply(cell, params, inputs_BxTxD).shape == (3, 10)


def test_zero_carry_offsets_change_nothing_and_others_do():
  cell, params, inputs_BxTxD = _setup()
  _, h_TxBxH = model.unroll(cell, params["cell"], inputs_BxTxD, 5)
  zeros = jnp.zeros((4, 3, 5))
  _, with_zeros = model.unroll(cell, params["cell"], inputs_BxTxD, 5,
                               carry_offsets=zeros)
  np.testing.assert_array_equal(h_TxBxH, with_zeros)
  _, shifted = model.unroll(cell, params["cell"], inputs_BxTxD, 5,
                            carry_offsets=zeros.at[1].set(0.5))
  np.testing.assert_array_equal(h_TxBxH[:1], shifted[:1])  # Before t=1.
  assert np.abs(np.asarray(h_TxBxH[2:] - shifted[2:])).max() > 1e-3


def test_apply_reads_the_last_output_from_cell_last_when_given():
  cell, params, inputs_BxTxD = _setup("rnn")
  seen = []

  def last(cell_params, carry0, xs_TxBxD):
    seen.append((carry0.shape, xs_TxBxD.shape))
    return carry0, jnp.full(carry0.shape, 2.0)

  marked = cell._replace(last=last)
  expected = model.readout(params, jnp.full((3, 5), 2.0))
  np.testing.assert_array_equal(model.apply(marked, params, inputs_BxTxD),
                                expected)
  assert seen == [((3, 5), (4, 3, 1))]  # The zero carry, time-major inputs.
  # Carry offsets (the gradients' probe) need every step: the scan runs.
  offsets = jnp.zeros((4, 3, 5))
  np.testing.assert_array_equal(
      model.apply(marked, params, inputs_BxTxD, carry_offsets=offsets),
      model.apply(cell, params, inputs_BxTxD))
