"""LEM: the step against a numpy loop of the paper's eq. 3, its bounded
states, gradients, counts, the official initialisation, a training run."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from palindrome_jax import cells
from palindrome_jax import lem
from palindrome_jax import model
from palindrome_jax import train

HIDDEN, INPUT_DIM, BATCH = 8, 3, 4

# Test data comes from numpy and what is tested runs jitted: op by op, the
# compiles of each eager op would dominate these small tests.


def _random_params(seed, scale=1.0):
  """Every leaf uniform in ``±scale``, biases too."""
  rng = np.random.default_rng(seed)
  shapes = {"W_x": (INPUT_DIM, 4 * HIDDEN), "W_y": (HIDDEN, 3 * HIDDEN),
            "W_z": (HIDDEN, HIDDEN), "b": (4 * HIDDEN,)}
  return {k: rng.uniform(-scale, scale, s) for k, s in shapes.items()}


def _scan(step, params, carry0, x_TxBxD):
  return jax.lax.scan(lambda c, x: step(params, c, x), carry0, x_TxBxD)


def test_registered_without_an_mlp():
  cell = cells.get("lem")
  assert cell.step is lem.lem_step and cell.mlp_expand == 0
  assert cell.sequence is None and cell.project is None
  y, z = cell.initial_carry(BATCH, HIDDEN)
  assert y.shape == z.shape == (BATCH, HIDDEN)
  with pytest.raises(ValueError, match="dt"):
    lem.make_cell(dt=0.0)


def test_param_count_by_hand():
  count = lambda d, h: model.num_params(jax.eval_shape(
      lambda: lem.lem_init(jax.random.PRNGKey(0), d, h)))
  # 4H(D + H) weights (V_1, V_2, V_z, V_y; W_1, W_2, W_z, W_y) + 4H biases.
  assert count(1, 128) == 4 * 128 * (1 + 128) + 4 * 128 == 66_560
  lstm = model.num_params(jax.eval_shape(
      lambda: cells.get("lstm").init(jax.random.PRNGKey(0), 1, 128)))
  assert count(1, 128) == lstm
  assert count(10, 7) == 4 * 7 * 17 + 28 == 504


def test_initialisation_is_uniform_in_one_over_sqrt_hidden():
  # The official reset_parameters: every weight and bias, the input's too
  # (with one input, 1/sqrt(fan_in) would be 1).
  params = jax.jit(lem.lem_init, static_argnums=(1, 2))(
      jax.random.PRNGKey(0), 1, 256)
  for name, w in params.items():
    assert float(jnp.abs(w).max()) <= 1 / 16, name
    assert float(jnp.abs(w).max()) > 0.9 / 16, name
    assert abs(float(jnp.mean(w))) < 0.01, name


def test_shapes_and_dtypes_in_float32():
  cell = cells.get("lem")
  for input_dim in (1, 10):
    params = jax.jit(cell.init, static_argnums=(1, 2))(
        jax.random.PRNGKey(0), input_dim, HIDDEN)
    carry = cell.initial_carry(BATCH, HIDDEN)
    x_TxBxD = jnp.ones((5, BATCH, input_dim), jnp.float32)
    (y, z), h_TxBxH = jax.jit(functools.partial(_scan, cell.step))(
        params, carry, x_TxBxD)
    assert h_TxBxH.shape == (5, BATCH, HIDDEN)
    assert h_TxBxH.dtype == y.dtype == z.dtype == jnp.float32
    assert y.shape == z.shape == (BATCH, HIDDEN)
    np.testing.assert_array_equal(h_TxBxH[-1], y)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference(p, x_TxBxD, y, z, dt):
  """Eq. 3 looped over time in numpy, each matrix on its own."""
  h = HIDDEN
  v_1, v_2, v_z, v_y = (p["W_x"][:, i * h:(i + 1) * h] for i in range(4))
  w_1, w_2, w_z = (p["W_y"][:, i * h:(i + 1) * h] for i in range(3))
  w_y = p["W_z"]
  b_1, b_2, b_z, b_y = (p["b"][i * h:(i + 1) * h] for i in range(4))
  ys = []
  for u in x_TxBxD:
    dt_n = dt * _sigmoid(y @ w_1 + u @ v_1 + b_1)
    dt_bar = dt * _sigmoid(y @ w_2 + u @ v_2 + b_2)
    z = (1 - dt_n) * z + dt_n * np.tanh(y @ w_z + u @ v_z + b_z)
    y = (1 - dt_bar) * y + dt_bar * np.tanh(z @ w_y + u @ v_y + b_y)
    ys.append(y)
  return y, z, np.stack(ys)


@pytest.mark.parametrize("dt", [1.0, 0.3])
def test_step_matches_a_numpy_loop_of_the_papers_equations(dt):
  rng = np.random.default_rng(1)
  x_TxBxD = rng.uniform(-2, 2, (6, BATCH, INPUT_DIM))
  y0, z0 = rng.uniform(-1, 1, (2, BATCH, HIDDEN))
  params = _random_params(0)
  step = lem.make_cell(dt=dt).step
  with jax.enable_x64(True):
    (y, z), h_TxBxH = jax.jit(functools.partial(_scan, step))(
        params, (y0, z0), x_TxBxD)
  y_ref, z_ref, h_ref = _reference(params, x_TxBxD, y0, z0, dt)
  assert h_TxBxH.dtype == jnp.float64
  np.testing.assert_allclose(h_TxBxH, h_ref, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(z, z_ref, rtol=1e-12, atol=1e-14)


def test_states_stay_in_minus_one_one_for_any_input():
  # Proposition 1's bound: with dt <= 1 each state is a convex combination
  # of its last value and a tanh. Inputs of size 100 saturate every gate.
  x_TxBxD = np.random.default_rng(2).uniform(-100, 100,
                                             (300, BATCH, INPUT_DIM))
  params = _random_params(3, scale=3.0)
  (y, z), h_TxBxH = jax.jit(functools.partial(_scan, lem.lem_step))(
      params, lem.lem_initial_carry(BATCH, HIDDEN), x_TxBxD)
  assert float(jnp.abs(h_TxBxH).max()) <= 1.0
  assert float(jnp.abs(z).max()) <= 1.0
  assert float(jnp.abs(h_TxBxH).max()) > 0.9  # The bound is not vacuous.


def test_gradients_match_central_differences_in_float64():
  rng = np.random.default_rng(4)
  x_TxBxD = rng.uniform(-2, 2, (9, BATCH, INPUT_DIM))
  target = rng.standard_normal((BATCH, HIDDEN))
  eps = 1e-6
  with jax.enable_x64(True):
    params = _random_params(5)
    carry0 = tuple(rng.uniform(-1, 1, (2, BATCH, HIDDEN)))

    def loss(params, carry0):
      (y, z), h_TxBxH = _scan(lem.lem_step, params, carry0, x_TxBxD)
      return (jnp.sum(jnp.square(h_TxBxH[-1] - target))
              + jnp.sum(h_TxBxH) / 7 + jnp.sum(z * z) / 3)

    value = jax.jit(loss)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, carry0)
    for _ in range(3):
      d_params = {k: rng.standard_normal(v.shape) for k, v in params.items()}
      d_carry = tuple(rng.standard_normal(c.shape) for c in carry0)
      shifted = lambda s: value(
          {k: v + s * eps * d_params[k] for k, v in params.items()},
          tuple(c + s * eps * d for c, d in zip(carry0, d_carry)))
      numeric = (shifted(1) - shifted(-1)) / (2 * eps)
      analytic = (sum(jnp.vdot(grads[0][k], d) for k, d in d_params.items())
                  + sum(jnp.vdot(g, d) for g, d in zip(grads[1], d_carry)))
      assert numeric.dtype == jnp.float64
      np.testing.assert_allclose(analytic, numeric, rtol=1e-7)


@pytest.mark.slow
def test_learns_length_5_with_two_stacked_layers():
  cfg = train.RunConfig(cell="lem", length=5, num_layers=2, block="stack",
                        num_hidden=32, learning_rate=1e-2, train_steps=300,
                        batch_size=32, log_every=50, eval_batches=5)
  result = train.train_and_evaluate(cfg, seeds=(42,))
  seed = result.seeds[0]
  assert seed.status == "ok"
  assert seed.test_accuracy >= 0.95
  assert seed.history["accuracy"][0] < 0.5  # It learned: it began near chance.
