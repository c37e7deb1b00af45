"""Colour JPEGs that keep a grey JPEG's luma scan (koala.jpeg_luma), through Colorizer.colorize_file and the CLI."""

import io

import numpy as np
import pytest
from PIL import Image

from koala import color, images, jpeg_luma
from koala.colorize import Colorizer
from tests.conftest import make_photo

AB = (0.15, 0.35)  # the colour the stub model predicts everywhere (normalised a*, b*): orange, Cb far below Cr


@pytest.fixture
def colorizer(tiny_model_dir, monkeypatch):
    """The tiny model, its prediction replaced by one known colour so the output's colour can be checked."""
    model = Colorizer(tiny_model_dir)

    def constant(lightness):
        ab = np.empty((*np.shape(lightness)[:3], 2), np.float32)
        ab[..., 0], ab[..., 1] = AB
        return ab

    monkeypatch.setattr(model, "predict_ab", constant)
    return model


def grey_jpeg(path, height=141, width=203, seed=3, **options):
    grey = color.to_uint8(color.rgb_to_lightness(make_photo(seed, height, width)) / 100.0)
    Image.fromarray(grey, "L").save(path, format="JPEG", quality=options.pop("quality", 90), **options)
    return path


def luma(data: bytes) -> np.ndarray:
    """The Y' channel as libjpeg decodes it (a colour JPEG asked for greyscale output gives exactly Y')."""
    image = Image.open(io.BytesIO(data))
    image.draft("L", image.size)
    return np.asarray(image.convert("L") if image.mode != "L" else image)


def assert_predicted_colour(rgb: np.ndarray) -> None:
    lab = color.rgb_to_lab(rgb)
    mid = (lab[..., 0] > 30) & (lab[..., 0] < 80)  # away from black and white, where sRGB clips the colour
    assert abs(lab[..., 1][mid].mean() - AB[0] * color.AB_SCALE) < 3
    assert abs(lab[..., 2][mid].mean() - AB[1] * color.AB_SCALE) < 3


def test_luma_kept_bit_for_bit_and_colour_added(colorizer, tmp_path):
    source = grey_jpeg(tmp_path / "scan.jpg")  # odd sizes: partial blocks and half-size chroma rounding up
    colorizer.colorize_file(source, tmp_path / "out.jpg")
    data, output = source.read_bytes(), (tmp_path / "out.jpg").read_bytes()
    assert jpeg_luma.parse(data) is not None and jpeg_luma.parse(output) is None  # the output has 3 components
    assert jpeg_luma.parse(data).entropy in output  # the scan's bytes, unchanged
    assert np.array_equal(luma(output), luma(data))
    # both decoders agree on the file, and the colour is the one predicted
    pillow = np.asarray(Image.open(io.BytesIO(output)).convert("RGB"))
    magick = images.read_image(output)
    assert pillow.shape == magick.shape == (141, 203, 3)
    assert np.abs(pillow.astype(int) - magick).max() <= 2
    assert_predicted_colour(pillow)


def test_close_to_the_exact_lightness_path(colorizer, tmp_path):
    source = grey_jpeg(tmp_path / "scan.jpg", 240, 320, seed=5)
    colorizer.colorize_file(source, tmp_path / "kept.jpg")
    colorizer.colorize_file(source, tmp_path / "exact.jpg", reencode=True)
    kept = color.rgb_to_lab(images.read_image(tmp_path / "kept.jpg"))
    exact = color.rgb_to_lab(images.read_image(tmp_path / "exact.jpg"))
    assert jpeg_luma.parse((tmp_path / "exact.jpg").read_bytes()) is None  # re-encoded: an ordinary colour JPEG
    difference = np.abs(kept - exact).reshape(-1, 3).mean(0)
    assert difference[0] < 1.5 and difference[1] < 3 and difference[2] < 3, difference
    # the exact path keeps L* to JPEG precision; the kept-luma path keeps Y' exactly instead
    truth = color.rgb_to_lightness(images.read_image(source))
    assert np.abs(exact[..., 0] - truth).mean() < 1.0


def test_restart_markers_icc_and_adobe_segments(colorizer, tmp_path):
    source = grey_jpeg(tmp_path / "scan.jpg", 100, 130, restart_marker_blocks=3,
                       icc_profile=b"\x00" * 128)  # a (dummy) grey profile must not be carried into a colour file
    data = source.read_bytes()
    assert b"\xff\xdd" in data and b"ICC_PROFILE" in data
    colorizer.colorize_file(source, tmp_path / "out.jpg")
    output = (tmp_path / "out.jpg").read_bytes()
    assert output[2:4] == b"\xff\xe0" and output[6:11] == b"JFIF\x00"
    assert b"ICC_PROFILE" not in output
    assert np.array_equal(luma(output), luma(data))
    assert images.read_image(output).shape == (100, 130, 3)
    assert_predicted_colour(images.read_image(output))  # chroma scans decoded with restarts switched off
    # an Adobe segment (whose transform flag would call the colour components RGB) is dropped too
    adobe = data[:2] + b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00" + data[2:]
    grey = jpeg_luma.parse(adobe)
    assert grey is not None and not any(segment[1] == 0xEE for segment in grey.segments)


