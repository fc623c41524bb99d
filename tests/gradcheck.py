"""Checks the cell tests share: a float64 gradient against central
differences, the shapes of a two-layer model, parameter counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from palindrome_jax import cells
from palindrome_jax import model


def assert_matches_central_differences(loss, params, num_directions=3,
                                       eps=1e-6, rtol=1e-7, seed=0):
  """``grad(loss)(params)`` along random directions equals ``(loss(p + eps
  d) - loss(p - eps d)) / 2 eps``; call under ``jax.enable_x64(True)``."""

  @jax.jit
  def check(direction):
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params,
                                     direction)
    numeric = (loss(shifted(1)) - loss(shifted(-1))) / (2 * eps)
    grads = jax.grad(loss)(params)
    return numeric, sum(jnp.vdot(g, d) for g, d in zip(
        jax.tree.leaves(grads), jax.tree.leaves(direction)))

  rng = np.random.default_rng(seed)
  for _ in range(num_directions):
    direction = jax.tree.map(lambda x: rng.standard_normal(x.shape), params)
    numeric, analytic = check(direction)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol)


def assert_unrolled_gradients_match(cell, params, input_dim, hidden):
  """The check above on ``cell`` unrolled over random float64 inputs ``[3,
  7, input_dim]``: the last output against a random target, plus every
  output (so every step's gradient counts)."""
  inputs = np.random.default_rng(5).normal(size=(3, 7, input_dim))
  target = np.random.default_rng(6).normal(size=(3, hidden))

  def loss(params):
    _, h_TxBxH = model.unroll(cell, params, inputs, hidden)
    return jnp.sum(jnp.square(h_TxBxH[-1] - target)) + jnp.sum(h_TxBxH) / 5

  assert_matches_central_differences(loss, params)


def count_params(name, input_dim, hidden):
  """Parameters of the registered cell ``name``'s ``init`` (traced only)."""
  return model.num_params(jax.eval_shape(
      lambda: cells.get(name).init(jax.random.PRNGKey(0), input_dim, hidden)))


def assert_two_layer_shapes(cell, block, input_dim=10, width=6):
  """Two layers of ``width`` over ``[4, 5, input_dim]`` inputs, traced only
  (strict rank promotion raises while tracing): float32 parameters, logits
  ``[4, 10]``, each layer's outputs ``[5, 4, width]``; returns the
  parameters' shapes."""
  inputs = jax.ShapeDtypeStruct((4, 5, input_dim), jnp.float32)
  params = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), cell, input_dim, width, num_layers=2,
      block=block))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  logits = jax.eval_shape(functools.partial(model.apply, cell), params,
                          inputs)
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  outs = jax.eval_shape(functools.partial(model.layer_outputs, cell),
                        params, inputs)
  assert [(o.shape, o.dtype) for o in outs] == [
      ((5, 4, width), jnp.float32)] * 2
  return params
