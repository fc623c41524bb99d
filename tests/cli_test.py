"""Tests for palindrome_jax.cli: flags from the configs' fields, commands."""

import dataclasses

from absl import flags
import pytest

from palindrome_jax import cli
from palindrome_jax import config
from palindrome_jax import validation

# A flag every command shares (as experiments.common's are), defined once.
SHARED_COUNT = flags.DEFINE_integer("cli_test_count", 3, "A shared count.")
SHARED_SWITCH = flags.DEFINE_bool("cli_test_switch", False, "A shared switch.")


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
  return values, cli.define_flags(_Tool, flag_values=values)


def test_flags_are_generated_from_the_fields(tool_flags):
  values, holders = tool_flags
  assert sorted(holders) == ["rate", "sizes"]  # `hidden` has no help.
  assert values["sizes"].default == "3,4" and values["sizes"].help == "Sizes."
  assert values["tool_rate"].default == 0.5
  assert cli.flag_name(_Tool, "rate") == "tool_rate"
  assert cli.flag_name(_Tool, "sizes") == "sizes"


@pytest.mark.parametrize("text, value", [
    ("5, 10 ,15", (5, 10, 15)), ("7", (7,)), ("", ()), ("  ", ())])
def test_parse_items(text, value):
  assert cli.parse_items("lengths", text, int) == value


@pytest.mark.parametrize("text, problem", [
    ("5,,6", "empty item in '5,,6'"), ("5,x", "'x' is not an integer"),
    ("5,", "empty item")])
def test_parse_items_rejects(text, problem):
  with pytest.raises(validation.FlagError, match=f"^--lengths: .*{problem}"):
    cli.parse_items("lengths", text, int)


def test_from_flags_parses_tuples_and_names_the_flag_of_a_bad_field(
    tool_flags):
  values, holders = tool_flags
  values(["prog", "--sizes=5,6", "--tool_rate=0.25"])
  assert cli.from_flags(_Tool, holders) == _Tool(sizes=(5, 6), rate=0.25)
  values(["prog", "--sizes=5,5"])
  with pytest.raises(validation.FlagError, match="^--sizes: repeated value"):
    cli.from_flags(_Tool, holders)
  values(["prog", "--sizes=5", "--tool_rate=2"])
  with pytest.raises(validation.FlagError, match=r"^--tool_rate: must be in"):
    cli.from_flags(_Tool, holders)


def test_flag_field_checks_one_field_before_the_config_is_built(tool_flags):
  values, holders = tool_flags
  values(["prog", "--sizes=6,7", "--tool_rate=2"])  # The rate is not read.
  assert cli.flag_field(_Tool, holders, "sizes") == (6, 7)
  values(["prog", "--sizes=0"])
  with pytest.raises(validation.FlagError, match="^--sizes: "):
    cli.flag_field(_Tool, holders, "sizes")


def _command(results_default, **kwargs):
  """A command that shares the flags above and has its own --results_dir."""
  command = cli.Command("Does a thing.\n\n  python -m thing", shared=(
      "cli_test_count", "cli_test_switch"), groups=(
          ("Shared", ("cli_test_count",)),), **kwargs)
  holder = flags.DEFINE_string("results_dir", results_default, "Where.",
                               flag_values=command.flag_values)
  flags.DEFINE_string("label", None, "A label.",
                      flag_values=command.flag_values)
  return command, holder


def _execute(command, main, args, capsys):
  capsys.readouterr()
  code = command.execute(main, ["thing", *args])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_commands_with_a_flag_of_one_name_live_in_one_process(capsys):
  first, first_dir = _command("results/a")
  second, second_dir = _command("results/b")  # No DuplicateFlagError.
  seen = []

  def main(argv):
    seen.append((argv, first_dir.value, SHARED_COUNT.value,
                 first.flag_values["cli_test_count"].present))

  code, _, _ = _execute(first, main, ["--results_dir=x",
                                      "--cli_test_count=5"], capsys)
  assert code == 0
  assert seen == [(["thing"], "x", 5, 1)]  # Shared flags are the same ones.
  # Afterwards every flag is as it was: defaults, nothing parsed.
  assert first.flag_values["results_dir"].value == "results/a"
  assert flags.FLAGS["cli_test_count"].value == 3
  assert not flags.FLAGS.is_parsed() and not first.flag_values.is_parsed()
  assert second.flag_values["results_dir"].default == "results/b"

  def second_main(argv):
    del argv
    seen.append((second_dir.value, SHARED_COUNT.value))

  assert _execute(second, second_main, [], capsys)[0] == 0
  assert seen[-1] == ("results/b", 3)


