"""What every tutorial notebook does first, in one place: the Keras backend, the working folder, a report.

The four notebooks in ``notebooks/`` start the same way; only the Colab installation stays in their set-up
cell (``!git clone``, ``!pip install``, ``!apt-get``: it must run before ``koala`` can be imported). Then::

    from koala.notebook import setup

    WORK_DIR = setup(keep_on_drive=KEEP_ON_DRIVE)

Importing this module imports neither Keras nor a backend: :func:`setup` sets ``KERAS_BACKEND`` first and
imports Keras after it, which is the only order in which the variable counts.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

DEFAULT_BACKEND = "tensorflow"
"""Colab ships TensorFlow; JAX and PyTorch work too (``KERAS_BACKEND=jax`` before starting the notebook)."""
COLAB_REPOSITORY = Path("/content/koala")
"""Where the notebooks' set-up cell clones Koala in Colab."""
DRIVE_MOUNT = Path("/content/drive")
DRIVE_WORK_DIR = DRIVE_MOUNT / "MyDrive" / "koala"
"""Colab: data/, runs/, reports/ and output/ live here, so they outlive the machine and reach the other notebooks."""
WORK_DIR_VARIABLE = "KOALA_WORK_DIR"
"""An environment variable naming the work folder overrides everything else (the notebook tests use it)."""


def in_colab() -> bool:
    """Whether this runs inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def setup(keep_on_drive: bool = False, backend: str = DEFAULT_BACKEND, log=print) -> Path:
    """Prepare a notebook's kernel and return the folder its results go to.

    In order:

    1. ``KERAS_BACKEND`` defaults to ``backend`` (an existing value wins) and TensorFlow's start-up messages
       are hidden; if Keras was already imported with another backend, a warning says to restart the kernel.
    2. The current folder becomes the repository root: the clone in Colab, the parent of ``notebooks/``
       when Jupyter started there. Paths such as ``data/samples`` then mean the same everywhere.
    3. Koala's and Keras's versions, the backend and the accelerators found (or how to get one) are printed.
    4. The work folder is chosen: ``$KOALA_WORK_DIR`` if set; in Colab with ``keep_on_drive``, Google Drive
       (mounted here; Colab asks for permission) so that a disconnect loses nothing; else the repository root.

    Args:
        keep_on_drive: Colab only: keep the work folder on Google Drive.
        backend: the Keras backend to use unless ``KERAS_BACKEND`` is already set.
        log: where the report goes (``print``).

    Returns:
        The work folder; notebooks put ``data/prepared``, ``runs``, ``reports`` and ``output`` under it.
    """
    os.environ.setdefault("KERAS_BACKEND", backend)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != os.environ["KERAS_BACKEND"]:
            warnings.warn(
                f"Keras was imported before koala.notebook.setup() with the {keras.backend.backend()} backend; "
                f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} only takes effect after restarting the kernel",
                stacklevel=2,
            )
    colab = in_colab()
    if colab:
        os.chdir(COLAB_REPOSITORY)
    elif Path.cwd().name == "notebooks":
        os.chdir("..")  # work from the repository root, as in Colab
    log(describe_environment())
    return work_dir(keep_on_drive=keep_on_drive, colab=colab, log=log)


def describe_environment() -> str:
    """Koala's and Keras's versions, the backend, and the accelerators Keras sees (or how to get one)."""
    import keras

    import koala

    lines = [f"koala {koala.__version__}, Keras {keras.__version__} with the {keras.backend.backend()} backend"]
    try:
        devices = keras.distribution.list_devices()
    except Exception:  # a backend that cannot list its devices: carry on with what it has
        devices = []
    accelerators = [device for device in devices if not device.lower().startswith("cpu")]
    if accelerators:
        lines.append("accelerators: " + ", ".join(accelerators))
    else:
        lines.append("No GPU found. Everything still runs, only slower; in Colab choose Runtime > Change runtime "
                     "type > GPU.")
    return "\n".join(lines)


def work_dir(keep_on_drive: bool = False, colab: bool | None = None, log=print) -> Path:
    """The folder the notebooks share their results through (see :func:`setup`, step 4)."""
    if os.environ.get(WORK_DIR_VARIABLE):
        return Path(os.environ[WORK_DIR_VARIABLE])
    if (in_colab() if colab is None else colab) and keep_on_drive:
        from google.colab import drive

        drive.mount(str(DRIVE_MOUNT))
        DRIVE_WORK_DIR.mkdir(parents=True, exist_ok=True)
        log(f"work folder on Google Drive: {DRIVE_WORK_DIR}")
        return DRIVE_WORK_DIR
    return Path.cwd()


def upload_photos(folder: str | Path) -> Path:
    """Colab: let the user pick photos in the browser and save them into ``folder`` (created if needed).

    Returns:
        ``folder``, holding the uploaded files under their own names (without any path they came with).

    Raises:
        RuntimeError: not in Colab (elsewhere, put the photos in a folder and read that folder).
    """
    if not in_colab():
        raise RuntimeError("uploading from the browser works in Colab; elsewhere put your photos in a folder and "
                           'use PHOTO_SOURCE = "drive" with that folder')
    from google.colab import files

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.upload().items():
        (folder / Path(name).name).write_bytes(content)
    return folder
