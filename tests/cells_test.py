"""Tests for palindrome_jax.cells and palindrome_jax.model."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from palindrome_jax import cells

import conftest  # pylint: disable=g-bad-import-order
from palindrome_jax import data
from palindrome_jax import model
from palindrome_jax import train

CELL_NAMES = ("rnn", "lstm", "gru", "irnn")


# Test data comes from numpy's generator and computations under test run
# jitted: each eager JAX op would be compiled on its own, which dominates the
# run time of small tests.


def _shapes(fn, *args):
  """``fn(key, *args)``'s output shapes; nothing is compiled or allocated."""
  return jax.eval_shape(lambda k: fn(k, *args), jax.random.PRNGKey(0))


def _random_params(rng, shapes):
  """Weights uniform in ±0.5 and biases (1-D) normal: all non-zero, so a bias
  or gate mix-up shows."""
  return jax.tree.map(
      lambda s: (rng.standard_normal(s.shape) if len(s.shape) == 1
                 else rng.uniform(-0.5, 0.5, s.shape)).astype(np.float32),
      shapes)


def _tree_dot(a, b):
  return sum(np.vdot(x, y) for x, y in zip(jax.tree.leaves(a),
                                            jax.tree.leaves(b)))


# Gradients against central finite differences, in float64.


def _float64_carry(cell):
  # model.unroll starts from cell.initial_carry, which is always float32 (see
  # test_model_apply_runs_with_float64_params); start the scan in float64.
  def initial_carry(batch_size, hidden_dim):
    return jax.tree.map(lambda c: c.astype(jnp.float64),
                        cell.initial_carry(batch_size, hidden_dim))
  return cell._replace(initial_carry=initial_carry)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_gradient_matches_finite_differences_in_float64(name):
  eps, rtol = 1e-5, 1e-6
  rng = np.random.default_rng(0)
  # float64 numpy. Random biases everywhere: irnn's ReLU sits on no kink.
  params = jax.tree.map(
      lambda x: x.astype(np.float64) * 0.5,
      _random_params(rng, _shapes(model.init, cells.get(name), 1, 8)))
  digits = rng.integers(0, 10, (8, 3))
  digits_BxP = np.concatenate([digits, digits[:, ::-1]], axis=1)  # N = 5.
  batch = data.Batch(inputs=digits_BxP[:, :5, None].astype(np.float32),
                     targets=digits_BxP[:, 5])

  with jax.enable_x64(True):
    cell = _float64_carry(cells.get(name))

    def loss_fn(p):
      return train.loss_and_accuracy(cell, p, batch)[0]

    grads = jax.device_get(jax.jit(jax.grad(loss_fn))(params))
    assert all(g.dtype == np.float64 for g in jax.tree.leaves(grads))

    @jax.jit
    def central_difference(direction):
      plus = jax.tree.map(lambda p, d: p + eps * d, params, direction)
      minus = jax.tree.map(lambda p, d: p - eps * d, params, direction)
      return (loss_fn(plus) - loss_fn(minus)) / (2 * eps)

    for i in range(3):
      direction = jax.tree.map(lambda x: rng.standard_normal(x.shape), params)
      expected = float(central_difference(direction))
      np.testing.assert_allclose(float(_tree_dot(grads, direction)), expected,
                                 rtol=rtol, err_msg=f"direction {i}")

    # Single recurrent weights: the three largest gradients, and three at
    # random among those large enough for float64 differences to resolve.
    grad_w_h = grads["cell"]["W_h"]
    magnitude = np.abs(grad_w_h).ravel()
    largest = np.argsort(-magnitude)[:3]
    resolvable = np.flatnonzero(magnitude > 1e-2 * magnitude.max())
    picked = list(largest) + list(rng.choice(resolvable, 3, replace=False))
    for flat in picked:
      index = np.unravel_index(flat, grad_w_h.shape)
      direction = jax.tree.map(np.zeros_like, params)
      direction["cell"]["W_h"][index] = 1.0
      np.testing.assert_allclose(grad_w_h[index],
                                 float(central_difference(direction)),
                                 rtol=rtol, err_msg=f"W_h{index}")


