"""Tests for experiments.common: flags generated from the configs' fields."""

import dataclasses

from absl import flags
import pytest

from experiments import common
from palindrome_jax import config
from palindrome_jax import sweep
from palindrome_jax import validation


@dataclasses.dataclass(frozen=True)
class _Tool:
  sizes: tuple[int, ...] = config.setting(
      (3, 4), "Sizes.", config.length_tuple)
  rate: float = config.setting(0.5, "A rate.", config.fraction,
                               flag="tool_rate")
  hidden: int = 7  # No help: no flag.

  def __post_init__(self):
    config.check_fields(self)


@pytest.fixture(name="tool_flags")
def _tool_flags():
  """The flags of ``_Tool``, defined on a private FlagValues (absl's global
  ones stay as they are)."""
  values = flags.FlagValues()
  return values, common.define_flags(_Tool, flag_values=values)


def test_flags_are_generated_from_the_fields(tool_flags):
  values, holders = tool_flags
  assert sorted(holders) == ["rate", "sizes"]  # `hidden` has no help.
  assert values["sizes"].default == "3,4" and values["sizes"].help == "Sizes."
  assert values["tool_rate"].default == 0.5
  # The tools' --cells, from the configs' `cells` field.
  assert flags.FLAGS["cells"].default == "rnn,lstm"
  assert flags.FLAGS["cells"].help == {
      f.name: f for f in dataclasses.fields(sweep.SweepConfig)}[
          "cells"].metadata["help"]


@pytest.mark.parametrize("text, value", [
    ("5, 10 ,15", (5, 10, 15)), ("7", (7,)), ("", ()), ("  ", ())])
def test_parse_items(text, value):
  assert common.parse_items("lengths", text, int) == value


@pytest.mark.parametrize("text, problem", [
    ("5,,6", "empty item in '5,,6'"), ("5,x", "'x' is not an integer"),
    ("5,", "empty item")])
def test_parse_items_rejects(text, problem):
  with pytest.raises(validation.FlagError, match=f"^--lengths: .*{problem}"):
    common.parse_items("lengths", text, int)


def test_from_flags_parses_tuples_and_names_the_flag_of_a_bad_field(
    tool_flags):
  values, holders = tool_flags
  values(["prog", "--sizes=5,6", "--tool_rate=0.25"])
  assert common.from_flags(_Tool, holders) == _Tool(sizes=(5, 6), rate=0.25)
  values(["prog", "--sizes=5,5"])
  with pytest.raises(validation.FlagError, match="^--sizes: repeated value"):
    common.from_flags(_Tool, holders)
  values(["prog", "--sizes=5", "--tool_rate=2"])
  with pytest.raises(validation.FlagError, match=r"^--tool_rate: must be in"):
    common.from_flags(_Tool, holders)
