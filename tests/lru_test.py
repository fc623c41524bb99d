"""The LRU cell: its initialisation, its parallel form and its gradients."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from palindrome_jax import cells
from palindrome_jax import lru
from palindrome_jax import model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Compiled once: op by op, the initialisers would dominate the tests' time.
_init = jax.jit(lru.lru_init, static_argnums=(1, 2))


def init(hidden=8, input_dim=1):
  return _init(jax.random.PRNGKey(0), input_dim, hidden)


def test_registered_on_importing_cells():
  proc = subprocess.run(
      [sys.executable, "-c", "from palindrome_jax import cells; "
       "assert cells.get('lru').step.__name__ == 'lru_step'"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr


def test_param_count():
  # 4H^2 (C and the GLU) + 3DH (B and D) + 5H (nu, theta, gamma, GLU bias).
  count = lambda cell, d, h: model.num_params(jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), cells.get(cell), d, h)["cell"]))
  assert count("lru", 1, 128) == 4 * 128**2 + 3 * 128 + 5 * 128
  assert count("lru", 1, 128) == count("lstm", 1, 128) == 66_560
  assert count("lru", 10, 8) == 4 * 64 + 240 + 40


def test_initial_eigenvalues_on_the_ring():
  cell = lru.make_cell(r_min=0.5, r_max=0.8, max_phase=1.0)
  params = jax.jit(cell.init, static_argnums=(1, 2))(jax.random.PRNGKey(0), 1,
                                                     512)
  lam_re, lam_im = lru.lru_lambda(params)
  modulus = jnp.hypot(lam_re, lam_im)
  assert 0.5 <= float(modulus.min()) and float(modulus.max()) <= 0.8
  phase = jnp.exp(params["theta_log"])
  assert 0 < float(phase.min()) and float(phase.max()) <= 1.0
  np.testing.assert_allclose(jnp.exp(params["gamma_log"]),
                             jnp.sqrt(1 - modulus**2), rtol=1e-5)
  assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(params))


def test_parallel_equals_sequential():
  params = init()
  inputs_BxTxD = jax.random.normal(jax.random.PRNGKey(1), (3, 50, 1))
  # No implicit rank promotion either (conftest's STRICT_RANK_PROMOTION).
  with jax.numpy_rank_promotion("raise"):
    carry, h_TxBxH = jax.jit(functools.partial(model.unroll, cells.get("lru")),
                             static_argnums=2)(params, inputs_BxTxD, 8)
    carry_p, h_p = jax.jit(lru.lru_parallel)(params,
                                             jnp.swapaxes(inputs_BxTxD, 0, 1))
  assert h_TxBxH.shape == h_p.shape == (50, 3, 8)
  np.testing.assert_allclose(h_p, h_TxBxH, atol=1e-5, rtol=1e-5)
  for a, b in zip(carry, carry_p, strict=True):
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)


def test_sequence_from_a_nonzero_carry_equals_the_scan():
  params = init()
  u_TxBx3H = lru.lru_project(
      params, jax.random.normal(jax.random.PRNGKey(1), (9, 2, 1)))
  carry0 = tuple(jax.random.normal(k, (2, 8))
                 for k in jax.random.split(jax.random.PRNGKey(2)))
  scan = jax.jit(lambda p, c, u: jax.lax.scan(
      lambda c, u: lru.lru_step(p, c, u), c, u))
  (x_re, x_im), h_TxBxH = scan(params, carry0, u_TxBx3H)
  (y_re, y_im), h_p = jax.jit(lru.lru_sequence)(params, carry0, u_TxBx3H)
  np.testing.assert_allclose(h_p, h_TxBxH, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(y_re, x_re, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(y_im, x_im, atol=1e-5, rtol=1e-5)


def test_gradients_match_central_differences_in_float64():
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: x.astype(jnp.float64), init())
    u_TxBxD = jax.random.normal(jax.random.PRNGKey(1), (12, 2, 1), jnp.float64)
    target_BxH = jax.random.normal(jax.random.PRNGKey(2), (2, 8), jnp.float64)

    def loss(h_TxBxH):
      return (jnp.sum(jnp.square(h_TxBxH[-1] - target_BxH))
              + jnp.sum(h_TxBxH) / 7)

    def sequential_loss(params):
      zeros_BxH = jnp.zeros((2, 8), jnp.float64)
      _, h_TxBxH = jax.lax.scan(lambda c, u: lru.lru_step(params, c, u),
                                (zeros_BxH, zeros_BxH),
                                lru.lru_project(params, u_TxBxD))
      return loss(h_TxBxH)

    def parallel_loss(params):
      return loss(lru.lru_parallel(params, u_TxBxD)[1])

    @jax.jit
    def check(direction):
      """Central difference and the gradient along ``direction``."""
      eps = 1e-6
      shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params,
                                       direction)
      numeric = (sequential_loss(shifted(1)) - sequential_loss(shifted(-1))
                 ) / (2 * eps)
      along = lambda grads: sum(jnp.vdot(g, d) for g, d in zip(
          jax.tree.leaves(grads), jax.tree.leaves(direction)))
      return (numeric, along(jax.grad(sequential_loss)(params)),
              along(jax.grad(parallel_loss)(params)))

    rng = np.random.default_rng(0)
    for _ in range(3):
      direction = jax.tree.map(lambda x: rng.standard_normal(x.shape), params)
      numeric, sequential, parallel = check(direction)
      assert numeric.dtype == jnp.float64
      np.testing.assert_allclose(sequential, numeric, rtol=1e-7)
      np.testing.assert_allclose(parallel, sequential, rtol=1e-10)


def test_unroll_with_carry_offsets_and_its_gradient():
  cell = cells.get("lru")
  params = init()
  inputs_BxTxD = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 1))
  offsets = (jnp.zeros((5, 2, 8)), jnp.zeros((5, 2, 8)))

  def loss(offsets, params):
    _, h_TxBxH = model.unroll(cell, params, inputs_BxTxD, 8,
                              carry_offsets=offsets)
    return jnp.sum(h_TxBxH[-1] ** 2)

  g_offsets, g_params = jax.jit(jax.grad(loss, argnums=(0, 1)))(offsets,
                                                                params)
  assert all(bool(jnp.isfinite(x).all())
             for x in jax.tree.leaves((g_offsets, g_params)))
  # Offsets after step t move later outputs only: the last one moves nothing.
  assert float(jnp.abs(g_offsets[0][-1]).max()) == 0.0
  assert float(jnp.abs(g_offsets[0][0]).max()) > 0.0


def _scan_last(params, carry0, u_TxBx3H):
  """The last output of scanning ``lru_step``: what ``Cell.last`` spares."""
  carry, h_TxBxH = jax.lax.scan(lambda c, u: lru.lru_step(params, c, u),
                                carry0, u_TxBx3H)
  return carry, h_TxBxH[-1]


def test_last_equals_the_scans_last_output_and_its_gradient():
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: x.astype(jnp.float64), init())
    u_TxBx3H = lru.lru_project(params, jax.random.normal(
        jax.random.PRNGKey(1), (11, 2, 1), jnp.float64))
    carry0 = tuple(jax.random.normal(k, (2, 8), jnp.float64)
                   for k in jax.random.split(jax.random.PRNGKey(2)))
    target_BxH = jax.random.normal(jax.random.PRNGKey(3), (2, 8), jnp.float64)

    def loss(fn, params):
      (x_re, x_im), h_BxH = fn(params, carry0, u_TxBx3H)
      return (jnp.sum(jnp.square(h_BxH - target_BxH))
              + jnp.sum(x_re * x_im) / 3)

    expected, expected_grad = jax.jit(jax.value_and_grad(
        functools.partial(loss, _scan_last)))(params)
    for name in ("lru", "lru_parallel"):
      last = cells.get(name).last
      assert last in (lru.lru_last, lru.lru_sequence_last)
      value, grad = jax.jit(jax.value_and_grad(
          functools.partial(loss, last)))(params)
      np.testing.assert_allclose(value, expected, rtol=1e-12)
      for g, e in zip(jax.tree.leaves(grad), jax.tree.leaves(expected_grad)):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)


def test_logits_through_last_equal_the_unrolled_readout():
  params = model.init(jax.random.PRNGKey(0), cells.get("lru"), 1, 8)
  inputs_BxTxD = jax.random.normal(jax.random.PRNGKey(1), (3, 20, 1))
  _, h_TxBxH = model.unroll(cells.get("lru"), params["cell"], inputs_BxTxD, 8)
  for name in ("lru", "lru_parallel"):
    np.testing.assert_allclose(
        model.apply(cells.get(name), params, inputs_BxTxD),
        model.readout(params, h_TxBxH[-1]), atol=1e-5, rtol=1e-5)
