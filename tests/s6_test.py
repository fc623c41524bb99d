"""The Mamba (S6) block: its initialisation, both forms and its gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from palindrome_jax import cells
from palindrome_jax import model
from palindrome_jax import s6
from palindrome_jax import train

# Compiled once: op by op, the initialiser would dominate the tests' time.
_init = jax.jit(s6.s6_init, static_argnums=(1, 2))


def init64(hidden=4, input_dim=3):
  return jax.tree.map(lambda x: x.astype(jnp.float64),
                      _init(jax.random.PRNGKey(0), input_dim, hidden))


def random_carry(batch, hidden, dtype=jnp.float64):
  """A nonzero carry: conv history ``[B, 3, 2H]`` and state ``[B, 2H, 16]``."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(7))
  inner = s6.EXPAND * hidden
  return (jax.random.normal(k1, (batch, s6.D_CONV - 1, inner), dtype),
          jax.random.normal(k2, (batch, inner, s6.D_STATE), dtype))


def scan_steps(params, carry0, u_TxBx2I):
  return jax.lax.scan(lambda c, u: s6.s6_step(params, c, u), carry0, u_TxBx2I)


def expected_param_count(input_dim, hidden):
  """By hand: in_proj D*2I, conv K*I + I, x_proj I*(R + 2N), dt_proj R*I + I,
  A_log I*N, D I, out_proj I*H, with I = 2H, R = ceil(H/16), N = 16, K = 4."""
  inner, rank, n, k = 2 * hidden, math.ceil(hidden / 16), 16, 4
  return (input_dim * 2 * inner + k * inner + inner + inner * (rank + 2 * n)
          + rank * inner + inner + inner * n + inner + inner * hidden)


def count(cell, input_dim, hidden):
  return model.num_params(jax.eval_shape(lambda: cells.get(cell).init(
      jax.random.PRNGKey(0), input_dim, hidden)))


def test_registered_as_s6_and_s6_parallel_with_the_same_keys():
  step_cell, parallel_cell = cells.get("s6"), cells.get("s6_parallel")
  assert step_cell.step is parallel_cell.step is s6.s6_step
  assert step_cell.sequence is None
  assert parallel_cell.sequence is s6.s6_sequence
  assert step_cell.mlp_expand == parallel_cell.mlp_expand == 0
  assert cells.key_name("s6_parallel") == "s6"
  assert [k.tolist() for k in train.run_keys(42, "s6_parallel", 5)] == [
      k.tolist() for k in train.run_keys(42, "s6", 5)]


def test_param_count_by_hand():
  # H=128, D=1: 512 + 1,280 + 10,240 + 2,304 + 4,096 + 256 + 32,768.
  assert expected_param_count(1, 128) == 51_456
  assert count("s6", 1, 128) == count("s6_parallel", 1, 128) == 51_456
  assert count("s6", 128, 128) == expected_param_count(128, 128) == 116_480
  # An odd size: I = 34, R = 2.
  assert count("s6", 10, 17) == expected_param_count(10, 17) == 3_264


def test_initialisation_follows_the_reference():
  hidden, input_dim = 256, 3
  params = _init(jax.random.PRNGKey(0), input_dim, hidden)
  inner, rank = 2 * hidden, 16
  assert params["A_log"].shape == (inner, 16)
  # S4D-real: A_n = -(n + 1) in every channel.
  np.testing.assert_allclose(-jnp.exp(params["A_log"]),
                             -np.tile(np.arange(1, 17), (inner, 1)),
                             rtol=1e-6)
  np.testing.assert_array_equal(params["D"], np.ones(inner))
  # softplus(dt_bias) is the sampled dt: log-uniform in [1e-3, 1e-1].
  dt = np.log1p(np.exp(np.asarray(params["dt_bias"], np.float64)))
  assert 1e-3 * (1 - 1e-5) <= dt.min() and dt.max() <= 1e-1 * (1 + 1e-5)
  log_dt = np.log10(dt)
  assert abs(np.mean(log_dt) + 2) < 0.1  # Uniform on [-3, -1]: mean -2.
  assert np.mean(log_dt < -2.5) == pytest.approx(0.25, abs=0.07)
  bounds = {"in_proj": 1 / math.sqrt(input_dim), "conv_w": 0.5,
            "conv_b": 0.5, "x_proj": 1 / math.sqrt(inner),
            "dt_proj": 1 / math.sqrt(rank), "out_proj": 1 / math.sqrt(inner)}
  for name, bound in bounds.items():
    largest = float(jnp.abs(params[name]).max())
    assert 0.9 * bound < largest <= bound, name
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def _silu(v):
  return v / (1.0 + math.exp(-v))


