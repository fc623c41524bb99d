"""Optimizer, loss, and the compiled training loop.

The train step is plain (testable un-jitted); :func:`train_chunk` scans it over
a chunk of steps so one dispatch runs every step between two log points, and
:func:`train_and_evaluate` runs the seeds it is given as one program
(``jax.vmap`` over a leading seed axis), checking for divergence after every
chunk and, every ``eval_every`` steps, whether each seed has solved the task
(accuracy on fresh held-out batches); with ``stop_when_solved`` a solved seed
stops training there.
"""

import contextlib
import dataclasses
import functools
import math
import time
import zlib
from typing import Any, Callable, Optional, Sequence

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from palindrome_jax import cells as cells_lib
from palindrome_jax import checkpoint as checkpoint_lib
from palindrome_jax.config import OPTIMIZERS, RunConfig
from palindrome_jax import data
from palindrome_jax import devices as devices_lib
from palindrome_jax import model
from palindrome_jax import profiling
from palindrome_jax.status import Status


class TrainState(train_state.TrainState):
  """Flax's TrainState (step, params, opt_state, tx) plus the run's data key."""

  data_key: jax.Array


# Batches of each solve check: enough to tell 99% from 90% (1,280 examples).
CHECK_BATCHES = 10
_CHECK_STREAM = 0x5EED


def run_keys(seed: int, cell: str, length: int) -> tuple[jax.Array, ...]:
  """``(init, train, eval)`` keys from (seed, cell, length) alone.

  A run gets the same numbers whether it ran in a sweep, alone or resumed.
  """
  key = _run_key(seed, cell, length)
  return tuple(jax.random.split(key, 3))


def check_key(seed: int, cell: str, length: int) -> jax.Array:
  """The key of the solve checks' held-out batches: a stream apart from
  training and from the final test."""
  return jax.random.fold_in(_run_key(seed, cell, length), _CHECK_STREAM)


def _run_key(seed: int, cell: str, length: int) -> jax.Array:
  key = jax.random.PRNGKey(seed)
  name = cells_lib.key_name(cell)  # rnn_bptt draws rnn's numbers.
  key = jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
  return jax.random.fold_in(key, length)


def make_optimizer(cfg: RunConfig) -> optax.GradientTransformation:
  """``clip_by_global_norm`` then Adam or RMSprop (optionally step-decayed).

  Clipping comes first so the optimizer sees the clipped gradient (Pascanu et
  al. 2013, "On the difficulty of training recurrent neural networks").
  """
  lr = cfg.learning_rate
  if cfg.lr_step_size > 0:  # PyTorch's StepLR: lr x gamma^(step // size).
    lr = optax.exponential_decay(cfg.learning_rate, cfg.lr_step_size,
                                 cfg.lr_gamma, staircase=True)
  if cfg.optimizer == "adam":
    opt = optax.adam(lr)
  elif cfg.optimizer == "rmsprop":
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


def init_params(key: jax.Array, cfg: RunConfig) -> Any:
  """The model's initial parameters for ``cfg`` (cell, depth, block)."""
  return model.init(key, cfg.make_cell(), cfg.input_dim, cfg.num_hidden,
                    num_layers=cfg.num_layers, block=cfg.block)


def create_train_state(key: jax.Array, data_key: jax.Array,
                       cfg: RunConfig) -> TrainState:
  params = init_params(key, cfg)
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


def train_chunk(state: TrainState, active: jax.Array, num_steps: int,
                cfg: RunConfig):
  """``num_steps`` train steps in one ``lax.scan``.

  Where ``active`` is false the state comes out as it went in (a seed that
  has solved the task while others in its program train on): its steps run
  and their result is dropped once, at the end of the chunk, not selected at
  every step. Returns the new state and chunk statistics: mean loss and
  accuracy, the number of the first step with a non-finite loss (-1 if none)
  and whether the parameters are all finite.
  """
  def body(state, _):
    step = state.step
    state, (loss, accuracy) = train_step(state, train_batch(state, cfg), cfg)
    return state, (loss, accuracy, step)

  new_state, (losses, accuracies, steps) = jax.lax.scan(body, state, None,
                                                        length=num_steps)
  state = jax.tree.map(lambda new, old: jnp.where(active, new, old),
                       new_state, state)
  finite = jnp.isfinite(losses)
  first_bad = jnp.where(finite.all(), -1, steps[jnp.argmin(finite)])
  params_finite = jnp.all(jnp.array(
      [jnp.isfinite(x).all() for x in jax.tree.leaves(state.params)]))
  stats = {"loss": losses.mean(), "accuracy": accuracies.mean(),
           "first_nonfinite_step": first_bad, "params_finite": params_finite}
  return state, stats


