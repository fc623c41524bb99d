"""A cell defined outside the package is registered and swept by name.

The sweep's ``main`` runs in this process, as the command line calls it
(``--cell_module`` imports the module from the working directory there).
"""

import contextlib
import io
import sys
import textwrap

import jax
import pytest

from experiments import sweep as sweep_main
from palindrome_jax import files

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


@pytest.fixture(name="my_cells_dir")
def _my_cells_dir(tmp_path, monkeypatch, restore_cell_registry):
  """The working directory holds my_cells.py; afterwards the module, the
  cells it registered and ``sys.path`` are as before. The module is the
  README's, written as a user writes one: it broadcasts ``+ params["b"]``
  implicitly, which the tests' strict rank promotion would refuse."""
  del restore_cell_registry
  (tmp_path / "my_cells.py").write_text(textwrap.dedent(MY_CELLS))
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  strict = jax.config.jax_numpy_rank_promotion
  jax.config.update("jax_numpy_rank_promotion", "allow")
  try:
    yield tmp_path
  finally:
    jax.config.update("jax_numpy_rank_promotion", strict)
    sys.modules.pop("my_cells", None)


def _sweep(args):
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    code = sweep_main.COMMAND.execute(sweep_main.main, ["sweep", *args])
  return code, err.getvalue()


def test_sweep_a_cell_from_a_module_outside_the_package(my_cells_dir):
  results = my_cells_dir / "results"
  code, stderr = _sweep([
      "--cell_module=my_cells", "--cells=mgu", "--lengths=3",
      "--train_steps=5", "--log_every=5", "--num_hidden=4", "--batch_size=8",
      "--eval_batches=1", f"--results_dir={results}"])
  assert code == 0, stderr[-3000:]
  run = files.read_json(str(results / "runs" / "mgu_N3_seed42.json"))
  assert run["status"] == "ok"
  # W_x [1, 2H], U_f and U_h [H, H], b [2H], and the readout [H, 10] + [10].
  assert run["num_params"] == 1 * 8 + 2 * 4 * 4 + 8 + (4 * 10 + 10)
  assert "| mgu |" in (results / "results.md").read_text()


def test_unknown_cell_names_the_registered_ones(my_cells_dir):
  code, stderr = _sweep(["--cell_module=my_cells", "--cells=mgu2",
                         f"--results_dir={my_cells_dir}"])
  assert code == 2
  assert "unknown 'mgu2'" in stderr and "mgu" in stderr
