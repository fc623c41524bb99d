r"""Measures training steps/s: eager, jit step, compiled loop, Flax, PyTorch.

    python -m experiments.benchmark --cells=rnn,lstm --lengths=5,20

Writes benchmark.json, benchmark.md and benchmark.png to --results_dir and
prints the table. PyTorch rows need the optional extra (pip install
'palindrome_jax[torch]').
"""

from absl import flags

from experiments import benchmark_report
from experiments import benchmark_torch
from experiments import common
from palindrome_jax import benchmark
from palindrome_jax import cli
from palindrome_jax import validation

COMMAND = common.command(__doc__)
BENCHMARK_FLAGS = cli.define_flags(
    benchmark.BenchmarkConfig, skip=("cells", "base", "seed"),
    flag_values=COMMAND.flag_values)
RESULTS_DIR = flags.DEFINE_string("results_dir", "benchmark_results",
                                  "Where benchmark.json, .md and .png go.",
                                  flag_values=COMMAND.flag_values)
TORCH = flags.DEFINE_string(
    "torch", "auto", "PyTorch rows: auto (when torch is installed), on "
    "(required) or off.", flag_values=COMMAND.flag_values)


def main(argv):
  del argv
  if common.SEEDS.value != 1:
    raise validation.FlagError("seeds", "the benchmark trains one seed per "
                               f"method; got {common.SEEDS.value}")
  seed = common.seed_values()[0]
  config = cli.from_flags(
      benchmark.BenchmarkConfig, BENCHMARK_FLAGS, cells=common.cell_names(),
      base=common.base_run_config(cli.flag_field(
          benchmark.BenchmarkConfig, BENCHMARK_FLAGS, "lengths")), seed=seed)
  if TORCH.value not in benchmark_torch.MODES:
    raise validation.FlagError("torch", f"unknown {TORCH.value!r}; choose "
                               f"from {', '.join(benchmark_torch.MODES)}")
  if TORCH.value == "on" and not benchmark_torch.torch_installed():
    raise validation.FlagError("torch", "torch is not installed (pip install "
                               "'palindrome_jax[torch]'); use --torch=auto")
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  extra, machine = benchmark_torch.torch_methods(TORCH.value)
  # The files are rewritten after each (cell, N), the last below: a
  # benchmark stopped part-way leaves what it measured.
  report = benchmark.run_benchmark(
      config, extra, machine,
      on_progress=lambda partial: benchmark_report.write(partial, results_dir))
  benchmark_report.write(report, results_dir)
  print(report.table)
  print(f"Results in {results_dir}/")


if __name__ == "__main__":
  COMMAND.run(main)
