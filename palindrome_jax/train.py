"""Optimizer, loss, and the compiled training loop.

The train step is plain (testable un-jitted); :func:`train_chunk` scans it over
a chunk of steps so one dispatch runs every step between two log points, and
:func:`train_and_evaluate` runs all seeds of one (cell, length) as one program
(``jax.vmap`` over seeds), checking for divergence after every chunk.
"""

from concurrent import futures
import dataclasses
import json
import math
import os
import queue
import time
import zlib
from typing import Any, Callable, Optional, Sequence

from absl import logging
import flax.serialization
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from palindrome_jax import cells as cells_lib
from palindrome_jax import data
from palindrome_jax import io
from palindrome_jax import model

OPTIMIZERS = ("adam", "rmsprop")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines one training run except its seed.

  Defaults are the original notebook's configuration.
  """

  cell: str = "lstm"
  length: int = 5
  batch_size: int = 128
  num_hidden: int = 128
  learning_rate: float = 1e-3
  optimizer: str = "adam"
  max_norm: float = 1.0
  lr_step_size: int = 0  # RMSprop step decay every this many steps; 0: none.
  lr_gamma: float = 0.1
  encoding: str = "scalar"
  train_steps: int = 10_000
  log_every: int = 100
  eval_batches: int = 100
  forget_bias: float = 0.0
  chrono_t_max: Optional[float] = None
  unroll: int = 1

  def training_settings(self) -> dict[str, Any]:
    """Every field but the cell and the length: what runs of one sweep (or
    search) share, and what must match for them to share a directory."""
    settings = dataclasses.asdict(self)
    del settings["cell"], settings["length"]
    return settings

  def make_cell(self) -> cells_lib.Cell:
    return cells_lib.get(self.cell, forget_bias=self.forget_bias,
                         chrono_t_max=self.chrono_t_max)

  @property
  def input_dim(self) -> int:
    return data.input_dim(self.encoding)


class TrainState(train_state.TrainState):
  """Flax's TrainState (step, params, opt_state, tx) plus the run's data key."""

  data_key: jax.Array


def run_keys(seed: int, cell: str, length: int) -> tuple[jax.Array, ...]:
  """``(init, train, eval)`` keys from (seed, cell, length) alone.

  A run gets the same numbers whether it ran in a sweep, alone or resumed.
  """
  key = jax.random.PRNGKey(seed)
  key = jax.random.fold_in(key, zlib.crc32(cell.encode()) & 0x7FFFFFFF)
  key = jax.random.fold_in(key, length)
  return tuple(jax.random.split(key, 3))


def make_optimizer(cfg: RunConfig) -> optax.GradientTransformation:
  """``clip_by_global_norm`` then Adam or RMSprop (optionally step-decayed).

  Clipping comes first so the optimizer sees the clipped gradient (Pascanu et
  al. 2013, "On the difficulty of training recurrent neural networks").
  """
  if cfg.optimizer == "adam":
    opt = optax.adam(cfg.learning_rate)
  elif cfg.optimizer == "rmsprop":
    lr = cfg.learning_rate
    if cfg.lr_step_size > 0:
      lr = optax.exponential_decay(cfg.learning_rate, cfg.lr_step_size,
                                   cfg.lr_gamma, staircase=True)
    # As PyTorch's RMSprop, the original's: decay 0.99, eps outside the sqrt.
    opt = optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)
  else:
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; "
                     f"expected one of {OPTIMIZERS}")
  return optax.chain(optax.clip_by_global_norm(cfg.max_norm), opt)


def loss_and_accuracy(cell: cells_lib.Cell, params: Any, batch: data.Batch,
                      unroll: int = 1) -> tuple[jax.Array, jax.Array]:
  """Mean cross-entropy on logits, and accuracy, over ``batch``."""
  logits_BxC = model.apply(cell, params, batch.inputs, unroll_steps=unroll)
  loss = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxC, batch.targets).mean()
  accuracy = (logits_BxC.argmax(-1) == batch.targets).mean()
  return loss, accuracy


def create_train_state(key: jax.Array, data_key: jax.Array,
                       cfg: RunConfig) -> TrainState:
  params = model.init(key, cfg.make_cell(), cfg.input_dim, cfg.num_hidden)
  return TrainState.create(apply_fn=None, params=params,
                           tx=make_optimizer(cfg), data_key=data_key)


def train_step(state: TrainState, batch: data.Batch, cfg: RunConfig):
  """One optimizer step; returns ``(state, (loss, accuracy))``."""
  grad_fn = jax.value_and_grad(
      lambda p: loss_and_accuracy(cfg.make_cell(), p, batch, cfg.unroll),
      has_aux=True)
  (loss, accuracy), grads = grad_fn(state.params)
  return state.apply_gradients(grads=grads), (loss, accuracy)


def train_batch(state: TrainState, cfg: RunConfig) -> data.Batch:
  """The batch for ``state.step``: a function of the data key and step only."""
  key = jax.random.fold_in(state.data_key, state.step)
  return data.make_batch(key, cfg.length, cfg.batch_size, cfg.encoding)


def train_chunk(state: TrainState, num_steps: int, cfg: RunConfig):
  """``num_steps`` train steps in one ``lax.scan``.

  Returns the new state and chunk statistics: mean loss and accuracy, the
  number of the first step with a non-finite loss (-1 if none) and whether the
  parameters are all finite.
  """
  def body(state, _):
    step = state.step
    state, (loss, accuracy) = train_step(state, train_batch(state, cfg), cfg)
    return state, (loss, accuracy, step)

  state, (losses, accuracies, steps) = jax.lax.scan(body, state, None,
                                                    length=num_steps)
  finite = jnp.isfinite(losses)
  first_bad = jnp.where(finite.all(), -1, steps[jnp.argmin(finite)])
  params_finite = jnp.all(jnp.array(
      [jnp.isfinite(x).all() for x in jax.tree.leaves(state.params)]))
  stats = {"loss": losses.mean(), "accuracy": accuracies.mean(),
           "first_nonfinite_step": first_bad, "params_finite": params_finite}
  return state, stats


def evaluate(params: Any, eval_key: jax.Array, cfg: RunConfig):
  """Mean loss and accuracy over ``cfg.eval_batches`` fresh batches."""
  cell = cfg.make_cell()

  def body(totals, i):
    batch = data.make_batch(jax.random.fold_in(eval_key, i), cfg.length,
                            cfg.batch_size, cfg.encoding)
    loss, accuracy = loss_and_accuracy(cell, params, batch, cfg.unroll)
    return (totals[0] + loss, totals[1] + accuracy), None

  (loss, accuracy), _ = jax.lax.scan(body, (0.0, 0.0),
                                     jnp.arange(cfg.eval_batches))
  return {"loss": loss / cfg.eval_batches,
          "accuracy": accuracy / cfg.eval_batches}


# Compiled, vmapped over a leading seed axis. The state is donated: each chunk
# overwrites the previous one in place.
_init_seeds = jax.jit(jax.vmap(create_train_state, in_axes=(0, 0, None)),
                      static_argnums=2)
_chunk_seeds = jax.jit(jax.vmap(train_chunk, in_axes=(0, None, None)),
                       static_argnums=(1, 2), donate_argnums=0)
_evaluate_seeds = jax.jit(jax.vmap(evaluate, in_axes=(0, 0, None)),
                          static_argnums=2)


@dataclasses.dataclass
class SeedResult:
  """What one seed's run produced."""

  seed: int
  status: str
  test_accuracy: float
  test_loss: float
  final_train_loss: float
  final_train_accuracy: float
  history: dict[str, list]
  params: Any = dataclasses.field(repr=False, default=None)


