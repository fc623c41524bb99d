"""Tests for palindrome_jax.config: each setting's check, and its role."""

import dataclasses

import pytest

from palindrome_jax import config
from palindrome_jax import sweep
from palindrome_jax import horizon

BAD = [
    ("cell", "nope", "unknown 'nope'"),
    ("length", 0, "positive integer"),
    ("batch_size", 2.5, "positive integer"),
    ("num_hidden", True, "positive integer"),
    ("learning_rate", 0.0, "> 0"),
    ("learning_rate", float("nan"), "> 0"),
    ("optimizer", "sgd", "choose from adam, rmsprop"),
    ("max_norm", -1.0, "> 0"),
    ("lr_step_size", -1, ">= 0"),
    ("lr_gamma", 1.5, "(0, 1]"),
    ("encoding", "binary", "choose from scalar, onehot"),
    ("forget_bias", float("inf"), "finite"),
    ("chrono_t_max", 2.0, "> 2"),
    ("chrono_t_max", float("inf"), "finite"),  # log U(1, inf): all inf.
    ("chrono_per_digit", float("inf"), "> 0"),
    ("unroll", 0, "positive integer"),
    ("train_steps", 0, "positive integer"),
    ("log_every", -3, "positive integer"),
    ("eval_batches", 0, "positive integer"),
    ("solved_accuracy", 0.0, "(0, 1]"),
    ("eval_every", 0, "positive integer"),
]


@pytest.mark.parametrize("field, value, problem", BAD)
def test_a_bad_value_names_its_field(field, value, problem):
  with pytest.raises(config.ConfigError) as error:
    config.RunConfig(**{field: value})
  assert error.value.field == field
  assert problem in error.value.problem


def test_every_field_has_help_and_a_role():
  for field in dataclasses.fields(config.RunConfig):
    if field.name == "training_program":  # The code's version: no flag.
      assert field.metadata["help"] is None
    else:
      assert field.metadata["help"].strip(), field.name
    assert isinstance(field.metadata["static"], bool), field.name


def test_cross_field_checks():
  with pytest.raises(config.ConfigError, match="checkpoint_every: 30 is not"):
    sweep.SweepConfig(checkpoint_every=30)
  with pytest.raises(config.ConfigError, match="max_length: 4 is below"):
    horizon.HorizonConfig(min_length=9, max_length=4)


RUNS_BAD = [
    ("cells", (), "must not be empty"),
    ("cells", ("rnn", "nope"), "unknown 'nope'"),
    ("cells", ("rnn", "rnn"), "repeated value in rnn,rnn"),
    ("lengths", (5, 0), "length 0 is not an integer >= 1"),
    ("lengths", "5,10", "must be a tuple of lengths"),
    ("seeds", (42, -1), "seed -1 is not an integer in"),
    ("seeds", (2**31,), "is not an integer in"),
]


@pytest.mark.parametrize("field, value, problem", RUNS_BAD)
def test_the_runs_of_a_sweep_are_checked(field, value, problem):
  with pytest.raises(config.ConfigError) as error:
    sweep.SweepConfig(**{field: value})
  assert (error.value.field, problem in error.value.problem) == (field, True)


def test_a_list_of_runs_is_taken_as_a_tuple():
  config_ = sweep.SweepConfig(cells=["gru"], lengths=[3, 4], seeds=[1, 2])
  assert (config_.cells, config_.lengths, config_.seeds) == (
      ("gru",), (3, 4), (1, 2))
  hash(config_)


def test_the_tools_share_one_cells_default_and_help():
  fields = [{f.name: f for f in dataclasses.fields(c)}["cells"]
            for c in (sweep.SweepConfig, horizon.HorizonConfig)]
  assert fields[0].default == fields[1].default == ("rnn", "lstm")
  assert fields[0].metadata["help"] == fields[1].metadata["help"]


def test_program_keeps_what_shapes_the_program_and_nothing_else():
  base = config.RunConfig(cell="gru", length=7, num_hidden=16)
  loop_only = dataclasses.replace(
      base, train_steps=3, log_every=1, eval_batches=2, stop_when_solved=True,
      solved_accuracy=0.5, eval_every=1)
  assert loop_only.program() == base.program()  # No recompile.
  for field, value in [("num_hidden", 8), ("length", 8), ("learning_rate",
                                                           0.1),
                       ("encoding", "onehot"), ("forget_bias", 1.0)]:
    changed = dataclasses.replace(base, **{field: value})
    assert changed.program() != base.program(), field
  static = {f.name for f in dataclasses.fields(config.RunConfig)
            if f.metadata["static"]}
  assert static >= {"cell", "length", "batch_size", "num_hidden",
                    "learning_rate", "optimizer", "max_norm", "encoding"}
  assert not static & {"train_steps", "log_every", "eval_batches",
                       "stop_when_solved", "solved_accuracy", "eval_every"}


def test_training_settings_are_every_field_but_cell_and_length():
  # And of num_hidden and num_params the one that is set: a budget sizes
  # each cell to its own width (see sizing_test).
  names = {f.name for f in dataclasses.fields(config.RunConfig)}
  settings = config.RunConfig().training_settings()
  assert set(settings) == names - {"cell", "length", "num_params"}
  settings = config.RunConfig(num_params=5000).training_settings()
  assert set(settings) == names - {"cell", "length", "num_hidden"}


def test_chrono_per_digit_scales_t_max_with_the_length():
  short = config.RunConfig(cell="lstm", length=10, chrono_per_digit=1.5)
  long = dataclasses.replace(short, length=200)
  assert short.chrono_t_max_used == 15 and long.chrono_t_max_used == 300
  assert config.RunConfig(chrono_t_max=50.0).chrono_t_max_used == 50.0
  # The forget-gate biases are log U(1, T_max - 1): larger at longer N.
  import jax  # pylint: disable=g-import-not-at-top
  b_short, b_long = (cfg.make_cell().init(jax.random.PRNGKey(0), 1, 64)["b"]
                     for cfg in (short, long))
  forget = slice(64, 128)  # Gates i, f, g, o.
  assert float(b_long[forget].max()) > float(b_short[forget].max()) + 1
  assert float(b_short[forget].max()) <= float(jax.numpy.log(14.0)) + 1e-6
  with pytest.raises(config.ConfigError, match="chrono_per_digit"):
    config.RunConfig(length=2, chrono_per_digit=1.0)