def numpy_reference(params, carry0, x_TxBxD):
  """The block's equations one scalar at a time, in float64 Python loops."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  conv = np.array(carry0[0], np.float64)
  h = np.array(carry0[1], np.float64)
  x_TxBxD = np.asarray(x_TxBxD, np.float64)
  steps, batch, _ = x_TxBxD.shape
  width, inner = p["conv_w"].shape
  n_state, rank = p["A_log"].shape[1], p["dt_proj"].shape[0]
  outputs = np.zeros((steps, batch, p["out_proj"].shape[1]))
  for t in range(steps):
    for b in range(batch):
      u = x_TxBxD[t, b] @ p["in_proj"]
      x, z = u[:inner], u[inner:]
      history = [conv[b, k] for k in range(width - 1)] + [x]  # Oldest first.
      c = np.array([_silu(sum(p["conv_w"][k, i] * history[k][i]
                              for k in range(width)) + p["conv_b"][i])
                    for i in range(inner)])
      sel = c @ p["x_proj"]
      b_n, c_n = sel[rank:rank + n_state], sel[rank + n_state:]
      pre = sel[:rank] @ p["dt_proj"] + p["dt_bias"]
      delta = np.log1p(np.exp(pre))
      y = np.zeros(inner)
      for i in range(inner):
        for n in range(n_state):
          a = -math.exp(p["A_log"][i, n])
          h[b, i, n] = (math.exp(delta[i] * a) * h[b, i, n]
                        + delta[i] * b_n[n] * c[i])
          y[i] += h[b, i, n] * c_n[n]
        y[i] += p["D"][i] * c[i]
      gated = np.array([y[i] * _silu(z[i]) for i in range(inner)])
      outputs[t, b] = gated @ p["out_proj"]
      conv[b] = np.stack(history[1:])
  return (conv, h), outputs


def _loss(carry, h_TxBxH):
  conv, state = carry
  return (jnp.sum(jnp.square(h_TxBxH[-1])) + jnp.sum(h_TxBxH * jnp.cos(
      h_TxBxH)) / 5 + jnp.sum(state * jnp.sin(state)) + jnp.sum(conv) / 3)


def _on_inputs(run):
  """``run`` on raw inputs, with its loss and gradient (the projection
  ``W_in`` included), as one compiled function."""
  def forward(params, carry0, x_TxBxD):
    return run(params, carry0, s6.s6_project(params, x_TxBxD))

  def value_and_grad(params, carry0, x_TxBxD):
    out = forward(params, carry0, x_TxBxD)
    grads = jax.grad(lambda *args: _loss(*forward(*args)), argnums=(0, 1, 2))(
        params, carry0, x_TxBxD)
    return out, _loss(*out), grads

  return jax.jit(value_and_grad)


# Compiled once per shape: the tests below share them. Their outputs alone,
# without the gradient (a third of the compile time), for short sequences.
_SEQUENTIAL = _on_inputs(scan_steps)
_PARALLEL = _on_inputs(s6.s6_sequence)
_FORWARD = tuple(jax.jit(lambda p, c, x, run=run: run(
    p, c, s6.s6_project(p, x))) for run in (scan_steps, s6.s6_sequence))


def zero_carry64(batch, hidden):
  return jax.tree.map(lambda c: c.astype(jnp.float64),
                      s6.s6_initial_carry(batch, hidden))


@pytest.mark.parametrize("steps", [1, 2, 9])  # 1, 2: fewer than K - 1 = 3.
def test_matches_a_plain_python_loop_of_the_equations(steps):
  with jax.enable_x64(True):
    params = init64()
    x_TxBxD = jax.random.normal(jax.random.PRNGKey(1), (steps, 2, 3),
                                jnp.float64)
    for carry0 in (zero_carry64(2, 4), random_carry(2, 4)):
      (conv, h), expected = numpy_reference(params, carry0, x_TxBxD)
      for run in _FORWARD:
        (conv_j, h_j), h_TxBxH = run(params, carry0, x_TxBxD)
        assert h_TxBxH.dtype == jnp.float64
        np.testing.assert_allclose(h_TxBxH, expected, rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(conv_j, conv, rtol=1e-12)
        np.testing.assert_allclose(h_j, h, rtol=1e-10, atol=1e-12)
      # The conv's carry: the last three inputs' x halves, oldest first.
      x_half_TxBxI = (x_TxBxD @ params["in_proj"])[..., :8]
      history = jnp.concatenate([jnp.swapaxes(carry0[0], 0, 1),
                                 x_half_TxBxI])
      np.testing.assert_allclose(conv_j, jnp.swapaxes(history[-3:], 0, 1),
                                 rtol=1e-12)


def test_parallel_equals_sequential_in_float64():
  with jax.enable_x64(True):
    params, steps = init64(), 9
    x_TxBxD = jax.random.normal(jax.random.PRNGKey(1), (steps, 2, 3),
                                jnp.float64)
    for carry0 in (zero_carry64(2, 4), random_carry(2, 4)):
      (carry_s, h_s), value_s, grads_s = _SEQUENTIAL(params, carry0, x_TxBxD)
      (carry_p, h_p), value_p, grads_p = _PARALLEL(params, carry0, x_TxBxD)
      assert h_s.shape == h_p.shape == (steps, 2, 4)
      np.testing.assert_allclose(h_p, h_s, rtol=1e-12, atol=1e-14)
      for a, b in zip(jax.tree.leaves(carry_s), jax.tree.leaves(carry_p)):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)
      np.testing.assert_allclose(value_p, value_s, rtol=1e-12)
      leaves_s, leaves_p = jax.tree.leaves(grads_s), jax.tree.leaves(grads_p)
      assert len(leaves_s) == len(leaves_p) == 9 + 2 + 1
      for a, b in zip(leaves_s, leaves_p):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
      # The gradient reaches every parameter, the carry and the inputs.
      assert all(float(jnp.abs(g).max()) > 0 for g in leaves_s)


def test_gradients_match_central_differences_in_float64():
  with jax.enable_x64(True):
    args = (init64(), random_carry(2, 4), jax.random.normal(
        jax.random.PRNGKey(1), (9, 2, 3), jnp.float64))
    loss = lambda args: _SEQUENTIAL(*args)[1]
    grads = _SEQUENTIAL(*args)[2]
    eps = 1e-6
    rng = np.random.default_rng(0)
    for _ in range(3):
      direction = jax.tree.map(lambda x: rng.standard_normal(x.shape), args)
      shifted = lambda s, d=direction: jax.tree.map(
          lambda a, d: a + s * eps * d, args, d)
      numeric = (loss(shifted(1)) - loss(shifted(-1))) / (2 * eps)
      analytic = sum(jnp.vdot(g, d) for g, d in zip(
          jax.tree.leaves(grads), jax.tree.leaves(direction)))
      assert numeric.dtype == jnp.float64
      np.testing.assert_allclose(analytic, numeric, rtol=1e-7)


def test_last_equals_the_scans_last_output_and_its_gradient():
  with jax.enable_x64(True):
    params, carry0 = init64(), random_carry(2, 4)
    x_TxBxD = jax.random.normal(jax.random.PRNGKey(1), (9, 2, 3),
                                jnp.float64)
    (carry, h_TxBxH), _, _ = _SEQUENTIAL(params, carry0, x_TxBxD)

    @jax.jit
    def outputs_and_grads(params):
      """Each ``last``'s outputs and the gradient of a loss of them."""
      def loss(params, last):
        out = last(params, carry0, s6.s6_project(params, x_TxBxD))
        return _loss(*out), out
      return [jax.grad(loss, has_aux=True)(params, last)
              for last in (s6.s6_last, s6.s6_sequence_last)]

    assert cells.get("s6").last is s6.s6_last
    assert cells.get("s6_parallel").last is s6.s6_sequence_last
    results = outputs_and_grads(params)
    for _, (carry_l, h_BxH) in results:
      np.testing.assert_allclose(h_BxH, h_TxBxH[-1], rtol=1e-12, atol=1e-14)
      for a, b in zip(jax.tree.leaves(carry_l), jax.tree.leaves(carry)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    (grad, _), (grad_p, _) = results
    for g, e in zip(jax.tree.leaves(grad_p), jax.tree.leaves(grad)):
      np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grad))


