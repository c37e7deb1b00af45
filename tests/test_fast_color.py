"""The fast full-resolution paths (table look-ups, row bands on a thread pool) against the exact ones."""

import numpy as np
import skimage.color

from koala import color, images


def test_lightness_of_large_rgb_and_grey_images_matches_scikit_image():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(700, 300, 3), dtype=np.uint8)  # several row bands
    np.testing.assert_allclose(color.rgb_to_lightness(rgb), skimage.color.rgb2lab(rgb)[..., 0], atol=1e-3)
    grey = rgb[..., 0]
    expected = skimage.color.rgb2lab(np.repeat(grey[..., None], 3, axis=-1))[..., 0]
    np.testing.assert_allclose(color.rgb_to_lightness(grey), expected, atol=1e-3)
    np.testing.assert_allclose(color.rgb_to_lightness(grey[..., None]), expected, atol=1e-3)


def test_band_join_equals_the_exact_lab_conversion():
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, size=(900, 613), dtype=np.uint8)
    ab = rng.uniform(-0.8, 0.8, size=(37, 29, 2)).astype(np.float32)
    lightness = color.rgb_to_lightness(grey)
    upsampled = color.denormalize_ab(color.resize_channels(ab, grey.shape))
    exact = color.to_uint8(color.lab_to_rgb(np.concatenate([lightness[..., None], upsampled], axis=-1)))
    for joined in (color.join_grey_ab(grey, ab), color.join_lightness_ab(lightness, ab)):
        difference = np.abs(joined.astype(int) - exact)
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_grey_photos_can_be_read_as_one_channel(tmp_path):
    from PIL import Image

    grey = np.random.default_rng(5).integers(0, 256, size=(60, 80), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    one = images.read_image(tmp_path / "grey.png", keep_grey=True)
    three = images.read_image(tmp_path / "grey.png")
    assert one.shape == (60, 80) and three.shape == (60, 80, 3)
    np.testing.assert_array_equal(one, grey)
    np.testing.assert_array_equal(three, np.repeat(grey[..., None], 3, axis=-1))


def test_a_12_megapixel_grey_jpeg_can_be_read(tmp_path):
    # exporting it as RGB used to need a second pixel cache, beyond Debian's ImageMagick policy
    from PIL import Image

    Image.new("L", (4000, 3000), 90).save(tmp_path / "scan.jpg")
    assert images.read_image(tmp_path / "scan.jpg").shape == (3000, 4000, 3)