def _one_seed(chunk_fn):
  """``chunk_fn`` on a seed axis of one, run without it: the seed is taken
  out inside the program (a free reshape) and put back after, so the state
  keeps the layout of every other program while the steps run unbatched (a
  vmapped matmul with a batch of one is a slower kernel on a CPU)."""
  @functools.wraps(chunk_fn)  # Compile logs name it train_chunk still.
  def run(state, active, *args):
    state, stats = chunk_fn(jax.tree.map(lambda x: x[0], state), active[0],
                            *args)
    return jax.tree.map(lambda x: x[None], (state, stats))
  return run


def evaluate(params: Any, eval_key: jax.Array, cfg: RunConfig,
             num_batches: Optional[int] = None):
  """Mean loss and accuracy over ``num_batches`` (default
  ``cfg.eval_batches``) fresh batches drawn from ``eval_key``."""
  cell = cfg.make_cell()
  num_batches = num_batches or cfg.eval_batches

  def body(totals, i):
    batch = data.make_batch(jax.random.fold_in(eval_key, i), cfg.length,
                            cfg.batch_size, cfg.encoding)
    loss, accuracy = loss_and_accuracy(cell, params, batch, cfg.unroll)
    return (totals[0] + loss, totals[1] + accuracy), None

  (loss, accuracy), _ = jax.lax.scan(body, (0.0, 0.0),
                                     jnp.arange(num_batches))
  return {"loss": loss / num_batches, "accuracy": accuracy / num_batches}


def solve_check(params: Any, key: jax.Array, step: jax.Array,
                cfg: RunConfig, num_batches: int = CHECK_BATCHES,
                stream: int = 0) -> jax.Array:
  """Accuracy on ``num_batches`` held-out batches, fresh at each ``step``
  (from ``key``, apart from training and the final test); ``stream`` 1 draws
  the confirmation's batches, apart from the check's."""
  key = jax.random.fold_in(jax.random.fold_in(key, stream), step)
  return evaluate(params, key, cfg, num_batches)["accuracy"]




# Compiled, vmapped over a leading seed axis; ``cfg`` is always
# ``cfg.program()``. The state is donated: each chunk overwrites the previous
# one in place.
_init_seeds = jax.jit(jax.vmap(create_train_state, in_axes=(0, 0, None)),
                      static_argnums=2)
_chunk_seeds = jax.jit(jax.vmap(train_chunk, in_axes=(0, 0, None, None)),
                       static_argnums=(2, 3), donate_argnums=0)
_chunk_one_seed = jax.jit(_one_seed(train_chunk), static_argnums=(2, 3),
                          donate_argnums=0)
_evaluate_seeds = jax.jit(jax.vmap(evaluate, in_axes=(0, 0, None, None)),
                          static_argnums=(2, 3))
_check_seeds = jax.jit(
    jax.vmap(solve_check, in_axes=(0, 0, None, None, None, None)),
    static_argnums=(3, 4, 5))


@dataclasses.dataclass
class SeedResult:
  """What one seed's run produced.

  ``steps_to_solve`` is the step of the first solve check that reached
  ``solved_accuracy`` (None if none did); ``train_steps`` the steps this seed
  trained (fewer than the budget when it stopped once solved, or diverged).
  """

  seed: int
  status: Status
  test_accuracy: float
  test_loss: float
  final_train_loss: float
  final_train_accuracy: float
  history: dict[str, list]
  params: Any = dataclasses.field(repr=False, default=None)
  steps_to_solve: Optional[int] = None
  train_steps: Optional[int] = None


