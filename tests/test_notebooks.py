"""The tutorial notebooks: committed clean, and runnable top to bottom in quick mode.

Quick mode (``KOALA_QUICK_RUN=1``) uses the offline sample photos at 64 px and one or two epochs. Each
notebook runs in its own kernel from the ``notebooks/`` folder (as Jupyter would start it); they write into
one temporary ``KOALA_WORK_DIR`` in order, 01 -> 04, handing the prepared set and the model on as they do in
Colab, with 02's default ``ARCHITECTURE``. Notebooks 02-04 also make what they need when it is missing:
``test_notebook_runs_on_its_own`` checks that for 04, and ``test_train_notebook_runs_with_the_other_architecture``
runs 02 alone with its other architecture.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 240
MAX_CELL_LINES = 25
"""A code cell longer than this does more than one step: what it does belongs in ``koala``."""
TRAIN_NOTEBOOK = NOTEBOOKS_DIR / "02_train.ipynb"
ARCHITECTURES = ("koalarization", "lite0-unet")
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


def parameter_cell(notebook) -> nbformat.NotebookNode:
    return next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))


def parameter_value(notebook, name: str) -> str:
    """The string literal assigned to ``name`` on its one line of the parameter cell."""
    found = re.findall(rf'^{name} = "([^"]*)"', parameter_cell(notebook).source, flags=re.MULTILINE)
    assert len(found) == 1, f"{name} must be set once, to a string, in the parameter cell"
    return found[0]


def set_parameter(notebook, name: str, value: str) -> None:
    """Set a string parameter on its own line of the parameter cell, as a student would edit it."""
    cell = parameter_cell(notebook)
    cell.source, count = re.subn(rf'^{name} = "[^"]*"', f"{name} = {value!r}", cell.source, flags=re.MULTILINE)
    assert count == 1, f"no line '{name} = ...' in the parameter cell"


def execute(path: Path, work_dir: Path, monkeypatch, parameters: dict | None = None) -> nbformat.NotebookNode:
    """Run a notebook in quick mode in a fresh kernel; nbclient raises CellExecutionError if a cell fails."""
    monkeypatch.setenv("KOALA_QUICK_RUN", "1")
    monkeypatch.setenv("KOALA_WORK_DIR", str(work_dir))
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    for name, value in (parameters or {}).items():
        set_parameter(notebook, name, value)
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
    for cell in code_cells:  # a sentence of why before each code cell
        previous = notebook.cells[notebook.cells.index(cell) - 1]
        assert previous.cell_type == "markdown", f"{path.name}: code cell without an explanation: {cell.source[:60]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_setup_cell_installs_in_colab_then_calls_the_library(path):
    """The Colab lines install Koala before anything imports it; koala.notebook.setup() does the rest (it sets
    KERAS_BACKEND before importing Keras: tests/test_notebook_setup.py), so nothing imports Keras before it."""
    from koala.notebook import COLAB_REPOSITORY

    code_cells = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    setup = code_cells[1].source
    lines = setup.splitlines()
    assert 'IN_COLAB = "google.colab" in sys.modules' in lines and "if IN_COLAB:" in setup
    shell = [line for line in lines if line.lstrip().startswith("!")]
    assert [line.split()[0].lstrip("!") for line in shell] == ["git", "pip", "apt-get"]
    assert all(line.startswith("    ") for line in shell), "the ! lines must only run in Colab"
    assert f"https://github.com/koala-colorizer/koala {COLAB_REPOSITORY}" in setup  # where setup() will look
    assert f'"{COLAB_REPOSITORY}[lite0]"' in setup and "libmagickwand-dev" in setup
    def first(start):
        found = [number for number, line in enumerate(lines) if line.startswith(start)]
        assert found, f"{path.name}: no line starting with {start.strip()!r} in the set-up cell"
        return found[0]

    last_shell = max(lines.index(line) for line in shell)
    path_insert = first(f'    sys.path.insert(0, "{COLAB_REPOSITORY}")')
    assert last_shell < path_insert < first("from koala.notebook import setup")
    assert first("from koala.notebook import setup") < first("WORK_DIR = setup(keep_on_drive=KEEP_ON_DRIVE)")
    for cell in code_cells[:2]:
        assert "import keras" not in cell.source and "import koala\n" not in cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_code_cells_are_short(path):
    notebook = nbformat.read(path, as_version=4)
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            lines = len(cell.source.splitlines())
            assert lines <= MAX_CELL_LINES, f"{path.name}, cell {number}: {lines} lines; move the work into koala/"


def test_train_notebook_picks_the_architecture_with_one_parameter():
    notebook = nbformat.read(TRAIN_NOTEBOOK, as_version=4)
    assert parameter_value(notebook, "ARCHITECTURE") in ARCHITECTURES
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert sum("architecture=ARCHITECTURE" in source for source in sources) == 1  # the config the run uses
    assert not any(re.search(r"architecture=[\"']", source) for source in sources), "an architecture hard-coded"
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "Why a pretrained encoder helps" in markdown
    for architecture in ARCHITECTURES:
        assert f'"{architecture}"' in markdown


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
    if path == TRAIN_NOTEBOOK:  # 03 and 04 then evaluate and colour with the notebook's default architecture
        config = json.loads((shared_work_dir / "runs/notebook-quick/config.json").read_text())
        assert config["architecture"] == parameter_value(nbformat.read(path, as_version=4), "ARCHITECTURE")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("architecture", [
    architecture for architecture in ARCHITECTURES
    if architecture != parameter_value(nbformat.read(TRAIN_NOTEBOOK, as_version=4), "ARCHITECTURE")
])
def test_train_notebook_runs_with_the_other_architecture(architecture, tmp_path, monkeypatch):
    """02 with ARCHITECTURE changed, in an empty work folder (it prepares the samples itself)."""
    notebook = execute(TRAIN_NOTEBOOK, tmp_path, monkeypatch, parameters={"ARCHITECTURE": architecture})
    run_dir = tmp_path / "runs/notebook-quick"
    assert json.loads((run_dir / "config.json").read_text())["architecture"] == architecture
    for relative in EXPECTED_FILES[TRAIN_NOTEBOOK.name]:
        assert (tmp_path / relative).is_file(), f"{TRAIN_NOTEBOOK.name} did not write {relative}"
    assert images_shown(notebook) >= 3  # the drawing of the network, the curves, a sample grid
    cached = (tmp_path / "data/prepared/notebook-quick/features-lite0-unet-64").is_dir()
    assert cached == (architecture == "lite0-unet")


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
