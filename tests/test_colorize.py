import numpy as np
import pytest

from koala import color, images, outputs
from koala.colorize import Colorizer
from tests.conftest import make_photo


@pytest.fixture(scope="module")
def colorizer(tiny_model_dir):
    return Colorizer(tiny_model_dir)


def test_full_resolution_output_keeps_size_and_lightness(colorizer):
    photo = make_photo(7, 301, 517)  # not square, not a multiple of 8
    grey = color.grey_to_rgb(color.rgb_to_lightness(photo))
    result = colorizer.colorize(grey)
    assert result.shape == (301, 517, 3) and result.dtype == np.uint8
    difference = np.abs(color.rgb_to_lightness(result) - color.rgb_to_lightness(grey))
    assert np.median(difference) < 0.5 and np.percentile(difference, 99) < 2.0


def test_colour_input_is_treated_as_grey(colorizer):
    photo = make_photo(8, 120, 90)
    grey = color.grey_to_rgb(color.rgb_to_lightness(photo))
    # the same result up to the 8-bit rounding of the grey version's lightness
    difference = np.abs(colorizer.colorize(photo).astype(int) - colorizer.colorize(grey).astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.5


def test_accepts_paths_pil_images_and_grey_arrays(colorizer, tmp_path):
    from PIL import Image

    photo = make_photo(9, 80, 60)
    outputs.write_image(tmp_path / "p.png", photo)
    from_path = colorizer.colorize(tmp_path / "p.png")
    assert from_path.shape == (80, 60, 3)
    np.testing.assert_array_equal(colorizer.colorize(Image.fromarray(photo)), from_path)
    assert colorizer.colorize(photo[..., 0]).shape == (80, 60, 3)


def test_folder_run_skips_finished_files_and_reports_failures(colorizer, photo_folder, tmp_path):
    output = tmp_path / "out"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in sorted(photo_folder.glob("*.jpg"))[:3]:
        (inputs / path.name).write_bytes(path.read_bytes())
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff nope")
    results = colorizer.colorize_files([inputs], output, progress=False, log=lambda m: None)
    assert [r.status for r in results].count("done") == 3
    failed = [r for r in results if r.status == "failed"]
    assert len(failed) == 1 and "broken.jpg" in failed[0].error
    outputs = sorted(output.glob("*.jpg"))
    assert len(outputs) == 3 and not list(output.glob(".*"))
    stamps = {path: path.stat().st_mtime_ns for path in outputs}
    again = colorizer.colorize_files([inputs], output, progress=False, log=lambda m: None)
    assert [r.status for r in again].count("skipped") == 3
    assert {path: path.stat().st_mtime_ns for path in outputs} == stamps
    for path in outputs:
        assert images.read_image(path).shape[:2] == images.read_image(inputs / path.name).shape[:2]


def test_temperature_changes_a_classification_model_and_is_checked(tmp_path):
    from koala.architectures import build_colorizer
    from koala.config import ColorizerConfig
    from koala.train import save_head

    import keras

    config = ColorizerConfig(fusion=False, image_size=64, loss="classification")
    keras.utils.set_random_seed(7)
    head = build_colorizer(config)
    # an untrained head's logits on a flat grey photo are all about 1e-4: softmax is uniform at either
    # temperature and both pictures came out the same whenever the colour rounded alike (a flaky test).
    # Class biases of a few units give the distribution a shape for the temperature to act on.
    last = [layer for layer in head.layers if layer.weights][-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel, np.random.default_rng(7).normal(0.0, 2.0, bias.shape).astype(np.float32)])
    save_head(head, config, tmp_path / "model.keras")
    config.save(tmp_path / "config.json")
    grey = np.full((40, 50), 120, np.uint8)
    vivid = Colorizer(tmp_path, temperature=0.05).colorize(grey)
    cautious = Colorizer(tmp_path, temperature=5.0).colorize(grey)
    assert vivid.shape == cautious.shape == (40, 50, 3)
    assert not np.array_equal(vivid, cautious)
    with pytest.raises(ValueError, match="temperature"):
        Colorizer(tmp_path, temperature=0)


def test_chroma_scale_multiplies_the_predicted_colour(tiny_model_dir):
    from koala.colorize import Colorizer

    lightness = np.random.default_rng(4).uniform(20, 80, (2, 256, 256)).astype(np.float32)
    full = Colorizer(tiny_model_dir).predict_ab(lightness)
    half = Colorizer(tiny_model_dir, chroma_scale=0.5).predict_ab(lightness)
    assert np.abs(full).max() > 1e-4
    np.testing.assert_allclose(half, 0.5 * full, atol=1e-6)
    with pytest.raises(ValueError, match="chroma_scale"):
        Colorizer(tiny_model_dir, chroma_scale=-1)


def test_edge_radius_changes_only_how_the_colour_is_enlarged(tiny_model_dir):
    photo = make_photo(11, 300, 200)
    plain = Colorizer(tiny_model_dir).colorize(photo)
    colorizer = Colorizer(tiny_model_dir, edge_radius=4, edge_epsilon=1e-3)
    guided = colorizer.colorize(photo)
    assert guided.shape == plain.shape and not np.array_equal(guided, plain)
    # the same lightness, the same colour on average: only its placement differs
    np.testing.assert_allclose(color.rgb_to_lightness(guided), color.rgb_to_lightness(photo), atol=1.0)
    plain_ab, guided_ab = color.rgb_to_lab(plain)[..., 1:], color.rgb_to_lab(guided)[..., 1:]
    assert np.abs(plain_ab.mean(axis=(0, 1)) - guided_ab.mean(axis=(0, 1))).max() < 1.0
    assert colorizer.colorize_batch([photo])[0].tobytes() == guided.tobytes()
    with pytest.raises(ValueError, match="edge_radius"):
        Colorizer(tiny_model_dir, edge_radius=-1)


def test_flip_average_is_the_mean_of_the_photo_and_its_mirror_image(tiny_model_dir):
    lightness = np.random.default_rng(5).uniform(10, 90, (2, 256, 256)).astype(np.float32)
    plain = Colorizer(tiny_model_dir)
    averaged = Colorizer(tiny_model_dir, flip_average=True)
    direct, mirrored = plain.network_output(lightness), plain.network_output(lightness[:, :, ::-1].copy())
    np.testing.assert_allclose(averaged.network_output(lightness), 0.5 * (direct + mirrored[:, :, ::-1]), atol=1e-5)
    assert np.abs(direct - mirrored[:, :, ::-1]).max() > 1e-3  # (the mirror image is a second opinion)
