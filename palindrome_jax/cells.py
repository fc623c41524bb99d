"""Recurrent cells as pure functions over explicit pytrees of parameters.

A cell is a :class:`Cell`: ``init(key, input_dim, hidden_dim) -> params``,
``initial_carry(batch_size, hidden_dim) -> carry`` (zeros) and
``step(params, carry, x_t) -> (carry, h_t)``. A cell may also give
``project(params, x) -> u``, the part of the step that is linear in the input;
:mod:`palindrome_jax.model` then applies it to every time step at once before
the scan and ``step`` receives ``u_t`` instead of ``x_t`` (:func:`step_on_input`
runs one step from a raw input either way). That pays for wide inputs only:
with this task's 1 or 10 input features, reading a hoisted ``[T, B, 4H]``
projection costs more than the tiny per-step ``x_t W_x`` (LSTM N=20: 41-45
steps/s hoisted, 51-56 not, on a 2-core CPU), so rnn, irnn, lstm and gru do
not (the lru, whose step has no matmul of its own, does).

Cells are looked up by name in one registry: adding a cell is an init/step pair
and one :func:`register` call (see the README's "Add a cell"). Gate weights are
fused into one matrix per input so each step does one recurrent matmul.
"""

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Params = Any
Carry = Any


def zeros_carry(batch_size: int, hidden_dim: int) -> jax.Array:
  """The zero hidden state ``h_0`` of shape ``[batch_size, hidden_dim]``."""
  return jnp.zeros((batch_size, hidden_dim), jnp.float32)


class Cell(NamedTuple):
  """A recurrent cell: pure ``init``/``step`` functions (see module doc)."""

  init: Callable[[jax.Array, int, int], Params]
  step: Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]]
  initial_carry: Callable[[int, int], Carry] = zeros_carry
  project: Optional[Callable[[Params, jax.Array], jax.Array]] = None
  # Optional whole-sequence path, ``(params, carry0, u_TxBxG) -> (carry,
  # h_TxBxH)``, equal to scanning ``step`` (e.g. with a hand-derived BPTT).
  sequence: Optional[Callable[[Params, Carry, jax.Array], Any]] = None
  # Optional ``(params, carry0, u_TxBxG) -> (carry, h_BxH)``: the final carry
  # and the last step's output only, equal to ``sequence``/the scan's last.
  # :func:`palindrome_jax.model.apply` (the loss) uses it: for a cell whose
  # output is not its carry (the lru's output block), the scan then skips the
  # outputs that nobody reads, forward and backward. Like ``sequence`` it runs
  # its own loop (``--unroll`` does not reach it).
  last: Optional[Callable[[Params, Carry, jax.Array], Any]] = None
  # In ``--block=residual`` (see :mod:`palindrome_jax.model`), the expansion
  # of the gated MLP that follows this cell in each layer, as in its paper's
  # block (Griffin's recurrent block: 3); 0: none (Mamba's block has none).
  mlp_expand: float = 0.0


def step_on_input(cell: Cell, params: Params, carry: Carry,
                  x_t: jax.Array) -> tuple[Carry, jax.Array]:
  """One step of ``cell`` from a raw input ``x_t``, projecting it if needed."""
  if cell.project is not None:
    x_t = cell.project(params, x_t)
  return cell.step(params, carry, x_t)


def uniform_fan_in(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Weights uniform in ``±1/sqrt(fan_in)`` with ``fan_in = shape[0]``.

  The original's initialisation. (PyTorch's ``nn.RNN``/``nn.LSTM`` differ:
  they bound every weight by ``1/sqrt(hidden_size)``, the input weights too.)
  """
  bound = 1.0 / math.sqrt(shape[0])
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def project_input(params: Params, x: jax.Array) -> jax.Array:
  """``x @ W_x``: the input's contribution to every gate, for any leading axes."""
  return x @ params["W_x"]


