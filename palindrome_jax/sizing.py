"""A model's size: its parameter count, its state size, and the width that
gives a parameter budget (``--num_params``).

Comparing cells at one width rewards the wide ones: at 128 units the LSTM has
67,850 parameters and the RNN 17,930. Researchers compare at equal parameters
(MAD) or against the state size (Zoology), so both are counted here from the
model's own ``init`` (shapes only, through :func:`jax.eval_shape`: nothing is
drawn), never from a formula that a new cell could break.

- :func:`count_params`: every parameter of the model (cells of every layer,
  norms, MLPs, embedding and readout).
- :func:`state_size`: the numbers one example carries from one step to the
  next, summed over the layers (a complex number counts as two); for the
  LSTM ``2 H`` per layer, for the RNN ``H``.
- :func:`width_for`: the ``num_hidden`` whose count is closest to a budget
  (the smaller width on a tie), among the widths the cell accepts (heads
  must divide some cells' widths).
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from palindrome_jax import cells as cells_lib
from palindrome_jax import data
from palindrome_jax import model

# The widest model a budget may ask for: far beyond what trains here.
MAX_WIDTH = 1 << 14


@functools.lru_cache(maxsize=4096)
def count_params(cell: str, num_hidden: int, input_dim: int = 1,
                 num_layers: int = 1, block: str = "stack") -> Optional[int]:
  """Parameters of the model, or None where ``cell`` refuses the width."""
  built = cells_lib.get(cell)
  try:
    shapes = jax.eval_shape(
        lambda key: model.init(key, built, input_dim, num_hidden,
                               data.NUM_CLASSES, num_layers, block),
        # A key's shape, not a key: making an array would start JAX's
        # backend, and the entrypoints size cells before they set how many
        # CPU devices it has.
        jax.ShapeDtypeStruct((2,), jnp.uint32))
  except ValueError:  # The cell's own check: e.g. heads must divide it.
    return None
  return int(model.num_params(shapes))


@functools.lru_cache(maxsize=1024)
def state_size(cell: str, num_hidden: int, num_layers: int = 1) -> int:
  """Real numbers one example carries between steps, over all layers."""
  carry = jax.eval_shape(
      lambda: cells_lib.get(cell).initial_carry(1, num_hidden))
  per_layer = sum(x.size * (2 if jnp.issubdtype(x.dtype, jnp.complexfloating)
                            else 1) for x in jax.tree.leaves(carry))
  return int(per_layer) * num_layers


@functools.lru_cache(maxsize=1024)
def width_for(cell: str, num_params: int, input_dim: int = 1,
              num_layers: int = 1, block: str = "stack") -> int:
  """The width whose :func:`count_params` is closest to ``num_params``.

  Counts grow with the width, so a bisection finds the first width at or
  above the budget; the closest accepted widths on either side of it are
  compared. Raises ValueError when no width up to :data:`MAX_WIDTH` is
  accepted near the budget.
  """
  count = functools.partial(count_params, cell, input_dim=input_dim,
                            num_layers=num_layers, block=block)

  def nearest_accepted(width: int, direction: int) -> Optional[int]:
    for _ in range(256):  # Heads and blocks divide widths far more finely.
      if not 1 <= width <= MAX_WIDTH:
        return None
      if count(width) is not None:
        return width
      width += direction
    return None

  low, high = 1, MAX_WIDTH  # Find the first width counting >= num_params.
  while low < high:
    mid = (low + high) // 2
    accepted = nearest_accepted(mid, 1)
    if accepted is not None and count(accepted) >= num_params:
      high = mid
    else:
      low = mid + 1
  candidates = [w for w in (nearest_accepted(low, 1),
                            nearest_accepted(low - 1, -1)) if w is not None]
  if not candidates:
    raise ValueError(f"{cell}: no width up to {MAX_WIDTH} gives about "
                     f"{num_params} parameters")
  return min(candidates, key=lambda w: (abs(count(w) - num_params), w))
