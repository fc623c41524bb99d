r"""Measures training steps/s: eager, jit step, compiled loop, Flax, PyTorch.

    python -m experiments.benchmark --cells=rnn,lstm --lengths=5,20

Writes benchmark.json, benchmark.md and benchmark.png to --results_dir and
prints the table. PyTorch rows need the optional extra (pip install
'palindrome_jax[torch]').
"""

import importlib.util

from absl import flags

from experiments import benchmark_report
from experiments import common
from palindrome_jax import benchmark
from palindrome_jax import train
from palindrome_jax import validation

TORCH_MODES = ("auto", "on", "off")
TORCH_LABELS = {
    "torch_original": "torch original (eager cells + per-example loader)",
    "torch_fused": "torch fused (nn.RNN / nn.LSTM / nn.GRU)",
}

LENGTHS = flags.DEFINE_string("lengths", "5,20",
                              "Comma-separated palindrome lengths N to time.")
BENCHMARK_FLAGS = common.define_flags(
    benchmark.BenchmarkConfig, skip=("cells", "lengths", "base", "seed",
                                     "methods"))
RESULTS_DIR = flags.DEFINE_string("results_dir", "benchmark_results",
                                  "Where benchmark.json, .md and .png go.")
TORCH = flags.DEFINE_string(
    "torch", "auto", "PyTorch rows: auto (when torch is installed), on "
    "(required) or off.")


# --help lists the shared flags too (training, devices, cells).
flags.adopt_module_key_flags(common)

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
             for key, label in TORCH_LABELS.items()}, {})
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
      TORCH_LABELS["torch_original"], prepare("original")),
           "torch_fused": benchmark.Method(TORCH_LABELS["torch_fused"],
                                           prepare("fused"))}, machine)


def main(argv):
  del argv
  if common.SEEDS.value != 1:
    raise validation.FlagError("seeds", "the benchmark trains one seed per "
                               f"method; got {common.SEEDS.value}")
  seed = common.seed_values()[0]
  config = benchmark.validate(common.from_flags(
      benchmark.BenchmarkConfig, BENCHMARK_FLAGS, cells=common.cell_names(),
      lengths=validation.int_list("lengths", LENGTHS.value, minimum=1),
      base=common.base_run_config(), seed=seed))
  if TORCH.value not in TORCH_MODES:
    raise validation.FlagError("torch", f"unknown {TORCH.value!r}; choose "
                               f"from {', '.join(TORCH_MODES)}")
  if TORCH.value == "on" and not torch_installed():
    raise validation.FlagError("torch", "torch is not installed (pip install "
                               "'palindrome_jax[torch]'); use --torch=auto")
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  extra, machine = torch_methods(TORCH.value)
  report = benchmark.run_benchmark(config, extra, machine)
  benchmark_report.write(report, results_dir)
  print(report.table)
  print(f"Results in {results_dir}/")


if __name__ == "__main__":
  common.run(main)