def test_model_apply_runs_with_float64_params():
  with jax.enable_x64(True):
    cell = cells.get("rnn")
    params = _random_params(np.random.default_rng(0),
                            _shapes(model.init, cell, 1, 4))
    params = jax.tree.map(lambda x: x.astype(np.float64), params)
    logits = jax.jit(functools.partial(model.apply, cell))(
        params, np.ones((2, 3, 1), np.float64))
    assert logits.dtype == jnp.float64


@pytest.mark.parametrize("name", CELL_NAMES)
def test_cells_and_readout_run_under_strict_rank_promotion(name):
  cell = cells.get(name)
  params = _random_params(np.random.default_rng(0),
                          _shapes(model.init, cell, 1, 4))
  with jax.numpy_rank_promotion("raise"):
    logits = jax.jit(functools.partial(model.apply, cell))(
        params, np.ones((2, 3, 1), np.float32))
  assert logits.shape == (2, data.NUM_CLASSES)


# Parameter counts.


def _cell_param_count(name, d, n):
  per_gate = d * n + n * n + n
  return {"rnn": per_gate, "irnn": per_gate, "lstm": 4 * per_gate,
          "gru": 3 * per_gate + n}[name]


def _param_shapes(name, d, n):
  return _shapes(model.init, cells.get(name), d, n)


@pytest.mark.parametrize("d,n", [(1, 128), (10, 7)])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_parameter_counts(name, d, n):
  params = _param_shapes(name, d, n)
  assert model.num_params(params["cell"]) == _cell_param_count(name, d, n)
  assert model.num_params(params) == (_cell_param_count(name, d, n)
                                      + n * 10 + 10)


def test_parameter_count_examples():
  # Written out once, so a wrong formula above cannot hide a wrong count.
  assert model.num_params(_param_shapes("lstm", 1, 128)) == 66_560 + 1_290
  assert model.num_params(_param_shapes("gru", 10, 7)) == (
      3 * (70 + 49 + 7) + 7 + 80)


def test_parameter_count_on_arrays(inits):
  assert model.num_params(inits["rnn"]) == 640 + 64 * 64 + 64 + 650


# Step-for-step parity with Flax's cells, from the same weights.

HIDDEN, INPUT, BATCH, STEPS = 6, 3, 4, 5


def _split(w, num):
  return np.split(w, num, axis=-1)


def _flax_simple(p):
  return {"i": {"kernel": p["W_x"], "bias": p["b"]}, "h": {"kernel": p["W_h"]}}


def _flax_lstm(p):
  w_x, w_h, b = _split(p["W_x"], 4), _split(p["W_h"], 4), _split(p["b"], 4)
  out = {}
  for k, gate in enumerate("ifgo"):
    out["i" + gate] = {"kernel": w_x[k]}
    out["h" + gate] = {"kernel": w_h[k], "bias": b[k]}
  return out


def _flax_gru(p):
  w_x, w_h, b = _split(p["W_x"], 3), _split(p["W_h"], 3), _split(p["b"], 3)
  out = {}
  for k, gate in enumerate("rzn"):
    out["i" + gate] = {"kernel": w_x[k], "bias": b[k]}
    out["h" + gate] = {"kernel": w_h[k]}
  out["hn"]["bias"] = p["b_hn"]
  return out


FLAX_CELLS = {
    "rnn": (nn.SimpleCell(features=HIDDEN), _flax_simple),
    "irnn": (nn.SimpleCell(features=HIDDEN, activation_fn=jax.nn.relu),
             _flax_simple),
    "lstm": (nn.LSTMCell(features=HIDDEN), _flax_lstm),
    "gru": (nn.GRUCell(features=HIDDEN), _flax_gru),
}


