"""Gated DeltaNet: the step against a numpy loop of the paper's equations, the
chunkwise form against the recurrence, gradients, counts, a training run."""

import functools

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from palindrome_jax import cells
from palindrome_jax import deltanet
from palindrome_jax import model
from palindrome_jax import train

# d_k = int(0.75 * 16) // 4 = 3 and d_v = int(1.5 * 16) // 4 = 6: keys of
# three components, so the delta rule's k k^T is not a scalar.
HIDDEN, INPUT_DIM, BATCH = 16, 2, 3
HEADS, D_K, D_V = 4, 3, 6

# Test data comes from numpy and what is tested runs jitted: op by op, the
# compiles of each eager op would dominate these small tests.


def _random_params(seed, hidden=HIDDEN, input_dim=INPUT_DIM,
                   dtype=np.float64):
  """Every leaf redrawn (biases, the norm's weight, A_log too), so no term
  of the block is zero or one; the decays ``alpha`` lie in about (0.02, 1)
  for inputs in ``±2``."""
  shapes = jax.eval_shape(lambda: deltanet.gated_deltanet_init(
      jax.random.PRNGKey(0), input_dim, hidden))
  rng = np.random.default_rng(seed)
  params = {k: rng.uniform(-0.8, 0.8, s.shape) for k, s in shapes.items()}
  params["A_log"] = rng.uniform(-3.0, 0.0, shapes["A_log"].shape)
  params["norm"] = rng.uniform(0.5, 1.5, shapes["norm"].shape)
  return {k: v.astype(dtype) for k, v in params.items()}


def _random_carry(seed, batch=BATCH, dtype=np.float64):
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: deltanet.make_initial_carry()(batch,
                                                                HIDDEN))
  return tuple(rng.standard_normal(s.shape).astype(dtype) for s in shapes)


def _scan(params, carry0, u_TxBxP):
  """Scanning the registered step: ``(final carry, h_TxBxH)``."""
  return jax.lax.scan(lambda c, u: deltanet.gated_deltanet_step(params, c, u),
                      carry0, u_TxBxP)


def _tree_dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a),
                                             jax.tree.leaves(b)))


def test_registered_with_the_sequential_cells_keys_and_mlp():
  assert cells.get("gated_deltanet").step is deltanet.gated_deltanet_step
  parallel = cells.get("gated_deltanet_parallel")
  assert parallel.sequence is not None
  assert cells.key_name("gated_deltanet_parallel") == "gated_deltanet"
  assert cells.get("gated_deltanet").mlp_expand == parallel.mlp_expand == 4
  assert deltanet.head_dims(HIDDEN) == (D_K, D_V)