@dataclasses.dataclass
class GroupResult:
  """All seeds of one program, with the timings they shared."""

  config: RunConfig
  seeds: list[SeedResult]
  train_steps: int
  wall_seconds: float  # Over every sitting of a run continued from a checkpoint.
  compile_seconds: float  # These two: this sitting's.
  steps_per_second: float
  resumed_from: int = 0  # The checkpoint's step, when it continued from one.


def _stack_keys(seeds, cfg: RunConfig) -> tuple[jax.Array, ...]:
  """Stacked ``(init, train, eval, check)`` keys of ``seeds``."""
  keys = [run_keys(s, cfg.cell, cfg.length) + (check_key(s, cfg.cell,
                                                         cfg.length),)
          for s in seeds]
  return tuple(jnp.stack(k) for k in zip(*keys))


def init_states(cfg: RunConfig, seeds: Sequence[int],
                sharding=None) -> TrainState:
  """The stacked initial states of ``seeds``, as :func:`train_and_evaluate`
  starts them (on ``sharding``'s devices, default the first device)."""
  init_keys, train_keys, _, _ = _stack_keys(seeds, cfg)
  if sharding is not None:
    init_keys, train_keys = jax.device_put((init_keys, train_keys), sharding)
  # The init may depend on the length (--chrono_per_digit), so it compiles
  # per (cell, length), as the chunk does; it is a small program.
  state = _init_seeds(init_keys, train_keys, cfg.program())
  if sharding is not None:
    # Constant leaves (zero biases, step counters) come out replicated; put
    # every leaf's seed axis where the chunk program leaves it, so the
    # program compiled for the first chunk accepts its own output.
    state = jax.device_put(state, sharding)
  return state


def compile_chunk(cfg: RunConfig, state: TrainState, num_steps: int,
                  active: Optional[jax.Array] = None):
  """The compiled chunk of :func:`train_and_evaluate`:
  ``compiled(state, active) -> (state, stats)``, ``num_steps`` steps a call.
  A program of one seed runs unbatched (:func:`_one_seed`), one of several
  vmapped over them; see ``config.TRAINING_PROGRAM``."""
  if active is None:
    active = jnp.ones(state.step.shape, bool)
  chunk = _chunk_one_seed if state.step.shape == (1,) else _chunk_seeds
  return chunk.lower(state, active, num_steps, cfg.program()).compile()


@dataclasses.dataclass
class Loop:
  """The loop's bookkeeping besides the train state, per seed; what a
  checkpoint keeps beside the state (:meth:`as_dict`, :meth:`from_dict`).

  ``history``: the step, per-seed loss and accuracy after every chunk;
  ``checks``: the step, per-seed accuracy (and, where it passed, the
  confirmation's) of every solve check; ``diverged_at``: the first bad step;
  ``stopped_at``: the end of the chunk where a seed diverged; ``solved_at``:
  the step of its first confirmed solve check; ``wall_seconds``: the wall
  time of the run so far, over every sitting (to the last chunk's end).
  """

  history: dict[str, list]
  checks: dict[str, list]
  diverged_at: list[Optional[int]]
  solved_at: list[Optional[int]]
  stopped_at: list[Optional[int]]
  wall_seconds: float = 0.0

  @classmethod
  def start(cls, num_seeds: int) -> "Loop":
    return cls(history={"step": [], "loss": [], "accuracy": []},
               checks={"step": [], "accuracy": [], "confirm_accuracy": []},
               diverged_at=[None] * num_seeds, solved_at=[None] * num_seeds,
               stopped_at=[None] * num_seeds)

  @classmethod
  def from_dict(cls, loop: dict[str, Any]) -> "Loop":
    """A checkpoint's loop. Checkpoints written before ``stopped_at``, the
    confirmations and the wall time were kept lack them: None where unknown
    (no wall time: 0, the sittings before uncounted)."""
    num_seeds = len(loop["diverged_at"])
    checks = dict(loop["checks"])
    confirm = checks.get("confirm_accuracy", [])
    checks["confirm_accuracy"] = ([[None] * num_seeds]
                                  * (len(checks["step"]) - len(confirm))
                                  + confirm)
    return cls(history=loop["history"], checks=checks,
               diverged_at=loop["diverged_at"], solved_at=loop["solved_at"],
               stopped_at=loop.get("stopped_at", [None] * num_seeds),
               wall_seconds=float(loop.get("wall_seconds", 0.0)))

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @property
  def step(self) -> int:
    """The steps trained so far (the last chunk's end)."""
    return self.history["step"][-1] if self.history["step"] else 0

  def training(self, i: int, cfg: RunConfig) -> bool:
    """Whether seed ``i`` still trains: not diverged, and not solved when
    solved seeds stop."""
    return self.diverged_at[i] is None and not (
        cfg.stop_when_solved and self.solved_at[i] is not None)

  def active(self, cfg: RunConfig) -> list[bool]:
    return [self.training(i, cfg) for i in range(len(self.diverged_at))]

  def unfinished(self, cfg: RunConfig) -> bool:
    return self.step < cfg.train_steps and any(self.active(cfg))