@pytest.mark.parametrize("case", ["progressive", "three channels", "progressive three channels", "sepia"])
def test_black_and_white_jpegs_keep_their_luma_through_jpegtran(colorizer, tmp_path, case):
    from tests.make_bad_inputs import _sepia

    path = tmp_path / "in.jpg"
    if case == "progressive":
        grey_jpeg(path, progressive=True)
    else:
        picture = make_photo(2, 90, 121)
        if case == "sepia":
            picture = _sepia(picture)
        else:  # a grey picture stored as RGB, like 9 of the 11 WWII photos we have
            picture = np.repeat(picture[..., :1], 3, axis=2)
        Image.fromarray(picture).save(path, format="JPEG", quality=90, progressive=case.startswith("progressive"))
    data = path.read_bytes()
    assert jpeg_luma.parse(data) is None  # not a one-scan grey JPEG itself
    converted = jpeg_luma.luma_only(data, max_pixels=10**6)
    assert converted is not None and jpeg_luma.parse(converted) is not None
    colorizer.colorize_file(path, tmp_path / "out.jpg")
    output = (tmp_path / "out.jpg").read_bytes()
    assert np.array_equal(luma(output), luma(data))  # libjpeg's Y' of the input, unchanged
    assert_predicted_colour(images.read_image(output))


def test_colour_photos_keep_their_exact_lightness(colorizer, tmp_path):
    """A colour photo's luma Y' is not its L*: colouring it keeps L* exactly, through the ordinary path."""
    path = tmp_path / "colour.jpg"
    Image.fromarray(make_photo(2, 90, 121)).save(path, format="JPEG", quality=90)
    assert colorizer.colour_jpeg_keeping_luma(path.read_bytes()) is None
    colorizer.colorize_file(path, tmp_path / "out.jpg")
    truth = color.rgb_to_lightness(images.read_image(path))
    assert np.abs(color.rgb_to_lightness(images.read_image(tmp_path / "out.jpg")) - truth).mean() < 1.0


