"""Per-step gradient norms against a direct jax.grad with respect to h_t."""

import dataclasses
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import gradients as gradients_main
from palindrome_jax import cells
from palindrome_jax import data
from palindrome_jax import gradients
from palindrome_jax import files as io
from palindrome_jax import model
from palindrome_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def init(name, hidden, seed=0):
  """Model parameters, compiled in one program (op by op is slow)."""
  return gradients.initial_params(
      train.RunConfig(cell=name, num_hidden=hidden), seed)


def direct_norms(cell, params, batch, output_of_carry):
  """For each t: run the cell step by step to get carry_t, then take the
  Jacobian of every example's loss with respect to carry_t, running the rest
  of the sequence from carry_t in Python. Returns per-part norms, each [T]."""
  batch_size, length = batch.inputs.shape[:2]
  hidden = params["readout"]["W"].shape[0]
  carry = cell.initial_carry(batch_size, hidden)
  carries = []
  for t in range(length):
    carry, _ = cells.step_on_input(cell, params["cell"], carry,
                                   batch.inputs[:, t])
    carries.append(carry)

  def losses_from(carry, t):
    for s in range(t + 1, length):
      carry, _ = cells.step_on_input(cell, params["cell"], carry,
                                     batch.inputs[:, s])
    logits = model.readout(params, output_of_carry(carry))
    return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           batch.targets)

  norms = {}
  for t in range(length):
    jacobian = jax.jacrev(losses_from)(carries[t], t)  # Leaves [B, B, H].
    parts = {}
    for name, jac_BxBxH in zip(("c", "h") if isinstance(carry, tuple)
                               else ("h",), jax.tree.leaves(jacobian)):
      diagonal_BxH = jnp.einsum("bbh->bh", jac_BxBxH)
      off_diagonal = jac_BxBxH - jnp.einsum("bh,bc->bch", diagonal_BxH,
                                            jnp.eye(batch_size))
      assert float(jnp.abs(off_diagonal).max()) == 0.0  # Rows independent.
      parts[name] = jnp.square(diagonal_BxH).sum(-1)
    if len(parts) > 1:
      parts["total"] = sum(parts.values())
    for name, squares_B in parts.items():
      norms.setdefault(name, []).append(float(jnp.sqrt(squares_B).mean()))
  return {name: np.array(values) for name, values in norms.items()}


@pytest.mark.parametrize("name, output_of_carry", [
    ("rnn", lambda carry: carry),
    ("lstm", lambda carry: carry[1]),
])
def test_norms_match_direct_grad(name, output_of_carry):
  cell = cells.get(name)
  params = init(name, 8)
  batch = data.make_batch(jax.random.PRNGKey(1), 6, 4)
  norms = gradients.hidden_gradient_norms(cell, params, batch)
  expected = direct_norms(cell, params, batch, output_of_carry)
  assert set(norms) == set(expected)
  for part in expected:
    assert norms[part].shape == (6,)
    np.testing.assert_allclose(norms[part], expected[part], rtol=1e-5,
                               atol=1e-12, err_msg=part)


def test_untrained_rnn_gradients_vanish():
  cell = cells.get("rnn")
  params = init("rnn", 32)
  batch = data.make_batch(jax.random.PRNGKey(1), 20, 64)
  h = gradients.hidden_gradient_norms(cell, params, batch)["h"]
  assert np.all(h > 0) or h[0] == 0  # Underflow to 0 is vanishing too.
  assert h[0] < 1e-2 * h[-1]


def test_parts_of_lstm_and_lru():
  batch = data.make_batch(jax.random.PRNGKey(1), 5, 4)
  lstm = cells.get("lstm")
  norms = gradients.hidden_gradient_norms(
      lstm, init("lstm", 8), batch)
  assert sorted(norms) == ["c", "h", "total"]
  assert norms["c"][-1] == 0.0  # The final c feeds only the next step.
  np.testing.assert_allclose(norms["total"][-1], norms["h"][-1])
  lru = cells.get("lru")
  norms = gradients.hidden_gradient_norms(
      lru, init("lru", 8), batch)
  assert list(norms) == ["total"]
  assert math.isnan(norms["total"][-1])  # Its output is not in its carry.
  assert np.all(np.isfinite(norms["total"][:-1]))