def _chunk_length(cfg: RunConfig, step: int) -> int:
  """Steps of the next chunk: to the next log point, solve check or the
  budget's end, whichever comes first."""
  return min(cfg.log_every, cfg.train_steps - step,
             cfg.eval_every - step % cfg.eval_every)


def _is_check_step(cfg: RunConfig, step: int) -> bool:
  # The budget's last step is checked too, on the grid or not.
  return step % cfg.eval_every == 0 or step == cfg.train_steps


def _record_chunk(loop: Loop, stats: dict[str, Any], active: list[bool],
                  cfg: RunConfig, seeds: Sequence[int]) -> None:
  """Appends the chunk's statistics to the history and marks the seeds
  whose loss or parameters turned non-finite (or blew up) as diverged."""
  step = loop.step + _chunk_length(cfg, loop.step)
  for i, seed in enumerate(seeds):
    bad_step = int(stats["first_nonfinite_step"][i])
    if active[i] and (bad_step >= 0 or not stats["params_finite"][i]
                      or stats["loss"][i] > DIVERGED_LOSS):
      loop.diverged_at[i] = bad_step if bad_step >= 0 else step
      loop.stopped_at[i] = step
      logging.warning("%s N=%d seed %d diverged at step %d", cfg.cell,
                      cfg.length, seed, loop.diverged_at[i])
  loop.history["step"].append(step)
  loop.history["loss"].append([float(x) for x in stats["loss"]])
  loop.history["accuracy"].append([float(x) for x in stats["accuracy"]])


def _solve_check(loop: Loop, params: Any, check_keys: jax.Array,
                 cfg: RunConfig) -> None:
  """Checks every seed on held-out batches at ``loop.step``; a pass is
  confirmed on ``cfg.confirm_batches`` more before it counts as solved."""
  step, program, num_seeds = loop.step, cfg.program(), len(loop.solved_at)
  accuracy = jax.device_get(_check_seeds(params, check_keys, step, program,
                                         CHECK_BATCHES, 0))
  passing = [i for i in range(num_seeds)
             if loop.solved_at[i] is None and loop.diverged_at[i] is None
             and accuracy[i] >= cfg.solved_accuracy]
  confirmed = [None] * num_seeds
  if passing and cfg.confirm_batches:
    # A pass on 10 batches is confirmed on many more before it counts: a
    # run stopped on a lucky check would then miss the final test.
    confirmed = [float(a) for a in jax.device_get(_check_seeds(
        params, check_keys, step, program, cfg.confirm_batches, 1))]
    passing = [i for i in passing if confirmed[i] >= cfg.solved_accuracy]
  loop.checks["step"].append(step)
  loop.checks["accuracy"].append([float(a) for a in accuracy])
  loop.checks["confirm_accuracy"].append(
      [confirmed[i] if accuracy[i] >= cfg.solved_accuracy else None
       for i in range(num_seeds)])
  for i in passing:
    loop.solved_at[i] = step


