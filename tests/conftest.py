"""Shared test configuration and fixtures.

Strict rank promotion (``jax_numpy_rank_promotion="raise"``, as Equinox's test
config) is on for the whole session: an implicit ``[H] + [B, H]`` broadcast is
an error, so shapes in the library are always spelled out.
"""

import atexit
import contextlib
import gc
import os
import shutil
import tempfile

# The persistent compilation cache: for the entrypoints the suite starts as
# processes of their own (they inherit this environment), one directory for
# the session, so the many tiny sweeps that compile the same programs
# compile them once; never in the suite's own process. There the
# entrypoints run through Command.execute would turn it on mid-process
# (their default --compilation_cache_dir), and with jaxlib 0.10.2 on a CPU
# reading an entry back in that process segfaulted CI (in
# compilation_cache.get_executable_and_time). cache_test.py covers the cache
# as users meet it: a rerun in a new process. The process that makes the
# directory (pytest-xdist's workers inherit it) removes it at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix="palindrome_jax_test_compilation_cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# XLA's CPU backend at optimisation level 0, here and in the entrypoints the
# suite starts (they inherit the environment). The suite's programs are tiny
# and compiled thousands of times, so LLVM's optimisation passes cost far more
# than they save: on a 2-core Intel Xeon, depth_test.py took 47 s at level 0
# and 74 s at the default. Nothing the tests assert depends on it: they hold
# at any float rounding, and no test times anything (speed is the
# benchmark's). A level the caller set in XLA_FLAGS is kept.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(filter(None, (
      os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0")))

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from palindrome_jax import cells

# Off here whatever the environment says (see above).
jax.config.update("jax_enable_compilation_cache", False)

STRICT_RANK_PROMOTION = True

if STRICT_RANK_PROMOTION:
  jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_report_header(config):
  del config
  mode = jax.config.jax_numpy_rank_promotion
  return (f"jax {jax.__version__}, rank promotion {mode!r}, "
          f"devices {jax.devices()}")


@contextlib.contextmanager
def registry_restored():
  """Cells registered inside are gone afterwards; the registry is as before."""
  saved = [(table, dict(table)) for table in (
      cells._REGISTRY, cells._KEYS_OF)]  # pylint: disable=protected-access
  try:
    yield
  finally:
    for table, contents in saved:
      table.clear()
      table.update(contents)
    cells._build.cache_clear()  # pylint: disable=protected-access


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
  """Drops JAX's compiled programs after each test file.

  Every program XLA compiles for the CPU keeps its code in memory mappings
  of its own, and JAX's caches keep the programs alive: the suite compiles
  thousands, and one process reached Linux's default limit of 65,530
  mappings (vm.max_map_count) near its end, where the next compile
  segfaulted inside LLVM. Alone, each file stays far below it.
  """
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture
def restore_cell_registry():
  """Lets a test register cells; the registry is as before afterwards."""
  with registry_restored():
    yield