def test_initial_params_are_where_training_starts():
  cfg = train.RunConfig(cell="gru", length=4, num_hidden=8)
  keys = train.run_keys(7, cfg.cell, cfg.length)
  state = jax.jit(train.create_train_state, static_argnums=2)(keys[0], keys[1],
                                                             cfg)
  expected = jax.tree.leaves(state.params)
  got = jax.tree.leaves(gradients.initial_params(cfg, 7))
  for a, b in zip(expected, got, strict=True):
    np.testing.assert_array_equal(a, b)


def test_gradient_profile_with_a_fake_trainer(tmp_path):
  base = train.RunConfig(num_hidden=8, batch_size=16, train_steps=3)

  def fake_train(cfg, seeds, **unused_kwargs):
    params = gradients.initial_params(cfg, 99)
    seed_results = [train.SeedResult(
        seed=s, status="ok", test_accuracy=0.5, test_loss=1.0,
        final_train_loss=1.0, final_train_accuracy=0.5, history={},
        params=params) for s in seeds]
    return train.GroupResult(cfg, seed_results, cfg.train_steps, 0.0, 0.0, 1.0)

  results = gradients.run_gradients(base, ("rnn", "lstm"), 7, (1, 2),
                                    str(tmp_path), train_fn=fake_train)
  saved = io.read_json(str(tmp_path / "gradients.json"))
  assert saved["length"] == 7 and saved["seeds"] == [1, 2]
  rnn = saved["cells"]["rnn"]
  assert [s["seed"] for s in rnn["seeds"]] == [1, 2]
  assert len(rnn["init"]["h"]) == len(rnn["trained"]["h"]) == 7
  cfg = train.RunConfig(cell="rnn", length=7, num_hidden=8, batch_size=16,
                        train_steps=3)
  expected = gradients.hidden_gradient_norms(
      cells.get("rnn"), gradients.initial_params(cfg, 1),
      gradients.gradient_batch(cfg, 1))["h"]
  np.testing.assert_allclose(rnn["seeds"][0]["init"]["h"], expected)
  np.testing.assert_allclose(
      rnn["init"]["h"], np.mean([s["init"]["h"] for s in rnn["seeds"]], 0))
  assert sorted(saved["cells"]["lstm"]["trained"]) == ["c", "h", "total"]
  assert (tmp_path / "gradients.png").stat().st_size > 0
  assert "| lstm | total |" in gradients.summary_table(results)


def _fake_train_seed_2_diverges(cfg, seeds, **unused_kwargs):
  params = gradients.initial_params(cfg, 99)
  seed_results = [train.SeedResult(
      seed=s, status="ok" if s != 2 else "diverged at step 2",
      test_accuracy=0.9 if s != 2 else 0.1, test_loss=1.0,
      final_train_loss=1.0, final_train_accuracy=0.5, history={},
      params=params) for s in seeds]
  return train.GroupResult(cfg, seed_results, cfg.train_steps, 0.0, 0.0, 1.0)


def test_a_diverged_seed_is_left_out_of_the_accuracy_as_of_the_norms(
    tmp_path):
  base = train.RunConfig(num_hidden=8, batch_size=16, train_steps=3)
  results = gradients.run_gradients(base, ("rnn",), 5, (1, 2), str(tmp_path),
                                    train_fn=_fake_train_seed_2_diverges)
  rnn = results["cells"]["rnn"]
  np.testing.assert_allclose(rnn["trained"]["h"],
                             rnn["seeds"][0]["trained"]["h"])
  assert gradients.summary_table(results).splitlines()[-1].endswith(
      "| 90.0% |")


def test_an_interrupted_measure_writes_nothing(tmp_path):
  base = train.RunConfig(num_hidden=8, batch_size=16, train_steps=3)
  gradients.run_gradients(base, ("rnn",), 5, (1, 2), str(tmp_path),
                          train_fn=_fake_train_seed_2_diverges,
                          stop=lambda: True)
  assert not (tmp_path / "gradients.json").exists()


