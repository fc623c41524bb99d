"""Every setting of a training run, said once.

Each field of :class:`RunConfig` carries its default, its help text (the
entrypoints' flags are generated from it), its check (run when a config is
made: a bad value raises :class:`ConfigError` naming the field), and whether
it shapes the compiled program (``static``) or only drives the loop around
it. :meth:`RunConfig.program` keeps the static fields and resets the rest,
so a change of budget, logging or stopping never recompiles anything.

Defaults are the original notebook's configuration.
"""

import dataclasses
import math
from typing import Any, Callable, Optional

from palindrome_jax import cells as cells_lib
from palindrome_jax import data
from palindrome_jax import model
from palindrome_jax import sizing

OPTIMIZERS = ("adam", "rmsprop")
# The version of the compiled training program, kept with every run's
# settings, so a results directory never mixes runs of two versions (a
# directory of the other version is refused: train into a new one, or
# --overwrite). 1: every program vmapped over its seeds, the frozen seeds'
# state selected at every step. 2: a program of one seed (the default) runs
# without the seed axis, which is faster on a CPU but rounds float32
# differently (parameters ~1e-7 apart after 100 steps); several seeds
# (--vmap_seeds) vmapped, the frozen seeds' state restored once per chunk.
TRAINING_PROGRAM = 2
FIRST_SEED = 42  # The original notebook's seed; more seeds count up from it.
LARGEST_SEED = 2**31 - 1


class ConfigError(ValueError):
  """A setting with a bad value; ``field`` names it, ``problem`` says why."""

  def __init__(self, field: str, problem: str):
    super().__init__(f"{field}: {problem}")
    self.field = field
    self.problem = problem


Check = Callable[[Any], Optional[str]]


def setting(default: Any, help: str, check: Optional[Check] = None, *,  # pylint: disable=redefined-builtin
            static: bool = True, flag: Optional[str] = None,
            flag_type: Optional[type] = None) -> Any:
  """A dataclass field with its help, check and role (see the module doc).

  ``flag`` is the flag's name where it differs from the field's; ``flag_type``
  the flag's type where the default (None) does not say it.
  """
  return dataclasses.field(default=default, metadata={
      "help": help, "check": check, "static": static, "flag": flag,
      "flag_type": flag_type})


# Checks: each returns None when the value is fine, else the problem.


def positive_int(value) -> Optional[str]:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    return f"must be a positive integer, got {value}"
  return None


def non_negative_int(value) -> Optional[str]:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    return f"must be an integer >= 0, got {value}"
  return None


def positive_int_or_none(value) -> Optional[str]:
  return None if value is None else positive_int(value)


def positive(value) -> Optional[str]:
  if value is None or not math.isfinite(value) or value <= 0:
    return f"must be > 0, got {value}"
  return None


def finite(value) -> Optional[str]:
  if value is None or not math.isfinite(value):
    return f"must be finite, got {value}"
  return None


def fraction(value) -> Optional[str]:
  if value is None or not 0 < value <= 1:
    return f"must be in (0, 1], got {value}"
  return None


def one_of(choices) -> Check:
  def check(value):
    if value not in choices:
      return f"unknown {value!r}; choose from {', '.join(choices)}"
    return None
  return check


def registered_cell(value) -> Optional[str]:
  if value not in cells_lib.names():
    return f"unknown {value!r}; choose from {', '.join(cells_lib.names())}"
  return None


def positive_or_none(value) -> Optional[str]:
  return None if value is None else positive(value)


def chrono(value) -> Optional[str]:
  if value is not None and not value > 2:
    return f"must be > 2, got {value}"
  return finite(value) if value is not None else None


def tuple_of(name: str, check_item: Check) -> Check:
  """A check of a tuple: not empty, each item passes ``check_item``, no
  item twice."""
  def check(value):
    if not isinstance(value, tuple):
      return f"must be a tuple of {name}, got {value!r}"
    if not value:
      return "must not be empty"
    for item in value:
      problem = check_item(item)
      if problem:
        return problem
    if len(set(value)) != len(value):
      return f"repeated value in {','.join(map(str, value))}"
    return None
  return check


def _length(value) -> Optional[str]:
  if positive_int(value):
    return f"length {value} is not an integer >= 1"
  return None


def _seed(value) -> Optional[str]:
  if (isinstance(value, bool) or not isinstance(value, int)
      or not 0 <= value <= LARGEST_SEED):
    return f"seed {value} is not an integer in [0, {LARGEST_SEED}]"
  return None


