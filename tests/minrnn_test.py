"""minGRU and minLSTM: the plain and log-space forms, against independent
loops, finite differences and hand counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from palindrome_jax import cells
from palindrome_jax import minrnn
from palindrome_jax import model
from palindrome_jax import train
from palindrome_jax.config import RunConfig
from tests import gradcheck

KINDS = ("mingru", "minlstm")


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _g(x):
  return np.where(x >= 0, x + 0.5, _sigmoid(x))


def _reference(kind, params, inputs_BxTxD, h0_BxR):
  """The paper's step equations in float64 numpy, one step at a time, from
  the raw inputs: ``(h_T, out_TxBxH)``."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  h, outs = np.asarray(h0_BxR, np.float64), []
  for t in range(inputs_BxTxD.shape[1]):
    u = inputs_BxTxD[:, t] @ p["W_in"] + p["b_in"]
    if kind == "mingru":
      hidden, gate = np.split(u, 2, axis=-1)
      z = _sigmoid(gate)
      h = (1 - z) * h + z * _g(hidden)
    else:
      hidden, forget, inp = np.split(u, 3, axis=-1)
      f, i = _sigmoid(forget), _sigmoid(inp)
      h = f / (f + i) * h + i / (f + i) * _g(hidden)
    outs.append(h @ p["W_out"] + p["b_out"])
  return h, np.stack(outs)


_init = jax.jit(lambda key, kind, d, h: minrnn.make_cell(kind).init(key, d, h),
                static_argnums=(1, 2, 3))


def _params64(kind, input_dim, hidden, seed=0):
  return jax.tree.map(lambda x: np.asarray(x, np.float64),
                      _init(jax.random.PRNGKey(seed), kind, input_dim, hidden))


def _carries(batch, width):
  """The zero carry, a positive one and one of mixed sign."""
  rng = np.random.default_rng(7)
  return {"zero": np.zeros((batch, width)),
          "positive": rng.uniform(0.1, 2.0, (batch, width)),
          "mixed_sign": rng.normal(0.0, 1.5, (batch, width))}


def test_registered_with_parallel_forms_drawing_the_same_keys():
  for kind in KINDS:
    sequential, parallel = cells.get(kind), cells.get(f"{kind}_parallel")
    assert sequential.sequence is None and parallel.sequence is not None
    assert cells.key_name(f"{kind}_parallel") == kind
    assert sequential.mlp_expand == parallel.mlp_expand == 0
  with pytest.raises(ValueError, match="kind"):
    minrnn.make_cell("mingru2")