def _check_at(loop: Loop, step: int) -> Optional[dict[str, list]]:
  """The per-seed accuracies of the solve check at ``step``, and of its
  confirmations (None where there was none); None if no check ran there."""
  checks = loop.checks
  if not checks["step"] or checks["step"][-1] != step:
    return None
  return {"accuracy": checks["accuracy"][-1],
          "confirm_accuracy": checks["confirm_accuracy"][-1]}


def _seed_history(loop: Loop, i: int, last_step: Optional[int]) -> dict:
  """Seed ``i``'s own history, ending where it stopped training."""
  h, checks = loop.history, loop.checks
  kept = [k for k, s in enumerate(h["step"])
          if last_step is None or s <= last_step]
  checked = [k for k, s in enumerate(checks["step"])
             if last_step is None or s <= last_step]
  return {"step": [h["step"][k] for k in kept],
          "loss": [h["loss"][k][i] for k in kept],
          "accuracy": [h["accuracy"][k][i] for k in kept],
          "check_step": [checks["step"][k] for k in checked],
          "check_accuracy": [checks["accuracy"][k][i] for k in checked],
          # At checks that passed, the confirmation's accuracy (None where
          # not confirmed or a checkpoint predates the record).
          "check_confirm_accuracy": [checks["confirm_accuracy"][k][i]
                                     for k in checked]}


def _seed_results(loop: Loop, evaluation: dict[str, Any], params: Any,
                  cfg: RunConfig, seeds: Sequence[int]) -> list[SeedResult]:
  results = []
  for i, seed in enumerate(seeds):
    if loop.diverged_at[i] is not None:
      status = Status.diverged(loop.diverged_at[i])
      last_step = loop.stopped_at[i] or _chunk_end(loop.history["step"],
                                                   loop.diverged_at[i])
    else:
      status = Status.OK
      last_step = loop.solved_at[i] if cfg.stop_when_solved else None
    own = _seed_history(loop, i, last_step)
    results.append(SeedResult(
        seed=seed, status=status,
        test_accuracy=float(evaluation["accuracy"][i]),
        test_loss=float(evaluation["loss"][i]),
        final_train_loss=own["loss"][-1] if own["loss"] else math.nan,
        final_train_accuracy=(own["accuracy"][-1] if own["accuracy"]
                              else math.nan),
        history=own,
        params=jax.tree.map(lambda x, i=i: x[i], params),
        steps_to_solve=loop.solved_at[i],
        train_steps=own["step"][-1] if own["step"] else 0))
  return results


