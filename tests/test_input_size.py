"""Reading photos at another side than the model was trained at (``input_size``)."""

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from koala import color
from koala.architectures import at_input_size, build_colorizer
from koala.colorize import Colorizer
from koala.config import ColorizerConfig
from koala.train import save_head
from tests.conftest import make_photo


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
    """An untrained Lite0 U-Net with fusion, trained size 64 (small: fast)."""
    folder = tmp_path_factory.mktemp("unet64")
    config = ColorizerConfig(architecture="lite0-unet", embedder_weights="", encoder_weights="", image_size=64,
                             edge_radius=2)
    save_head(build_colorizer(config), config, folder / "model.keras")
    config.save(folder / "config.json")
    return folder


def test_the_same_weights_read_a_larger_copy(unet_dir):
    trained, larger = Colorizer(unet_dir), Colorizer(unet_dir, input_size=128)
    assert trained.size == 64 and larger.size == 128
    assert larger.model.input_shape[0][1:3] == (128, 128)
    for mine, theirs in zip(larger.model.get_weights(), trained.model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    lightness = np.random.default_rng(3).uniform(10, 90, (2, 128, 128)).astype(np.float32)
    assert larger.network_output(lightness).shape == (2, 32, 32, 2)  # a quarter of the side, as at 64

    photo = make_photo(21, 300, 410)
    coloured, before = larger.colorize(photo), trained.colorize(photo)
    assert coloured.shape == photo.shape and not np.array_equal(coloured, before)
    np.testing.assert_allclose(color.rgb_to_lightness(coloured), color.rgb_to_lightness(photo), atol=1.0)


def test_the_config_sets_it_and_an_argument_overrides_it(unet_dir, tmp_path):
    config = ColorizerConfig.load(unet_dir / "config.json")
    assert config.input_size == 0  # the model's own side unless chosen
    config.input_size = 96
    for name in ("model.keras",):
        (tmp_path / name).write_bytes((unet_dir / name).read_bytes())
    config.save(tmp_path / "config.json")
    assert Colorizer(tmp_path).size == 96
    assert Colorizer(tmp_path, input_size=0).size == 64


def test_the_edge_radius_follows_the_side(unet_dir, monkeypatch):
    radii = []
    original = color.edge_aware_ab
    monkeypatch.setattr(color, "edge_aware_ab", lambda small, ab, radius, epsilon: radii.append(radius) or
                        original(small, ab, radius, epsilon))
    for size in (0, 128, 192):
        Colorizer(unet_dir, input_size=size).colorize(make_photo(4, 90, 120))
    assert radii == [2, 4, 6]  # the same share of the photo (2 px at 64)


def test_the_tutorial_network_reads_other_sizes_too(tiny_model_dir):
    colorizer = Colorizer(tiny_model_dir, input_size=320)
    photo = make_photo(9, 200, 260)
    assert colorizer.colorize(photo).shape == photo.shape


@pytest.mark.parametrize("size", [-32, 100, 2048])
def test_sizes_that_cannot_be_read_are_refused(unet_dir, size):
    with pytest.raises(ValueError, match="input_size must be 0"):
        Colorizer(unet_dir, input_size=size)


def test_at_input_size_keeps_the_model_at_its_own_size():
    config = ColorizerConfig(architecture="lite0-unet", embedder_weights="", encoder_weights="", image_size=64)
    model = build_colorizer(config)
    assert at_input_size(model, config, 64) is model
    with pytest.raises(ValueError, match="divisible by 32"):
        at_input_size(model, config, 80)


def test_the_command_line_checks_the_side():
    from koala.cli import input_size

    assert input_size("384") == 384 and input_size("0") == 0
    for text in ("100", "-32", "2048", "big"):
        with pytest.raises(argparse.ArgumentTypeError, match="multiple of 32"):
            input_size(text)


def test_choose_default_takes_the_side_as_a_setting():
    path = Path(__file__).resolve().parents[1] / "scripts" / "choose_default.py"
    spec = importlib.util.spec_from_file_location("choose_default", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.parse_candidate("models/default@S=1,I=384") == ("models/default", {"chroma_scale": 1.0,
                                                                                     "input_size": 384})
