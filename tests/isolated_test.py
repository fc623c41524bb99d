"""The test files of ``conftest.ISOLATED``, each in a fresh process."""

import os
import subprocess
import sys

import pytest

from tests import conftest

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("name", conftest.ISOLATED)
def test_file_passes_in_a_process_of_its_own(name):
  env = {**os.environ, conftest.CHILD_ENV: "1"}
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
       os.path.join(TESTS, name)], cwd=os.path.dirname(TESTS), env=env,
      capture_output=True, text=True, timeout=1200, check=False)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