def _count(hidden, input_dim, n=4, expand_k=0.75, expand_v=1.5):
  d_k = max(1, int(expand_k * hidden) // n)
  d_v = max(1, int(expand_v * hidden) // n)
  k, v = n * d_k, n * d_v
  return (input_dim * (2 * k + 2 * v + 2 * n)  # W_q, W_k, W_v, W_g, W_a, W_b
          + n                                  # b_beta
          + 4 * (2 * k + v)                    # the conv, no bias
          + 2 * n                              # A_log, dt_bias
          + d_v                                # the norm's weight
          + v * hidden)                        # W_out


def test_param_count_by_hand():
  count = lambda d, h: model.num_params(jax.eval_shape(
      lambda: deltanet.gated_deltanet_init(jax.random.PRNGKey(0), d, h)))
  # H = 128: d_k = 24, d_v = 48, K = 96, V = 192.
  assert count(1, 128) == _count(128, 1) == 584 + 4 + 1536 + 8 + 48 + 24_576
  assert count(1, 128) == 26_756
  # A residual layer's block (D = H): about 6 H^2, as the paper's.
  assert count(128, 128) == _count(128, 128) == 100_924
  # Odd sizes: d_k = int(5.25) // 4 = 1, d_v = int(10.5) // 4 = 2.
  assert count(10, 7) == _count(7, 10) == 320 + 4 + 64 + 8 + 2 + 56


def test_initialisation_as_the_official_code():
  params = jax.jit(deltanet.gated_deltanet_init, static_argnums=(1, 2))(
      jax.random.PRNGKey(0), 3, 512)
  dt = jax.nn.softplus(params["dt_bias"])
  assert 1e-3 <= float(dt.min()) and float(dt.max()) <= 1e-1 + 1e-6
  a = jnp.exp(params["A_log"])
  assert 0 < float(a.min()) and float(a.max()) <= 16
  assert float(jnp.abs(params["W_in"]).max()) <= 1 / np.sqrt(3)
  assert float(jnp.abs(params["conv_w"]).max()) <= 0.5
  assert float(jnp.abs(params["conv_w"]).max()) > 0.45
  np.testing.assert_array_equal(params["b_beta"], 0.0)
  np.testing.assert_array_equal(params["norm"], 1.0)


def test_shapes_and_dtypes_in_float32():
  # 70 steps: two chunks of the parallel form's 64, the second padded.
  cell = cells.get("gated_deltanet")
  carry = cell.initial_carry(BATCH, HIDDEN)
  channels = HEADS * (2 * D_K + D_V)
  assert [c.shape for c in carry] == [(BATCH, 3, channels),
                                      (BATCH, HEADS, D_V, D_K)]
  params = jax.jit(cell.init, static_argnums=(1, 2))(jax.random.PRNGKey(0),
                                                     10, HIDDEN)
  x_TxBxD = jax.random.normal(jax.random.PRNGKey(1), (70, BATCH, 10))
  u_TxBxP = jax.jit(cell.project)(params, x_TxBxD)
  new_carry, h_TxBxH = jax.jit(_scan)(params, carry, u_TxBxP)
  assert h_TxBxH.shape == (70, BATCH, HIDDEN)
  assert h_TxBxH.dtype == jnp.float32
  for new, old in zip(new_carry, carry):
    assert new.shape == old.shape and new.dtype == jnp.float32
  seq_carry, h_p = jax.jit(cells.get("gated_deltanet_parallel").sequence)(
      params, carry, u_TxBxP)
  assert h_p.dtype == jnp.float32
  np.testing.assert_allclose(h_p, h_TxBxH, rtol=1e-4, atol=1e-5)
  for new, old in zip(seq_carry, new_carry):
    assert new.dtype == jnp.float32
    np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-5)


def _silu(x):
  return x / (1.0 + np.exp(-x))


def _reference(p, x_TxBxD):
  """The block, looped over time, batch and heads in numpy, as the paper
  writes it: ``S_t = S_{t-1} (alpha_t (I - beta_t k_t k_t^T)) + beta_t v_t
  k_t^T`` with an explicit identity, ``o_t = S_t q_t``."""
  n, d_k, d_v = HEADS, D_K, D_V
  k_w, v_w = n * d_k, n * d_v
  w = p["W_in"]
  cols = np.cumsum([0, k_w, k_w, v_w, v_w, n, n])
  wq, wk, wv, wg, wa, wb = (w[:, cols[i]:cols[i + 1]] for i in range(6))
  cq, ck, cv = (p["conv_w"][:, cols[i]:cols[i + 1]] for i in range(3))
  steps, batch = x_TxBxD.shape[:2]
  s = np.zeros((batch, n, d_v, d_k))
  out = np.zeros((steps, batch, p["W_out"].shape[1]))
  for t in range(steps):
    def conv(wx, c):  # Causal, width 4, zeros before the first step.
      return sum(c[3 - j] * (x_TxBxD[t - j] @ wx) for j in range(4)
                 if t - j >= 0)
    q_all, k_all, v_all = (_silu(conv(wq, cq)), _silu(conv(wk, ck)),
                           _silu(conv(wv, cv)))
    g_all = x_TxBxD[t] @ wg
    a_all, b_all = x_TxBxD[t] @ wa, x_TxBxD[t] @ wb + p["b_beta"]
    for b in range(batch):
      gated = []
      for h in range(n):
        q = q_all[b, h * d_k:(h + 1) * d_k]
        k = k_all[b, h * d_k:(h + 1) * d_k]
        v = v_all[b, h * d_v:(h + 1) * d_v]
        q = q / np.sqrt(q @ q + 1e-6) / np.sqrt(d_k)
        k = k / np.sqrt(k @ k + 1e-6)
        alpha = np.exp(-np.exp(p["A_log"][h])
                       * np.log1p(np.exp(a_all[b, h] + p["dt_bias"][h])))
        beta = 1.0 / (1.0 + np.exp(-b_all[b, h]))
        s[b, h] = (s[b, h] @ (alpha * (np.eye(d_k) - beta * np.outer(k, k)))
                   + beta * np.outer(v, k))
        o = s[b, h] @ q
        o = o / np.sqrt(np.mean(o * o) + 1e-5) * p["norm"]
        gated.append(o * _silu(g_all[b, h * d_v:(h + 1) * d_v]))
      out[t, b] = np.concatenate(gated) @ p["W_out"]
  return s, out


def test_step_matches_a_numpy_loop_of_the_papers_equations():
  params = _random_params(0)
  x_BxTxD = np.random.default_rng(1).uniform(-2, 2, (BATCH, 6, INPUT_DIM))
  with jax.enable_x64(True):
    (_, s), h_TxBxH = jax.jit(functools.partial(
        model.unroll, cells.get("gated_deltanet")), static_argnums=2)(
            params, x_BxTxD, HIDDEN)
  s_ref, h_ref = _reference(params, np.swapaxes(x_BxTxD, 0, 1))
  assert h_TxBxH.dtype == jnp.float64
  np.testing.assert_allclose(h_TxBxH, h_ref, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(s, s_ref, rtol=1e-10, atol=1e-12)


def test_a_key_written_with_beta_one_reads_back_its_value():
  # The delta rule replaces what the state stores under k (|k| = 1) and,
  # besides the decay, leaves orthogonal keys alone; the sum of a plain
  # linear-attention write would not.
  rng = np.random.default_rng(0)
  s0 = rng.standard_normal((5, 3))
  k = np.array([0.6, 0.8, 0.0])
  k_orth = np.array([-0.8, 0.6, 0.0])
  v = rng.standard_normal(5)
  for alpha in (1.0, 0.4):
    s1 = deltanet.delta_rule_step(s0, k, v, np.float64(alpha), np.float64(1))
    np.testing.assert_allclose(s1 @ k, v, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s1 @ k_orth, alpha * s0 @ k_orth, rtol=1e-5,
                               atol=1e-6)


# One loss for the parallel and finite-difference tests, so that they share
# compiled programs: 11 steps, in chunks of 4 (three chunks, the last padded)
# and of 64 (one chunk of 11).
STEPS = 11


def _loss(sequence, params, carry0, x_TxBxD, target_TxBxH):
  (conv, s), h_TxBxH = sequence(
      params, carry0, deltanet.gated_deltanet_project(params, x_TxBxD))
  return (jnp.sum(jnp.square(h_TxBxH - target_TxBxH)) + jnp.sum(s * s) / 3
          + jnp.sum(jnp.sin(conv)))


_scan_loss = jax.jit(functools.partial(_loss, _scan))
_scan_value_and_grad = jax.jit(jax.value_and_grad(
    functools.partial(_loss, _scan), argnums=(0, 1)))


@functools.partial(jax.jit, static_argnums=4)
def _parallel_value_and_grad(params, carry0, x_TxBxD, target_TxBxH,
                             chunk_size):
  sequence = functools.partial(deltanet.gated_deltanet_sequence,
                               chunk_size=chunk_size)
  return jax.value_and_grad(functools.partial(_loss, sequence),
                            argnums=(0, 1))(params, carry0, x_TxBxD,
                                            target_TxBxH)


def _loss_inputs(seed):
  rng = np.random.default_rng(seed)
  return (rng.uniform(-2, 2, (STEPS, BATCH, INPUT_DIM)),
          rng.standard_normal((STEPS, BATCH, HIDDEN)))


@pytest.mark.parametrize("carry_seed", [None, 7])
def test_parallel_equals_sequential_in_float64(carry_seed):
  x_TxBxD, target = _loss_inputs(2)
  with jax.enable_x64(True):
    params = _random_params(3)
    carry0 = (tuple(np.zeros(c.shape) for c in _random_carry(0))
              if carry_seed is None else _random_carry(carry_seed))
    value, grads = _scan_value_and_grad(params, carry0, x_TxBxD, target)
    assert value.dtype == jnp.float64
    assert min(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0
    for chunk_size in (4, 64):
      value_p, grads_p = _parallel_value_and_grad(params, carry0, x_TxBxD,
                                                  target, chunk_size)
      np.testing.assert_allclose(value_p, value, rtol=1e-12)
      for g_p, g in zip(jax.tree.leaves(grads_p), jax.tree.leaves(grads)):
        np.testing.assert_allclose(g_p, g, rtol=1e-9, atol=1e-11)


def _count_primitive(jaxpr, name):
  """How often ``name`` occurs in ``jaxpr`` and every jaxpr inside it."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == name
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      count += _count_primitive(sub, name)
  return count


def test_one_triangular_solve_forward_and_one_backward():
  # Two independent solves hung a 2-core CPU about one step in five: each
  # LAPACK call waits on its batch's tasks in XLA's intra-op pool, and two
  # side by side held both of its threads (FINDINGS 11). JAX's own gradient
  # of a solve has two independent ones.
  x_TxBxD, target = _loss_inputs(2)
  params, carry0 = _random_params(3), _random_carry(0, dtype=np.float32)
  sequence = functools.partial(deltanet.gated_deltanet_sequence, chunk_size=4)
  loss = functools.partial(_loss, sequence)
  args = (params, carry0, x_TxBxD.astype(np.float32),
          target.astype(np.float32))
  forward = jax.make_jaxpr(loss)(*args).jaxpr
  both = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(*args).jaxpr
  assert _count_primitive(forward, "triangular_solve") == 1
  assert _count_primitive(both, "triangular_solve") == 2


def test_unit_lower_solve_and_its_gradient_equal_jaxs_in_float64():
  rng = np.random.default_rng(5)
  strict = np.tril(np.ones((6, 6), bool), -1)
  eye = np.broadcast_to(np.eye(6), (3, 2, 6, 6))
  with jax.enable_x64(True):
    a = rng.standard_normal((3, 2, 6, 6)) / 3  # Its upper part is not read.
    b = rng.standard_normal((3, 2, 6, 5))
    weight = rng.standard_normal((3, 2, 6, 5))

    def jaxs(a, b):
      return jax.lax.linalg.triangular_solve(
          jnp.where(strict, a, 0.0) + eye, b, left_side=True, lower=True,
          unit_diagonal=True)

    x = deltanet.unit_lower_solve(a, b)
    np.testing.assert_allclose((np.where(strict, a, 0.0) + eye) @ x, b,
                               atol=1e-12)
    grads = {}
    for name, solve in (("ours", deltanet.unit_lower_solve), ("jax", jaxs)):
      loss = lambda a, b, solve=solve: jnp.sum(  # noqa: E731
          jnp.sin(solve(a, b)) * weight)
      grads[name] = jax.grad(loss, argnums=(0, 1))(a, b)
    for g, g_jax in zip(grads["ours"], grads["jax"]):
      np.testing.assert_allclose(g, g_jax, rtol=1e-12, atol=1e-13)
    assert np.all(grads["ours"][0][..., ~strict] == 0)


def test_gradients_match_central_differences_in_float64():
  x_TxBxD, target = _loss_inputs(12)
  eps = 1e-6
  rng = np.random.default_rng(15)
  with jax.enable_x64(True):
    params, carry0 = _random_params(14), _random_carry(13)
    _, (grad_params, grad_carry) = _scan_value_and_grad(params, carry0,
                                                        x_TxBxD, target)
    for _ in range(3):
      d_params = {k: rng.standard_normal(v.shape) for k, v in params.items()}
      d_carry = tuple(rng.standard_normal(c.shape) for c in carry0)
      shifted = lambda s: _scan_loss(
          {k: v + s * eps * d_params[k] for k, v in params.items()},
          tuple(c + s * eps * d for c, d in zip(carry0, d_carry)),
          x_TxBxD, target)
      numeric = (shifted(1) - shifted(-1)) / (2 * eps)
      analytic = (_tree_dot(grad_params, d_params)
                  + _tree_dot(grad_carry, d_carry))
      assert numeric.dtype == jnp.float64
      np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_chunkwise_stays_finite_where_decay_products_underflow():
  # alpha = exp(-30) at every step (a = 0, softplus(dt_bias) = 0.3, A = 100):
  # from the fourth step on, the product of the decays is 0 in float32, and
  # the ratio of two such products (the plain formula for e^{G_r - G_i}) is
  # 0/0. The log-space form only takes exp of non-positive differences.
  params = {k: v.astype(np.float32) for k, v in _random_params(4).items()}
  a_cols = slice(2 * HEADS * (D_K + D_V), 2 * HEADS * (D_K + D_V) + HEADS)
  params["W_in"][:, a_cols] = 0.0
  params["A_log"][:] = np.log(100.0)
  params["dt_bias"][:] = np.log(np.expm1(0.3))
  alpha = np.float32(np.exp(-30.0))
  products = np.cumprod(np.full(11, alpha, np.float32))
  assert alpha > 0 and products[3] == 0
  with np.errstate(invalid="ignore"):
    assert np.isnan(products[-1] / products[-2])
  x_TxBxD = np.random.default_rng(5).uniform(-1, 1, (11, BATCH, INPUT_DIM))
  carry0 = _random_carry(6, dtype=np.float32)
  u = deltanet.gated_deltanet_project(params, x_TxBxD.astype(np.float32))
  (_, s), h_TxBxH = jax.jit(_scan)(params, carry0, u)
  (_, s_p), h_p = jax.jit(deltanet.gated_deltanet_sequence)(params, carry0, u)
  assert np.isfinite(np.asarray(h_p)).all()
  np.testing.assert_allclose(h_p, h_TxBxH, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(s_p, s, rtol=1e-4, atol=1e-6)


def _scan_last(params, carry0, u_TxBxP):
  carry, h_TxBxH = _scan(params, carry0, u_TxBxP)
  return carry, h_TxBxH[-1]


def test_last_equals_the_scans_last_output_and_final_carry():
  # Values only: ``last`` composes the step's own functions, and autodiff
  # of either is checked above.
  x_TxBxD = np.random.default_rng(8).uniform(-2, 2, (9, BATCH, INPUT_DIM))
  with jax.enable_x64(True):
    params, carry0 = _random_params(10), _random_carry(11)
    u_TxBxP = deltanet.gated_deltanet_project(params, x_TxBxD)
    expected = jax.jit(_scan_last)(params, carry0, u_TxBxP)
    for name in ("gated_deltanet", "gated_deltanet_parallel"):
      got = jax.jit(cells.get(name).last)(params, carry0, u_TxBxP)
      for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected),
                      strict=True):
        assert g.dtype == jnp.float64 and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-11, atol=1e-13)


@pytest.mark.slow
def test_learns_length_5_with_two_residual_layers():
  cfg = train.RunConfig(cell="gated_deltanet", length=5, num_layers=2,
                        block="residual", num_hidden=32, learning_rate=1e-2,
                        train_steps=500, batch_size=32, log_every=50,
                        eval_batches=5)
  result = train.train_and_evaluate(cfg, seeds=(42,))
  seed = result.seeds[0]
  assert seed.status == "ok"
  assert seed.test_accuracy >= 0.95
  assert seed.history["accuracy"][0] < 0.5  # It learned: it began near chance.
