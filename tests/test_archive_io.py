"""Archive formats: the cheap colour join, 16-bit TIFF masters in and out, `--format tiff`, and the Pillow decoder
for PNG and TIFF (the same pixels as ImageMagick, damage still refused). Tiny generated images only."""

import io
from unittest import mock

import numpy as np
import pytest
import tifffile
from PIL import Image

from koala import cli, color, images, outputs
from koala.colorize import Colorizer, plan_outputs
from tests.conftest import make_photo


def _grey_photo(seed: int, height: int, width: int) -> np.ndarray:
    """A grey photo with smooth shading, edges and grain (what the joins see in a scan)."""
    return color.grey_with_lightness(make_photo(seed, height, width))


def _planes(seed: int, shape=(32, 32)):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]] / shape[0]
    ab = np.stack([0.25 * np.sin(3 * x + rng.uniform(0, 6)), 0.25 * np.cos(2 * y + rng.uniform(0, 6))], axis=-1)
    return ab.astype(np.float32)


def test_cheap_join_keeps_lightness_and_matches_the_exact_join():
    grey = _grey_photo(1, 1500, 1100)  # reduced by 2 for the colour
    ab = _planes(2)
    lightness = color.rgb_to_lightness(grey)
    small_lightness = color.rgb_to_lightness(images.resize_exact(grey, 32))
    for slope in (None, color.edge_aware_ab(small_lightness, ab, 2, 1e-3)):
        offset = ab if slope is None else slope[0]
        slope_plane = None if slope is None else slope[1]
        exact = color.rgb_to_lab(color.join_grey_ab(grey, offset, slope_plane))
        cheap_image = color.join_grey_offsets(grey, offset, slope_plane)
        assert isinstance(cheap_image, Image.Image) and cheap_image.size == (1100, 1500)
        cheap = color.rgb_to_lab(np.asarray(cheap_image))
        assert np.abs(cheap[..., 0] - lightness).mean() < 1.0
        assert np.abs(cheap[..., 1:] - exact[..., 1:]).mean() < 2.0
        assert np.hypot(cheap[..., 1], cheap[..., 2]).mean() > 5  # coloured, not grey


def test_cheap_join_at_16_bits_keeps_the_masters_levels():
    grey8 = _grey_photo(3, 300, 420)
    grey16 = grey8.astype(np.uint16) * 257 + np.random.default_rng(4).integers(0, 257, grey8.shape).astype(np.uint16)
    ab = _planes(5)
    joined = color.join_grey_offsets(grey16, ab)
    assert joined.dtype == np.uint16 and joined.shape == (300, 420, 3)
    lightness16 = color.rgb_to_lightness(grey16 / 65535.0)
    joined_lab = color.rgb_to_lab(joined.astype(np.float32) / 65535.0)
    assert np.abs(joined_lab[..., 0] - lightness16).mean() < 1.0
    eight_bit = color.rgb_to_lab(np.asarray(color.join_grey_offsets(grey8, ab)))
    assert np.abs(joined_lab[..., 1:] - eight_bit[..., 1:]).mean() < 1.0
    assert len(np.unique(joined[..., 1])) > 1000  # not 8-bit levels in a 16-bit file


def test_grey_with_lightness_keeps_a_colour_photos_lightness():
    photo = make_photo(6, 200, 300)
    grey = color.grey_with_lightness(photo)
    assert grey.dtype == np.uint8 and grey.shape == (200, 300)
    assert np.abs(color.rgb_to_lightness(grey) - color.rgb_to_lightness(photo)).max() < 0.5


def _tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _pillow_tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "TIFF", **options)
    return buffer.getvalue()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _magick(data: bytes, **options) -> np.ndarray:
    with mock.patch.object(images, "_read_with_pillow", return_value=None):
        return images.read_image(data, name="x", **options)