@jax.jit
def _unroll_and_logits(params, inputs_BxTxD):
  """Both forms' ``model.unroll`` and ``model.apply`` (through ``last``),
  compiled once per shape: the tests below share it."""
  hidden = params["readout"]["W"].shape[0]
  return {name: (model.unroll(cells.get(name), params["cell"], inputs_BxTxD,
                              hidden),
                 model.apply(cells.get(name), params, inputs_BxTxD))
          for name in ("s6", "s6_parallel")}


def model_and_inputs(input_dim=1, hidden=8, batch=2, steps=9):
  params = model.init(jax.random.PRNGKey(0), cells.get("s6"), input_dim,
                      hidden)
  return params, jax.random.normal(jax.random.PRNGKey(1),
                                   (batch, steps, input_dim))


@pytest.mark.parametrize("input_dim", [1, 10])
def test_shapes_and_dtypes_in_float32(input_dim):
  params, inputs_BxTxD = model_and_inputs(input_dim)
  batch, steps, hidden, inner = 2, 9, 8, 16
  for name, (((conv, state), h_TxBxH), logits) in _unroll_and_logits(
      params, inputs_BxTxD).items():
    carry0 = cells.get(name).initial_carry(batch, hidden)
    assert [c.shape for c in carry0] == [(batch, 3, inner),
                                         (batch, inner, 16)]
    assert h_TxBxH.shape == (steps, batch, hidden)
    assert conv.shape == (batch, 3, inner)
    assert state.shape == (batch, inner, 16)
    assert logits.shape == (batch, 10)
    assert all(x.dtype == jnp.float32
               for x in (h_TxBxH, conv, state, logits, *carry0))
    np.testing.assert_allclose(logits, model.readout(params, h_TxBxH[-1]),
                               rtol=1e-5, atol=1e-6)
    if name == "s6":
      expected = h_TxBxH
    np.testing.assert_allclose(h_TxBxH, expected, rtol=1e-5, atol=1e-6)


