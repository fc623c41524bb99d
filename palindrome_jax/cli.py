"""Command-line flags made from the configs' fields, and one-line errors.

A field made with :func:`palindrome_jax.config.setting` that has help text is
an absl flag: the same name (or the field's ``flag``), its default, its help;
a tuple field is a comma-separated string flag. Building the config from the
flags runs the fields' checks, so a bad value is one line that names its flag
(:class:`~palindrome_jax.validation.FlagError`): ``error: --flag: problem``
and exit status 2, as for absl's own parse errors, never a traceback.

Flags defined with ``several=True`` (the training flags) also take several
comma-separated values, a grid (:mod:`palindrome_jax.grid`): one value
parses as before; several are kept as :class:`Several`, read by
:func:`several_values` (each parsed and checked as one value would be), and
refused, one line, by a tool that builds one config (:func:`from_flags`).

A :class:`Command` is one entrypoint: its own flags, on a ``FlagValues`` of
its own (so entrypoints that each have a ``--results_dir`` import into one
process, as the tests do), the shared flags its ``--help`` lists, and
:meth:`Command.run` (the command line) and :meth:`Command.execute` (the same
in this process, for tests).
"""

import contextlib
import dataclasses
import os
import sys
import textwrap
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from palindrome_jax import config
from palindrome_jax import validation

# The spellings of --help that print the entrypoint's flags (absl's own
# print every module's and exit 1).
HELP_ARGS = ("-h", "-help", "--help", "-?", "--helpshort")


@dataclasses.dataclass(frozen=True)
class Several:
  """A flag given several comma-separated values (``text``), each to parse
  with ``parse_item``, absl's parser of the flag's type: see
  :func:`several_values`. Spelled as given."""

  text: str
  parse_item: Callable[[str], Any]

  def __str__(self) -> str:
    return self.text


class SeveralParser(flags.ArgumentParser):
  """absl's ``item_parser`` for one value (what the flag parsed before), and
  a text with a comma kept as :class:`Several` for :func:`several_values`,
  whose errors name the flag in one line."""

  def __init__(self, item_parser: flags.ArgumentParser):
    self.item_parser = item_parser

  def parse(self, argument):
    if isinstance(argument, str) and "," in argument:
      return Several(argument, self.item_parser.parse)
    return self.item_parser.parse(argument)

  def flag_type(self) -> str:
    return self.item_parser.flag_type()


# absl's parser of one value of each type (as DEFINE_integer, ... use).
_PARSERS = {int: flags.IntegerParser, float: flags.FloatParser,
            str: flags.ArgumentParser}


def define_flags(config_class, skip=(), only=None, flag_values=None,
                 several: bool = False) -> dict[str, flags.FlagHolder]:
  """One flag per field of ``config_class`` that has help text: same name (or
  the field's ``flag``), its default, its help. ``only``: just these fields.
  Returns ``{field name: FlagHolder}``. ``flag_values``: where to define them
  (default absl's ``FLAGS``). With ``several``, each flag of a number or a
  string also takes several comma-separated values (:class:`Several`); a
  bool stays one value (``--flag``/``--noflag``)."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  holders = {}
  for field in dataclasses.fields(config_class):
    if (field.name in skip or (only is not None and field.name not in only)
        or not field.metadata.get("help")):
      continue
    name = field.metadata.get("flag") or field.name
    default = field.default
    if isinstance(default, tuple):
      holders[field.name] = flags.DEFINE_string(
          name, ",".join(map(str, default)), field.metadata["help"],
          flag_values=flag_values)
      continue
    kind = field.metadata.get("flag_type") or type(default)
    if several and kind is not bool:
      holders[field.name] = flags.DEFINE(
          SeveralParser(_PARSERS[kind]()), name, default,
          field.metadata["help"], flag_values=flag_values,
          serializer=flags.ArgumentSerializer())
      continue
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
              float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
    holders[field.name] = define(name, default, field.metadata["help"],
                                 flag_values=flag_values)
  return holders



def flag_name(config_class, field_name: str) -> str:
  """The flag that sets ``field_name`` of ``config_class``."""
  for field in dataclasses.fields(config_class):
    if field.name == field_name:
      return field.metadata.get("flag") or field.name
  return field_name


def parse_items(flag: str, text: Optional[str], kind: type) -> tuple:
  """``"5, 10,15"`` to ``(5, 10, 15)`` (``kind`` int) or names (``kind``
  str); an empty text is ``()``, for the field's check to refuse."""
  if not text or not text.strip():
    return ()
  values = []
  for item in (item.strip() for item in text.split(",")):
    if not item:
      raise validation.FlagError(flag, f"empty item in {text!r}")
    try:
      values.append(kind(item))
    except ValueError:
      what = "an integer" if kind is int else f"a {kind.__name__}"
      raise validation.FlagError(
          flag, f"{item!r} is not {what} (in {text!r})") from None
  return tuple(values)