def test_jpegtran_is_not_run_on_what_it_should_not_see(tmp_path, monkeypatch):
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError("jpegtran should not have been run")

    colour = io.BytesIO()
    Image.fromarray(make_photo(2, 60, 80)).save(colour, format="JPEG", quality=90)
    data = colour.getvalue()
    monkeypatch.setattr(subprocess, "run", refuse)
    assert jpeg_luma.luma_only(data, max_pixels=60 * 80 - 1) is None  # over the pixel limit: not even tried
    cmyk = io.BytesIO()
    Image.fromarray(make_photo(2, 60, 80)).convert("CMYK").save(cmyk, format="JPEG")
    assert jpeg_luma.luma_only(cmyk.getvalue(), max_pixels=10**6) is None  # four components
    rgb_coded = data[:2] + b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00" + data[2:]  # transform 0: RGB
    assert jpeg_luma.luma_only(rgb_coded, max_pixels=10**6) is None
    exif = Image.Exif()
    exif[0x0112] = 3
    rotated = io.BytesIO()
    Image.fromarray(make_photo(2, 60, 80)).save(rotated, format="JPEG", exif=exif.tobytes())
    assert jpeg_luma.luma_only(rotated.getvalue(), max_pixels=10**6) is None
    monkeypatch.undo()
    assert jpeg_luma.luma_only(data[: len(data) // 2], max_pixels=10**6) is None  # jpegtran warns: not used


@pytest.mark.parametrize("case", ["rotated", "truncated", "no end marker", "truncated colour", "png"])
def test_other_files_take_the_ordinary_path(colorizer, tmp_path, case):
    path = tmp_path / "in.jpg"
    if case == "rotated":
        exif = Image.Exif()
        exif[0x0112] = 6
        grey_jpeg(path, exif=exif.tobytes())
    elif case in ("truncated", "no end marker"):
        data = grey_jpeg(tmp_path / "whole.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2] if case == "truncated" else data[:-2])
    elif case == "truncated colour":
        Image.fromarray(make_photo(2, 90, 120)).save(tmp_path / "whole.jpg", format="JPEG", quality=90)
        path.write_bytes((tmp_path / "whole.jpg").read_bytes()[:3000])
    else:
        path = tmp_path / "in.png"
        Image.fromarray(make_photo(2, 90, 120)[..., 0], "L").save(path)
    assert jpeg_luma.parse(path.read_bytes()) is None
    if case in ("truncated", "no end marker", "truncated colour"):
        with pytest.raises(images.ImageError, match="in.jpg.*(damaged|truncated)"):
            colorizer.colorize_file(path, tmp_path / "out.jpg")
        assert not (tmp_path / "out.jpg").exists()
        return
    colorizer.colorize_file(path, tmp_path / "out.jpg")
    result = images.read_image(tmp_path / "out.jpg")
    expected = images.read_image(path)
    assert result.shape == expected.shape  # upright, as the ordinary reader turns it
    if case == "rotated":
        assert result.shape[:2] == (203, 141)


def test_cli_reencode_flag(tiny_model_dir, tmp_path):
    from koala import cli

    (tmp_path / "in").mkdir()
    source = grey_jpeg(tmp_path / "in" / "scan.jpg")
    for flag, folder in (([], "kept"), (["--reencode"], "exact")):
        code = cli.main(["colorize", str(source), "--output", str(tmp_path / folder), "--model", str(tiny_model_dir),
                         *flag])
        assert code == 0
    kept, exact = (tmp_path / "kept" / "scan.jpg").read_bytes(), (tmp_path / "exact" / "scan.jpg").read_bytes()
    assert np.array_equal(luma(kept), luma(source.read_bytes()))
    assert not np.array_equal(luma(exact), luma(source.read_bytes()))  # decoded, joined in Lab, encoded again


def test_exif_orientation_reader():
    import struct

    for order, pack in ((b"II", "<"), (b"MM", ">")):
        tiff = order + struct.pack(pack + "HI", 42, 8) + struct.pack(pack + "H", 1)
        tiff += struct.pack(pack + "HHIHH", 0x0112, 3, 1, 8, 0) + b"\x00" * 4
        assert jpeg_luma._exif_orientation(tiff) == 8
    assert jpeg_luma._exif_orientation(b"garbage") == 0


def test_parser_never_raises_on_damaged_headers(tmp_path):
    """The parser sees uploads before anything else: any bytes give a GreyJpeg or None, never an exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    original = grey_jpeg(tmp_path / "scan.jpg", 40, 56, restart_marker_blocks=2).read_bytes()
    header_end = original.index(b"\xff\xda") + 12

    @settings(max_examples=400, deadline=None, database=None)
    @given(st.data())
    def check(draw):
        data = bytearray(original)
        for _ in range(draw.draw(st.integers(0, 6))):
            data[draw.draw(st.integers(0, header_end))] = draw.draw(st.integers(0, 255))
        data = bytes(data[: draw.draw(st.integers(0, len(data)))])
        result = jpeg_luma.parse(data)
        assert result is None or isinstance(result, jpeg_luma.GreyJpeg)

    check()
    assert jpeg_luma.parse(original) is not None and jpeg_luma.parse(b"") is None
    assert jpeg_luma.parse(b"\xff\xd8") is None and jpeg_luma.parse(original[: original.index(b"\xff\xda") + 10]) is None


@pytest.mark.parametrize("height, width", [(1, 1), (1, 9), (10, 10000), (10000, 10), (17, 33), (8, 8), (16, 16)])
def test_odd_and_extreme_sizes(colorizer, tmp_path, height, width):
    source = tmp_path / "scan.jpg"
    grey = (np.random.default_rng(height * 7 + width).random((height, width)) * 255).astype(np.uint8)
    Image.fromarray(grey, "L").save(source, format="JPEG", quality=90)
    assert jpeg_luma.parse(source.read_bytes()) is not None
    colorizer.colorize_file(source, tmp_path / "out.jpg")
    output = (tmp_path / "out.jpg").read_bytes()
    assert images.read_image(output).shape == (height, width, 3)
    assert np.array_equal(luma(output), luma(source.read_bytes()))


def _stored_in_colour(height: int, width: int, seed: int = 4, tone=None) -> np.ndarray:
    """A black-and-white photo (grey, or toned with ``tone``, e.g. sepia) stored as RGB: a smooth picture enlarged
    from a small one, with film grain (quick to make at any size)."""
    small = make_photo(seed, height // 8 + 1, width // 8 + 1).mean(axis=-1).astype(np.uint8)
    grey = np.asarray(Image.fromarray(small, "L").resize((width, height), Image.Resampling.BILINEAR), np.float32)
    grey += np.random.default_rng(seed).normal(0, 6, grey.shape)
    picture = np.clip(grey, 0, 255).astype(np.uint8)[..., None]
    if tone is None:
        return np.repeat(picture, 3, axis=-1)
    from tests.make_bad_inputs import _sepia

    return _sepia(np.repeat(picture, 3, axis=-1))


def _jpeg(picture: np.ndarray, orientation: int = 1, **options) -> bytes:
    buffer = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    Image.fromarray(picture).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


ONE_DECODE_CASES = {  # the network's input is 256 px: the photo's short side picks libjpeg's scale
    "grey, 4:2:0, quality 75, decoded at 1/2": lambda: _jpeg(_stored_in_colour(557, 743), quality=75),
    "grey, 4:4:4, quality 90, at 1/4": lambda: _jpeg(_stored_in_colour(1031, 1283), quality=90, subsampling=0),
    "grey, 4:2:2, quality 95, at 1/8": lambda: _jpeg(_stored_in_colour(2053, 2072), quality=95, subsampling=1),
    "grey, 4:2:0, quality 90, at full size": lambda: _jpeg(_stored_in_colour(141, 203), quality=90),
    "sepia, 4:2:0, quality 90, at 1/2": lambda: _jpeg(_stored_in_colour(600, 531, tone="sepia"), quality=90),
    "grey, EXIF orientation 6 (the ordinary path)": lambda: _jpeg(_stored_in_colour(557, 743), 6, quality=90),
    "colour photo (the ordinary path)": lambda: _jpeg(
        np.asarray(Image.fromarray(make_photo(6, 140, 187)).resize((748, 560))), quality=90),
}


@pytest.mark.parametrize("case", ONE_DECODE_CASES)
def test_one_decode_gives_the_bytes_of_two(tiny_model_dir, tmp_path, monkeypatch, case):
    """A plain colour JPEG of a black-and-white photo is decoded once (to Y'CbCr: its colour for the monochrome
    check, its Y' plane for the network and the chroma); the output is byte for byte what decoding it, then its
    luma-only copy, gave. An untrained model (its colour follows its input) and edge-aware colour (the chroma
    follows the reduced grey too)."""
    colorizer = Colorizer(tiny_model_dir, edge_radius=4)
    path = tmp_path / "in.jpg"
    path.write_bytes(ONE_DECODE_CASES[case]())
    data, reads, real_read = path.read_bytes(), [], images.read_image

    def counted(*args, **kwargs):
        reads.append(kwargs)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(images, "read_image", counted)
    once = colorizer._begin_jpeg_keeping_luma(data)
    decodes_now = len(reads)
    colorizer.colorize_file(path, tmp_path / "once.jpg")
    with monkeypatch.context() as patch:  # the two decodes, as before (and still for JPEGs that are not plain)
        patch.setattr(images, "read_jpeg_ycbcr", lambda *args, **kwargs: None)
        reads.clear()
        twice = colorizer._begin_jpeg_keeping_luma(data)
        decodes_before = len(reads)
        colorizer.colorize_file(path, tmp_path / "twice.jpg")
    assert (tmp_path / "once.jpg").read_bytes() == (tmp_path / "twice.jpg").read_bytes()
    if "ordinary path" in case:
        assert once is None and twice is None
        return
    assert (decodes_now, decodes_before) == (0, 2)  # read_image; now one read_jpeg_ycbcr instead
    np.testing.assert_array_equal(once.lightness, twice.lightness)
    planes = colorizer.colour_planes_batch([once.lightness])[0]
    assert once.finish(*planes) == twice.finish(*planes)
    output = (tmp_path / "once.jpg").read_bytes()
    assert np.array_equal(luma(output), luma(data))



def test_the_reduced_copy_is_decoded_at_the_scale_that_nearly_covers_the_network(tiny_model_dir, monkeypatch):
    """A side of 1984 at 1/8 is 248 px: within LUMA_DECODE_SLACK of a 256-px network, so the 1/8 scale is decoded
    (not 1/4: four times the pixels), and the colour is joined at that size."""
    from PIL import Image

    from koala import colorize as colorize_module

    grey = np.asarray(Image.fromarray(make_photo(31, 124, 125)).convert("L").resize((2000, 1984)))
    buffer = io.BytesIO()
    Image.fromarray(grey, "L").save(buffer, format="JPEG", quality=90)
    seen = []
    original = jpeg_luma.chroma_small
    monkeypatch.setattr(jpeg_luma, "chroma_small", lambda small, *rest: seen.append(small.shape) or
                        original(small, *rest))
    colorizer = colorize_module.Colorizer(tiny_model_dir)
    assert colorizer.colour_jpeg_keeping_luma(buffer.getvalue()) is not None
    assert seen == [(248, 250)]
