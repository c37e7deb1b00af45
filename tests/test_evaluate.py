"""`koala evaluate` end to end on tiny data with an untrained model, and the report it writes."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from koala import color, evaluate, images, metrics, outputs, plots
from tests.conftest import make_photo


@pytest.fixture(scope="module")
def colorizer(tiny_model_dir):
    from koala.colorize import Colorizer

    return Colorizer(tiny_model_dir)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Five colourful photos, one grey photo and one broken file."""
    folder = tmp_path_factory.mktemp("evaluate_photos")
    for index in range(5):
        outputs.write_image(folder / f"photo_{index}.jpg", make_photo(100 + index, 80 + 16 * index, 120))
    grey = color.grey_to_rgb(color.rgb_to_lightness(make_photo(7)))
    outputs.write_image(folder / "grey.png", grey)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def prepared_set(tmp_path_factory, photo_folder):
    from koala.data import prepare

    destination = tmp_path_factory.mktemp("evaluate_prepared") / "set"
    prepare(photo_folder, destination, embedder=None, progress=False, log=lambda message: None)
    return destination


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_evaluation_writes_the_report(tmp_path, mixed_folder, tiny_model_dir):
    messages: list[str] = []
    report = tmp_path / "report"
    result = evaluate.evaluate(
        tiny_model_dir, mixed_folder, report_dir=report, figure_limit=3, progress=False, log=messages.append
    )
    # the broken and the grey file are skipped, each with one line naming it
    assert len(result.images) == 5
    assert result.split is None
    assert any("broken.jpg" in line for line in messages)
    assert any("grey.png" in line for line in messages)
    assert len(result.skipped) == 2
    assert all("\n" not in line for line in result.skipped)

    rows = read_csv(report / "metrics.csv")
    assert [row["name"] for row in rows] == [f"photo_{index}.jpg" for index in range(5)]
    for row in rows:
        assert float(row["grey_auc"]) < 1.0
        assert float(row["grey_colorfulness"]) < 1.0
        assert 0.0 <= float(row["model_auc"]) <= 1.0
        assert float(row["true_colorfulness"]) > 5.0
    summary = (report / "summary.md").read_text()
    assert "| model |" in summary and "| grey baseline |" in summary
    assert "5 images" in summary and str(tiny_model_dir) in summary
    assert result.image_sizes == [(256, 256)] and "at 256 × 256" in summary
    assert "broken.jpg" in summary
    assert len(list((report / "panels").glob("*.png"))) == 3
    assert (report / "best-worst.png").stat().st_size > 0
    assert (report / "colorfulness.png").stat().st_size > 0

    model_row, grey_row = result.summary
    assert (model_row.method, grey_row.method) == ("model", "grey baseline")
    assert model_row.images == grey_row.images == 5
    assert grey_row.colorfulness_ratio < 0.05
    assert result.summary_dict()["grey baseline"]["auc"] == pytest.approx(grey_row.auc)
    assert model_row.psnr == pytest.approx(np.mean([float(row["model_psnr"]) for row in rows]), rel=1e-4)


def test_grey_row_is_the_truths_own_lightness(mixed_folder, colorizer):
    items, _ = evaluate.evaluation_images(mixed_folder, log=lambda message: None)
    name, truth = next(items)
    assert truth.shape == (256, 256, 3)
    result = evaluate.evaluate(colorizer, mixed_folder, limit=1, progress=False, log=lambda message: None)
    expected = metrics.image_metrics(metrics.grey_baseline(truth), truth)
    assert result.images[0].name == name
    assert result.images[0].grey.psnr == pytest.approx(expected.psnr)
    assert result.images[0].grey.auc == pytest.approx(expected.auc)
    # the prediction keeps the photo's lightness: only its colours can differ
    predicted = evaluate.predict(colorizer, [truth])[0]
    assert np.abs(color.rgb_to_lightness(predicted) - color.rgb_to_lightness(truth)).mean() < 1.5