def test_entrypoint_end_to_end(tmp_path):
  # The entrypoint's one smoke test in a process of its own. The training is
  # horizon_test's end-to-end one: its compiled programs are in the tests'
  # compilation cache (conftest) when both run.
  out = tmp_path / "out"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.gradients", "--cells=rnn",
       "--length=2", "--train_steps=5", "--log_every=5", "--num_hidden=4",
       "--batch_size=8", "--eval_batches=1", f"--results_dir={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  saved = io.read_json(str(out / "gradients.json"))
  assert len(saved["cells"]["rnn"]["trained"]["h"]) == 2
  assert (out / "gradients.png").exists()
  assert "| rnn | h |" in proc.stdout


def test_init_only_measures_without_training(tmp_path):
  base = train.RunConfig(num_hidden=8, batch_size=16, chrono_per_digit=1.0)

  def no_training(*unused_args, **unused_kwargs):
    raise AssertionError("init_only must not train")

  results = gradients.run_gradients(base, ("rnn", "lstm"), 9, (1, 2),
                                    str(tmp_path), train_fn=no_training,
                                    init_only=True)
  saved = io.read_json(str(tmp_path / "gradients.json"))
  assert saved["init_only"] and saved["length"] == 9
  lstm = saved["cells"]["lstm"]
  assert "trained" not in lstm
  assert [s["seed"] for s in lstm["seeds"]] == [1, 2]
  # Each seed: the gradients of the parameters its training would start from
  # (the chrono initialisation here), on the tool's batch for that seed.
  cfg = dataclasses.replace(base, cell="lstm", length=9)
  for s in lstm["seeds"]:
    expected = gradients.hidden_gradient_norms(
        cells.get("lstm"), gradients.initial_params(cfg, s["seed"]),
        gradients.gradient_batch(cfg, s["seed"]))
    for part in ("c", "h", "total"):
      np.testing.assert_allclose(s["init"][part], expected[part], rtol=1e-6)
  np.testing.assert_allclose(
      lstm["init"]["total"],
      np.mean([s["init"]["total"] for s in lstm["seeds"]], 0))
  assert not (tmp_path / "runs").exists() or not os.listdir(tmp_path / "runs")
  table = gradients.summary_table(results)
  total = lstm["init"]["total"]
  assert (f"| lstm | total | {total[0]:.2e} | {total[-1]:.2e} | "
          f"{total[0] / total[-1]:.2e} |") in table
  assert "trained" not in table.split("\n")[2]
  assert (tmp_path / "gradients.png").stat().st_size > 0
  assert "lstm seed 2: init t=0" in (tmp_path / "gradients.md").read_text()


def test_chrono_keeps_the_first_digits_gradient_at_init():
  # Chrono (T_max = N) gives forget gates near 1, so at initialisation the
  # gradient reaching t=0 does not shrink with N, where a forget bias of 0
  # (gates near 1/2) loses a factor with every step.
  def first_over_last(length, **init):
    cfg = train.RunConfig(cell="lstm", length=length, num_hidden=16,
                          batch_size=32, **init)
    total = gradients.initial_profile(cfg, (3,))["init"]["total"]
    return total[0] / total[-1]

  assert first_over_last(10, chrono_per_digit=1.0) > first_over_last(10)
  assert (first_over_last(40, chrono_per_digit=1.0) >
          10 * first_over_last(40))
  assert first_over_last(40) < 0.01 * first_over_last(10)
  assert (first_over_last(40, chrono_per_digit=1.0) >
          0.1 * first_over_last(10, chrono_per_digit=1.0))


def test_entrypoint_init_only(tmp_path, capsys):
  # In this process, as the command line calls main (the flags put back).
  out = tmp_path / "out"
  status = gradients_main.COMMAND.execute(gradients_main.main, [
      "gradients", "--cells=lstm", "--length=3", "--init_only",
      "--forget_bias=1", "--num_hidden=4", "--batch_size=8",
      f"--results_dir={out}"])
  stdout, stderr = capsys.readouterr()
  assert status == 0, stderr[-3000:]
  saved = io.read_json(str(out / "gradients.json"))
  assert saved["init_only"]
  assert saved["training_settings"]["forget_bias"] == 1.0
  assert "trained" not in saved["cells"]["lstm"]
  assert "| lstm | total |" in stdout
  assert "at initialisation (nothing trained)" in stdout
