"""Model sizes: parameter counts by hand, the width for a budget, --num_params."""

import dataclasses
import os
import subprocess
import sys

import pytest

from palindrome_jax import config
from palindrome_jax import sizing

C = 10  # Digits: the readout's classes.


def rnn_count(h, d=1, layers=1):
  # W_x [D, H], W_h [H, H], b [H] per layer (D = H above the first), readout.
  first = d * h + h * h + h
  return first + (layers - 1) * (2 * h * h + h) + h * C + C


def lstm_count(h, d=1, layers=1):
  first = 4 * h * (d + h + 1)
  return first + (layers - 1) * 4 * h * (2 * h + 1) + h * C + C


def gru_count(h, d=1):
  # Three gates, plus the reset gate's separate recurrent bias b_hn [H].
  return 3 * h * (d + h + 1) + h + h * C + C


@pytest.mark.parametrize("h", [1, 7, 128])
def test_counts_equal_the_ones_done_by_hand(h):
  assert sizing.count_params("rnn", h) == rnn_count(h)
  assert sizing.count_params("lstm", h) == lstm_count(h)
  assert sizing.count_params("gru", h) == gru_count(h)
  assert sizing.count_params("lstm", h, input_dim=10) == lstm_count(h, d=10)
  assert sizing.count_params("rnn", h, num_layers=3) == rnn_count(h, layers=3)
  assert sizing.count_params("lstm", h, num_layers=2) == lstm_count(
      h, layers=2)


def test_the_original_lstm_has_67850_parameters():
  assert sizing.count_params("lstm", 128) == 67_850
  assert sizing.count_params("rnn", 128) == 17_930


def test_state_sizes():
  assert sizing.state_size("rnn", 128) == 128
  assert sizing.state_size("lstm", 128) == 256  # h and c.
  assert sizing.state_size("lstm", 64, num_layers=3) == 3 * 128
  assert sizing.state_size("lru", 128) == 2 * 128  # Complex: two floats each.


@pytest.mark.parametrize("budget", [5_000, 17_930, 67_850, 68_000, 250_001])
@pytest.mark.parametrize("cell,count", [("rnn", rnn_count),
                                        ("lstm", lstm_count),
                                        ("gru", gru_count)])
def test_the_width_is_the_closest_of_all(cell, count, budget):
  width = sizing.width_for(cell, budget)
  best = min(range(1, 2000), key=lambda h: (abs(count(h) - budget), h))
  assert width == best


def test_only_widths_the_cell_accepts():
  # mLSTM's inner width must split into its heads and q/k/v blocks.
  width = sizing.width_for("mlstm", 67_850, num_layers=2, block="residual")
  count = sizing.count_params("mlstm", width, num_layers=2, block="residual")
  assert count is not None
  assert width < 200  # 220,570 parameters at 128: the width is below.
  accepted = [h for h in range(1, 200) if sizing.count_params(
      "mlstm", h, num_layers=2, block="residual") is not None]
  assert len(accepted) < 199  # Some widths are refused...
  best = min(accepted, key=lambda h: (abs(sizing.count_params(
      "mlstm", h, num_layers=2, block="residual") - 67_850), h))
  assert width == best  # ...and the closest accepted one is chosen.


def test_num_params_sets_each_cells_width():
  rnn = config.RunConfig(cell="rnn", num_params=67_850)
  assert rnn.num_hidden == 255  # 255² + 12·255 + 10 = 68,095: closest.
  lstm = dataclasses.replace(rnn, cell="lstm")
  assert lstm.num_hidden == 128
  deeper = dataclasses.replace(lstm, num_layers=2)
  assert deeper.num_hidden == sizing.width_for("lstm", 67_850, 1, 2)
  assert deeper.num_hidden < 128


def test_the_budget_is_a_shared_setting_and_the_width_is_not():
  rnn = config.RunConfig(cell="rnn", num_params=20_000)
  lstm = dataclasses.replace(rnn, cell="lstm")
  assert rnn.num_hidden != lstm.num_hidden
  assert rnn.training_settings() == lstm.training_settings()
  assert "num_hidden" not in rnn.training_settings()
  # Unset, it is not recorded at all, so older directories still match.
  assert "num_params" not in config.RunConfig().training_settings()


def test_a_bad_budget_names_its_field():
  with pytest.raises(config.ConfigError, match="^num_params: must be a pos"):
    config.RunConfig(num_params=0)


def test_sizing_leaves_the_devices_to_be_configured():
  # The entrypoints size the cells (--num_params) while reading their
  # flags, before they set the CPU device count: sizing must not start
  # JAX's backend, or a sweep on a 2-core CPU ran on one device.
  script = (
      "from palindrome_jax import config, devices, sizing\n"
      "config.RunConfig(cell='gru', num_params=20000)\n"
      "sizing.state_size('lstm', 16)\n"
      "print(len(devices.configure(cpu_devices=3)))\n")
  done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                        text=True, check=True, env={**os.environ,
                                                    "JAX_PLATFORMS": "cpu"})
  assert done.stdout.strip() == "3", done.stderr[-2000:]
