"""Save and restore a training state, so a killed run continues exactly.

One msgpack file (Flax serialization) per run holds the stacked training
state of its seeds (less the optimizer's functions, which the config
rebuilds) and the loop's bookkeeping (history, divergence, solve checks). It
is written atomically. Flax serialization rather than orbax: a checkpoint
here is one small pytree on one host, and a single file written with
``os.replace`` is all the atomicity it needs.

A checkpoint that cannot be read (truncated by a crash, a full disk) is moved
aside to ``<name>.corrupt`` with a warning and the run starts from scratch.
"""

import json
import os
from typing import Any, Optional

from absl import logging
import flax.serialization
import jax

from palindrome_jax import files as io


def save(path: str, state: Any, loop: dict[str, Any]) -> None:
  """Writes ``state`` (its ``tx`` dropped) and the JSON-able ``loop``."""
  payload = {
      "state": flax.serialization.to_state_dict(
          jax.device_get(state.replace(tx=None))),
      "loop": json.dumps(loop),
  }
  io.atomic_write_bytes(path, flax.serialization.msgpack_serialize(payload))


def restore(path: str, state: Any) -> Optional[tuple[Any, dict[str, Any]]]:
  """``(state, loop)`` from ``path``, placed as ``state`` (the fresh state,
  which gives the structure, the optimizer and the devices); None if there
  is no checkpoint or it is unreadable (then it is moved aside)."""
  if not os.path.exists(path):
    return None
  template = state.replace(tx=None)
  try:
    with open(path, "rb") as f:
      payload = flax.serialization.msgpack_restore(f.read())
    restored = flax.serialization.from_state_dict(
        jax.device_get(template), payload["state"])
    loop = json.loads(payload["loop"])
    jax.tree.map(_check_shape, restored, jax.device_get(template))
  except Exception as error:  # pylint: disable=broad-except
    moved = io.move_aside(path)
    logging.warning("unreadable checkpoint %s (%s: %s), moved to %s; the run "
                    "starts from scratch", path, type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "", moved)
    return None
  # Back onto the devices (and sharding) the fresh state lives on.
  restored = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding),
                          restored, template)
  return restored.replace(tx=state.tx), loop


def _check_shape(restored, template):
  if getattr(restored, "shape", None) != getattr(template, "shape", None):
    raise ValueError(f"shape {getattr(restored, 'shape', None)} where "
                     f"{getattr(template, 'shape', None)} was expected")