@pytest.mark.parametrize("name", sorted(FLAX_CELLS))
def test_step_matches_flax_cell(name):
  flax_cell, to_flax = FLAX_CELLS[name]
  cell = cells.get(name)
  rng = np.random.default_rng(0)
  params = _random_params(rng, _shapes(cell.init, INPUT, HIDDEN))
  flax_params = {"params": to_flax(params)}
  # Flax's own parameter tree has exactly these names and shapes.
  flax_shapes = jax.eval_shape(
      flax_cell.init, jax.random.PRNGKey(1),
      flax_cell.initialize_carry(jax.random.PRNGKey(1), (BATCH, INPUT)),
      jnp.zeros((BATCH, INPUT)))
  assert (jax.tree.map(np.shape, flax_params)
          == jax.tree.map(lambda s: s.shape, flax_shapes))

  carry = jax.tree.map(lambda c: rng.standard_normal(c.shape, np.float32),
                       cell.initial_carry(BATCH, HIDDEN))
  flax_carry = carry
  xs_TxBxD = rng.standard_normal((STEPS, BATCH, INPUT), np.float32)
  step = jax.jit(functools.partial(cells.step_on_input, cell))
  flax_step = jax.jit(flax_cell.apply)
  for t in range(STEPS):
    carry, h = step(params, carry, xs_TxBxD[t])
    flax_carry, flax_h = flax_step(flax_params, flax_carry, xs_TxBxD[t])
    np.testing.assert_allclose(h, flax_h, atol=1e-5, err_msg=f"step {t}")
    for ours, theirs in zip(jax.tree.leaves(carry),
                            jax.tree.leaves(flax_carry)):
      np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=f"step {t}")
  # Not a vacuous comparison of near-zero states.
  assert np.abs(np.asarray(h)).max() > 0.1


@pytest.mark.parametrize("name, activation", [("rnn", np.tanh),
                                              ("irnn", lambda a: np.maximum(a, 0))])
def test_apply_matches_a_numpy_loop_of_the_equations(name, activation):
  # model.apply (lax.scan, then the readout) against the cell's equations
  # written out in float64 NumPy, one time step at a time.
  cell = cells.get(name)
  rng = np.random.default_rng(1)
  params = _random_params(
      rng, _shapes(model.init, cell, data.NUM_CLASSES, HIDDEN))
  inputs_BxTxD = np.eye(data.NUM_CLASSES, dtype=np.float32)[
      rng.integers(0, 10, (BATCH, STEPS))]
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  h = np.zeros((BATCH, HIDDEN))
  for t in range(STEPS):
    h = activation(inputs_BxTxD[:, t] @ p["cell"]["W_x"]
                   + h @ p["cell"]["W_h"] + p["cell"]["b"])
  expected = h @ p["readout"]["W"] + p["readout"]["b"]
  logits = jax.jit(functools.partial(model.apply, cell))(params, inputs_BxTxD)
  assert logits.shape == (BATCH, data.NUM_CLASSES)
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
  assert np.abs(expected).max() > 0.1  # Not a comparison of near-zeros.


# Initialisation.

INIT_D, INIT_N = 10, 64
CHRONO_N, CHRONO_T_MAX = 256, 10.0
FORGET_BIASES = (1.0, -2.5)


@pytest.fixture(scope="module")
def inits():
  """Every initialisation these tests look at, from one compiled program.

  (Each random initialiser takes seconds to compile on CPU; one program for
  all of them is much cheaper than one per test.)
  """
  @jax.jit
  def all_inits(key):
    out = {name: model.init(key, cells.get(name), INIT_D, INIT_N)
           for name in CELL_NAMES}
    out["lstm_forget_bias"] = model.init(
        key, cells.get("lstm", forget_bias=FORGET_BIASES[0]), INIT_D, INIT_N)
    out["lstm_init"] = cells.lstm_init(key, INIT_D, INIT_N, FORGET_BIASES[1])
    out["chrono"] = model.init(
        key, cells.get("lstm", chrono_t_max=CHRONO_T_MAX, forget_bias=3.0),
        1, CHRONO_N)
    return out
  return jax.device_get(all_inits(jax.random.PRNGKey(0)))