def _gated_init(key: jax.Array, input_dim: int, hidden_dim: int,
                num_gates: int) -> Params:
  """Fused ``W_x [D, G*H]``, ``W_h [H, G*H]`` and zero ``b [G*H]``."""
  key_x, key_h = jax.random.split(key)
  width = num_gates * hidden_dim
  return {
      "W_x": uniform_fan_in(key_x, (input_dim, width)),
      "W_h": uniform_fan_in(key_h, (hidden_dim, width)),
      "b": jnp.zeros((width,), jnp.float32),
  }


# Vanilla RNN: h_t = tanh(x_t W_x + h_{t-1} W_h + b).


def rnn_init(key: jax.Array, input_dim: int, hidden_dim: int) -> Params:
  return _gated_init(key, input_dim, hidden_dim, num_gates=1)


def rnn_step(params: Params, h_BxH: jax.Array, x_BxD: jax.Array):
  h_BxH = jnp.tanh(x_BxD @ params["W_x"] + h_BxH @ params["W_h"]
                   + params["b"][None, :])
  return h_BxH, h_BxH


# IRNN (Le, Jaitly & Hinton 2015): a ReLU RNN whose recurrent weights start as
# the identity, so at initialisation the state is carried unchanged.


def irnn_init(key: jax.Array, input_dim: int, hidden_dim: int) -> Params:
  params = rnn_init(key, input_dim, hidden_dim)
  params["W_h"] = jnp.eye(hidden_dim, dtype=jnp.float32)
  return params


def irnn_step(params: Params, h_BxH: jax.Array, x_BxD: jax.Array):
  h_BxH = jax.nn.relu(x_BxD @ params["W_x"] + h_BxH @ params["W_h"]
                      + params["b"][None, :])
  return h_BxH, h_BxH


# LSTM (Hochreiter & Schmidhuber 1997, with a forget gate, Gers et al. 2000).
# Gates are fused in the order i, f, g, o; the carry is (c, h) as in Flax.


def lstm_init(key: jax.Array, input_dim: int, hidden_dim: int,
              forget_bias: float = 0.0,
              chrono_t_max: Optional[float] = None) -> Params:
  """LSTM parameters; ``forget_bias`` fills the forget gate's bias.

  With ``chrono_t_max`` (Tallec & Ollivier 2018, "Can recurrent neural networks
  warp time?") the forget bias is ``log(U(1, T_max - 1))`` and the input bias
  its negative, so the cell's memory time scales spread up to ``T_max``;
  ``forget_bias`` is then ignored.
  """
  key, key_chrono = jax.random.split(key)
  params = _gated_init(key, input_dim, hidden_dim, num_gates=4)
  h = hidden_dim
  if chrono_t_max is not None:
    if chrono_t_max <= 2:
      raise ValueError(f"chrono_t_max must be > 2, got {chrono_t_max}")
    b_f = jnp.log(jax.random.uniform(key_chrono, (h,), jnp.float32,
                                     1.0, chrono_t_max - 1.0))
    params["b"] = params["b"].at[h:2 * h].set(b_f).at[:h].set(-b_f)
  else:
    params["b"] = params["b"].at[h:2 * h].set(forget_bias)
  return params


def lstm_initial_carry(batch_size: int, hidden_dim: int):
  return (zeros_carry(batch_size, hidden_dim),
          zeros_carry(batch_size, hidden_dim))


def lstm_step(params: Params, carry, x_BxD: jax.Array):
  c_BxH, h_BxH = carry
  z_Bx4H = (x_BxD @ params["W_x"] + h_BxH @ params["W_h"]
            + params["b"][None, :])
  i, f, g, o = jnp.split(z_Bx4H, 4, axis=-1)
  c_BxH = jax.nn.sigmoid(f) * c_BxH + jax.nn.sigmoid(i) * jnp.tanh(g)
  h_BxH = jax.nn.sigmoid(o) * jnp.tanh(c_BxH)
  return (c_BxH, h_BxH), h_BxH


