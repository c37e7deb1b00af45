"""Data-parallel training (keras.distribution.DataParallel on JAX) over two logical CPU devices, from the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_photo

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def prepared_64(tmp_path_factory):
    from koala import data, outputs

    folder = tmp_path_factory.mktemp("distribution")
    for index in range(20):
        outputs.write_image(folder / "photos" / f"photo_{index:02d}.jpg", make_photo(100 + index, 96, 128))
    data.prepare(folder / "photos", folder / "prepared", embedder=None, size=64, progress=False, log=lambda m: None)
    return folder


def _koala_train(arguments, backend: str, timeout: float = 120):
    environment = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return subprocess.run(
        [sys.executable, "-m", "koala", "train", *arguments], cwd=ROOT, env=environment,
        capture_output=True, text=True, timeout=timeout,
    )


def test_data_parallel_training_on_two_devices(prepared_64):
    pytest.importorskip("jax")
    run_dir = prepared_64 / "run"
    result = _koala_train(
        [str(prepared_64 / "prepared"), str(run_dir), "--in-memory", "--distribute", "--no-fusion",
         "--image-size", "64", "--batch-size", "4", "--epochs", "2"],
        backend="jax",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "data-parallel over 2 devices" in result.stdout
    assert (run_dir / "model.keras").is_file() and (run_dir / "config.json").is_file()

    from koala.train import load_head

    model, config = load_head(run_dir)
    assert config.image_size == 64 and not config.fusion
    assert model.output_shape == (None, 64, 64, 2)


def test_distribute_needs_in_memory_and_jax(prepared_64):
    result = _koala_train([str(prepared_64 / "prepared"), str(prepared_64 / "r1"), "--distribute"], backend="jax")
    assert result.returncode == 2 and "--distribute needs --in-memory" in result.stderr
    result = _koala_train(
        [str(prepared_64 / "prepared"), str(prepared_64 / "r2"), "--distribute", "--in-memory", "--no-fusion"],
        backend="tensorflow",
    )
    assert result.returncode == 2 and "needs the JAX backend" in result.stderr


@pytest.fixture(scope="module")
def prepared_one_validation_photo(tmp_path_factory):
    """A prepared set whose validation split holds one photo (fewer than the two devices) and whose training
    split is not a whole number of batches."""
    from koala import data, outputs

    folder = tmp_path_factory.mktemp("one-validation")
    for index in range(11):
        outputs.write_image(folder / "photos" / f"photo_{index:02d}.jpg", make_photo(200 + index, 96, 128))
    prepared = folder / "prepared"
    data.prepare(folder / "photos", prepared, embedder=None, size=64, progress=False, log=lambda m: None)
    # the split comes from each photo's hash; set it here so that exactly one photo validates
    rows = data.read_manifest(prepared)
    for index, row in enumerate(rows):
        row["split"] = "validation" if index == 0 else "train"
    data.write_manifest(prepared, rows)
    counts = {name: sum(row["split"] == name for row in data.read_manifest(prepared)) for name in data.SPLITS}
    assert counts == {"train": 10, "validation": 1, "test": 0}, counts
    return folder


def test_data_parallel_training_with_a_one_photo_validation_split(prepared_one_validation_photo):
    pytest.importorskip("jax")
    run_dir = prepared_one_validation_photo / "run"
    result = _koala_train(
        [str(prepared_one_validation_photo / "prepared"), str(run_dir), "--in-memory", "--distribute",
         "--no-fusion", "--image-size", "64", "--batch-size", "4", "--epochs", "2"],
        backend="jax",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "data-parallel over 2 devices" in result.stdout
    import csv

    with open(run_dir / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == 2 and all(float(row["val_loss"]) >= 0 for row in history), history


def test_whole_split_repeated_to_a_multiple_of_the_devices():
    import numpy as np

    from koala.accelerated import _repeat_whole_split

    photos, embeddings = np.arange(3)[:, None], np.arange(3)[:, None] * 10
    repeated, repeated_embeddings = _repeat_whole_split(photos, embeddings, 2)
    assert len(repeated) == 6 and np.bincount(repeated[:, 0]).tolist() == [2, 2, 2]  # each photo as often
    assert (repeated_embeddings == repeated * 10).all()
    assert _repeat_whole_split(np.arange(1)[:, None], None, 8)[0].shape == (8, 1)
    unchanged, none = _repeat_whole_split(np.arange(4)[:, None], None, 2)
    assert len(unchanged) == 4 and none is None