@dataclasses.dataclass
class GroupResult:
  """All seeds of one (cell, length), with the timings they shared."""

  config: RunConfig
  seeds: list[SeedResult]
  train_steps: int
  wall_seconds: float
  compile_seconds: float
  steps_per_second: float


def _stack_keys(seeds, cfg: RunConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
  keys = [run_keys(s, cfg.cell, cfg.length) for s in seeds]
  return tuple(jnp.stack(k) for k in zip(*keys))


def seed_sharding(devices: Sequence[jax.Device], num_seeds: int):
  """Where the seed axis lives: one device, or split evenly over several.

  Seeds are independent, so splitting them over devices needs no
  communication; with fewer seeds than devices (or an uneven split) the whole
  group stays on the first device.
  """
  if len(devices) > 1 and num_seeds % len(devices) == 0:
    mesh = jax.sharding.Mesh(np.array(devices), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))
  return jax.sharding.SingleDeviceSharding(devices[0])


def map_on_devices(fn: Callable[[Any, list], Any], items: Sequence[Any],
                   devices: Sequence[jax.Device], num_seeds: int) -> list:
  """``[fn(item, devices_for_item) ...]``: how independent runs of
  ``num_seeds`` seeds each share ``devices``.

  When the seeds split evenly over the devices (see :func:`seed_sharding`),
  items run one after another, each on all devices. Otherwise they run side
  by side in threads, one device each at a time (a CPU exposing one device
  per core then puts every core to work; JAX releases the GIL while a
  compiled program runs). Results keep the order of ``items``; the first
  exception is raised once all have finished.
  """
  devices = list(devices)
  if len(devices) == 1 or num_seeds % len(devices) == 0:
    return [fn(item, devices) for item in items]
  free = queue.SimpleQueue()
  for device in devices:
    free.put(device)

  def on_free_device(item):
    device = free.get()
    try:
      return fn(item, [device])
    finally:
      free.put(device)

  with futures.ThreadPoolExecutor(len(devices)) as pool:
    jobs = [pool.submit(on_free_device, item) for item in items]
  return [job.result() for job in jobs]