def _generated_files():
    rng = np.random.default_rng(7)
    grey8 = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (37, 53), dtype=np.uint16)
    rgb = make_photo(8, 37, 53)
    return {
        "grey.png": _png(grey8), "grey16.png": _png(grey16), "rgb.png": _png(rgb),
        "grey.tif": _tiff(grey8), "grey-lzw.tif": _pillow_tiff(grey8, compression="tiff_lzw"),
        "grey16-deflate.tif": _tiff(grey16, compression="zlib", predictor=True),
        "grey16-big-endian.tif": _tiff(grey16.astype(">u2")),
        "rgb-deflate.tif": _tiff(rgb, photometric="rgb", compression="zlib"),
    }


@pytest.mark.parametrize("name", sorted(_generated_files()))
def test_pillow_decodes_plain_png_and_tiff_like_imagemagick(name):
    data = _generated_files()[name]
    image_format = "PNG" if name.endswith(".png") else "TIFF"
    assert images._read_with_pillow(data, name, image_format, 10**6, True, False) is not None  # the fast path
    for options in ({}, {"keep_grey": True}, {"keep_grey": True, "keep_depth": True}):
        fast, magick = images.read_image(data, name=name, **options), _magick(data, **options)
        assert fast.dtype == magick.dtype and fast.shape == magick.shape, (name, options)
        np.testing.assert_array_equal(fast, magick, err_msg=f"{name} {options}")
    if "16" in name:
        assert images.read_image(data, keep_grey=True, keep_depth=True).dtype == np.uint16


@pytest.mark.parametrize("name", ["grey.png", "rgb.png", "grey16-deflate.tif", "rgb-deflate.tif", "grey.tif"])
@pytest.mark.parametrize("cut", [0.3, 0.7, 0.97])
def test_truncated_png_and_tiff_are_still_refused_with_the_file_named(name, cut):
    data = _generated_files()[name]
    with pytest.raises(images.ImageError) as caught:
        images.read_image(data[: int(len(data) * cut)], name=f"scans/{name}")
    assert str(caught.value).startswith(f"scans/{name}: ") and "\n" not in str(caught.value)


def test_pillow_decoder_keeps_the_limits():
    data = _generated_files()["grey16-deflate.tif"]  # TIFF: no size in header_size, so Pillow's header is checked
    with pytest.raises(images.ImageError, match="too large"):
        images.read_image(data, name="x.tif", max_pixels=1000)
    with mock.patch.dict(images.MAGICK_LIMITS, width=40):  # ImageMagick's own limit, refused in its words
        assert images._read_with_pillow(data, "x", "TIFF", 10**6, True, True) is None


@pytest.fixture(scope="module")
def colorizer(tiny_model_dir):
    return Colorizer(tiny_model_dir, edge_radius=2, edge_epsilon=1e-3)


def test_16_bit_tiff_master_comes_back_as_16_bit_colour_tiff(colorizer, tmp_path):
    grey16 = (_grey_photo(9, 120, 160).astype(np.uint16) * 257
              + np.random.default_rng(10).integers(0, 257, (120, 160)).astype(np.uint16))
    source, target = tmp_path / "master.tif", tmp_path / "out" / "master.tif"
    source.write_bytes(_tiff(grey16, compression="zlib"))
    colorizer.colorize_file(source, target)
    coloured = tifffile.imread(target)
    assert coloured.dtype == np.uint16 and coloured.shape == (120, 160, 3)
    lab = color.rgb_to_lab(coloured.astype(np.float32) / 65535.0)
    assert np.abs(lab[..., 0] - color.rgb_to_lightness(grey16 / 65535.0)).mean() < 1.0
    # ... and an 8-bit TIFF gives an 8-bit one; PNG from a 16-bit master is 8-bit colour
    source8 = tmp_path / "eight.tif"
    source8.write_bytes(_tiff(_grey_photo(11, 60, 80)))
    colorizer.colorize_file(source8, tmp_path / "out" / "eight.tif")
    assert tifffile.imread(tmp_path / "out" / "eight.tif").dtype == np.uint8
    colorizer.colorize_file(source, tmp_path / "out" / "master.png")
    assert images.read_image(tmp_path / "out" / "master.png").shape == (120, 160, 3)


