"""The packaging says what the code needs, and the checkout runs its tests.

Every third-party module that the library, the entrypoints or the tests
import is a declared dependency (``setup.cfg``); the environment meets the
declared floors; and a bare ``pytest`` (whose ``sys.path`` does not hold the
working directory, unlike ``python -m pytest``) imports ``experiments`` from
the checkout through the ``pythonpath`` ini option.
"""

import ast
import configparser
import functools
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import textwrap

from packaging import requirements
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCAL = {"palindrome_jax", "experiments", "tests", "conftest"}


def _normalize(name):
  """PEP 503's normal form of a distribution name."""
  return re.sub(r"[-_.]+", "-", name).lower()


def _requires():
  """``{"install": [...], "test": [...], "torch": [...]}`` from setup.cfg."""
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  lines = lambda value: [x for x in value.strip().splitlines() if x.strip()]
  found = {"install": lines(cfg["options"]["install_requires"])}
  for extra, value in cfg["options.extras_require"].items():
    found[extra] = lines(value)
  return {k: [requirements.Requirement(r) for r in v]
          for k, v in found.items()}


def _top_level_imports(source):
  """The top-level module of every absolute import in ``source``."""
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      yield from (alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      yield node.module.split(".")[0]


@functools.cache
def _provided_by():
  return importlib.metadata.packages_distributions()


def undeclared(sources, declared):
  """Third-party modules imported in ``sources`` whose distribution is not
  among ``declared`` (distribution names); a module's distribution is the
  installed one that provides it, or its own name where none does."""
  declared = {_normalize(d) for d in declared}
  missing = set()
  for source in sources:
    for module in _top_level_imports(source):
      if module in sys.stdlib_module_names or module in LOCAL:
        continue
      dists = _provided_by().get(module, [module])
      if not declared & {_normalize(d) for d in dists}:
        missing.add(module)
  return missing


def _sources(folder):
  return [p.read_text() for p in sorted((ROOT / folder).rglob("*.py"))]


def test_undeclared_finds_a_third_party_import_and_nothing_else():
  source = textwrap.dedent("""
      import os.path
      import scipy.stats
      from absl import flags
      from palindrome_jax import cells
      from . import sibling
      def late():
        import not_a_real_module_xyz
  """)
  assert undeclared([source], ["absl-py"]) == {
      "scipy", "not_a_real_module_xyz"}
  assert undeclared([source], ["absl_py", "SciPy",
                               "not-a-real-module-xyz"]) == set()


@pytest.mark.parametrize("folder, groups", [
    ("palindrome_jax", ("install",)),
    ("experiments", ("install", "torch")),
    ("tests", ("install", "test", "torch")),
])
def test_every_third_party_import_is_a_declared_dependency(folder, groups):
  requires = _requires()
  declared = [r.name for g in groups for r in requires[g]]
  assert undeclared(_sources(folder), declared) == set(), (
      f"imported in {folder}/ but not declared in setup.cfg ({groups})")


def test_the_environment_meets_the_declared_floors():
  # A stale environment fails here, naming the package, rather than deep in
  # a test with an AttributeError from an older release.
  for requirement in _requires()["install"]:
    try:
      version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
      pytest.fail(f"{requirement.name} is not installed ({requirement})")
    assert requirement.specifier.contains(version, prereleases=True), (
        f"{requirement.name} {version} installed; setup.cfg needs "
        f"{requirement}")


def _bare_pytest(tmp_path, *options):
  """Runs pytest as its console script does (``sys.path`` without the working
  directory or the checkout) on a test that imports ``experiments``, with the
  checkout's ini file and root; returns the finished process."""
  (tmp_path / "imports_test.py").write_text(textwrap.dedent("""
      import experiments

      def test_imports():
        print("EXPERIMENTS", experiments.__file__)
  """))
  code = ("import sys; sys.path[:] = [p for p in sys.path if p not in "
          "('', '.')]; import pytest; sys.exit(pytest.main(sys.argv[1:]))")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run(
      [sys.executable, "-c", code, "-c", str(ROOT / "pyproject.toml"),
       "--rootdir", str(ROOT), "-p", "no:cacheprovider", "-q", "-s",
       *options, str(tmp_path / "imports_test.py")],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
      check=False)


def test_a_bare_pytest_imports_experiments_from_the_checkout(tmp_path):
  done = _bare_pytest(tmp_path)
  assert done.returncode == 0, done.stdout + done.stderr
  path = re.search(r"EXPERIMENTS (\S+)", done.stdout).group(1)
  assert pathlib.Path(path) == ROOT / "experiments" / "__init__.py"


def test_without_the_pythonpath_option_experiments_is_not_found(tmp_path):
  # The check above is not blind: the ini option is what finds the checkout.
  outside = subprocess.run(
      [sys.executable, "-c", "import experiments"], cwd=tmp_path,
      env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
      capture_output=True, check=False)
  if outside.returncode == 0:
    pytest.skip("this environment puts an experiments package on sys.path")
  done = _bare_pytest(tmp_path, "-o", "pythonpath=")
  assert done.returncode != 0
  assert "No module named 'experiments'" in done.stdout + done.stderr


def test_the_suite_leaves_no_compilation_cache_behind(tmp_path):
  # conftest.py makes a temporary directory for the entrypoints' compilation
  # cache; the README's test command (workers included) removes it at exit,
  # so the suite does not leave megabytes in the temporary folder per run.
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COMPILATION_CACHE_DIR", "PYTEST_XDIST_WORKER")}
  env["TMPDIR"] = str(tmp_path)
  done = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p",
       "no:cacheprovider", "--collect-only", "tests/recipes_test.py"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  left = sorted(p.name for p in tmp_path.iterdir()
                if p.name.startswith("palindrome_jax_test_compilation_cache-"))
  assert not left, left