def checked(flag: str, value: Any, check: config.Check) -> Any:
  """``value`` if ``check`` passes it, else the one-line flag error."""
  problem = check(value)
  if problem:
    raise validation.FlagError(flag, problem)
  return value


def _field(config_class, field_name: str) -> dataclasses.Field:
  return next(f for f in dataclasses.fields(config_class)
              if f.name == field_name)


def _field_value(config_class, field_name: str, holder) -> Any:
  """The value a flag gives its field: for a tuple field, its
  comma-separated items as the type of its default's items. Several values
  (:class:`Several`) are refused: a config takes one."""
  default = _field(config_class, field_name).default
  if isinstance(holder.value, Several):
    raise validation.FlagError(
        holder.name, f"takes one value here, got {holder.value.text!r} "
        "(several values, a grid, train in the sweep and the horizon search)")
  if not isinstance(default, tuple):
    return holder.value
  return parse_items(holder.name, holder.value,
                     type(default[0]) if default else str)


def several_values(config_class, holders: dict[str, Any]
                   ) -> dict[str, tuple]:
  """``{field name: its values}`` for each flag of ``holders`` given several
  (:class:`Several`), in the fields' order. Each value is parsed as the flag
  parses one and checked as its field checks one; an empty item, a value of
  the wrong type, one the check refuses or one given twice (``1e-3,0.001``)
  is a one-line :class:`FlagError`. Checks that involve other fields run
  when each point's config is built (:func:`from_flags`)."""
  values = {}
  for field in dataclasses.fields(config_class):
    holder = holders.get(field.name)
    if holder is not None and isinstance(holder.value, Several):
      values[field.name] = _several(field, holder.name, holder.value)
  return values


def _several(field: dataclasses.Field, flag: str, several: Several) -> tuple:
  text = several.text
  kind = field.metadata.get("flag_type") or type(field.default)
  what = {int: "an integer", float: "a number"}.get(kind, f"a {kind.__name__}")
  check = field.metadata.get("check")
  values = []
  for item in (item.strip() for item in text.split(",")):
    if not item:
      raise validation.FlagError(flag, f"empty item in {text!r}")
    try:
      value = several.parse_item(item)
    except (TypeError, ValueError, OverflowError):
      raise validation.FlagError(
          flag, f"{item!r} is not {what} (in {text!r})") from None
    problem = check(value) if check else None
    if problem:
      raise validation.FlagError(flag, f"{problem} (in {text!r})")
    if value in values:
      raise validation.FlagError(flag, f"repeated value {item!r} (in "
                                 f"{text!r})")
    values.append(value)
  return tuple(values)


def flag_field(config_class, holders: dict[str, Any], name: str) -> Any:
  """The value the flag of ``config_class``'s field ``name`` gives it,
  checked as the field checks it (one-line :class:`FlagError`): for a value
  needed before the whole config can be built."""
  field = _field(config_class, name)
  value = _field_value(config_class, name, holders[name])
  check = field.metadata.get("check")
  if check is None:
    return value
  return checked(flag_name(config_class, name), value, check)


def from_flags(config_class, holders: dict[str, Any], **values):
  """``config_class(**values, **flag values)``, ``values`` in place of their
  flags' (a point of a grid); a bad value is a :class:`FlagError` naming
  its flag."""
  try:
    return config_class(**values, **{
        name: _field_value(config_class, name, holder)
        for name, holder in holders.items() if name not in values})
  except config.ConfigError as error:
    raise validation.FlagError(flag_name(config_class, error.field),
                               error.problem) from None


def call_main(main: Callable[[list[str]], Any], argv: list[str]) -> int:
  """Runs ``main`` on parsed flags as the command line does: a
  :class:`FlagError` or :class:`ConfigError` prints one line
  (``error: --flag: problem``) and gives status 2, no traceback. Returns the
  exit status."""
  if len(argv) > 1:
    print(f"error: unexpected arguments {' '.join(argv[1:])!r} "
          "(flags are written --name=value)", file=sys.stderr)
    return 2
  try:
    main(argv)
  except validation.FlagError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except config.ConfigError as error:  # A check of a tool's own config.
    print(f"error: --{error.field}: {error.problem}", file=sys.stderr)
    return 2
  except SystemExit as exit_:  # As Python exits: None is 0, a message 1.
    if exit_.code is None or isinstance(exit_.code, int):
      return exit_.code or 0
    print(exit_.code, file=sys.stderr)
    return 1
  return 0


