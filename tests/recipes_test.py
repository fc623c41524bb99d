"""The recipes in ``experiments/recipes`` parse against their tools' flags.

A recipe is an absl flagfile whose first line names its tool (``# tool:
experiments.horizon``); README.md and experiments/FINDINGS.md give their
commands as ``python -m experiments.horizon --flagfile=experiments/recipes/
<name>.flags``. A renamed flag or a bad value in a recipe should fail here,
not in a reader's terminal.

Each recipe, and each command the docs give, is parsed in process by its
tool's own flags (``cli.Command.flag_values``: the tool's flags and the
shared ones), refusing what the command line refuses (an unknown flag, a
value of the wrong type, a line that is not a flag), and then every config
field that a flag sets runs its check (``config.setting``'s ``check``:
``--optimizer=adamw`` parses as a string, and the check refuses it). Nothing
is trained.
"""

import dataclasses
import importlib
import os
import re
import shlex
import sys

from absl import flags
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES_DIR = os.path.join(REPO_ROOT, "experiments", "recipes")
DOCS = ("README.md", os.path.join("experiments", "FINDINGS.md"))
TOOL_LINE = re.compile(r"#\s*tool:\s*(experiments\.\w+)\s*$")
COMMAND = re.compile(
    r"python -m (experiments\.\w+)((?:[ \t]+(?!#)[^\s`|&;]+)*)")
RECIPE_PATH = re.compile(r"recipes/([\w./-]+?\.flags)")


def recipe_files():
  """Every recipe, as its path relative to experiments/recipes."""
  found = []
  for root, _, names in os.walk(RECIPES_DIR):
    found += [os.path.relpath(os.path.join(root, n), RECIPES_DIR)
              for n in names if n.endswith(".flags")]
  return sorted(found)


def tool_of(recipe):
  """The tool a recipe's first line names, or None."""
  with open(os.path.join(RECIPES_DIR, recipe)) as f:
    match = TOOL_LINE.match(f.readline().strip())
  return match.group(1) if match else None


def recipe_args(recipe):
  """A recipe's flags, one a line, as absl reads them (no comments)."""
  with open(os.path.join(RECIPES_DIR, recipe)) as f:
    lines = (line.strip() for line in f)
    return [line for line in lines
            if line and not line.startswith(("#", "//"))]


def doc_text(doc):
  with open(os.path.join(REPO_ROOT, doc)) as f:
    return f.read()


def doc_commands(text):
  """``(tool, args)`` of every ``python -m experiments.<tool> ...`` in a
  markdown text (lines continued with a backslash joined), ``--help`` ones
  left out."""
  commands = []
  for match in COMMAND.finditer(text.replace("\\\n", " ")):
    args = shlex.split(match.group(2))
    if not any(arg in ("--help", "--helpfull", "-h") for arg in args):
      commands.append((match.group(1), args))
  return commands


def all_commands():
  return [(doc, tool, args) for doc in DOCS
          for tool, args in doc_commands(doc_text(doc))]


def flagfiles(args):
  return [arg.split("=", 1)[1] for arg in args
          if arg.startswith("--flagfile=")]


def tool_flag_values(tool):
  """What ``tool`` parses its command line with: its command's flag values
  (absl's ``FLAGS`` for a tool that defines its flags there)."""
  module = importlib.import_module(tool)
  found = {id(v.flag_values): v.flag_values for v in list(vars(module).values())
           if isinstance(getattr(v, "flag_values", None), flags.FlagValues)}
  assert len(found) <= 1, f"{tool} has {len(found)} sets of flag values"
  return next(iter(found.values()), flags.FLAGS)


def setting_fields():
  """Flag name -> the config fields (with help and a check) it sets, from
  every dataclass of the package loaded."""
  classes = {obj for name, module in list(sys.modules.items())
             if name.startswith("palindrome_jax")
             for obj in list(vars(module).values())
             if isinstance(obj, type) and dataclasses.is_dataclass(obj)}
  fields = {}
  for config_class in classes:
    for field in dataclasses.fields(config_class):
      if field.metadata.get("help") and field.metadata.get("check"):
        name = field.metadata.get("flag") or field.name
        fields.setdefault(name, []).append(field)
  return fields


def field_problem(name, value, fields):
  """What the fields' checks say of ``--name=value``, or None. A flag that
  sets a tuple field (``--cells``, ``--lengths``) is checked as that tuple;
  a field of another type than the flag's belongs to another tool."""
  tuples = [f for f in fields if isinstance(f.default, tuple)]
  for field in tuples or fields:
    if isinstance(field.default, tuple):
      kind = type(field.default[0]) if field.default else str
      try:
        value_of_field = tuple(kind(item.strip())
                               for item in str(value).split(","))
      except ValueError:
        return f"--{name}: {value!r} is not a list of {kind.__name__}"
    else:
      kind = field.metadata.get("flag_type") or type(field.default)
      if value is None or isinstance(value, bool) != (kind is bool):
        continue
      if not isinstance(value, kind) and not (kind is float
                                              and isinstance(value, int)):
        continue
      value_of_field = value
    problem = field.metadata["check"](value_of_field)
    if problem:
      return f"--{name}: {problem}"
  return None


