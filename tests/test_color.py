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


def _step_scene(height: int, width: int, edge: int):
    """A dark left half and a light right half (L* 30 | 70) whose true colour is red only on the right."""
    lightness = np.full((height, width), 30.0, np.float32)
    lightness[:, edge:] = 70.0
    return lightness


def test_edge_aware_colour_follows_the_full_resolution_edge():
    from scipy.ndimage import uniform_filter

    # the network's view: 64 × 64, its colour blurred across the edge (what a low-resolution guess looks like)
    small_lightness = _step_scene(64, 64, 32)
    sharp = np.zeros((64, 64, 2), np.float32)
    sharp[:, 32:, 0] = 0.3
    blurred = uniform_filter(sharp, size=(1, 9, 1))
    offset, slope = color.edge_aware_ab(small_lightness, blurred, radius=4, epsilon=1e-4)
    assert offset.shape == slope.shape == (64, 64, 2) and offset.dtype == slope.dtype == np.float32
    # the photo at 8 × the size: its edge falls between pixels 255 and 256
    full = _step_scene(64, 512, 256)
    plain = color.rgb_to_lab(color.join_lightness_ab(full, blurred))[0, :, 1]
    guided = color.rgb_to_lab(color.join_lightness_ab(full, offset, slope))[0, :, 1]
    # bilinear: red bleeds 20+ pixels into the dark side and fades in on the red one; guided: it jumps at the
    # photo's edge, and is nearer the sharp truth (0 on the left, about 38 on the right) around it
    truth = np.where(np.arange(512) < 256, 0.0, 38.4)
    assert plain[240] > 8 and guided[252] < plain[252] - 4 and guided[260] > plain[260] + 4
    assert guided[256] - guided[255] > 10 > plain[256] - plain[255]
    around = slice(192, 320)
    assert np.abs(guided - truth)[around].mean() < np.abs(plain - truth)[around].mean()
    # far from the edge, where the lightness is flat, both give the same colour
    assert abs(guided[40] - plain[40]) < 1.5 and abs(guided[480] - plain[480]) < 1.5
    # the join's lightness is the photo's either way
    np.testing.assert_allclose(color.rgb_to_lab(color.join_lightness_ab(full, offset, slope))[..., 0], full, atol=0.6)


def test_edge_aware_colour_with_no_slope_is_the_plain_join():
    rng = np.random.default_rng(1)
    lightness = rng.uniform(0, 100, (90, 120)).astype(np.float32)
    ab = rng.uniform(-0.4, 0.4, (32, 32, 2)).astype(np.float32)
    np.testing.assert_array_equal(color.join_lightness_ab(lightness, ab, np.zeros_like(ab)),
                                  color.join_lightness_ab(lightness, ab))
    flat = np.full((32, 32), 50.0, np.float32)  # no lightness detail: the colour is only smoothed
    offset, slope = color.edge_aware_ab(flat, ab, radius=2, epsilon=1e-3)
    assert np.abs(slope).max() < 1e-4  # (float32 rounding of the window means)
    assert np.abs(offset - ab).mean() < np.abs(ab).mean()
    with pytest.raises(ValueError, match="radius"):
        color.edge_aware_ab(flat, ab, radius=0, epsilon=1e-3)
    with pytest.raises(ValueError, match="differ"):
        color.join_lightness_ab(lightness, ab, np.zeros((8, 8, 2), np.float32))