def test_prepared_set_evaluation(tmp_path, prepared_set, colorizer):
    from koala.data import read_manifest

    manifest = read_manifest(prepared_set)
    split = next(name for name in ("test", "validation", "train") if any(row["split"] == name for row in manifest))
    chosen = [row["source"] for row in manifest if row["split"] == split][:3]
    report = tmp_path / "report"
    result = evaluate.evaluate(
        colorizer, prepared_set, split=split, report_dir=report, limit=3, figure_limit=1, progress=False,
        log=lambda message: None,
    )
    assert result.split == split
    assert [item.name for item in result.images] == chosen
    assert len(read_csv(report / "metrics.csv")) == len(chosen)
    summary = (report / "summary.md").read_text()
    assert "| model |" in summary and "| grey baseline |" in summary and f"split `{split}`" in summary
    # arrays of another size are reported at their size, not a fixed 256
    small = [np.full((48, 40, 3), 100, np.uint8), np.full((48, 40, 3), 150, np.uint8)]
    arrays = evaluate.evaluate_arrays(small, small)
    assert arrays.image_sizes == [(48, 40)] and "at 40 × 48" in arrays.markdown()
    with pytest.raises(ValueError, match="no images in the 'nosuch' split"):
        evaluate.evaluate(colorizer, prepared_set, split="nosuch", progress=False, log=lambda message: None)


def test_evaluate_arrays_with_perfect_and_grey_predictions(tmp_path):
    truth = [images.resize_and_crop(make_photo(seed), 64) for seed in range(3)]
    perfect = evaluate.evaluate_arrays(truth, truth)
    model_row, grey_row = perfect.summary
    assert model_row.psnr == math.inf and model_row.ssim == pytest.approx(1.0) and model_row.auc == 1.0
    assert model_row.colorfulness_ratio == pytest.approx(1.0)
    assert grey_row.auc < model_row.auc and grey_row.psnr < 40
    assert perfect.wins == 3

    greys = [metrics.grey_baseline(image) for image in truth]
    grey_result = evaluate.evaluate_arrays(greys, truth, names=["a", "b", "c"], report_dir=tmp_path / "r")
    model_row, grey_row = grey_result.summary
    assert model_row.psnr == pytest.approx(grey_row.psnr) and model_row.auc == pytest.approx(grey_row.auc)
    assert grey_result.wins == 0
    table = evaluate.format_summary_table(grey_result.summary)
    assert table.count("\n") == 4 and "| model |" in table and "| grey baseline |" in table
    assert [row["name"] for row in read_csv(tmp_path / "r" / "metrics.csv")] == ["a", "b", "c"]
    assert (tmp_path / "r" / "best-worst.png").exists()


def test_three_panel_figure(tmp_path):
    original = make_photo(1, 60, 90)
    figure = plots.three_panel_figure(original, None, original, title="a title")
    assert len(figure.axes) == 3
    assert [axis.get_title() for axis in figure.axes] == ["original colours", "colours removed", "recoloured"]
    plots.save_figure(figure, tmp_path / "panel.png")
    assert images.read_image(tmp_path / "panel.png").shape[1] > 200


def test_missing_data_is_an_error(tmp_path, colorizer):
    with pytest.raises(FileNotFoundError):
        evaluate.evaluate(colorizer, tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no photos"):
        evaluate.evaluate(colorizer, tmp_path / "empty", progress=False)


def test_cli(tmp_path, mixed_folder, tiny_model_dir):
    report = tmp_path / "cli-report"
    environment = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"))
    command = [sys.executable, "-m", "koala", "evaluate", str(tiny_model_dir), str(mixed_folder),
               "--report", str(report), "--limit", "2", "--figures", "1", "--quiet"]
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120,
                              cwd=Path(__file__).resolve().parent.parent)
    assert finished.returncode == 0, finished.stderr
    assert "| grey baseline |" in finished.stdout
    assert "broken.jpg" in finished.stderr
    assert len(read_csv(report / "metrics.csv")) == 2