def problem_of(tool, args):
  """Why ``python -m <tool> <args>`` would stop before running (the parse or
  a config field's check), or None. The flags are unparsed afterwards."""
  values = tool_flag_values(tool)
  values.unparse_flags()
  try:
    try:
      rest = values(["recipe", *args])
    except flags.Error as error:
      return f"{type(error).__name__}: {error}"
    if len(rest) > 1:  # The command line refuses these.
      return f"unexpected arguments {rest[1:]}"
    fields = setting_fields()
    for name in sorted(fields):
      if name not in values or not values[name].present:
        continue
      if name == "cells" and values["cell_module"].value:
        continue  # Cells of the user's module, not importable here.
      problem = field_problem(name, values[name].value, fields[name])
      if problem:
        return problem
    return None
  finally:
    values.unparse_flags()
    flags.FLAGS.unparse_flags()


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch):
  """Recipes name repo-relative paths, as the docs run them."""
  monkeypatch.chdir(REPO_ROOT)


def test_the_docs_run_every_tool_through_recipes():
  tools = {tool for _, tool, _ in all_commands()}
  assert {"experiments.sweep", "experiments.horizon", "experiments.gradients",
          "experiments.compare", "experiments.evaluate",
          "experiments.benchmark"} <= tools
  assert {tool_of(r) for r in recipe_files()} >= tools


@pytest.mark.parametrize("recipe", recipe_files())
def test_recipe_names_its_tool_and_parses_against_its_flags(recipe):
  tool = tool_of(recipe)
  assert tool, f"{recipe}: first line is not '# tool: experiments.<tool>'"
  assert os.path.exists(os.path.join(REPO_ROOT, *tool.split(".")) + ".py"), (
      f"{recipe}: no tool {tool}")
  assert problem_of(tool, [f"--flagfile=experiments/recipes/{recipe}"]) is None


@pytest.mark.parametrize("doc, tool, args", all_commands(),
                         ids=lambda x: x if isinstance(x, str) else None)
def test_documented_command_parses_against_its_tools_flags(doc, tool, args):
  assert problem_of(tool, args) is None, (doc, args)


# Faults injected into a copy of a horizon recipe, each with what its error
# must name.
FAULTS = {
    "renamed_flag": ("--max_len=100", "max_len"),
    "bad_type": ("--seeds=three", "seeds"),
    "bad_choice": ("--optimizer=adamw", "optimizer"),
    "bad_fraction": ("--solved_accuracy=99", "solved_accuracy"),
    "unknown_cell": ("--cells=lstm,lsmt", "lsmt"),
    "no_dashes": ("max_length=100", "max_length=100"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_in_a_recipe_is_refused_naming_its_flag(fault, tmp_path):
  line, named = FAULTS[fault]
  flag = line.split("=")[0].lstrip("-")
  kept = [arg for arg in recipe_args("horizon_original_budget.flags")
          if not arg.startswith(f"--{flag}=")]
  path = tmp_path / "faulty.flags"
  path.write_text("# tool: experiments.horizon\n" + "\n".join(
      [*kept, line]) + "\n")
  assert problem_of("experiments.horizon", [  # The recipe as it is: fine.
      "--flagfile=experiments/recipes/horizon_original_budget.flags"]) is None
  problem = problem_of("experiments.horizon", [f"--flagfile={path}"])
  assert problem and named in problem, problem


def test_every_flagfile_the_docs_name_exists_and_is_for_that_tool():
  for doc, tool, args in all_commands():
    for path in flagfiles(args):
      assert path.startswith("experiments/recipes/"), (doc, path)
      recipe = path[len("experiments/recipes/"):]
      assert os.path.isfile(os.path.join(RECIPES_DIR, recipe)), (doc, path)
      assert tool_of(recipe) == tool, (doc, path, tool_of(recipe))
  for doc in DOCS:
    for recipe in RECIPE_PATH.findall(doc_text(doc)):
      assert os.path.isfile(os.path.join(RECIPES_DIR, recipe)), (doc, recipe)


def test_every_recipe_is_in_the_docs():
  text = "\n".join(doc_text(doc) for doc in DOCS)
  missing = [r for r in recipe_files() if f"recipes/{r}" not in text]
  assert not missing, missing


def test_a_command_written_out_in_the_docs_is_a_recipe_spelled_out():
  recipes = {(tool_of(r), tuple(sorted(recipe_args(r))))
             for r in recipe_files()}
  for doc, tool, args in all_commands():
    if not flagfiles(args):
      assert (tool, tuple(sorted(args))) in recipes, (
          f"{doc}: python -m {tool} {shlex.join(args)} is no recipe")


def test_doc_commands_are_read_from_code_blocks_and_prose():
  text = ("Run `python -m experiments.sweep --lengths=5,10` or\n\n"
          "    python -m experiments.horizon \\\n"
          "        --flagfile=experiments/recipes/x.flags --seeds=2  # two\n"
          "and `python -m experiments.compare --help`.\n")
  assert doc_commands(text) == [
      ("experiments.sweep", ["--lengths=5,10"]),
      ("experiments.horizon", ["--flagfile=experiments/recipes/x.flags",
                               "--seeds=2"])]
