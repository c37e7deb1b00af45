"""A newcomer's ordinary mistakes (issue 15): they never cost a photo and always get a plain, quick answer.

The command line runs in subprocesses, as a user would run it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from koala import outputs
from tests.conftest import make_photo

ROOT = Path(__file__).resolve().parent.parent


def run_koala(*arguments, environment=None, cwd=None, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200", **(environment or {})}
    return subprocess.run([sys.executable, "-m", "koala", *map(str, arguments)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def _fingerprints(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.md5(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def scans(tmp_path):
    """A real folder of photos: four grey scans (JPEG and PNG), one in a subfolder."""
    folder = tmp_path / "scans"
    for index, name in enumerate(("a.jpg", "b.jpg", "c.png", "old/d.jpg")):
        grey = make_photo(index, 64, 80).mean(axis=2).astype(np.uint8)
        outputs.write_image(folder / name, np.repeat(grey[..., None], 3, axis=2))
    return folder


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# --- data loss -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("where", ["same folder", "inside it"])
def test_output_in_the_input_folder_is_refused_and_no_original_changes(scans, tiny_model_dir, overwrite, where):
    before = _fingerprints(scans)
    output = scans if where == "same folder" else scans / "old" / "coloured"
    result = run_koala("colorize", scans, "--output", output, "--model", tiny_model_dir,
                       *(["--overwrite"] if overwrite else []))
    assert result.returncode == 2, result.stdout + result.stderr
    line = _one_error_line(result.stderr)
    assert str(output) in line and "is, or lies inside, the input folder" in line
    assert "coloured" not in result.stdout  # no "0 coloured, 4 already done"
    assert _fingerprints(scans) == before  # nothing replaced, nothing added
    assert not (scans / "old" / "coloured").exists()


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_output_onto_a_named_photo_is_refused(scans, tiny_model_dir, overwrite):
    before = _fingerprints(scans)
    result = run_koala("colorize", scans / "a.jpg", "--output", scans, "--model", tiny_model_dir,
                       *(["--overwrite"] if overwrite else []))
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "a.jpg" in line and "over an original photo" in line
    assert _fingerprints(scans) == before


def test_library_refuses_before_writing_anything(scans, tiny_model_dir):
    from koala.colorize import Colorizer

    before = _fingerprints(scans)
    colorizer = Colorizer(tiny_model_dir)
    for output in (scans, scans / "coloured"):
        with pytest.raises(ValueError, match="is, or lies inside, the input folder"):
            colorizer.colorize_files([scans], output, overwrite=True, progress=False, log=lambda message: None)
    with pytest.raises(ValueError, match="over an original photo"):
        colorizer.colorize_files([scans / "old" / "d.jpg"], scans / "old", overwrite=True, progress=False)
    assert _fingerprints(scans) == before


def test_output_that_is_a_file_is_refused(scans, tiny_model_dir, tmp_path):
    existing = tmp_path / "Tank-out.jpg"
    existing.write_bytes(b"keep me")
    result = run_koala("colorize", scans / "a.jpg", "--output", existing, "--model", tiny_model_dir)
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert str(existing) in line and "must be a folder" in line
    assert existing.read_bytes() == b"keep me"


def test_a_separate_output_folder_still_works(scans, tiny_model_dir, tmp_path):
    result = run_koala("colorize", scans, "--output", tmp_path / "coloured", "--model", tiny_model_dir)
    assert result.returncode == 0, result.stderr
    assert "4 coloured, 0 already done, 0 failed" in result.stdout
    assert (tmp_path / "coloured" / "old" / "d.jpg").is_file() and (tmp_path / "coloured" / "c.png").is_file()


# --- arguments and paths checked first -------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, words", [
    ("--epochs", "-1", "a whole number above 0"),
    ("--epochs", "0", "a whole number above 0"),
    ("--batch-size", "0", "a whole number above 0"),
    ("--learning-rate", "0", "a number above 0"),
    ("--learning-rate", "-0.001", "a number above 0"),
    ("--learning-rate", "nan", "a number above 0"),
    ("--samples-per-epoch", "-5", "a whole number, 0 or more"),
    ("--rebalance", "1.5", "a number from 0 to 1"),
])
def test_train_rejects_impossible_numbers(tmp_path, option, value, words):
    result = run_koala("train", tmp_path, tmp_path / "runs" / "neg", option, value)
    assert result.returncode == 2
    assert f"argument {option}: must be {words}" in result.stderr
    assert "trained" not in result.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("arguments", [("--batch-size", "0"), ("--limit", "-1"), ("--figures", "-2")])
def test_evaluate_rejects_impossible_numbers(tmp_path, arguments):
    result = run_koala("evaluate", tmp_path, tmp_path, *arguments)
    assert result.returncode == 2 and f"argument {arguments[0]}: must be a whole number" in result.stderr


def test_train_on_a_missing_folder_says_no_such_folder(tmp_path):
    result = run_koala("train", tmp_path / "no-such-dir", tmp_path / "runs" / "x")
    assert result.returncode == 2
    assert _one_error_line(result.stderr) == f"error: {tmp_path / 'no-such-dir'}: no such folder"
    assert not (tmp_path / "runs").exists()


def test_train_on_raw_photos_says_prepare_first(scans, tmp_path):
    result = run_koala("train", scans, tmp_path / "runs" / "x")
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert "this is not a prepared set (no manifest.csv): run koala prepare first" in line
    assert "embeddings" not in line
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def prepared_without_embeddings(tmp_path_factory):
    from koala import data

    folder = tmp_path_factory.mktemp("newcomer")
    for index in range(12):
        outputs.write_image(folder / "photos" / f"photo_{index:02d}.jpg", make_photo(300 + index, 72, 96))
    data.prepare(folder / "photos", folder / "prepared", embedder=None, size=64, progress=False,
                 log=lambda message: None)
    return folder / "prepared"


def test_a_failed_start_leaves_no_run_folder(prepared_without_embeddings, tmp_path):
    # seen before Keras starts: fusion needs embeddings that were not prepared
    result = run_koala("train", prepared_without_embeddings, tmp_path / "runs" / "x", "--image-size", "64")
    assert result.returncode == 2
    assert "no cached efficientnet-lite0 embeddings" in _one_error_line(result.stderr)
    assert not (tmp_path / "runs").exists()
    # seen by the trainer, after it wrote config.json: a --init-from folder that holds no model
    (tmp_path / "not-a-model").mkdir()
    result = run_koala("train", prepared_without_embeddings, tmp_path / "runs" / "y", "--no-fusion",
                       "--image-size", "64", "--init-from", tmp_path / "not-a-model")
    assert result.returncode == 2 and "no model here" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_failed_resume_keeps_the_run_folder(prepared_without_embeddings, tmp_path):
    run_dir = tmp_path / "existing-run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    result = run_koala("train", prepared_without_embeddings, run_dir, "--no-fusion", "--image-size", "64",
                       "--init-from", tmp_path / "missing-model")
    assert result.returncode == 2 and "missing-model: no such model folder" in result.stderr
    assert (run_dir / "notes.txt").read_text() == "mine"


def _imports_of(result) -> set[str]:
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("arguments, answer", [
    (["colorize", "missing.jpg", "--output", "out"], "error: missing.jpg: no such file or folder"),
    (["train", "no-such-dir", "runs/x"], "error: no-such-dir: no such folder"),
    (["prepare", "no-such-dir", "prepared"], "error: no-such-dir: no such file or folder"),
    (["evaluate", "no-such-model", "no-such-dir"], "error: no-such-model: no such model folder"),
])
def test_a_missing_path_is_answered_at_once_without_a_backend(tmp_path, arguments, answer):
    started = time.perf_counter()
    result = run_koala(*arguments, cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 2 and result.stderr.strip() == answer
    assert elapsed < 2.0, f"{elapsed:.2f} s"  # was 4-7 s: TensorFlow was imported first
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "koala", *arguments], capture_output=True,
                            text=True, cwd=tmp_path, timeout=60)
    imported = _imports_of(traced)
    assert imported, traced.stderr[-500:]
    assert not imported & {"keras", "tensorflow", "jax", "torch"}, imported & {"keras", "tensorflow", "jax", "torch"}
    assert not list(tmp_path.iterdir())  # nothing created


def test_backend_start_up_notices_stay_out_of_the_terminal(scans, tiny_model_dir, tmp_path):
    pytest.importorskip("tensorflow")
    # TF_CPP_MIN_LOG_LEVEL=0 (as some environments set it) lets TensorFlow's native start-up notices through
    result = run_koala("colorize", scans / "a.jpg", "--output", tmp_path / "out", "--model", tiny_model_dir,
                       environment={"TF_CPP_MIN_LOG_LEVEL": "0", "KERAS_BACKEND": "tensorflow"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert result.stdout.strip() == f"1 coloured, 0 already done, 0 failed -> {tmp_path / 'out'}"


def test_prepare_that_finds_nothing_usable_says_why(tmp_path):
    folder = tmp_path / "greys"
    for index in range(3):
        grey = make_photo(index, 64, 64).mean(axis=2).astype(np.uint8)
        outputs.write_image(folder / f"grey_{index}.jpg", np.repeat(grey[..., None], 3, axis=2))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    result = run_koala("prepare", folder, tmp_path / "prepared", "--embedder", "none")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "no usable photo among 4" in errors[0] and "3 greyscale" in errors[0], errors[0]
    assert "rejected.csv" in errors[0]
    (tmp_path / "empty").mkdir()
    result = run_koala("prepare", tmp_path / "empty", tmp_path / "prepared-2", "--embedder", "none")
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'empty'}: no photos found (looked for image files, in subfolders too)"
    ]


# --- help that tells the truth ---------------------------------------------------------------------------------

def _help(*command) -> str:
    result = run_koala(*command, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def _option_help(text: str, option: str) -> str:
    """The help of one option (argparse puts it on the option's line, or on the following indented lines)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"\s+{re.escape(option)}\b", line):
            block = [line]
            for following in lines[index + 1:]:
                if re.match(r"\s{10,}\S", following):
                    block.append(following)
                else:
                    break
            return " ".join(" ".join(block).split())
    raise AssertionError(f"{option} not in help")


def test_help_shows_true_defaults_once():
    for command in (("prepare",), ("train",), ("colorize",), ("evaluate",), ("serve",)):
        text = _help(*command)
        assert "(default: True)" not in text and "(default: False)" not in text, command
        assert "(default: None)" not in text, command
        assert "(default: )" not in text, command
        for line in text.splitlines():
            assert line.count("(default") <= 1, line
    train = _help("train")
    for flag in ("--no-fusion", "--no-augment", "--in-memory", "--distribute"):
        assert "default" not in _option_help(train, flag), flag
    for option, default in (("--epochs", "20"), ("--batch-size", "16"), ("--learning-rate", "0.001"),
                            ("--seed", "1234")):
        described = _option_help(train, option)
        assert f"(default: {default})" in described, described
        assert len(described.split("(default")[0].split()) > 3, described  # says what it is, not only its name
    assert "--no-access-log" in _help("serve") and "default" not in _option_help(_help("serve"), "--no-access-log")
    assert _option_help(_help("prepare"), "--workers").count("default") == 1


def test_prepare_help_names_its_argument_as_it_is_shown():
    text = _help("prepare")
    assert "SRC" not in text
    assert "source" in text.split("\n\n")[0]  # the usage line
    assert "under SOURCE" in " ".join(text.split())


# --- output a person can read ----------------------------------------------------------------------------------

def test_one_failed_photo_shows_no_progress_bar(tiny_model_dir, tmp_path, capsys):
    from koala.colorize import Colorizer

    (tmp_path / "bad.jpg").write_text("not an image")
    messages = []
    results = Colorizer(tiny_model_dir).colorize_files([tmp_path / "bad.jpg"], tmp_path / "out", progress=True,
                                                        log=messages.append)
    assert [result.status for result in results] == ["failed"]
    assert "100%" not in capsys.readouterr().err
    assert len(messages) == 1 and "bad.jpg" in messages[0]


@pytest.fixture(scope="module")
def prepared_with_validation(tmp_path_factory):
    from koala import data

    folder = tmp_path_factory.mktemp("readable")
    for index in range(40):
        outputs.write_image(folder / "photos" / f"photo_{index:02d}.jpg", make_photo(500 + index, 72, 96))
    data.prepare(folder / "photos", folder / "prepared", embedder=None, size=64, progress=False,
                 log=lambda message: None)
    splits = [row["split"] for row in data.read_manifest(folder / "prepared")]
    assert "validation" in splits, splits
    return folder / "prepared"


TRAIN_QUICKLY = ("--no-fusion", "--image-size", "64", "--batch-size", "8", "--epochs", "1")


@pytest.mark.slow
def test_training_log_in_a_file_is_plain_lines(prepared_with_validation, tmp_path):
    result = run_koala("train", prepared_with_validation, tmp_path / "run", *TRAIN_QUICKLY)
    assert result.returncode == 0, result.stderr
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\r" not in stream, stream
    lines = result.stdout.splitlines()
    assert any(re.match(r"(epoch 1: colourfulness|warning: colour collapse\? epoch 1:)", line) for line in lines)
    assert lines[-1] == f"trained 1 epoch; model: {tmp_path / 'run' / 'model.keras'}"


@pytest.mark.slow
def test_training_in_a_terminal_puts_the_colour_message_on_its_own_line(prepared_with_validation, tmp_path):
    import pty

    primary, secondary = pty.openpty()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", COLUMNS="120")
    process = subprocess.Popen(
        [sys.executable, "-m", "koala", "train", str(prepared_with_validation), str(tmp_path / "run"),
         *TRAIN_QUICKLY], stdout=secondary, stderr=subprocess.PIPE, env=env,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=600)
    os.close(primary)
    text = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, text + process.stderr.read().decode()
    assert "━" in text  # the live bar is still there in a terminal
    lines = [line.rstrip("\r") for line in text.split("\n")]
    colour_lines = [line for line in lines if "colourfulness" in line]
    assert colour_lines, text
    for line in colour_lines:
        assert line.startswith(("epoch 1: colourfulness", "warning: colour collapse?")), repr(line)