def train_and_evaluate(
    cfg: RunConfig, seeds: Sequence[int],
    on_log: Optional[Callable[[dict], None]] = None,
    checkpoint_path: Optional[str] = None,
    checkpoint_every: int = 0,
    devices: Optional[Sequence[jax.Device]] = None,
    should_stop: Callable[[], bool] = lambda: False,
    profile_dir: Optional[str] = None) -> GroupResult:
  """Trains ``cfg`` for every seed at once and evaluates each on fresh data.

  Every ``cfg.eval_every`` steps (and at the last) each seed is checked on
  held-out batches (:func:`solve_check`); the first check at or above
  ``cfg.solved_accuracy`` gives its ``steps_to_solve``, and with
  ``cfg.stop_when_solved`` that seed's state is frozen from then on;
  training ends when every seed is solved, diverged or out of budget. A
  seed whose loss or parameters turn non-finite is marked ``diverged at step
  K``. ``on_log`` is called after every chunk with the step, per-seed loss
  and accuracy, the throughput, which seeds trained in the chunk
  (``active``), the step a checkpoint continued from (``resumed_from``) and,
  after a solve check, its per-seed accuracies (``check``; else None).

  With ``checkpoint_path``, the state is saved every ``checkpoint_every``
  steps (at the end of the chunk that reaches or crosses each multiple; 0:
  never) and at a stop, with the settings it trains with
  (:func:`checkpoint_settings`); a run continues from the checkpoint there
  only if it was saved with the same settings. A checkpoint that cannot be
  written (a full disk) is one warning, and training goes on.
  ``should_stop`` is asked after every chunk that leaves the run unfinished:
  when it returns true, the state is checkpointed (with
  ``checkpoint_path``, whatever ``checkpoint_every``) and
  :class:`Interrupted` is raised (a finished run is evaluated and returned
  as usual). ``devices``
  (default: the first device) hold the seeds, see
  :func:`devices.seed_sharding`. With ``profile_dir``, a few chunks after
  the first are traced there (:class:`profiling.ChunkTrace`).
  """
  wall_start = time.perf_counter()
  seeds = tuple(seeds)
  program = cfg.program()
  sharding = devices_lib.seed_sharding(devices or jax.local_devices()[:1],
                                       len(seeds))
  _, _, eval_keys, check_keys = jax.device_put(_stack_keys(seeds, cfg),
                                               sharding)
  t = time.perf_counter()
  state = jax.block_until_ready(init_states(cfg, seeds, sharding))
  compile_seconds = time.perf_counter() - t  # Init is nearly all compile.
  settings = checkpoint_settings(cfg, seeds)
  state, loop = _restore(checkpoint_path, state, cfg, settings)
  resumed_from = loop.step
  earlier_seconds = loop.wall_seconds  # The sittings before this one.

  compiled, run_seconds, steps_run = {}, 0.0, 0
  with contextlib.closing(profiling.ChunkTrace(profile_dir)) as trace:
    while loop.unfinished(cfg):
      num_steps = _chunk_length(cfg, loop.step)
      active = loop.active(cfg)
      active_S = jax.device_put(np.array(active), sharding)
      if num_steps not in compiled:
        t = time.perf_counter()
        compiled[num_steps] = compile_chunk(cfg, state, num_steps, active_S)
        compile_seconds += time.perf_counter() - t
      t = time.perf_counter()
      with trace.chunk():
        state, stats = compiled[num_steps](state, active_S)
        stats = jax.device_get(stats)  # Blocks until the chunk is done.
      run_seconds += time.perf_counter() - t
      steps_run += num_steps
      _record_chunk(loop, stats, active, cfg, seeds)
      if _is_check_step(cfg, loop.step):
        _solve_check(loop, state.params, check_keys, cfg)
      if on_log is not None:
        on_log({"step": loop.step, "loss": stats["loss"],
                "accuracy": stats["accuracy"],
                "steps_per_second": steps_run / max(run_seconds, 1e-9),
                "solved": [s is not None for s in loop.solved_at],
                "active": active, "resumed_from": resumed_from,
                "check": _check_at(loop, loop.step)})
      loop.wall_seconds = earlier_seconds + time.perf_counter() - wall_start
      _checkpoint_or_stop(loop, state, cfg, num_steps, checkpoint_path,
                          checkpoint_every, should_stop, settings)

  # Evaluation compiles and runs in one go; it is small beside training.
  evaluation = jax.device_get(_evaluate_seeds(state.params, eval_keys,
                                              program, cfg.eval_batches))
  return GroupResult(
      config=cfg,
      seeds=_seed_results(loop, evaluation, jax.device_get(state.params),
                          cfg, seeds),
      train_steps=loop.step,
      wall_seconds=earlier_seconds + time.perf_counter() - wall_start,
      compile_seconds=compile_seconds,
      steps_per_second=steps_run / max(run_seconds, 1e-9),
      resumed_from=resumed_from)


def checkpoint_settings(cfg: RunConfig,
                        seeds: Sequence[int]) -> dict[str, Any]:
  """What a checkpoint of ``seeds`` trained as ``cfg`` records, and must
  match to be continued: the cell, the length, the seeds and every training
  setting (the training program's version among them)."""
  return {"cell": cfg.cell, "length": cfg.length, "seeds": list(seeds),
          **cfg.training_settings()}


def _restore(checkpoint_path: Optional[str], state: TrainState,
             cfg: RunConfig, settings: dict[str, Any]
             ) -> tuple[TrainState, Loop]:
  """The checkpoint's state and loop, if there is one saved with these
  ``settings``; else a fresh loop."""
  restored = checkpoint_path and checkpoint_lib.restore(checkpoint_path, state,
                                                        settings)
  if not restored:
    return state, Loop.start(len(settings["seeds"]))
  state, loop = restored
  logging.info("%s N=%d: continuing from the checkpoint at step %d",
               cfg.cell, cfg.length, int(state.step.max()))
  return state, Loop.from_dict(loop)