def test_training_images_are_called_out(prepared_set, photo_folder, colorizer):
    import copy

    from koala.data import read_manifest

    trained = copy.copy(colorizer)
    trained.config = colorizer.config.replace(data=str(prepared_set))
    training = [row["source"] for row in read_manifest(prepared_set) if row["split"] == "train"]
    quiet = dict(limit=2, progress=False, log=lambda message: None)
    on_train_split = evaluate.evaluate(trained, prepared_set, split="train", **quiet)
    assert any("2 of these 2 images are in the model's training split" in line for line in on_train_split.warnings)
    assert "**Caveat:** 2 of these 2 images" in on_train_split.markdown()
    # the same photos found again from their source folder (prepared ids are content hashes)
    on_sources = evaluate.evaluate(trained, photo_folder, **quiet)
    expected = sum(item.name in training for item in on_sources.images)
    assert any(f"{expected} of these 2 images" in line for line in on_sources.warnings) == (expected > 0)
    # an untrained model records no training set: only the small-sample caveat
    plain = evaluate.evaluate(colorizer, prepared_set, split="train", **quiet)
    assert any("training split" in line for line in plain.warnings)
    assert not any("of these" in line for line in plain.warnings)


def test_full_size_folder_is_scored_as_koala_colorize_colours_it(tmp_path, mixed_folder, colorizer):
    # photos of three sizes, none of them the network's 256 × 256
    result = evaluate.evaluate(colorizer, mixed_folder, full_size=True, report_dir=tmp_path / "r", figure_limit=1,
                               progress=False, log=lambda message: None)
    sizes = {(80 + 16 * index, 120) for index in range(5)}
    assert set(result.image_sizes) == sizes and len(result.images) == 5 and len(result.skipped) == 2
    assert "at their own sizes" in result.markdown()
    # each score is the one of koala colorize's own output for the photo, at the photo's size
    photo = images.read_image(mixed_folder / "photo_2.jpg")
    coloured = colorizer.colorize(photo)
    assert coloured.shape == photo.shape
    expected = metrics.image_metrics(coloured, photo)
    scored = next(item for item in result.images if item.name == "photo_2.jpg")
    assert scored.model.psnr == pytest.approx(expected.psnr, rel=1e-6)
    assert scored.grey.psnr == pytest.approx(metrics.psnr(metrics.grey_baseline(photo), photo), rel=1e-6)
    # the 256-px evaluation of the same folder scores other pixels
    square = evaluate.evaluate(colorizer, mixed_folder, progress=False, log=lambda message: None)
    assert square.image_sizes == [(256, 256)]
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "manifest.csv").write_text("id,source,split\n")
    with pytest.raises(ValueError, match="prepared set holds 256-px copies"):
        evaluate.evaluate(colorizer, tmp_path / "set", full_size=True, progress=False)


def test_cli_photos_at_full_size(tmp_path, mixed_folder, tiny_model_dir):
    environment = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"))
    root = Path(__file__).resolve().parent.parent

    def run(*arguments):
        return subprocess.run([sys.executable, "-m", "koala", "evaluate", str(tiny_model_dir), *arguments],
                              capture_output=True, text=True, env=environment, timeout=120, cwd=root)

    finished = run("--photos", str(mixed_folder), "--limit", "2", "--quiet", "--chroma-scale", "0.5")
    assert finished.returncode == 0, finished.stderr
    assert "| grey baseline |" in finished.stdout and "at their own sizes" in finished.stdout
    both = run(str(mixed_folder), "--photos", str(mixed_folder))
    assert both.returncode == 2 and "not both" in both.stderr
    neither = run()
    assert neither.returncode == 2 and "nothing to evaluate" in neither.stderr