def _outputs(params, inputs_BxTxD):
  return {name: h_TxBxH for name, ((_, h_TxBxH), _) in _unroll_and_logits(
      params, inputs_BxTxD).items()}


def test_outputs_are_causal_and_see_the_input_at_once():
  params, inputs_BxTxD = model_and_inputs()
  moved = _outputs(params, inputs_BxTxD.at[:, 4].add(3.0))
  for name, h in _outputs(params, inputs_BxTxD).items():
    np.testing.assert_array_equal(moved[name][:4], h[:4])
    assert float(jnp.abs(moved[name][4] - h[4]).max()) > 1e-3
    # Beyond the conv's reach the input still acts, through the state.
    assert float(jnp.abs(moved[name][-1] - h[-1]).max()) > 1e-6


def test_a_large_step_size_forgets_within_a_step():
  # Delta scales the decay exp(Delta A): a huge dt_bias empties the state
  # within a step, so an input 4 steps back, beyond the conv, no longer moves
  # the output.
  params, inputs_BxTxD = model_and_inputs()
  forgetful = jax.tree.map(lambda x: x, params)
  forgetful["cell"]["dt_bias"] = jnp.full_like(params["cell"]["dt_bias"],
                                               30.0)
  moved = inputs_BxTxD.at[:, 4].add(3.0)
  change = lambda p: float(jnp.abs(_outputs(p, moved)["s6"][-1] - _outputs(
      p, inputs_BxTxD)["s6"][-1]).max())
  assert change(forgetful) < 1e-4 * change(params)
  assert change(params) > 1e-6


@pytest.mark.slow
def test_learns_length_5_at_2_layers():
  # One-hot: through the residual block's embedding and RMSNorm a scalar
  # digit reaches the cell as little more than its sign until the
  # embedding's bias grows, which took this block 2-3x the steps. Seed 42's
  # training accuracy was 100% from step 150.
  cfg = train.RunConfig(cell="s6", length=5, num_layers=2, block="residual",
                        encoding="onehot", learning_rate=3e-3,
                        num_hidden=32, train_steps=200, batch_size=32,
                        log_every=25, eval_batches=10)
  result = train.train_and_evaluate(cfg, seeds=(42,))
  assert result.seeds[0].status == "ok"
  assert result.seeds[0].test_accuracy >= 0.95
  # It learned: the first chunk was near chance.
  assert result.seeds[0].history["accuracy"][0] < 0.5