def test_a_commands_defaults_of_shared_flags_hold_while_it_runs(capsys):
  command, _ = _command("r", defaults={"cli_test_switch": True})
  seen = []
  code, _, _ = _execute(command, lambda argv: seen.append(
      SHARED_SWITCH.value), [], capsys)
  assert code == 0 and seen == [True]
  assert "--cli_test_switch: A shared switch. (default: 'true')" in _execute(
      command, None, ["--help"], capsys)[1]
  # Other commands, and absl's FLAGS, keep the flag's own default.
  assert flags.FLAGS["cli_test_switch"].default is False
  other, _ = _command("r")
  assert _execute(other, lambda argv: seen.append(SHARED_SWITCH.value), [],
                  capsys)[0] == 0
  assert seen == [True, False]


def _raises(error):
  def main(argv):
    del argv
    raise error
  return main


@pytest.mark.parametrize("args, main, line", [
    (["--cli_test_count=abc"], None,
     "error: flag --cli_test_count=abc: invalid literal for int() with base "
     "10: 'abc'"),
    (["--nonesuch=1"], None, "error: Unknown command line flag 'nonesuch'"),
    (["extra", "words"], lambda argv: None,
     "error: unexpected arguments 'extra words' (flags are written "
     "--name=value)"),
    ([], _raises(validation.FlagError("label", "must not be empty")),
     "error: --label: must not be empty"),
    ([], _raises(config.ConfigError("max_length", "is below --min_length")),
     "error: --max_length: is below --min_length"),
])
def test_bad_input_is_one_line_and_status_2(args, main, line, capsys):
  command, _ = _command("r")
  code, stdout, stderr = _execute(command, main, args, capsys)
  assert code == 2 and not stdout
  assert stderr.splitlines() == [line]


@pytest.mark.parametrize("code, status, stderr", [
    (None, 0, ""), (0, 0, ""), (1, 1, ""), (143, 143, ""),
    ("stopped", 1, "stopped\n")])
def test_mains_exit_is_the_status_as_python_gives_it(code, status, stderr,
                                                     capsys):
  command, _ = _command("r")
  assert _execute(command, _raises(SystemExit(code)), [], capsys) == (
      status, "", stderr)


def test_help_lists_the_own_and_shared_flags_grouped_with_defaults(capsys):
  command, _ = _command("r")
  code, stdout, stderr = _execute(command, _raises(AssertionError), ["--help"],
                                  capsys)
  assert code == 0 and not stderr  # absl's own --help exits 1.
  assert stdout == command.help_text() + "\n"
  assert stdout.splitlines() == [
      "Does a thing.", "", "  python -m thing", "",
      "This tool:",
      "  --cli_test_switch: A shared switch. (default: 'false')",
      "  --label: A label.",  # No default: none shown.
      "  --results_dir: Where. (default: 'r')", "",
      "Shared:", "  --cli_test_count: A shared count. (default: '3')", "",
      "--helpfull lists absl's own flags too."]
  for spelling in ("-h", "-help", "-?", "--helpshort"):
    assert _execute(command, None, [spelling], capsys)[1] == stdout


def test_helpfull_lists_absls_flags_too(capsys):
  command, _ = _command("r")
  code, stdout, _ = _execute(command, None, ["--helpfull"], capsys)
  assert code == 0
  assert stdout.startswith("Does a thing.")
  for name in ("--results_dir", "--cli_test_count", "--verbosity",
               "--[no]helpfull"):
    assert name in stdout, name


def test_a_groups_note_follows_its_title_in_the_help(capsys):
  command, _ = _command("r", notes={"Shared": "Each takes one value."})
  stdout = _execute(command, None, ["--help"], capsys)[1]
  assert "Shared:\n  Each takes one value.\n  --cli_test_count: " in stdout


def test_several_values_are_opt_in_and_one_value_reads_as_before():
  plain = flags.FlagValues()
  cli.define_flags(_Tool, flag_values=plain)
  with pytest.raises(flags.IllegalFlagValueError):
    plain(["prog", "--tool_rate=0.25,0.5"])
  values = flags.FlagValues()
  several = cli.define_flags(_Tool, flag_values=values, several=True)
  values(["prog", "--tool_rate=0.25"])
  assert several["rate"].value == 0.25
  assert values["tool_rate"].default_as_str == plain["tool_rate"].default_as_str
  values(["prog", "--tool_rate=0.25,0.5"])
  assert cli.several_values(_Tool, several) == {"rate": (0.25, 0.5)}
