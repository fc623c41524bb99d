"""A cell defined outside the package is registered and swept by name."""

import os
import subprocess
import sys
import textwrap

from palindrome_jax import io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The README's "Add a cell" example: the minimal gated unit (Zhou, Wu, Zhang
# & Zhou 2016), one gate f in place of the GRU's two.
MY_CELLS = '''
"""My cells: importing this module registers them."""

import jax
import jax.numpy as jnp

from palindrome_jax import cells


def mgu_init(key, input_dim, hidden_dim):
  key_x, key_f, key_h = jax.random.split(key, 3)
  return {
      "W_x": cells.uniform_fan_in(key_x, (input_dim, 2 * hidden_dim)),
      "U_f": cells.uniform_fan_in(key_f, (hidden_dim, hidden_dim)),
      "U_h": cells.uniform_fan_in(key_h, (hidden_dim, hidden_dim)),
      "b": jnp.zeros((2 * hidden_dim,), jnp.float32),
  }


def mgu_step(params, h_BxH, u_Bx2H):
  u_f, u_h = jnp.split(u_Bx2H + params["b"], 2, axis=-1)
  f = jax.nn.sigmoid(u_f + h_BxH @ params["U_f"])
  candidate = jnp.tanh(u_h + (f * h_BxH) @ params["U_h"])
  h_BxH = (1.0 - f) * h_BxH + f * candidate
  return h_BxH, h_BxH


cells.register("mgu", cells.Cell(mgu_init, mgu_step, cells.zeros_carry,
                                 cells.project_input))
'''


def test_sweep_a_cell_from_a_module_outside_the_package(tmp_path):
  (tmp_path / "my_cells.py").write_text(textwrap.dedent(MY_CELLS))
  results = tmp_path / "results"
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(tmp_path), REPO] + [p for p in [env.get("PYTHONPATH")] if p])
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep", "--cell_module=my_cells",
       "--cells=mgu", "--lengths=3", "--train_steps=5", "--log_every=5",
       "--num_hidden=4", "--batch_size=8", "--eval_batches=1",
       f"--results_dir={results}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  run = io.read_json(str(results / "runs" / "mgu_N3_seed42.json"))
  assert run["status"] == "ok"
  # W_x [1, 2H], U_f and U_h [H, H], b [2H], and the readout [H, 10] + [10].
  assert run["num_params"] == 1 * 8 + 2 * 4 * 4 + 8 + (4 * 10 + 10)
  assert "| mgu |" in (results / "results.md").read_text()


def test_unknown_cell_names_the_registered_ones(tmp_path):
  (tmp_path / "my_cells.py").write_text(textwrap.dedent(MY_CELLS))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.sweep", "--cell_module=my_cells",
       "--cells=mgu2", f"--results_dir={tmp_path}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
      check=False)
  assert proc.returncode == 2
  assert "unknown 'mgu2'" in proc.stderr and "mgu" in proc.stderr
