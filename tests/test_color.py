import numpy as np
import pytest
import skimage.color

from koala import color


@pytest.fixture
def random_rgb():
    return np.random.default_rng(0).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)


def test_rgb_to_lab_matches_scikit_image(random_rgb):
    np.testing.assert_allclose(color.rgb_to_lab(random_rgb), skimage.color.rgb2lab(random_rgb), atol=1e-3)


def test_lab_to_rgb_matches_scikit_image(random_rgb):
    lab = skimage.color.rgb2lab(random_rgb)
    np.testing.assert_allclose(color.lab_to_rgb(lab), skimage.color.lab2rgb(lab), atol=1e-4)


def test_round_trip_returns_the_same_pixels(random_rgb):
    assert np.array_equal(color.to_uint8(color.lab_to_rgb(color.rgb_to_lab(random_rgb))), random_rgb)


def test_lightness_alone_equals_lab_lightness(random_rgb):
    np.testing.assert_allclose(color.rgb_to_lightness(random_rgb), skimage.color.rgb2lab(random_rgb)[..., 0], atol=1e-3)


def test_preprocess_postprocess_round_trip_and_ranges(random_rgb):
    l_norm, ab_norm = color.preprocess(random_rgb)
    assert l_norm.shape == (40, 50, 1) and ab_norm.shape == (40, 50, 2)
    assert -1.0 <= l_norm.min() and l_norm.max() <= 1.0
    assert -1.0 <= ab_norm.min() and ab_norm.max() <= 1.0
    assert np.abs(color.postprocess(l_norm, ab_norm).astype(int) - random_rgb).max() <= 1


def test_ab_scale_is_the_one_constant_used():
    ab = np.array([[[color.AB_SCALE / 2, -color.AB_SCALE / 4]]], dtype=np.float32)
    np.testing.assert_allclose(color.normalize_ab(ab), [[[0.5, -0.25]]])
    np.testing.assert_allclose(color.denormalize_ab(color.normalize_ab(ab)), ab)


def test_join_keeps_full_resolution_lightness():
    rng = np.random.default_rng(1)
    lightness = rng.uniform(20, 80, size=(123, 77)).astype(np.float32)
    ab = rng.uniform(-0.1, 0.1, size=(8, 8, 2)).astype(np.float32)
    rgb = color.join_lightness_ab(lightness, ab)
    assert rgb.shape == (123, 77, 3)
    # the output's L is the input's L, up to 8-bit rounding
    assert np.abs(color.rgb_to_lightness(rgb) - lightness).max() < 0.6


def test_grey_to_rgb_is_neutral():
    rgb = color.grey_to_rgb(np.linspace(0, 100, 11, dtype=np.float32)[None])
    assert np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2])