def test_g_is_positive_continuous_and_log_g_is_its_log_in_float64():
  with jax.enable_x64(True):
    x = np.linspace(-40.0, 40.0, 8001)
    g, log_g, grad = jax.jit(lambda x: (
        minrnn.g(x), minrnn.log_g(x), jax.vmap(jax.grad(minrnn.log_g))(x)))(x)
    assert bool((g > 0).all())
    np.testing.assert_allclose(g, _g(x), rtol=1e-15)
    np.testing.assert_allclose(log_g, np.log(_g(x)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g[3999:4002], 0.5, atol=0.02)  # Around 0.
    # The unused branch (log of relu(x) + 0.5 below 0) leaves no NaN.
    assert bool(np.isfinite(grad).all())
    np.testing.assert_allclose(grad[x < 0], _sigmoid(-x[x < 0]), rtol=1e-12)
    np.testing.assert_allclose(grad[x > 0], 1 / (x[x > 0] + 0.5), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_log_coefficients_equal_the_plain_formula_in_float64(kind):
  plain = getattr(minrnn, f"{kind}_coefficients")
  log_space = getattr(minrnn, f"{kind}_log_coefficients")
  parts = 2 if kind == "mingru" else 3
  with jax.enable_x64(True):
    u = jnp.asarray(np.random.default_rng(0).normal(0, 4, (64, parts * 5)))
    (a, b), (log_a, log_b) = jax.jit(lambda u: (plain(u), log_space(u)))(u)
    # The plain 1 - z cancels where z is near 1: it is the less exact one.
    np.testing.assert_allclose(jnp.exp(log_a), a, rtol=1e-9)
    np.testing.assert_allclose(jnp.exp(log_b), b, rtol=1e-9)
    # Where the plain a = 1 - z rounds to 0, its log stays finite.
    extreme = jnp.full((1, parts), 60.0, jnp.float64)
    log_a, log_b = log_space(extreme)
    assert bool(jnp.isfinite(log_a).all() & jnp.isfinite(log_b).all())
    if kind == "mingru":
      assert float(plain(extreme)[0][0, 0]) == 0.0
      np.testing.assert_allclose(log_a, -60.0, rtol=1e-12)


def test_log_space_scan_equals_a_plain_loop_from_any_carry():
  rng = np.random.default_rng(1)
  a = rng.uniform(0.05, 1.0, (30, 3, 4))
  b = rng.uniform(0.01, 2.0, (30, 3, 4))
  for name, h0 in _carries(3, 4).items():
    h, expected = h0, []
    for t in range(30):
      h = a[t] * h + b[t]
      expected.append(h)
    with jax.enable_x64(True):
      got = jax.jit(minrnn.log_space_scan)(np.log(a), np.log(b), h0)
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-12,
                               err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_equals_a_numpy_loop_of_the_paper_equations(kind):
  params = _init(jax.random.PRNGKey(3), kind, 3, 5)
  inputs = np.random.default_rng(2).normal(size=(4, 6, 3)).astype(np.float32)
  _, expected = _reference(kind, params, inputs, np.zeros((4, 5)))
  for name in (kind, f"{kind}_parallel"):
    _, h_TxBxH = jax.jit(functools.partial(model.unroll, cells.get(name)),
                         static_argnums=2)(params, inputs, 5)
    np.testing.assert_allclose(h_TxBxH, expected, rtol=2e-5, atol=2e-6,
                               err_msg=name)


def _scan(cell, params, carry0, u_TxBxG):
  return jax.lax.scan(lambda c, u: cell.step(params, c, u), carry0, u_TxBxG)


def _scan_last(cell):
  """``(final carry, last output)`` of scanning ``cell.step``."""
  def fn(params, carry0, u_TxBxG):
    carry, h_TxBxH = _scan(cell, params, carry0, u_TxBxG)
    return carry, h_TxBxH[-1]
  return fn


@pytest.mark.parametrize("kind", KINDS)
def test_parallel_equals_sequential_in_float64(kind):
  # Values and gradients (parameters and carry), from the zero carry, a
  # positive carry and one of mixed sign: h_0 enters outside the logs.
  sequential, parallel = cells.get(kind), cells.get(f"{kind}_parallel")
  with jax.enable_x64(True):
    params = _params64(kind, 2, 6)
    inputs = np.random.default_rng(3).normal(0, 2, (13, 3, 2))
    weights = np.random.default_rng(4).normal(size=(13, 3, 6))

    def loss(fn, params, carry0):
      h_T, out_TxBxH = fn(params, carry0, minrnn.min_project(params, inputs))
      return jnp.sum(out_TxBxH * weights) + jnp.sum(h_T * h_T) / 3

    def last_loss(fn, params, carry0):
      h_T, out_BxH = fn(params, carry0, minrnn.min_project(params, inputs))
      return jnp.sum(out_BxH * weights[-1]) + jnp.sum(h_T * h_T) / 3

    fns = {
        "scan": jax.value_and_grad(functools.partial(
            loss, functools.partial(_scan, sequential)), argnums=(0, 1)),
        "sequence": jax.value_and_grad(functools.partial(
            loss, parallel.sequence), argnums=(0, 1)),
        "scan_last": jax.value_and_grad(functools.partial(
            last_loss, _scan_last(sequential)), argnums=(0, 1)),
        "last": jax.value_and_grad(functools.partial(
            last_loss, sequential.last), argnums=(0, 1)),
        "sequence_last": jax.value_and_grad(functools.partial(
            last_loss, parallel.last), argnums=(0, 1)),
    }
    run = jax.jit(lambda carry0: {k: f(params, carry0)
                                  for k, f in fns.items()})
    for name, carry0 in _carries(3, 6).items():
      results = run(carry0)
      for expected, others in (("scan", ("sequence",)),
                               ("scan_last", ("last", "sequence_last"))):
        for other in others:
          for got, want in zip(jax.tree.leaves(results[other]),
                               jax.tree.leaves(results[expected])):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name} {other}")


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_central_differences_in_float64(kind):
  cell = cells.get(f"{kind}_parallel")
  with jax.enable_x64(True):
    gradcheck.assert_unrolled_gradients_match(cell, _params64(kind, 2, 3),
                                              2, 3)


_count = gradcheck.count_params


def test_param_counts_by_hand():
  # W_in [D, P R] and b_in [P R] (P = 2: h~, z; 3: h~, f, i), then W_out
  # [R, H] and b_out [H]; R = H.
  for kind, parts in (("mingru", 2), ("minlstm", 3)):
    for d, h in ((1, 128), (10, 7)):
      expected = parts * h * (d + 1) + h * (h + 1)
      assert _count(kind, d, h) == _count(f"{kind}_parallel", d, h) == expected
  assert _count("mingru", 1, 128) == 17_024
  assert _count("minlstm", 1, 128) == 17_280
  wide = jax.eval_shape(lambda: minrnn.make_cell("minlstm", 2.0).init(
      jax.random.PRNGKey(0), 10, 7))
  assert wide["W_in"].shape == (10, 42) and wide["W_out"].shape == (14, 7)
  assert minrnn.make_cell("minlstm", 2.0).initial_carry(3, 7).shape == (3, 14)


@pytest.mark.parametrize("block", ["stack", "residual"])
def test_shapes_and_dtypes_at_two_layers(block):
  for name in ("mingru", "mingru_parallel", "minlstm", "minlstm_parallel"):
    cell = cells.get(name)
    assert cell.initial_carry(4, 6).shape == (4, 6)
    assert cell.initial_carry(4, 6).dtype == jnp.float32
    gradcheck.assert_two_layer_shapes(cell, block)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_learns_length_5_at_two_stacked_layers(kind):
  # Seed 42: 1.0 (mingru) and 0.99 (minlstm) test accuracy after 400 steps;
  # the first 100 steps averaged 0.31 and 0.33 on the training batches.
  cfg = RunConfig(cell=kind, length=5, num_layers=2, block="stack",
                  num_hidden=32, train_steps=400, batch_size=64,
                  learning_rate=3e-3, log_every=100, eval_batches=10)
  result = train.train_and_evaluate(cfg, seeds=(42,)).seeds[0]
  assert result.status == "ok"
  assert result.test_accuracy >= 0.95
  assert result.history["accuracy"][0] < 0.5