@pytest.mark.parametrize("name", CELL_NAMES)
def test_init_weights_within_fan_in_bound_and_biases_zero(inits, name):
  d, n = INIT_D, INIT_N
  params = inits[name]
  p = params["cell"]
  gates = {"rnn": 1, "irnn": 1, "lstm": 4, "gru": 3}[name]
  assert p["W_x"].shape == (d, gates * n)
  assert p["W_h"].shape == (n, gates * n)
  assert p["b"].shape == (gates * n,)
  bounds = {"W_x": 1 / math.sqrt(d), "W_h": 1 / math.sqrt(n)}
  for weight, bound in bounds.items():
    if name == "irnn" and weight == "W_h":
      continue
    w = p[weight]
    assert np.abs(w).max() <= bound, weight
    # Spread over the whole range, not a narrower one.
    assert np.abs(w).max() > 0.95 * bound, weight
    assert abs(w.mean()) < 0.05 * bound, weight
  readout = params["readout"]["W"]
  assert readout.shape == (n, data.NUM_CLASSES)
  assert 0.9 / math.sqrt(n) < np.abs(readout).max() <= 1 / math.sqrt(n)
  for bias in ("b", "b_hn"):
    if bias in p:
      np.testing.assert_array_equal(p[bias], 0.0)
  np.testing.assert_array_equal(params["readout"]["b"], 0.0)
  # Cell and readout weights come from different keys.
  assert not np.array_equal(p["W_h"][:, :10], readout)


def test_irnn_recurrent_weights_are_the_identity(inits):
  np.testing.assert_array_equal(inits["irnn"]["cell"]["W_h"],
                                np.eye(INIT_N))


def test_lstm_forget_bias_fills_exactly_the_f_slice(inits):
  n = INIT_N
  for params, forget_bias in ((inits["lstm_forget_bias"]["cell"],
                               FORGET_BIASES[0]),
                              (inits["lstm_init"], FORGET_BIASES[1])):
    b = params["b"]
    np.testing.assert_array_equal(b[n:2 * n], forget_bias)
    np.testing.assert_array_equal(b[:n], 0.0)
    np.testing.assert_array_equal(b[2 * n:], 0.0)
  # The bias is all that changes.
  for weight in ("W_x", "W_h"):
    np.testing.assert_array_equal(inits["lstm_forget_bias"]["cell"][weight],
                                  inits["lstm"]["cell"][weight])


def test_lstm_forget_bias_acts_on_the_forget_gate():
  # With W = 0 and a huge forget bias the cell keeps its memory exactly.
  cell = cells.get("lstm")
  params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32),
                        _shapes(cell.init, 1, 4))
  params["b"][4:8] = 50.0
  c0 = np.arange(8.0, dtype=np.float32).reshape(2, 4)
  step = jax.jit(functools.partial(cells.step_on_input, cell))
  (c1, _), _ = step(params, (c0, np.zeros((2, 4), np.float32)),
                    np.ones((2, 1), np.float32))
  # c1 = sigmoid(50) * c0 + sigmoid(0) * tanh(0) = c0.
  np.testing.assert_allclose(c1, c0, rtol=1e-6)


def test_lstm_chrono_init(inits):
  b_i, b_f, b_g, b_o = np.split(inits["chrono"]["cell"]["b"], 4)
  assert b_f.min() >= 0.0
  assert b_f.max() <= math.log(CHRONO_T_MAX - 1) + 1e-6
  # Spread over that range (log of a uniform draw), not a constant.
  assert b_f.min() < 0.2 and b_f.max() > math.log(CHRONO_T_MAX - 1) - 0.2
  np.testing.assert_array_equal(b_i, -b_f)
  np.testing.assert_array_equal(b_g, 0.0)
  np.testing.assert_array_equal(b_o, 0.0)


def test_lstm_chrono_t_max_must_exceed_two():
  with pytest.raises(ValueError, match="chrono_t_max"):
    _shapes(lambda k: cells.lstm_init(k, 1, 4, chrono_t_max=2.0))


# The registry.


def test_get_unknown_cell_raises_key_error_listing_names():
  with pytest.raises(KeyError) as excinfo:
    cells.get("no_such_cell")
  message = str(excinfo.value)
  assert "no_such_cell" in message
  for name in CELL_NAMES:
    assert name in message
  assert set(CELL_NAMES) <= set(cells.names())
  assert list(cells.names()) == sorted(cells.names())


