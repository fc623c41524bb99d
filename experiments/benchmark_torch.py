"""The PyTorch baselines as benchmark methods (:class:`benchmark.Method`).

Importable without torch: :mod:`experiments.torch_baselines`, which needs it,
is imported only when torch is installed and wanted.
"""

import importlib.util

from palindrome_jax import benchmark
from palindrome_jax import train

MODES = ("auto", "on", "off")
LABELS = {
    "torch_original": "torch original (eager cells + per-example loader)",
    "torch_fused": "torch fused (nn.RNN / nn.LSTM / nn.GRU)",
}


def torch_installed() -> bool:
  return importlib.util.find_spec("torch") is not None


def torch_methods(mode: str) -> tuple[dict[str, benchmark.Method], dict]:
  """The PyTorch baselines as benchmark methods, and what to say of torch
  in the report; with --torch=off or no torch, rows that say why not."""
  if mode == "off" or not torch_installed():
    reason = "--torch=off" if mode == "off" else "torch is not installed"

    def skipped(cfg, seed, steps):
      del cfg, seed, steps
      raise benchmark.Skip(reason)

    return ({key: benchmark.Method(label, skipped)
             for key, label in LABELS.items()}, {})
  from experiments import torch_baselines  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  def prepare(which):
    def run(cfg: train.RunConfig, seed: int, steps: int):
      cells = (torch_baselines.ORIGINAL_CELLS if which == "original"
               else torch_baselines.FUSED_CELLS)
      if cfg.cell not in cells:
        raise benchmark.Skip(
            f"{'the original' if which == 'original' else 'PyTorch'} has no "
            f"{cfg.cell} (only {', '.join(cells)})")
      device = torch_baselines.device_for(jax.default_backend())
      make = (torch_baselines.original_trainer if which == "original"
              else torch_baselines.fused_trainer)
      return benchmark.Prepared(make(cfg, seed, device), None,
                                warmup_steps=min(steps, 10))
    return run

  machine = {"torch": torch_baselines.version(),
             "torch_threads": torch_baselines.num_threads(),
             "torch_device": str(torch_baselines.device_for(
                 jax.default_backend()))}
  return ({"torch_original": benchmark.Method(
      LABELS["torch_original"], prepare("original")),
           "torch_fused": benchmark.Method(LABELS["torch_fused"],
                                           prepare("fused"))}, machine)
