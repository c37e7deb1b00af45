"""koala.notebook.setup: the set-up that the four tutorial notebooks share."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from koala import notebook

REPOSITORY = Path(__file__).resolve().parent.parent


def test_setup_sets_the_backend_before_keras_is_imported(tmp_path):
    """In a fresh interpreter, as in a new kernel: importing koala.notebook loads no Keras, and the backend
    that setup() chooses is the one Keras starts with (JAX here, so that the default could not pass by luck)."""
    started_in = tmp_path / "repository" / "notebooks"
    started_in.mkdir(parents=True)
    script = (
        "import os, sys\n"
        "import koala.notebook\n"
        "assert 'keras' not in sys.modules, 'importing koala.notebook imported keras'\n"
        "work = koala.notebook.setup(backend='jax')\n"
        "import keras\n"
        "print('BACKEND', keras.backend.backend(), os.environ['KERAS_BACKEND'])\n"
        "print('CWD', os.getcwd())\n"
        "print('WORK', work)\n"
    )
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("KERAS_BACKEND", notebook.WORK_DIR_VARIABLE)}
    environment["PYTHONPATH"] = str(REPOSITORY)
    completed = subprocess.run([sys.executable, "-c", script], cwd=started_in, env=environment,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert "BACKEND jax jax" in lines
    assert f"CWD {started_in.parent}" in lines  # moved from notebooks/ to the repository root
    assert f"WORK {started_in.parent}" in lines
    assert any(line.startswith("koala ") and "with the jax backend" in line for line in lines)


def test_an_existing_backend_choice_wins(monkeypatch, tmp_path):
    import keras

    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())
    monkeypatch.setenv(notebook.WORK_DIR_VARIABLE, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    reports = []
    assert notebook.setup(backend="not-a-backend", log=reports.append) == tmp_path
    assert os.environ["KERAS_BACKEND"] == keras.backend.backend()
    assert f"with the {keras.backend.backend()} backend" in reports[0]


def test_keras_imported_with_another_backend_is_reported(monkeypatch, tmp_path):
    import keras

    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", other)
    monkeypatch.setenv(notebook.WORK_DIR_VARIABLE, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="restarting the kernel"):
        notebook.setup(log=lambda text: None)


def test_work_dir_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(notebook.WORK_DIR_VARIABLE, str(tmp_path / "work"))
    assert notebook.work_dir(keep_on_drive=True, colab=True) == tmp_path / "work"


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """google.colab with a drive.mount that records its calls; the clone and Drive in temporary folders."""
    mounted = []
    drive = types.SimpleNamespace(mount=mounted.append)
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.delenv(notebook.WORK_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(notebook, "COLAB_REPOSITORY", tmp_path / "content" / "koala")
    monkeypatch.setattr(notebook, "DRIVE_WORK_DIR", tmp_path / "content" / "drive" / "MyDrive" / "koala")
    notebook.COLAB_REPOSITORY.mkdir(parents=True)
    return mounted


def test_colab_works_in_the_clone_and_keeps_results_on_drive(fake_colab, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert notebook.in_colab()
    work = notebook.setup(keep_on_drive=True, log=lambda text: None)
    assert Path.cwd() == notebook.COLAB_REPOSITORY
    assert fake_colab == [str(notebook.DRIVE_MOUNT)]
    assert work == notebook.DRIVE_WORK_DIR and work.is_dir()


def test_colab_without_drive_keeps_results_in_the_clone(fake_colab, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    work = notebook.setup(keep_on_drive=False, log=lambda text: None)
    assert fake_colab == []
    assert work == notebook.COLAB_REPOSITORY


def test_outside_colab_drive_is_never_mounted(monkeypatch, tmp_path):
    monkeypatch.delenv(notebook.WORK_DIR_VARIABLE, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    assert notebook.work_dir(keep_on_drive=True) == tmp_path


def test_describe_environment_names_the_accelerators(monkeypatch):
    import keras

    monkeypatch.setattr(keras.distribution, "list_devices", lambda: ["CPU:0", "GPU:0"])
    assert "accelerators: GPU:0" in notebook.describe_environment()
    monkeypatch.setattr(keras.distribution, "list_devices", lambda: ["CPU:0"])
    assert "No GPU found" in notebook.describe_environment()


def test_upload_photos_saves_the_files_under_their_own_names(fake_colab, tmp_path):
    sys.modules["google.colab"].files = types.SimpleNamespace(
        upload=lambda: {"old photo.jpg": b"jpeg bytes", "../../escape.png": b"png bytes"})
    folder = notebook.upload_photos(tmp_path / "uploads")
    assert folder == tmp_path / "uploads"
    assert sorted(path.name for path in folder.iterdir()) == ["escape.png", "old photo.jpg"]
    assert (folder / "old photo.jpg").read_bytes() == b"jpeg bytes"
    assert not (tmp_path / "escape.png").exists()


def test_upload_photos_outside_colab_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    with pytest.raises(RuntimeError, match="works in Colab"):
        notebook.upload_photos(tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists()
