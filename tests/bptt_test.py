"""The hand-derived BPTT (palindrome_jax.bptt) against autodiff of the steps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from palindrome_jax import bptt
from palindrome_jax import cells
from palindrome_jax import train

T, B, D, H = 6, 3, 2, 5


def _inputs(seed, num_gates):
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  params = cells._gated_init(keys[0], D, H, num_gates)  # pylint: disable=protected-access
  params["b"] = jax.random.normal(keys[1], params["b"].shape)
  xs_TxBxD = jax.random.normal(keys[2], (T, B, D))
  carry0 = 0.3 * jax.random.normal(keys[3], (2, B, H))
  return params, xs_TxBxD, carry0


def _loss(hs_TxBxH, carry):
  """Depends on every output and the final carry, with unequal weights."""
  weights_T = jnp.arange(1.0, T + 1.0)[:, None, None]
  return (jnp.sum(weights_T * jnp.sin(hs_TxBxH))
          + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry)))


def _by_autodiff(cell, params, carry0, xs_TxBxD):
  carry, hs = jax.lax.scan(lambda c, x: cell.step(params, c, x), carry0,
                           xs_TxBxD)
  return _loss(hs, carry)


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_hand_derived_bptt_matches_autodiff(name):
  num_gates = 4 if name == "lstm" else 1
  params, xs_TxBxD, carry_pair = _inputs(0, num_gates)
  carry0 = tuple(carry_pair) if name == "lstm" else carry_pair[1]
  unroll = bptt.lstm_unroll if name == "lstm" else bptt.rnn_unroll

  def by_hand(params, carry0, xs_TxBxD):
    # bptt takes the input projection u_t = x_t W_x, done here for all t.
    carry, hs = unroll(params, carry0, xs_TxBxD @ params["W_x"])
    return _loss(hs, carry)

  cell = cells.get(name)
  value, grads = jax.value_and_grad(by_hand, argnums=(0, 1, 2))(
      params, carry0, xs_TxBxD)
  ref_value, ref_grads = jax.value_and_grad(
      lambda p, c, x: _by_autodiff(cell, p, c, x), argnums=(0, 1, 2))(
          params, carry0, xs_TxBxD)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, plain", [("rnn_bptt", "rnn"),
                                         ("lstm_bptt", "lstm")])
def test_registered_bptt_cells_train_like_the_plain_ones(name, plain):
  # Same parameters from the same key; the loss and every gradient agree.
  cfg = train.RunConfig(cell=plain, length=6, batch_size=8, num_hidden=8)
  state = jax.jit(train.create_train_state, static_argnums=2)(
      *train.run_keys(0, plain, 6)[:2], cfg)
  batch = train.train_batch(state, cfg)
  results = {}
  for cell in (plain, name):
    results[cell] = jax.value_and_grad(
        lambda p, cell=cell: train.loss_and_accuracy(
            cells.get(cell), p, batch)[0])(state.params)
  (loss_a, grads_a), (loss_b, grads_b) = results[plain], results[name]
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert cells.get(name).sequence is not None


@pytest.mark.parametrize("name, plain", [("rnn_bptt", "rnn"),
                                         ("lstm_bptt", "lstm"),
                                         ("lru_parallel", "lru")])
def test_another_path_to_the_same_cell_trains_to_the_same_numbers(name,
                                                                  plain):
  # The same function computed another way draws the plain cell's keys, so
  # `--cells=rnn,rnn_bptt` gives equal rows: the same initial weights, the
  # same batches, and (up to rounding) the same training.
  for seed in (0, 7):
    np.testing.assert_array_equal(
        jax.random.key_data(jnp.stack(train.run_keys(seed, name, 6))),
        jax.random.key_data(jnp.stack(train.run_keys(seed, plain, 6))))
  cfg = train.RunConfig(cell=plain, length=4, batch_size=8, num_hidden=8,
                        train_steps=40, log_every=20, eval_batches=2)
  a, b = (train.train_and_evaluate(dataclasses.replace(cfg, cell=c),
                                   (3,)).seeds[0] for c in (plain, name))
  np.testing.assert_allclose(b.history["loss"], a.history["loss"],
                             rtol=1e-4)
  assert abs(b.test_accuracy - a.test_accuracy) <= 1 / 16