cell_tuple = tuple_of("cell names", registered_cell)
length_tuple = tuple_of("lengths", _length)
seed_tuple = tuple_of("seeds", _seed)


def cells_setting() -> Any:
  """The ``cells`` field of the tools' configs (the ``--cells`` flag)."""
  return setting(
      ("rnn", "lstm"), "Comma-separated cell names from the registry (built "
      f"in: {', '.join(cells_lib.names())}; more with --cell_module).",
      cell_tuple)


def seeds_setting() -> Any:
  """The ``seeds`` field of the tools' configs (set by ``--seeds`` and
  ``--seed``: how many, counting up from which)."""
  return dataclasses.field(default=(FIRST_SEED,),
                           metadata={"check": seed_tuple})


def profile_dir_setting() -> Any:
  """The ``profile_dir`` field of the tools' configs (``--profile_dir``):
  not a setting of the runs, which train the same traced or not, so never
  recorded with their settings."""
  return setting(
      None, "Trace a few training chunks after the first (the compile left "
      "out) of each program with jax.profiler into DIR/<run>/, for "
      "TensorBoard's profile plugin (tensorboard --logdir=DIR) or Perfetto "
      "(the perfetto_trace.json.gz); unset: no trace.", _directory,
      flag_type=str)


def _directory(value) -> Optional[str]:
  if value is not None and (not isinstance(value, str) or not value.strip()):
    return f"must be a directory's path, got {value!r}"
  return None


