r"""The default sweep as a PyTorch user would run it: the yardstick for
``experiments.sweep``'s wall time.

    python -m experiments.torch_sweep --lengths=5,10,15,20

Trains PyTorch's fused ``nn.RNN`` / ``nn.LSTM`` (``torch_baselines.
FusedModel``: the same task, batch, clipping and optimizer) for every cell at
every length, one run after another with torch's own threads, then tests
each on ``--eval_batches`` fresh batches, and prints a row per run and the
total wall time. Needs the optional extra (``pip install
'palindrome_jax[torch]'``). It writes nothing: time it from outside, whole
process against whole process, as the findings do.
"""

import dataclasses
import sys
import time

from experiments import benchmark_torch
from experiments import common
from palindrome_jax import cli
from palindrome_jax import sweep
from palindrome_jax import validation

COMMAND = common.command(__doc__, shared=(
    *(holder.name for holder in common.RUN_FLAGS.values()),
    *(holder.name for holder in common.CELL_FLAGS.values()), "seed"))
LENGTH_FLAGS = cli.define_flags(sweep.SweepConfig, only=("lengths",),
                                flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  if not benchmark_torch.torch_installed():
    raise validation.FlagError("cells", "torch is not installed (pip install "
                               "'palindrome_jax[torch]')")
  from experiments import torch_baselines  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  lengths = cli.flag_field(sweep.SweepConfig, LENGTH_FLAGS, "lengths")
  cells = common.cell_names()
  for cell in cells:
    if cell not in torch_baselines.FUSED_CELLS:
      raise validation.FlagError("cells", f"PyTorch has no fused {cell!r} "
                                 f"(only {', '.join(torch_baselines.FUSED_CELLS)})")
  base = common.base_run_config(lengths)
  seed = common.SEED.value
  device = torch.device("cpu")
  start = time.perf_counter()
  print(f"torch {torch_baselines.version()}, "
        f"{torch_baselines.num_threads()} threads")
  for cell in cells:
    for length in lengths:
      cfg = dataclasses.replace(base, cell=cell, length=length)
      run_start = time.perf_counter()
      trainer, model, next_batch = torch_baselines.fused_run(cfg, seed, device)
      trainer(cfg.train_steps)
      with torch.no_grad():
        correct = 0
        for _ in range(cfg.eval_batches):
          inputs, targets = next_batch()
          correct += int((model(inputs).argmax(-1) == targets).sum())
      accuracy = correct / (cfg.eval_batches * cfg.batch_size)
      print(f"{cell} N={length}: test accuracy {100 * accuracy:.2f}%, "
            f"{time.perf_counter() - run_start:.1f} s", flush=True)
  print(f"{len(cells) * len(lengths)} runs in "
        f"{time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
  COMMAND.run(main)