def init_states(cfg: RunConfig, seeds: Sequence[int],
                sharding=None) -> TrainState:
  """The stacked initial states of ``seeds``, as :func:`train_and_evaluate`
  starts them (on ``sharding``'s devices, default the first device)."""
  init_keys, train_keys, _ = _stack_keys(seeds, cfg)
  if sharding is not None:
    init_keys, train_keys = jax.device_put((init_keys, train_keys), sharding)
  # The initial state does not depend on the length or the step budget:
  # compile it once for all of them.
  init_cfg = dataclasses.replace(cfg, length=1, train_steps=1, log_every=1,
                                 eval_batches=1, unroll=1)
  state = _init_seeds(init_keys, train_keys, init_cfg)
  if sharding is not None:
    # Constant leaves (zero biases, step counters) come out replicated; put
    # every leaf's seed axis where the chunk program leaves it, so the
    # program compiled for the first chunk accepts its own output.
    state = jax.device_put(state, sharding)
  return state


def compile_chunk(cfg: RunConfig, state: TrainState, num_steps: int):
  """The compiled chunk of :func:`train_and_evaluate`:
  ``compiled(state) -> (state, stats)``, ``num_steps`` steps per call."""
  return _chunk_seeds.lower(state, num_steps, cfg).compile()


def train_and_evaluate(
    cfg: RunConfig, seeds: Sequence[int],
    on_log: Optional[Callable[[dict], None]] = None,
    checkpoint_path: Optional[str] = None,
    checkpoint_every: int = 0,
    devices: Optional[Sequence[jax.Device]] = None) -> GroupResult:
  """Trains ``cfg`` for every seed at once and evaluates each on fresh data.

  ``on_log`` is called after every chunk with the step, per-seed loss and
  accuracy, and the throughput. A seed whose loss or parameters turn
  non-finite is marked ``diverged at step K``; training stops once all have.
  With ``checkpoint_path``, the state is saved every ``checkpoint_every``
  steps and a run finds and continues from its last checkpoint. ``devices``
  (default: the first device) hold the seeds, see :func:`seed_sharding`.
  """
  wall_start = time.perf_counter()
  seeds = tuple(seeds)
  sharding = seed_sharding(devices or jax.devices()[:1], len(seeds))
  eval_keys = jax.device_put(_stack_keys(seeds, cfg)[2], sharding)

  t = time.perf_counter()
  state = jax.block_until_ready(init_states(cfg, seeds, sharding))
  compile_seconds = time.perf_counter() - t  # Init is nearly all compile.

  history = {"step": [], "loss": [], "accuracy": []}
  diverged_at = [None] * len(seeds)
  if checkpoint_path:
    restored = _restore_checkpoint(checkpoint_path, state)
    if restored is not None:
      state, history, diverged_at = restored
      logging.info("%s N=%d: continuing from the checkpoint at step %d",
                   cfg.cell, cfg.length, int(state.step[0]))

  compiled = {}
  run_seconds = 0.0
  steps_run = 0
  step = int(state.step[0])
  while step < cfg.train_steps and None in diverged_at:
    num_steps = min(cfg.log_every, cfg.train_steps - step)
    if num_steps not in compiled:
      t = time.perf_counter()
      compiled[num_steps] = compile_chunk(cfg, state, num_steps)
      compile_seconds += time.perf_counter() - t
    t = time.perf_counter()
    state, stats = compiled[num_steps](state)
    stats = jax.device_get(stats)  # Blocks until the chunk is done.
    run_seconds += time.perf_counter() - t
    steps_run += num_steps
    step += num_steps
    for i, seed in enumerate(seeds):
      bad_step = int(stats["first_nonfinite_step"][i])
      if diverged_at[i] is None and (bad_step >= 0
                                     or not stats["params_finite"][i]):
        diverged_at[i] = bad_step if bad_step >= 0 else step
        logging.warning("%s N=%d seed %d diverged at step %d", cfg.cell,
                        cfg.length, seed, diverged_at[i])
    history["step"].append(step)
    history["loss"].append([float(x) for x in stats["loss"]])
    history["accuracy"].append([float(x) for x in stats["accuracy"]])
    if on_log is not None:
      on_log({"step": step, "loss": stats["loss"],
              "accuracy": stats["accuracy"],
              "steps_per_second": steps_run / max(run_seconds, 1e-9)})
    if checkpoint_path and checkpoint_every and (
        step % checkpoint_every == 0 and step < cfg.train_steps):
      _save_checkpoint(checkpoint_path, state, history, diverged_at)

  # Evaluation compiles and runs in one go; it is small beside training.
  evaluation = jax.device_get(_evaluate_seeds(state.params, eval_keys, cfg))
  params = jax.device_get(state.params)
  results = []
  for i, seed in enumerate(seeds):
    status = ("ok" if diverged_at[i] is None
              else f"diverged at step {diverged_at[i]}")
    last = lambda rows, i=i: rows[-1][i] if rows else math.nan
    results.append(SeedResult(
        seed=seed, status=status,
        test_accuracy=float(evaluation["accuracy"][i]),
        test_loss=float(evaluation["loss"][i]),
        final_train_loss=last(history["loss"]),
        final_train_accuracy=last(history["accuracy"]),
        history={"step": list(history["step"]),
                 "loss": [row[i] for row in history["loss"]],
                 "accuracy": [row[i] for row in history["accuracy"]]},
        params=jax.tree.map(lambda x, i=i: x[i], params)))
  return GroupResult(
      config=cfg, seeds=results, train_steps=step,
      wall_seconds=time.perf_counter() - wall_start,
      compile_seconds=compile_seconds,
      steps_per_second=steps_run / max(run_seconds, 1e-9))


# Checkpoints: the training state (less the optimizer's functions, which the
# config rebuilds), the history so far and which seeds diverged, in one
# msgpack file written atomically.


def _save_checkpoint(path, state, history, diverged_at) -> None:
  payload = {
      "state": flax.serialization.to_state_dict(
          jax.device_get(state.replace(tx=None))),
      "history": json.dumps(history),
      "diverged_at": json.dumps(diverged_at),
  }
  io.atomic_write_bytes(path, flax.serialization.msgpack_serialize(payload))


def _restore_checkpoint(path, state):
  """``(state, history, diverged_at)`` from ``path``, or None if absent."""
  if not os.path.exists(path):
    return None
  with open(path, "rb") as f:
    payload = flax.serialization.msgpack_restore(f.read())
  template = state.replace(tx=None)
  restored = flax.serialization.from_state_dict(
      jax.device_get(template), payload["state"])
  # Back onto the devices (and sharding) the fresh state lives on.
  restored = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding),
                          restored, template)
  return (restored.replace(tx=state.tx), json.loads(payload["history"]),
          json.loads(payload["diverged_at"]))
