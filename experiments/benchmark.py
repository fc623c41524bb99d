r"""Measures training steps/s: eager, jit step, compiled loop, Flax, PyTorch.

    python -m experiments.benchmark --cells=rnn,lstm --lengths=5,20

Writes benchmark.json, benchmark.md and benchmark.png to --results_dir and
prints the table. PyTorch rows need the optional extra (pip install
'palindrome_jax[torch]').
"""

from absl import flags

from experiments import common
from palindrome_jax import benchmark
from palindrome_jax import validation

LENGTHS = flags.DEFINE_string("lengths", "5,20",
                              "Comma-separated palindrome lengths N to time.")
STEPS = flags.DEFINE_integer(
    "steps", 200, "Training steps per timed repeat of every method but "
    "eager; more than --log_every must be a multiple of it.")
EAGER_STEPS = flags.DEFINE_integer("eager_steps", 3,
                                   "Steps per timed repeat of JAX eager.")
REPEATS = flags.DEFINE_integer("repeats", 5,
                               "Timed repeats per method; steps/s is their "
                               "median.")
RESULTS_DIR = flags.DEFINE_string("results_dir", "benchmark_results",
                                  "Where benchmark.json, .md and .png go.")
TORCH = flags.DEFINE_string(
    "torch", "auto", "PyTorch rows: auto (when torch is installed), on "
    "(required) or off.")


# --help lists the shared flags too (training, devices, cells).
flags.adopt_module_key_flags(common)

def main(argv):
  del argv
  if common.SEEDS.value != 1:
    raise validation.FlagError("seeds", "the benchmark trains one seed per "
                               f"method; got {common.SEEDS.value}")
  seed = common.seed_values()[0]
  config = benchmark.validate(benchmark.BenchmarkConfig(
      cells=common.cell_names(),
      lengths=validation.int_list("lengths", LENGTHS.value, minimum=1),
      base=common.base_run_config(),
      steps=STEPS.value, eager_steps=EAGER_STEPS.value,
      repeats=REPEATS.value,
      torch=validation.choice("torch", TORCH.value, benchmark.TORCH_MODES),
      seed=seed))
  results_dir = validation.writable_dir("results_dir", RESULTS_DIR.value)
  report = benchmark.run_benchmark(config, results_dir)
  print(report.table)
  print(f"Results in {results_dir}/")


if __name__ == "__main__":
  common.run(main)
