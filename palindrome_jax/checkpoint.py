"""Save and restore a training state, so a killed run continues exactly.

One msgpack file (Flax serialization) per run holds the stacked training
state of its seeds (less the optimizer's functions, which the config
rebuilds), the loop's bookkeeping (history, divergence, solve checks) and
the settings it trained with. It is written atomically. Flax serialization
rather than orbax: a checkpoint here is one small pytree on one host, and a
single file written with ``os.replace`` is all the atomicity it needs.

A checkpoint is continued only when its settings equal the run's. One that
cannot be read (truncated by a crash, a full disk), or that records other
settings or none (written before checkpoints kept them), is moved aside to
``<name>.corrupt`` with one warning and the run starts from scratch.
"""

import json
import os
from typing import Any, Optional

from absl import logging
import flax.serialization
import jax

from palindrome_jax import files as io
from palindrome_jax import results as results_lib


def save(path: str, state: Any, loop: dict[str, Any],
         settings: Optional[dict[str, Any]] = None) -> None:
  """Writes ``state`` (its ``tx`` dropped), the JSON-able ``loop`` and the
  JSON-able ``settings`` the state trained with."""
  payload = {
      "state": flax.serialization.to_state_dict(
          jax.device_get(state.replace(tx=None))),
      "loop": json.dumps(loop),
      "settings": json.dumps(settings, sort_keys=True),
  }
  io.atomic_write_bytes(path, flax.serialization.msgpack_serialize(payload))


def restore(path: str, state: Any,
            settings: Optional[dict[str, Any]] = None
            ) -> Optional[tuple[Any, dict[str, Any]]]:
  """``(state, loop)`` from ``path``, placed as ``state`` (the fresh state,
  which gives the structure, the optimizer and the devices); None if there
  is no checkpoint, or it is unreadable, or (given ``settings``) it was
  saved with other settings or none: then it is moved aside."""
  if not os.path.exists(path):
    return None
  template = state.replace(tx=None)
  try:
    with open(path, "rb") as f:
      payload = flax.serialization.msgpack_restore(f.read())
    saved = (json.loads(payload["settings"]) if "settings" in payload
             else None)
    restored = flax.serialization.from_state_dict(
        jax.device_get(template), payload["state"])
    loop = json.loads(payload["loop"])
    jax.tree.map(_check_shape, restored, jax.device_get(template))
  except Exception as error:  # pylint: disable=broad-except
    _move_aside(path, f"unreadable checkpoint {path} ({type(error).__name__}"
                f": {str(error).splitlines()[0] if str(error) else ''})")
    return None
  expected = json.loads(json.dumps(settings))  # As saved: JSON's types.
  if settings is not None and saved != expected:
    _move_aside(path, f"checkpoint {path} " + (
        "was saved with other settings "
        f"({', '.join(results_lib.differing(saved, expected))})"
        if isinstance(saved, dict) else
        "records no settings (saved by an older version)"))
    return None
  # Back onto the devices (and sharding) the fresh state lives on.
  restored = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding),
                          restored, template)
  return restored.replace(tx=state.tx), loop


def _move_aside(path: str, why: str) -> None:
  moved = io.move_aside(path)
  logging.warning("%s, moved to %s; the run starts from scratch", why, moved)


def _check_shape(restored, template):
  if getattr(restored, "shape", None) != getattr(template, "shape", None):
    raise ValueError(f"shape {getattr(restored, 'shape', None)} where "
                     f"{getattr(template, 'shape', None)} was expected")