# GRU (Cho et al. 2014), in Flax's (and cuDNN's) form: the reset gate scales the
# recurrent candidate term including its bias. Gates fused in the order r, z, n.


def gru_init(key: jax.Array, input_dim: int, hidden_dim: int) -> Params:
  params = _gated_init(key, input_dim, hidden_dim, num_gates=3)
  params["b_hn"] = jnp.zeros((hidden_dim,), jnp.float32)
  return params


def gru_step(params: Params, h_BxH: jax.Array, x_BxD: jax.Array):
  hidden = h_BxH.shape[-1]
  rec_Bx3H = h_BxH @ params["W_h"]
  u_Bx3H = x_BxD @ params["W_x"] + params["b"][None, :]
  r = jax.nn.sigmoid(u_Bx3H[:, :hidden] + rec_Bx3H[:, :hidden])
  z = jax.nn.sigmoid(u_Bx3H[:, hidden:2 * hidden]
                     + rec_Bx3H[:, hidden:2 * hidden])
  n = jnp.tanh(u_Bx3H[:, 2 * hidden:]
               + r * (rec_Bx3H[:, 2 * hidden:] + params["b_hn"][None, :]))
  h_BxH = (1.0 - z) * n + z * h_BxH
  return h_BxH, h_BxH


# The registry. An entry is a factory taking the init options of
# `CELL_OPTIONS` (each factory takes the ones it uses and ignores the rest).

CELL_OPTIONS = ("forget_bias", "chrono_t_max")
_REGISTRY: dict[str, Callable[..., Cell]] = {}
_KEYS_OF: dict[str, str] = {}


def register(name: str, cell: Cell | Callable[..., Cell],
             keys_of: Optional[str] = None) -> None:
  """Registers ``cell`` (a :class:`Cell`, or a factory of options) as ``name``.

  ``keys_of``: a registered cell that ``cell`` computes another way (a
  hand-derived gradient, a parallel scan); its runs then draw that cell's
  random numbers (initial weights, batches), so the two train alike.
  """
  if not name or not name.replace("_", "").isalnum():
    raise ValueError(f"cell name must be alphanumeric or '_', got {name!r}")
  if keys_of is not None and keys_of not in _REGISTRY:
    raise KeyError(f"keys_of={keys_of!r} is not a registered cell")
  _KEYS_OF.pop(name, None)
  if keys_of is not None:
    _KEYS_OF[name] = key_name(keys_of)
  _build.cache_clear()
  if isinstance(cell, Cell):
    _REGISTRY[name] = lambda **options: cell
  elif callable(cell):
    _REGISTRY[name] = cell
  else:
    raise TypeError(f"register({name!r}, ...) needs a Cell or a factory, "
                    f"got {type(cell).__name__}")


def names() -> tuple[str, ...]:
  """Registered cell names, sorted."""
  return tuple(sorted(_REGISTRY))


def key_name(name: str) -> str:
  """The name whose random numbers runs of cell ``name`` draw: its own, or
  the ``keys_of`` it was registered with."""
  return _KEYS_OF.get(name, name)


def get(name: str, **options) -> Cell:
  """The cell registered as ``name``, built with init ``options``."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown cell {name!r}; registered: {', '.join(names())}")
  return _build(name, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=None)
def _build(name: str, options: tuple) -> Cell:
  # One Cell object per (name, options), so jit caches keyed on it are reused.
  return _REGISTRY[name](**dict(options))


def _lstm_factory(forget_bias: float = 0.0,
                  chrono_t_max: Optional[float] = None, **_) -> Cell:
  def init(key, input_dim, hidden_dim):
    return lstm_init(key, input_dim, hidden_dim, forget_bias, chrono_t_max)
  return Cell(init, lstm_step, lstm_initial_carry)


register("rnn", Cell(rnn_init, rnn_step))
register("irnn", Cell(irnn_init, irnn_step))
register("lstm", _lstm_factory)
register("gru", Cell(gru_init, gru_step))
