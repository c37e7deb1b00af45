"""The tutorial notebooks: committed clean, and runnable top to bottom in quick mode.

Quick mode (``KOALA_QUICK_RUN=1``) uses the offline sample photos at 64 px and one epoch, so the four
notebooks run in about two minutes on a 2-core CPU. Each notebook runs in its own kernel from the
``notebooks/`` folder (as Jupyter would start it); they write into one temporary ``KOALA_WORK_DIR`` in
order, 01 -> 04, handing the prepared set and the model on as they do in Colab. Notebooks 02-04 also
make what they need when it is missing: ``test_notebook_runs_on_its_own`` checks that for 04.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 240
COLAB_URL = "https://colab.research.google.com/github/koala-colorizer/koala/blob/main/notebooks/"

# What each notebook must leave in the work folder (besides running without an error).
EXPECTED_FILES = {
    "01_prepare_data.ipynb": ["data/prepared/notebook-quick/manifest.csv",
                              "data/prepared/notebook-quick/embeddings-efficientnet-lite0.npy"],
    "02_train.ipynb": ["runs/notebook-quick/model.keras", "runs/notebook-quick/history.csv",
                       "runs/notebook-quick/samples/epoch-001.png", "runs/notebook-quick-fine-tuned/model.keras"],
    "03_evaluate.ipynb": ["reports/notebook-quick/summary.md", "reports/notebook-quick/best-worst.png"],
    "04_colorize_your_photos.ipynb": ["output/samples-coloured/astronaut_grey.jpg", "output/samples-coloured.zip"],
}


def execute(path: Path, work_dir: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run a notebook in quick mode in a fresh kernel; nbclient raises CellExecutionError if a cell fails."""
    monkeypatch.setenv("KOALA_QUICK_RUN", "1")
    monkeypatch.setenv("KOALA_WORK_DIR", str(work_dir))
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()
    return notebook


def images_shown(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_there_are_four_notebooks():
    assert [path.name for path in NOTEBOOKS] == list(EXPECTED_FILES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    assert notebook.metadata.get("accelerator") == "GPU"
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and COLAB_URL + path.name in first.source
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs before committing"
    parameter_cells = [cell for cell in code_cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameter_cells) == 1 and parameter_cells[0] is code_cells[0]
    assert 'os.environ.get("KOALA_QUICK_RUN", "0") == "1"' in parameter_cells[0].source
    setup = code_cells[1].source
    assert '"google.colab" in sys.modules' in setup
    assert setup.index('os.environ.setdefault("KERAS_BACKEND"') < setup.index("import keras")
    for cell in code_cells:  # a sentence of why before each code cell
        previous = notebook.cells[notebook.cells.index(cell) - 1]
        assert previous.cell_type == "markdown", f"{path.name}: code cell without an explanation: {cell.source[:60]!r}"


@pytest.fixture(scope="module")
def shared_work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_quick_mode(path, shared_work_dir, monkeypatch):
    notebook = execute(path, shared_work_dir, monkeypatch)
    for relative in EXPECTED_FILES[path.name]:
        assert (shared_work_dir / relative).is_file(), f"{path.name} did not write {relative}"
    assert images_shown(notebook) >= 1, f"{path.name} showed no picture"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook_runs_on_its_own(tmp_path, monkeypatch):
    """04 in an empty work folder: it prepares the samples and trains a stand-in model itself."""
    path = NOTEBOOKS_DIR / "04_colorize_your_photos.ipynb"
    execute(path, tmp_path, monkeypatch)
    assert (tmp_path / "runs/notebook-quick/model.keras").is_file()
    for relative in EXPECTED_FILES[path.name]:
        assert (tmp_path / relative).is_file()


def test_sample_photos_fill_every_split(tmp_path):
    """Quick mode's offline photos: colour JPEGs, the same each time, with at least one in each split."""
    import hashlib

    from koala.data import SPLITS, split_for
    from koala.samples import write_sample_photos

    paths = write_sample_photos(tmp_path / "a", count=6)
    assert len(paths) >= 6
    splits = {split_for(hashlib.sha256(path.read_bytes()).hexdigest()[:16]) for path in paths}
    assert splits == set(SPLITS)
    again = write_sample_photos(tmp_path / "b", count=6)
    assert [path.read_bytes() for path in again] == [path.read_bytes() for path in paths]