def test_file_outputs_keep_the_lightness_of_grey_and_colour_photos(colorizer, tmp_path):
    for name, photo in (("grey.png", _grey_photo(12, 90, 130)), ("colour.png", make_photo(13, 90, 130))):
        outputs.write_image(tmp_path / name, np.repeat(photo[..., None], 3, -1) if photo.ndim == 2 else photo)
        colorizer.colorize_file(tmp_path / name, tmp_path / "out" / name)
        coloured = images.read_image(tmp_path / "out" / name)
        error = np.abs(color.rgb_to_lightness(coloured) - color.rgb_to_lightness(photo)).mean()
        assert error < 1.0, name


def test_format_tiff_and_auto_keeping_tiff(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.tif", "b.TIFF", "c.png", "d.jpg"):
        (folder / name).write_bytes(b"")
    auto = {source.name: target.name for source, target in plan_outputs([folder], tmp_path / "out")}
    assert auto == {"a.tif": "a.tif", "b.TIFF": "b.tif", "c.png": "c.png", "d.jpg": "d.jpg"}
    tiff = {source.name: target.name for source, target in plan_outputs([folder], tmp_path / "out", "tiff")}
    assert set(tiff.values()) == {"a.tif", "b.tif", "c.tif", "d.tif"}


def test_koala_colorize_format_tiff(tiny_model_dir, tmp_path, capsys):
    outputs.write_image(tmp_path / "in" / "photo.png", make_photo(14, 50, 70))
    status = cli.main(["colorize", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--format", "tiff",
                       "--model", str(tiny_model_dir)])
    assert status == 0, capsys.readouterr()
    written = tifffile.imread(tmp_path / "out" / "photo.tif")
    assert written.dtype == np.uint8 and written.shape == (50, 70, 3)


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (600, 7), (70, 333)])
def test_fast_png_writer_round_trips_through_pillow_and_imagemagick(shape):
    rgb = make_photo(15, *shape) if min(shape) > 1 else np.random.default_rng(16).integers(0, 256, (*shape, 3),
                                                                                             dtype=np.uint8)
    data = outputs.encode_image(rgb, "PNG")
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        np.testing.assert_array_equal(np.asarray(opened), rgb)
    np.testing.assert_array_equal(_magick(data), rgb)  # both accepted a wrong Adler-32 once: see below
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(outputs.encode_image(Image.fromarray(rgb), "PNG")))),
                                  rgb)


def test_other_pngs_are_left_to_imagemagick():
    from wand.image import Image as WandImage

    rgb = make_photo(17, 20, 30)
    for mode in ("1", "P", "LA", "RGBA"):
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, "PNG")
        data = buffer.getvalue()
        assert images._read_with_pillow(data, "x", "PNG", 10**6, True, False) is None, mode
    levels = (rgb.astype(np.int32) * 257 + np.random.default_rng(18).integers(-120, 120, rgb.shape)).clip(0, 65535)
    with WandImage.from_array(levels.astype(np.uint16), channel_map="RGB", storage="short") as picture:
        picture.format, picture.depth = "PNG", 16
        deep = picture.make_blob()
    assert deep[24] == 16
    assert images._read_with_pillow(deep, "x", "PNG", 10**6, True, False) is None  # 16-bit RGB: ImageMagick rounds
    np.testing.assert_array_equal(images.read_image(deep), rgb)


def _idat_stream(png: bytes) -> bytes:
    """The concatenated IDAT payloads of a PNG (its zlib stream)."""
    stream, offset = b"", 8
    while offset < len(png):
        length = int.from_bytes(png[offset:offset + 4], "big")
        if png[offset + 4:offset + 8] == b"IDAT":
            stream += png[offset + 8:offset + 8 + length]
        offset += 12 + length
    return stream


