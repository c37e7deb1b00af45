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
    from koala import data, images

    folder = tmp_path_factory.mktemp("distribution")
    for index in range(20):
        images.write_image(folder / "photos" / f"photo_{index:02d}.jpg", make_photo(100 + index, 96, 128))
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
        [str(prepared_64 / "prepared"), str(prepared_64 / "r2"), "--distribute", "--in-memory"], backend="tensorflow"
    )
    assert result.returncode == 2 and "needs the JAX backend" in result.stderr