def check_fields(instance) -> None:
  """Runs the check of every :func:`setting` field of a dataclass (a list
  given for a tuple field becomes a tuple first); the first bad value raises
  :class:`ConfigError`."""
  for field in dataclasses.fields(instance):
    value = getattr(instance, field.name)
    if isinstance(field.default, tuple) and isinstance(value, list):
      # A list where a tuple belongs: the same runs, kept hashable.
      object.__setattr__(instance, field.name, tuple(value))
    check = field.metadata.get("check")
    problem = check and check(getattr(instance, field.name))
    if problem:
      raise ConfigError(field.name, problem)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines one training run except its seed."""

  cell: str = setting(
      "lstm", "The recurrent cell, a name from the registry.",
      registered_cell, flag="cells")
  length: int = setting(
      5, "Palindrome length N: digits read before predicting the last.",
      positive_int, flag="lengths")
  batch_size: int = setting(128, "Examples per training and test batch.",
                            positive_int)
  num_hidden: int = setting(128, "Hidden units of each cell.", positive_int)
  num_params: Optional[int] = setting(
      None, "Size every cell to about this many parameters: each cell's "
      "--num_hidden becomes the width whose total parameter count (with its "
      "layers, block and readout) is closest to it; run records give the "
      "width, the count and the state size. Unset: --num_hidden.",
      positive_int_or_none, flag_type=int)
  num_layers: int = setting(
      1, "Recurrent layers, stacked layer-major (each layer's output sequence "
      "is the next layer's input); 1: the original model.", positive_int)
  block: str = setting(
      "stack", "How layers stack: stack (PyTorch's nn.LSTM(num_layers=L): "
      "layer l+1 reads layer l's outputs) or residual (an input projection, "
      "then x + cell(RMSNorm(x)) per layer, plus the gated MLP where the "
      "cell's paper has one, and a final RMSNorm).", one_of(model.BLOCKS))
  learning_rate: float = setting(1e-3, "Learning rate of the optimizer.",
                                 positive)
  optimizer: str = setting(
      "adam", "Optimizer after gradient clipping: adam or rmsprop.",
      one_of(OPTIMIZERS))
  max_norm: float = setting(
      1.0, "Clip gradients to this global norm before the optimizer sees "
      "them.", positive)
  lr_step_size: int = setting(
      0, "Multiply the learning rate by --lr_gamma every this many steps "
      "(PyTorch's StepLR, which the original used with RMSprop); 0: "
      "constant.", non_negative_int)
  lr_gamma: float = setting(0.1, "Decay factor of --lr_step_size.", fraction)
  encoding: str = setting(
      "scalar", "Input encoding: scalar (the digit as one float, the "
      "original's) or onehot (10 inputs).", one_of(data.ENCODINGS))
  forget_bias: float = setting(
      0.0, "LSTM: initial forget-gate bias (0 as the original; 1.0 per Gers "
      "et al. 2000 / Jozefowicz et al. 2015).", finite)
  chrono_t_max: Optional[float] = setting(
      None, "LSTM: chrono initialisation (Tallec & Ollivier 2018) with this "
      "T_max; overrides --forget_bias.", chrono, flag_type=float)
  chrono_per_digit: Optional[float] = setting(
      None, "LSTM: chrono initialisation with T_max = this x N, scaled with "
      "each run's length (the paper sets T_max to the range of the "
      "dependencies: N here); overrides --chrono_t_max.", positive_or_none,
      flag_type=float)
  unroll: int = setting(1, "Time steps unrolled per lax.scan iteration.",
                        positive_int)
  # No flag: the version of the code, recorded (see TRAINING_PROGRAM).
  training_program: int = setting(TRAINING_PROGRAM, None)
  # What only drives the loop.
  train_steps: int = setting(10_000, "Optimizer steps per run (the budget).",
                             positive_int, static=False)
  log_every: int = setting(
      100, "Steps between log points; each chunk between two runs as one "
      "dispatch.", positive_int, static=False)
  eval_batches: int = setting(
      100, "Fresh test batches of the final evaluation.", positive_int,
      static=False)
  stop_when_solved: bool = setting(
      False, "Stop a seed's training at the first solve check that reaches "
      "--solved_accuracy (the final test still decides its accuracy).",
      static=False)
  solved_accuracy: float = setting(
      0.99, "Accuracy (a fraction) at which a run counts as solved: the "
      "first solve check that reaches it, once confirmed, is the run's "
      "steps_to_solve (and, in the horizon search, what solves a length).",
      fraction, static=False)
  eval_every: int = setting(
      500, "Steps between solve checks (10 fresh held-out batches each; "
      "the last step is checked too); their first confirmed pass is the "
      "run's steps_to_solve.",
      positive_int, static=False)
  confirm_batches: int = setting(
      100, "A solve check that passes is confirmed on this many more fresh "
      "held-out batches before the run counts as solved (and stops); 0: the "
      "check alone.", non_negative_int, static=False)

  def __post_init__(self):
    check_fields(self)
    if self.num_params is not None:
      self._size_to_budget()
    if self.chrono_per_digit is not None and not self.chrono_t_max_used > 2:
      raise ConfigError("chrono_per_digit", f"T_max = {self.chrono_per_digit}"
                        f" x N = {self.chrono_t_max_used} must be > 2")
    try:
      self.make_cell()
    except Exception as error:  # pylint: disable=broad-except
      # A user's factory (--cell_module) that rejects the init options.
      raise ConfigError("cell", f"cannot build {self.cell!r}: "
                        f"{type(error).__name__}: {error}") from None

  def _size_to_budget(self) -> None:
    """``num_hidden`` from ``num_params`` (see :mod:`sizing`)."""
    if self.cell not in cells_lib.names():
      return  # check_fields refused it already; for type checkers.
    try:
      width = sizing.width_for(self.cell, self.num_params, self.input_dim,
                               self.num_layers, self.block)
    except ValueError as error:
      raise ConfigError("num_params", str(error)) from None
    object.__setattr__(self, "num_hidden", width)

  def program(self) -> "RunConfig":
    """The fields that shape the compiled programs, the rest at their
    defaults: the static argument of every jitted function, so settings that
    only drive the loop never cause a recompile."""
    return dataclasses.replace(self, **{
        f.name: f.default for f in dataclasses.fields(self)
        if not f.metadata["static"]})

  def training_settings(self) -> dict[str, Any]:
    """Every field but the cell and the length: what runs of one sweep (or
    search) share, and what must match for them to share a directory."""
    settings = dataclasses.asdict(self)
    del settings["cell"], settings["length"]
    if self.num_params is None:
      # Unset, it is not recorded: directories from before it match.
      del settings["num_params"]
    else:
      del settings["num_hidden"]  # Each cell's own: its records give it.
    return settings

  def make_cell(self) -> cells_lib.Cell:
    return cells_lib.get(self.cell, forget_bias=self.forget_bias,
                         chrono_t_max=self.chrono_t_max_used)

  @property
  def chrono_t_max_used(self) -> Optional[float]:
    """The chrono T_max this run's LSTM is initialised with, if any."""
    if self.chrono_per_digit is not None:
      return self.chrono_per_digit * self.length
    return self.chrono_t_max

  @property
  def input_dim(self) -> int:
    return data.input_dim(self.encoding)
