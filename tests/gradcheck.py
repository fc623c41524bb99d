"""A shared float64 check of a gradient against central differences."""

import jax
import jax.numpy as jnp
import numpy as np


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