def test_png_writer_deflates_with_isal_into_one_zlib_stream():
    """The ISA-L pieces, joined by sync flushes, are one zlib stream that the standard library inflates, its
    Adler-32 (combined from the pieces') checked, to the Sub-filtered rows."""
    import zlib

    rgb = make_photo(19, 700, 90)  # three pieces of rows
    stream = _idat_stream(outputs.encode_image(rgb, "PNG"))
    decompressor = zlib.decompressobj()
    raw = decompressor.decompress(stream)
    assert decompressor.eof and not decompressor.unused_data
    rows = np.frombuffer(raw, np.uint8).reshape(700, 1 + 90 * 3)
    assert (rows[:, 0] == 1).all()  # Sub
    np.testing.assert_array_equal(np.cumsum(rows[:, 1:].reshape(700, 90, 3), axis=1, dtype=np.uint8), rgb)
    with mock.patch.object(outputs, "PNG_COMPRESS_LEVEL", 0):
        assert len(outputs.encode_image(rgb, "PNG")) > len(_idat_stream(outputs.encode_image(rgb, "PNG"))) > 0


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (130, 1200), (47, 333)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_writer_round_trips_through_tifffile_pillow_and_imagemagick(shape, dtype):
    """Strips differenced and deflated by ISA-L on all cores: the same pixels back in tifffile, ImageMagick
    (8-bit: its reading) and Pillow (8-bit), with the predictor and deflate tags a reader needs."""
    rng = np.random.default_rng(20)
    rgb = make_photo(21, *shape) if min(shape) > 1 else rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    if dtype == np.uint16:
        rgb = (rgb.astype(np.uint32) * 257 + rng.integers(0, 257, rgb.shape)).astype(np.uint16)
    data = outputs.encode_image(rgb, "TIFF")
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        page = tiff.pages[0]
        assert (page.compression, page.predictor, page.dtype) == (8, 2, np.dtype(dtype))  # Adobe deflate
        assert len(page.dataoffsets) == -(-shape[0] // page.rowsperstrip)
        np.testing.assert_array_equal(page.asarray(), rgb)
    expected8 = rgb if dtype == np.uint8 else np.rint(rgb / 257).astype(np.uint8)
    np.testing.assert_array_equal(_magick(data), expected8)
    if dtype == np.uint8:
        with Image.open(io.BytesIO(data)) as opened:
            np.testing.assert_array_equal(np.asarray(opened), rgb)


@pytest.mark.parametrize("shape", [(120, 160), (121, 163), (64, 9), (5, 7)])
def test_16_bit_join_adds_half_size_planes_like_the_full_enlargement(shape):
    """The 16-bit join broadcasts half-size colour planes over 2 x 2 blocks where :func:`color._enlarge_plane`
    doubles pixels: the same levels as enlarging each plane to full size and adding it."""
    rng = np.random.default_rng(22)
    grey = rng.integers(0, 65536, shape, dtype=np.uint16)
    offsets = rng.integers(-80, 80, (max(1, shape[0] // 5), max(1, shape[1] // 5), 3)).astype(np.int16)
    expected = np.empty((*shape, 3), np.uint16)
    for index in range(3):
        plane = Image.fromarray(np.ascontiguousarray(offsets[..., index], np.float32) * np.float32(257), "F")
        value = np.asarray(color._enlarge_plane(plane, shape[::-1])) + grey.astype(np.float32) + np.float32(0.5)
        expected[..., index] = np.clip(value, 0, 65535)
    with mock.patch.object(color, "_BAND_PIXELS", 9 * shape[1]):  # odd bands rounded to pairs of rows
        np.testing.assert_array_equal(color._add_offsets_16bit(grey, offsets), expected)
