"""The command line end to end on tiny data, in subprocesses, as a user would run it."""

import os
import subprocess
import sys

from koala import images, outputs


def run_koala(*arguments, cwd=None):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "koala", *map(str, arguments)], capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=600)


def test_help_lists_the_commands():
    result = run_koala("--help")
    assert result.returncode == 0
    for command in ("prepare", "train", "colorize"):
        assert command in result.stdout


def test_prepare_train_colorize_end_to_end(photo_folder, tmp_path):
    prepared, run_dir, output = tmp_path / "prepared", tmp_path / "run", tmp_path / "out"
    result = run_koala("prepare", photo_folder, prepared, "--embedder", "none", "--size", "64")
    assert result.returncode == 0, result.stderr
    assert "24 new" in result.stdout
    result = run_koala("train", prepared, run_dir, "--no-fusion", "--epochs", "1", "--batch-size", "8",
                       "--image-size", "64")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "model.keras").exists()
    result = run_koala("colorize", photo_folder, "--output", output, "--model", run_dir)
    assert result.returncode == 0, result.stderr
    assert "24 coloured" in result.stdout
    source = photo_folder / "more" / "photo_00.png"
    assert images.read_image(output / "more" / "photo_00.png").shape == images.read_image(source).shape
    result = run_koala("colorize", photo_folder, "--output", output, "--model", run_dir)
    assert "24 already done" in result.stdout


def test_colorize_exit_status_reports_failures(tiny_model_dir, tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    result = run_koala("colorize", tmp_path / "bad.jpg", "--output", tmp_path / "out", "--model", tiny_model_dir)
    assert result.returncode == 1
    assert "bad.jpg" in result.stderr and "not a supported image" in result.stderr


def test_missing_model_is_a_clear_error(tmp_path):
    (tmp_path / "photos").mkdir()
    result = run_koala("colorize", tmp_path / "photos", "--output", tmp_path / "out", "--model", tmp_path / "nothing")
    assert result.returncode == 2 and "no model here" in result.stderr


def test_chroma_scale_from_the_command_line(tmp_path):
    """With the default model: --chroma-scale 0 gives the photo back grey (its lightness, no colour), 0.5 about
    half the colour of the model's own setting; out of range is refused up front."""
    import numpy as np

    from koala import color

    photo = tmp_path / "in" / "grey.png"
    photo.parent.mkdir()
    rng = np.random.default_rng(7)
    gradient = np.linspace(40, 200, 96)[None, :, None] + rng.normal(0, 12, (64, 96, 1))
    outputs.write_image(photo, np.repeat(np.clip(gradient, 0, 255).astype(np.uint8), 3, axis=-1))
    chroma = {}
    coloured = {}
    for label, extra in (("model's", []), ("0.5", ["--chroma-scale", "0.5"]), ("0", ["--chroma-scale", "0"]),
                         ("edges 0", ["--edge-radius", "0"]), ("edges 3", ["--edge-radius", "3"])):
        result = run_koala("colorize", photo, "--output", tmp_path / label, *extra)
        assert result.returncode == 0, result.stderr
        coloured[label] = images.read_image(tmp_path / label / "grey.png")
        ab = color.rgb_to_lab(coloured[label])[..., 1:]
        chroma[label] = float(np.mean(np.hypot(ab[..., 0], ab[..., 1])))
    assert not np.array_equal(coloured["edges 0"], coloured["edges 3"])  # how the colour is enlarged changed
    assert abs(chroma["edges 3"] - chroma["edges 0"]) < 0.2 * chroma["edges 0"]  # not how much colour there is
    assert chroma["model's"] > 2.0  # the default model does add colour
    assert 0.3 < chroma["0.5"] / chroma["model's"] < 0.7
    assert chroma["0"] < 0.5  # rounding to 8 bits leaves at most a trace
    result = run_koala("colorize", photo, "--output", tmp_path / "x", "--chroma-scale", "3")
    assert result.returncode == 2 and "chroma scale from 0 to 2" in result.stderr
    result = run_koala("colorize", photo, "--output", tmp_path / "x", "--edge-radius", "-1")
    assert result.returncode == 2 and "--edge-radius" in result.stderr
