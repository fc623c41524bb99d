"""Depth: stacked and residual layers, checked against independent loops."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from palindrome_jax import benchmark
from palindrome_jax import cells
from palindrome_jax import gradients
from palindrome_jax import minrnn  # noqa: F401  (registers mingru)
from palindrome_jax import model
from palindrome_jax import runner
from palindrome_jax import sweep
from palindrome_jax import train
from palindrome_jax.config import ConfigError, RunConfig


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _lstm_step_np(p, c, h, x):
  z = x @ p["W_x"] + h @ p["W_h"] + p["b"]
  i, f, g, o = np.split(z, 4, axis=-1)
  c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
  return c, _sigmoid(o) * np.tanh(c)


def _random_params(params, seed=0):
  """Every leaf redrawn (biases too), so no term of the model is zero."""
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [
      rng.uniform(-0.5, 0.5, x.shape).astype(np.float64) for x in leaves])


def _init(cell_name, num_layers, block, input_dim=1, hidden=6, **cell_fields):
  cell = cells.get(cell_name)._replace(**cell_fields)
  params = model.init(jax.random.PRNGKey(0), cell, input_dim, hidden,
                      num_layers=num_layers, block=block)
  return cell, params


def test_one_stacked_layer_is_the_original_model():
  # The same pytree and the same numbers as the model before depth: the
  # original's two-entry parameters and, traced, the identical program.
  cell = cells.get("lstm")
  key = jax.random.PRNGKey(3)
  params = model.init(key, cell, 1, 8, num_layers=1, block="stack")
  assert set(params) == {"cell", "readout"}
  key_cell, _ = jax.random.split(key)
  np.testing.assert_array_equal(params["cell"]["W_h"],
                                cell.init(key_cell, 1, 8)["W_h"])
  inputs = jax.random.normal(jax.random.PRNGKey(1), (4, 5, 1))

  def original(p, x):  # unroll, then the readout of the last step.
    _, h_TxBxH = model.unroll(cell, p["cell"], x, 8)
    return model.readout(p, h_TxBxH[-1])

  assert (str(jax.make_jaxpr(lambda p, x: model.apply(cell, p, x))(
      params, inputs)) == str(jax.make_jaxpr(original)(params, inputs)))


def test_first_stacked_layer_equals_the_one_layer_cell():
  one = model.init(jax.random.PRNGKey(0), cells.get("gru"), 1, 8)
  three = model.init(jax.random.PRNGKey(0), cells.get("gru"), 1, 8,
                     num_layers=3)
  for name in one["cell"]:
    np.testing.assert_array_equal(one["cell"][name],
                                  three["layers"][0][name])
  assert not np.array_equal(three["layers"][1]["W_h"],
                            three["layers"][2]["W_h"])


def test_two_stacked_lstm_layers_equal_a_step_major_loop_in_float64():
  # The model runs layer-major; the reference runs time-major (every layer
  # at step t before step t+1), as PyTorch's nn.LSTM defines the stack.
  with jax.enable_x64(True):
    cell, params = _init("lstm", 2, "stack", input_dim=3, hidden=5)
    params = _random_params(params)
    inputs = np.random.default_rng(1).normal(size=(4, 7, 3))
    logits = np.asarray(model.apply(cell, params, jnp.asarray(inputs)))
  states = [(np.zeros((4, 5)), np.zeros((4, 5))) for _ in range(2)]
  for t in range(7):
    x = inputs[:, t]
    for l, p in enumerate(params["layers"]):
      states[l] = _lstm_step_np(p, *states[l], x)
      x = states[l][1]
  expected = x @ params["readout"]["W"] + params["readout"]["b"]
  np.testing.assert_allclose(logits, expected, rtol=1e-12, atol=1e-12)


def test_two_stacked_lstm_layers_equal_torch_nn_lstm():
  torch = pytest.importorskip("torch")
  cell, params = _init("lstm", 2, "stack", input_dim=1, hidden=6)
  params = _random_params(params)
  net = torch.nn.LSTM(1, 6, num_layers=2, batch_first=True,
                      dtype=torch.float64)
  with torch.no_grad():
    for l, p in enumerate(params["layers"]):
      # Ours: x W_x, gates i f g o; PyTorch: W_ih x, the same gate order.
      getattr(net, f"weight_ih_l{l}").copy_(torch.tensor(p["W_x"].T))
      getattr(net, f"weight_hh_l{l}").copy_(torch.tensor(p["W_h"].T))
      getattr(net, f"bias_ih_l{l}").copy_(torch.tensor(p["b"]))
      getattr(net, f"bias_hh_l{l}").zero_()
  inputs = np.random.default_rng(2).normal(size=(3, 9, 1))
  out, _ = net(torch.tensor(inputs))
  expected = (out[:, -1].detach().numpy() @ params["readout"]["W"]
              + params["readout"]["b"])
  with jax.enable_x64(True):
    logits = model.apply(cell, params, jnp.asarray(inputs))
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-10)


def _rms_norm_np(scale, x):
  return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * scale


def _gelu_np(x):  # jax.nn.gelu's default tanh approximation.
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("mlp_expand", [0.0, 1.5])
def test_residual_block_equals_its_formula_in_float64(mlp_expand):
  # x_0 = u W_e + b_e; per layer x += cell(norm(x)) (+ x += mlp(norm(x)));
  # logits from norm(x) at the last step. The vanilla RNN as the cell.
  with jax.enable_x64(True):
    cell, params = _init("rnn", 2, "residual", input_dim=10, hidden=4,
                         mlp_expand=mlp_expand)
    params = _random_params(params)
    inputs = np.random.default_rng(3).normal(size=(2, 6, 10))
    logits = np.asarray(model.apply(cell, params, jnp.asarray(inputs)))
  x = inputs @ params["embed"]["W"] + params["embed"]["b"]  # [B, T, H]
  for layer in params["layers"]:
    y = _rms_norm_np(layer["norm"], x)
    h, outs = np.zeros((2, 4)), []
    for t in range(6):
      h = np.tanh(y[:, t] @ layer["cell"]["W_x"] + h @ layer["cell"]["W_h"]
                  + layer["cell"]["b"])
      outs.append(h)
    x = x + np.stack(outs, axis=1)
    assert ("mlp" in layer) == (mlp_expand > 0)
    if "mlp" in layer:
      z = _rms_norm_np(layer["mlp_norm"], x) @ layer["mlp"]["W_in"]
      gate, value = np.split(z, 2, axis=-1)
      x = x + (_gelu_np(gate) * value) @ layer["mlp"]["W_out"]
  final = _rms_norm_np(params["norm"], x[:, -1])
  expected = final @ params["readout"]["W"] + params["readout"]["b"]
  np.testing.assert_allclose(logits, expected, rtol=1e-10, atol=1e-12)


def test_layer_outputs_end_in_what_the_readout_reads():
  for block in ("stack", "residual"):
    cell, params = _init("lru", 2, block, hidden=8)
    inputs = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 1))
    outputs = model.layer_outputs(cell, params, inputs)
    assert [o.shape for o in outputs] == [(5, 3, 8)] * 2
    last = outputs[-1][-1]
    if block == "residual":
      last = model.rms_norm(params["norm"], last)
    # The lru's Cell.last computes the last output its own way.
    np.testing.assert_allclose(model.apply(cell, params, inputs),
                               model.readout(params, last), rtol=1e-5,
                               atol=1e-6)


def test_parameter_counts_by_hand():
  h = 128
  lstm_layer = lambda d: 4 * h * (d + h) + 4 * h
  readout = h * 10 + 10
  _, params = _init("lstm", 2, "stack", input_dim=1, hidden=h)
  assert model.param_counts(params) == {
      "total": lstm_layer(1) + lstm_layer(h) + readout,
      "per_layer": [lstm_layer(1), lstm_layer(h)], "readout": readout}
  assert model.param_counts(params)["total"] == 199_434
  # Residual: embed (D H + H) and the final norm (H); per layer the cell at
  # input width H, its norm (H) and, with mlp_expand 3, the GeGLU MLP's
  # H x 2M and M x H with M = 3H, and its norm.
  _, params = _init("gru", 3, "residual", input_dim=10, hidden=h,
                    mlp_expand=3.0)
  gru_layer = 3 * h * (h + h) + 3 * h + h
  m = 3 * h
  layer = gru_layer + h + (h * 2 * m + m * h) + h
  assert model.param_counts(params) == {
      "total": (10 * h + h + h) + 3 * layer + readout,
      "per_layer": [layer] * 3, "readout": readout, "embed": 10 * h + 2 * h}
  assert model.param_counts(params)["total"] == model.num_params(params)


def test_config_checks_depth_and_block():
  with pytest.raises(ConfigError, match="num_layers"):
    RunConfig(num_layers=0)
  with pytest.raises(ConfigError, match="block.*choose from stack, residual"):
    RunConfig(block="tower")
  assert RunConfig().num_layers == 1 and RunConfig().block == "stack"


def test_a_cell_registered_outside_the_package_gets_depth(
    restore_cell_registry):
  # A user's cell: a leaky integrator, h = 0.5 h + 0.5 tanh(x W).
  del restore_cell_registry

  def init(key, input_dim, hidden_dim):
    return {"W": cells.uniform_fan_in(key, (input_dim, hidden_dim))}

  def step(params, h_BxH, x_BxD):
    h_BxH = 0.5 * h_BxH + 0.5 * jnp.tanh(x_BxD @ params["W"])
    return h_BxH, h_BxH

  cells.register("leaky", cells.Cell(init, step))
  for block in ("stack", "residual"):
    cfg = RunConfig(cell="leaky", length=4, num_layers=3, block=block,
                    num_hidden=8, batch_size=16, train_steps=20, log_every=10,
                    eval_batches=2)
    result = train.train_and_evaluate(cfg, (0,))
    assert result.seeds[0].status == "ok"
    counts = model.param_counts(result.seeds[0].params)
    assert len(counts["per_layer"]) == 3
    # W [8, 8], and the layer's norm scale in the residual block.
    assert counts["per_layer"][1] == 64 + (8 if block == "residual" else 0)


@pytest.mark.slow
@pytest.mark.parametrize("block", ["stack", "residual"])
def test_two_lstm_layers_learn_length_5(block):
  cfg = RunConfig(cell="lstm", length=5, num_layers=2, block=block,
                  num_hidden=32, batch_size=64, learning_rate=3e-3,
                  train_steps=600, log_every=100, eval_batches=10)
  result = train.train_and_evaluate(cfg, (42,))
  seed = result.seeds[0]
  assert seed.status == "ok"
  assert seed.history["accuracy"][0] < 0.5
  assert seed.test_accuracy >= 0.95, seed.test_accuracy


def test_memory_estimate_grows_with_depth():
  one = train.estimate_memory(RunConfig(cell="lstm", length=50))
  two = train.estimate_memory(RunConfig(cell="lstm", length=50, num_layers=2))
  assert 1.8 < two / one < 2.3
  assert math.isfinite(one)


def test_benchmark_counts_each_stacked_layers_matmuls():
  cfg = RunConfig(cell="lstm", length=20, num_layers=2)
  b, h, g = 128, 128, 4 * 128
  forward = 20 * 2 * b * ((1 + h) + (h + h)) * g + 2 * b * h * 10
  assert benchmark.flops_per_step(cfg) == 3.0 * forward
  assert benchmark.flops_per_step(
      RunConfig(cell="lstm", num_layers=2, block="residual")) is None


def test_flax_baseline_stacks_as_many_layers_with_as_many_parameters():
  module = benchmark.FlaxClassifier("lstm", 128, num_layers=2)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                          jnp.zeros((2, 3, 1)))
  assert model.num_params(shapes) == 199_434


@pytest.mark.parametrize("block", ["stack", "residual"])
def test_each_layers_carry_gradient_matches_central_differences(block):
  # dl/dcarry^l_t: nudge one entry of layer l's carry after step t (through
  # the offsets the gradients tool adds) and watch the summed loss move.
  with jax.enable_x64(True):
    cell, params = _init("lstm", 2, block, input_dim=1, hidden=3)
    params = _random_params(params, seed=4)
    cfg = RunConfig(cell="lstm", length=4, batch_size=2)
    batch = gradients.gradient_batch(cfg, 0)
    batch = batch._replace(inputs=batch.inputs.astype(np.float64))
    grads = gradients.layer_carry_gradients(cell, params, batch)
    zeros = jax.tree.map(jnp.zeros_like, grads)

    def loss(offsets):
      logits = model.apply(cell, params, batch.inputs, carry_offsets=offsets)
      return float(optax.softmax_cross_entropy_with_integer_labels(
          logits, batch.targets).sum())

    eps = 1e-6
    for layer, leaf, t, b, k in [(0, 0, 0, 1, 2), (0, 1, 2, 0, 0),
                                 (1, 0, 1, 1, 1), (1, 1, 2, 0, 2)]:
      bump = list(zeros)
      leaves, treedef = jax.tree.flatten(bump[layer])
      delta = np.zeros(leaves[leaf].shape)
      delta[t, b, k] = eps
      plus = list(leaves)
      plus[leaf] = leaves[leaf] + delta
      minus = list(leaves)
      minus[leaf] = leaves[leaf] - delta
      bump_plus, bump_minus = list(bump), list(bump)
      bump_plus[layer] = jax.tree.unflatten(treedef, plus)
      bump_minus[layer] = jax.tree.unflatten(treedef, minus)
      numeric = (loss(bump_plus) - loss(bump_minus)) / (2 * eps)
      analytic = float(jax.tree.leaves(grads[layer])[leaf][t, b, k])
      assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(analytic)), (
          layer, leaf, t, numeric, analytic)
      assert abs(analytic) > 1e-8  # A real dependence, not 0 == 0.


def test_gradients_tool_measures_each_layer_at_initialisation(tmp_path):
  base = RunConfig(num_layers=2, num_hidden=16, batch_size=8)
  content = gradients.run_gradients(base, ("lstm", "mingru"), 6, (42, 43),
                                    str(tmp_path), init_only=True)
  for cell in ("lstm", "mingru"):
    init = content["cells"][cell]["init"]
    assert set(init) == {"layer 1", "layer 2", "total"}
    assert len(init["total"]) == 6 and math.isnan(init["total"][-1])
    # The whole carry's norm is at least each layer's.
    assert all(tot >= one - 1e-7 for tot, one in zip(init["total"][:-1],
                                                     init["layer 1"][:-1]))
  assert (tmp_path / "gradients.md").exists()


def test_residual_inputs_of_each_digit_differ_after_the_first_norm():
  # x = d W_e + b_e, then RMSNorm: with b_e = 0 every digit d > 0 would give
  # the same vector, and the scalar encoding would carry only its sign.
  _, params = _init("rnn", 1, "residual", input_dim=1, hidden=16)
  digits = jnp.arange(10, dtype=jnp.float32)[:, None]
  x = digits @ params["embed"]["W"] + params["embed"]["b"][None, :]
  normed = np.asarray(model.rms_norm(params["layers"][0]["norm"], x))
  gaps = [np.abs(normed[i] - normed[j]).max()
          for i in range(10) for j in range(i + 1, 10)]
  assert min(gaps) > 1e-3


def test_a_sweep_records_each_layers_parameters(tmp_path):
  base = RunConfig(num_layers=2, num_hidden=8, batch_size=8, train_steps=20,
                   log_every=10, eval_batches=2)
  rows = sweep.run_sweep(sweep.SweepConfig(cells=("gru",), lengths=(3,),
                                           base=base), str(tmp_path)).rows
  gru = lambda d: 3 * 8 * (d + 8) + 3 * 8 + 8
  assert rows[0]["params_per_layer"] == [gru(1), gru(8)]
  assert rows[0]["num_params"] == gru(1) + gru(8) + 8 * 10 + 10
  deep = runner.expected_cost(dataclasses.replace(base, cell="gru", length=3))
  one = runner.expected_cost(dataclasses.replace(base, cell="gru", length=3,
                                                 num_layers=1))
  assert deep / one == (gru(1) + gru(8)) / gru(1)