class Command:
  """One entrypoint: its flags, its ``--help`` and its one-line errors.

  ``flag_values`` holds every flag absl's ``FLAGS`` has when the command is
  made (the same flag objects: what it parses, holders of ``FLAGS`` read)
  and the entrypoint's own, defined on it. ``--help`` prints ``doc``, then
  the entrypoint's own flags and the ``shared`` ones it uses, those of each
  of ``groups`` (``(title, flag names)``) apart, each with its help and
  default, under the line ``notes`` gives its title, if any. ``defaults``
  are the entrypoint's defaults for shared flags (the horizon search stops a
  seed once it solves), in force only while it parses and runs.
  """

  def __init__(self, doc: Optional[str], shared: Sequence[str] = (),
               groups: Sequence[tuple[str, Sequence[str]]] = (),
               defaults: Optional[Mapping[str, Any]] = None,
               notes: Optional[Mapping[str, str]] = None):
    self.doc = (doc or "").strip()
    self.shared = tuple(shared)
    self.groups = tuple((title, tuple(names)) for title, names in groups)
    self.notes = dict(notes or {})
    self.defaults = dict(defaults or {})
    app.define_help_flags()  # As app.run would, so --helpxml still parses.
    self.flag_values = flags.FlagValues()
    self.flag_values.append_flag_values(flags.FLAGS)
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
      for flag in module_flags:  # So that --helpfull groups them as absl does.
        self.flag_values.register_flag_by_module(module, flag)
    self._inherited = frozenset(self.flag_values)

  def own_flags(self) -> list[str]:
    """The flags the entrypoint defined on :attr:`flag_values`."""
    return [name for name in self.flag_values if name not in self._inherited]

  def help_text(self) -> str:
    """``doc``, then the flags, grouped, each with its help and default
    (``--helpfull`` lists absl's own too)."""
    with self._own_defaults():
      return self._help_text()

  def _help_text(self) -> str:
    names = set(self.own_flags()) | set(self.shared)
    grouped = {n for _, group in self.groups for n in group}
    groups = [("This tool", sorted(names - grouped))]
    groups += [(title, [n for n in group if n in names])
               for title, group in self.groups]
    lines = [self.doc, ""]
    for title, group in groups:
      if not group:
        continue
      lines.append(f"{title}:")
      if title in self.notes:
        lines.append(textwrap.fill(self.notes[title], width=79,
                                   initial_indent="  ",
                                   subsequent_indent="  "))
      for name in group:
        flag = self.flag_values[name]
        default = ("" if flag.default is None else
                   f" (default: {flag.default_as_str or repr('')})")
        lines.append(textwrap.fill(f"--{name}: {flag.help}{default}",
                                   width=79, initial_indent="  ",
                                   subsequent_indent="      "))
      lines.append("")
    lines.append("--helpfull lists absl's own flags too.")
    return "\n".join(lines)

  @contextlib.contextmanager
  def _own_defaults(self):
    """:attr:`defaults` in force in the block; the flags' own after it."""
    before = {name: self.flag_values[name].default for name in self.defaults}
    for name, value in self.defaults.items():
      self.flag_values.set_default(name, value)
    try:
      yield
    finally:
      for name, value in before.items():
        self.flag_values.set_default(name, value)

  def _parse(self, argv: Sequence[str]) -> tuple[Optional[int], list[str]]:
    """Parses ``argv`` into the flags: ``(None, the arguments left)``; or,
    with the help printed or a parse error in one line on stderr, ``(exit
    status, [])``: 0 for ``--help`` (absl's own exits 1), 2 for an error."""
    if "--helpfull" in argv[1:]:
      return self._print(f"{self.doc}\n\nflags:\n"
                         f"{self.flag_values.get_help()}"), []
    if any(arg in HELP_ARGS for arg in argv[1:]):
      return self._print(self.help_text()), []
    try:
      rest = self.flag_values(list(argv))
    except flags.Error as error:
      print(f"error: {error}", file=sys.stderr)
      return 2, []
    flags.FLAGS.mark_as_parsed()  # Its flags are those parsed here.
    return None, rest

  @staticmethod
  def _print(text: str) -> int:
    try:
      print(text, flush=True)
    except BrokenPipeError:  # `--help | head`: the reader has what it wants.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0

  def execute(self, main: Callable[[list[str]], Any],
              argv: Sequence[str]) -> int:
    """Parses ``argv`` and runs ``main`` (:func:`call_main`) in this process,
    as ``python -m`` would; returns the exit status. Every flag is as before
    afterwards, so tests run one entrypoint after another."""
    with self._own_defaults():
      try:
        status, rest = self._parse(argv)
        return call_main(main, rest) if status is None else status
      finally:
        self.flag_values.unparse_flags()
        flags.FLAGS.unparse_flags()

  def run(self, main: Callable[[list[str]], Any]) -> None:
    """``app.run(main)`` with this command's flags, its ``--help`` and
    one-line errors: an entrypoint's ``if __name__ == "__main__"``."""
    # Progress is drawn by palindrome_jax.progress; the log keeps warnings and
    # errors (--verbosity=0 brings back JAX's and absl's informational lines).
    logging.set_verbosity(logging.WARNING)

    def parse_or_exit(argv):
      status, rest = self._parse(argv)
      if status is not None:
        sys.exit(status)
      return rest

    with self._own_defaults():
      app.run(lambda argv: sys.exit(call_main(main, argv)),
              flags_parser=parse_or_exit)