def _double_rnn_step(params, h_BxH, u_BxH):
  z_BxH = u_BxH + h_BxH @ params["W_h"] + params["b"][None, :]
  h_BxH = 2.0 * jnp.tanh(z_BxH)
  return h_BxH, h_BxH


@pytest.mark.usefixtures("restore_cell_registry")
def test_register_a_cell_and_get_it_back():
  cell = cells.Cell(cells.rnn_init, _double_rnn_step, cells.zeros_carry,
                    cells.project_input)
  cells.register("double_rnn", cell)
  assert "double_rnn" in cells.names()
  assert cells.get("double_rnn") is cell
  # Options it does not take are accepted and ignored (as for rnn).
  assert cells.get("double_rnn", forget_bias=1.0) is cell
  # It runs through the model like a built-in cell.
  params = jax.tree.map(lambda s: np.full(s.shape, 0.1, np.float32),
                        _shapes(model.init, cell, 1, 4))
  logits = jax.jit(functools.partial(model.apply, cells.get("double_rnn")))(
      params, np.ones((2, 3, 1), np.float32))
  # Every unit is 2 * tanh(0.1 + 0.1 + 4 * 0.1 * h) at each step.
  h = 0.0
  for _ in range(3):
    h = 2 * np.tanh(0.2 + 0.4 * h)
  np.testing.assert_allclose(logits, np.full((2, 10), 4 * 0.1 * h + 0.1),
                             rtol=1e-5)
  # And replacing the registration takes effect.
  other = cell._replace(step=cells.rnn_step)
  cells.register("double_rnn", other)
  assert cells.get("double_rnn") is other


@pytest.mark.usefixtures("restore_cell_registry")
def test_register_a_factory_receives_options():
  seen = []

  def factory(forget_bias=0.0, chrono_t_max=None, **_):
    seen.append((forget_bias, chrono_t_max))
    return cells.Cell(cells.rnn_init, cells.rnn_step)

  cells.register("opt_cell", factory)
  cells.get("opt_cell", forget_bias=2.0, chrono_t_max=None)
  cells.get("opt_cell", chrono_t_max=None, forget_bias=2.0)  # Cached.
  assert seen == [(2.0, None)]


def test_registry_is_restored_after_registering():
  # The fixture's own mechanism, checked in one test: whatever is
  # registered inside is gone afterwards, and the built-ins are untouched.
  before = cells.names()
  with conftest.registry_restored():
    cells.register("temporary_cell", cells.get("rnn"))
    assert "temporary_cell" in cells.names()
  assert cells.names() == before
  assert "temporary_cell" not in cells.names()


@pytest.mark.usefixtures("restore_cell_registry")
def test_register_rejects_bad_names_and_values():
  with pytest.raises(ValueError):
    cells.register("bad name", cells.get("rnn"))
  with pytest.raises(ValueError):
    cells.register("", cells.get("rnn"))
  with pytest.raises(TypeError):
    cells.register("not_a_cell", 3)


def test_get_with_same_options_returns_the_identical_object():
  assert cells.get("lstm") is cells.get("lstm")
  a = cells.get("lstm", forget_bias=1.0, chrono_t_max=None)
  assert cells.get("lstm", chrono_t_max=None, forget_bias=1.0) is a
  assert a is not cells.get("lstm", forget_bias=0.0, chrono_t_max=None)
  # So equal configs hand jit the same static cell, and its cache is reused.
  cfg = train.RunConfig(cell="gru", forget_bias=1.0)
  assert cfg.make_cell() is train.RunConfig(cell="gru",
                                            forget_bias=1.0).make_cell()


@pytest.mark.usefixtures("restore_cell_registry")
def test_keys_of_must_name_a_registered_cell_and_is_replaced_on_reregister():
  with pytest.raises(KeyError, match="keys_of='nope'"):
    cells.register("other_rnn", cells.get("rnn"), keys_of="nope")
  cells.register("other_rnn", cells.get("rnn"), keys_of="rnn")
  assert cells.key_name("other_rnn") == "rnn"
  cells.register("other_rnn", cells.get("rnn"))
  assert cells.key_name("other_rnn") == "other_rnn"
