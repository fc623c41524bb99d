"""The notebook runs top to bottom (on tiny networks and a short budget)."""

import os

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "experiments", "palindrome.ipynb")


def test_notebook_runs_top_to_bottom(monkeypatch):
  monkeypatch.setenv("PALINDROME_NOTEBOOK_STEPS", "100")
  monkeypatch.setenv("PALINDROME_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep +
                     os.environ.get("PYTHONPATH", ""))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": REPO}}).execute()
  outputs = "".join(
      out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
      for out in cell.get("outputs", []))
  assert "rnn: test accuracy" in outputs and "lstm: test accuracy" in outputs
  assert "mgu: test accuracy" in outputs
  assert "mingru, 2 layer(s): test accuracy" in outputs
  images = [out for cell in notebook.cells if cell.cell_type == "code"
            for out in cell.get("outputs", [])
            if "image/png" in out.get("data", {})]
  assert len(images) == 2  # The learning curves and the gradients.