def _checkpoint_or_stop(loop: Loop, state: TrainState, cfg: RunConfig,
                        num_steps: int, checkpoint_path: Optional[str],
                        checkpoint_every: int,
                        should_stop: Callable[[], bool],
                        settings: dict[str, Any]) -> None:
  """Saves a checkpoint when the chunk crossed a multiple of
  ``checkpoint_every`` or a stop was asked; raises :class:`Interrupted` on
  a stop. A finished run (budget spent, every seed done) is never stopped:
  it evaluates rather than being thrown away. A save that fails is a
  warning (at a stop, :class:`Interrupted` says why instead)."""
  unfinished = loop.unfinished(cfg)
  stopping = unfinished and should_stop()
  step = loop.step
  # Solve checks can end chunks off the log_every grid: a chunk that
  # crosses a multiple of checkpoint_every saves.
  due = checkpoint_every and (
      step // checkpoint_every > (step - num_steps) // checkpoint_every)
  problem = None
  if checkpoint_path and unfinished and (due or stopping):
    try:
      checkpoint_lib.save(checkpoint_path, state, loop.as_dict(), settings)
    except OSError as error:
      problem = error.strerror or str(error)
      if not stopping:
        logging.warning("cannot save the checkpoint %s at step %d: %s; "
                        "training goes on", checkpoint_path, step, problem)
  if stopping:
    raise Interrupted(f"{cfg.cell} N={cfg.length} stopped at step {step}",
                      step=step, saved=bool(checkpoint_path) and not problem,
                      problem=problem)


def _chunk_end(steps: Sequence[int], diverged_at: int) -> int:
  """The end of the chunk holding step ``diverged_at``, for a checkpoint
  that did not record it."""
  return next((s for s in steps if s > diverged_at), steps[-1])


class Interrupted(Exception):
  """Training was asked to stop (``should_stop``) before its budget, at
  ``step``; ``saved`` says whether its checkpoint was written there (if
  not, ``problem`` says why: None when no checkpoint was asked for)."""

  def __init__(self, message: str = "interrupted", step: int = 0,
               saved: bool = False, problem: Optional[str] = None):
    super().__init__(message)
    self.step = step
    self.saved = saved
    self.problem = problem


# A loss this far above chance (log 10 = 2.3) is no longer training: the run is
# marked diverged even while its numbers stay finite (say, a learning rate of
# 1e6 with clipping off).
DIVERGED_LOSS = 1e3


def estimate_memory(cfg: RunConfig, num_seeds: int = 1) -> int:
  """Bytes a training run of ``cfg`` needs, roughly: what backpropagation
  through time keeps for every step (each intermediate of one cell step, an
  upper bound), the inputs, and the parameters with their gradients and
  optimizer state. Traced only; nothing is compiled or allocated."""
  cell = cfg.make_cell()
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  params = jax.eval_shape(lambda k: init_params(k, cfg), key)
  carry = jax.eval_shape(
      lambda: cell.initial_carry(cfg.batch_size, cfg.num_hidden))
  per_step = 0
  for l, cell_params in enumerate(model.layer_cell_params(params)):
    width = cfg.input_dim if l == 0 and cfg.block == "stack" else cfg.num_hidden
    x_BxD = jax.ShapeDtypeStruct((cfg.batch_size, width), jnp.float32)
    if cell.project is not None:  # The step reads the projected input.
      x_BxD = jax.eval_shape(lambda p, x: cell.project(p, x[None])[0],
                             cell_params, x_BxD)
    step_jaxpr = jax.make_jaxpr(cell.step)(cell_params, carry, x_BxD)
    per_step += sum(v.aval.size * v.aval.dtype.itemsize
                    for eqn in step_jaxpr.eqns for v in eqn.outvars)
  inputs = cfg.batch_size * cfg.length * cfg.input_dim * 4
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  return num_seeds * (cfg.length * per_step + inputs + 5 * param_bytes)
