"""The example notebooks run top to bottom: a notebook that errors fails the suite.

Set NIYAMA_SAVE_NOTEBOOKS=1 to write the executed notebooks back with their
outputs (that is how the committed outputs are made). A cell may take minutes:
the first server start on a machine profiles the device (cached afterwards).
A notebook ends what it starts (its servers): a process that still carries
the notebook's marker once it has run (or failed) is killed and fails it.
"""

import os
import uuid
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

MARKER = "NIYAMA_NOTEBOOK_RUN"  # in the environment of the kernel, so of whatever a cell starts
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, processes):
    notebook = nbformat.read(path, as_version=4)
    marker = uuid.uuid4().hex
    monkeypatch.setenv(MARKER, marker)
    try:
        # Files a notebook writes (profiles, tier files) go to a scratch folder, not examples/.
        NotebookClient(
            notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        left = processes.end(processes.marked(MARKER, marker), grace=10.0)
    assert not left, f"{path.name} left processes running (killed now):\n" + "\n".join(left)
    if os.environ.get("NIYAMA_SAVE_NOTEBOOKS"):
        nbformat.write(notebook, path)
