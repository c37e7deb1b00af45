"""JPEGs decoded by Pillow (koala.images._read_jpeg_with_pillow): the pixels, orientation, sizes and errors that
ImageMagick gives for the same files, damage never hidden, and the limits checked before any pixel is decoded. Also
their Y'CbCr decodes (koala.images.read_jpeg_ycbcr), and grey JPEGs too large for ImageMagick's memory."""

import concurrent.futures
import io

import numpy as np
import pytest

from koala import images
from tests.conftest import make_photo
from tests.make_bad_inputs import _cmyk_jpeg, _jpeg_with_orientation

TOLERANCE = 2
"""Largest difference in levels allowed between the two decoders. Measured: 0 (both are libjpeg-turbo with its
default integer IDCT and fancy upsampling); a differently built libjpeg-turbo may round a step differently."""

HEIGHT, WIDTH = 157, 203  # not multiples of 8 or 16: partial blocks at the right and bottom edges


def _encode(array, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _imagemagick(data, **options):
    """``read_image`` as before: every JPEG decoded by ImageMagick."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "_read_jpeg_with_pillow", lambda *args, **kwargs: None)
        return images.read_image(data, **options)


def _pillow(data, **options):
    """``read_image``, checking that Pillow decoded the JPEG."""
    real, taken = images._read_jpeg_with_pillow, []

    def spy(*args, **kwargs):
        decoded = real(*args, **kwargs)
        taken.append(decoded is not None)
        return decoded

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "_read_jpeg_with_pillow", spy)
        decoded = images.read_image(data, **options)
    assert taken == [True], "Pillow did not decode it"
    return decoded


def _outcome(data, reader):
    try:
        return reader(data, name="broken.jpg")
    except images.ImageError as error:
        return str(error)


def _photo() -> np.ndarray:
    return make_photo(21, HEIGHT, WIDTH)


def _grey() -> np.ndarray:
    return _photo().mean(axis=-1).astype(np.uint8)


def _with_adobe_rgb_flag(data: bytes) -> bytes:
    """An Adobe APP14 segment whose transform flag 0 declares the three components RGB, not Y'CbCr."""
    return data[:2] + b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00" + data[2:]


def _icc_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


JPEGS = {
    "colour 4:2:0": lambda: _encode(_photo(), quality=90),
    "colour 4:4:4": lambda: _encode(_photo(), quality=90, subsampling=0),
    "colour 4:2:2": lambda: _encode(_photo(), quality=90, subsampling=1),
    "colour, optimised Huffman tables": lambda: _encode(_photo(), quality=80, optimize=True),
    "grey": lambda: _encode(_grey(), quality=90),
    "colour JPEG of a grey photo": lambda: _encode(np.repeat(_grey()[..., None], 3, axis=-1), quality=90),
    "EXIF orientation 6": lambda: _jpeg_with_orientation(_photo(), 6),
    "EXIF orientation 3": lambda: _jpeg_with_orientation(_photo(), 3),
    "grey, EXIF orientation 8": lambda: _jpeg_with_orientation(_grey(), 8),
    "embedded colour profile (ignored)": lambda: _encode(_photo(), quality=90, icc_profile=_icc_profile()),
    "Adobe segment: RGB components": lambda: _with_adobe_rgb_flag(_encode(_photo(), quality=90, subsampling=0)),
}


@pytest.mark.parametrize("keep_grey", [False, True], ids=["rgb", "keep_grey"])
@pytest.mark.parametrize("shrink_to", [None, 150, 38, 19], ids=["full", "1:1", "1:4", "1:8"])
@pytest.mark.parametrize("case", JPEGS)
def test_pillow_decodes_as_imagemagick_does(case, shrink_to, keep_grey):
    data = JPEGS[case]()
    decoded = _pillow(data, shrink_to=shrink_to, keep_grey=keep_grey)
    expected = _imagemagick(data, shrink_to=shrink_to, keep_grey=keep_grey)
    assert decoded.dtype == np.uint8 and decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected).max() <= TOLERANCE
    assert decoded.flags.c_contiguous


def test_every_exif_orientation_is_imagemagick_s():
    card = make_photo(22, 40, 64)
    for orientation in range(1, 9):
        data = _jpeg_with_orientation(card, orientation)
        decoded = _pillow(data)
        assert decoded.shape == card.shape, orientation
        assert np.abs(decoded.astype(int) - _imagemagick(data)).max() <= TOLERANCE, orientation
        assert np.abs(decoded.astype(int) - card).mean() < 6, orientation


def test_a_reduced_scale_is_never_smaller_than_asked():
    """Where ImageMagick's size hint decodes at 3/8, Pillow (powers of two only) decodes at 1/2: larger, never
    smaller than the hint; elsewhere the two sizes are the same (the test above)."""
    data = _encode(_photo(), quality=90)
    for shrink_to in (45, 50):  # 157 / 45 and 157 / 50: a scale of 1/3 asked for
        decoded = _pillow(data, shrink_to=shrink_to)
        expected = _imagemagick(data, shrink_to=shrink_to)
        assert decoded.shape == (79, 102, 3) and expected.shape == (59, 77, 3)
        assert min(decoded.shape[:2]) >= shrink_to
    for height, width, shrink_to in ((10, 3000, 256), (3000, 10, 256), (300, 200, 512), (17, 9, 1)):
        data = _encode(np.full((height, width), 90, np.uint8))
        decoded = _pillow(data, keep_grey=True, shrink_to=shrink_to)
        assert decoded.shape == _imagemagick(data, keep_grey=True, shrink_to=shrink_to).shape
        assert all(side >= min(shrink_to, own) for side, own in zip(decoded.shape, (height, width)))


def test_grey_jpegs_keep_one_channel_only_when_asked():
    grey = _encode(_grey(), quality=95)
    assert _pillow(grey, keep_grey=True).shape == (HEIGHT, WIDTH)
    assert _pillow(grey).shape == (HEIGHT, WIDTH, 3)
    # a colour JPEG of a grey photo stays three channels, as ImageMagick gives it
    three = _encode(np.repeat(_grey()[..., None], 3, axis=-1), quality=95)
    assert _pillow(three, keep_grey=True).shape == (HEIGHT, WIDTH, 3)


def _damaged() -> dict[str, bytes]:
    jpeg = _encode(_photo(), quality=90)
    grey = _encode(_grey(), quality=90)
    scan = jpeg.index(b"\xff\xda") + 14  # the first bytes of entropy-coded data
    garbage = np.random.default_rng(3).integers(0, 255, 3000, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
    middle = scan + (len(jpeg) - scan) // 2
    return {
        "cut at half": jpeg[: len(jpeg) // 2],
        "grey, cut at two thirds": grey[: len(grey) * 2 // 3],
        "no end marker": jpeg[:-2],
        "cut, then an end marker": jpeg[: len(jpeg) * 2 // 3] + b"\xff\xd9",
        "grey, cut, then an end marker": grey[: len(grey) // 2] + b"\xff\xd9",
        "last 40 bytes gone, end marker kept": jpeg[:-42] + b"\xff\xd9",
        "end marker inside the scan": jpeg[:middle] + b"\xff\xd9" + jpeg[middle + 2 :],
        "garbage after a few scan bytes": jpeg[: scan + 30] + garbage,
        "garbage after a few scan bytes, end marker": jpeg[: scan + 30] + garbage + b"\xff\xd9",
        "a restart marker where none belongs": jpeg[:middle] + b"\xff\xd3" + jpeg[middle + 2 :],
    }


@pytest.mark.parametrize("case", list(_damaged()))
def test_damaged_jpegs_give_imagemagick_s_error(case):
    data = _damaged()[case]
    assert images._read_jpeg_with_pillow(data, "broken.jpg", images.MAX_PIXELS, None, False) is None
    error = _outcome(data, images.read_image)
    assert isinstance(error, str) and error.startswith("broken.jpg: ") and "\n" not in error
    assert error == _outcome(data, _imagemagick)


@pytest.mark.parametrize("case", ["trailing data after the end marker", "zero bytes before the end marker"])
def test_harmless_extra_bytes_are_accepted_by_both(case):
    jpeg = _encode(_photo(), quality=90)
    data = jpeg + b"trailing data" * 20 if case.startswith("trailing") else jpeg[:-2] + b"\x00\x00\xff\xd9"
    assert np.array_equal(_pillow(data), _imagemagick(data))


def test_what_pillow_leaves_to_imagemagick():
    """CMYK, progressive, restart markers, several scans: decoded by ImageMagick, as before."""
    cmyk, _ = _cmyk_jpeg()
    photo = _photo()
    for data in (cmyk, _encode(photo, progressive=True), _encode(_grey(), progressive=True),
                 _encode(photo, restart_marker_blocks=4)):
        assert images._plain_jpeg(data) is None
        assert images._read_jpeg_with_pillow(data, "x.jpg", images.MAX_PIXELS, None, False) is None
        assert np.array_equal(images.read_image(data), _imagemagick(data))
    jpeg = _encode(photo, quality=90)
    frame = jpeg.index(b"\xff\xc0")
    assert images._plain_jpeg(jpeg) is not None
    twelve_bit = jpeg[: frame + 4] + b"\x0c" + jpeg[frame + 5 :]
    assert images._plain_jpeg(twelve_bit) is None
    scan = jpeg.index(b"\xff\xda")  # a second scan would follow the first: not one scan ended by the end marker
    assert images._plain_jpeg(jpeg[:-2] + jpeg[scan:]) is None


def test_a_jpeg_over_the_pixel_limit_is_refused_before_decoding(monkeypatch):
    import wand.image
    from PIL import Image

    def refuse(*args, **kwargs):
        raise AssertionError("nothing may decode a JPEG over the limit")

    jpeg = _encode(_photo(), quality=90)
    frame = jpeg.index(b"\xff\xc0")
    flood = jpeg[: frame + 5] + (30_000).to_bytes(2, "big") + (20_000).to_bytes(2, "big") + jpeg[frame + 9 :]
    monkeypatch.setattr(Image, "open", refuse)
    monkeypatch.setattr(wand.image.Image, "ping", refuse)
    monkeypatch.setattr(wand.image.Image, "read", refuse)
    with pytest.raises(images.ImageError, match="too large"):
        images.read_image(jpeg, max_pixels=HEIGHT * WIDTH - 1)
    with pytest.raises(images.ImageError, match="too large"):
        images.read_image(flood, name="flood.jpg")  # 600 MP declared in a file of a few kilobytes


def test_beyond_imagemagick_s_limits_pillow_declines(monkeypatch):
    jpeg = _encode(_photo(), quality=90)
    assert images._read_jpeg_with_pillow(jpeg, "x.jpg", images.MAX_PIXELS, None, False) is not None
    for limit, value in (("width", WIDTH - 1), ("height", HEIGHT - 1), ("area", WIDTH * HEIGHT - 1),
                         ("memory", WIDTH * HEIGHT * 4 - 1)):
        with monkeypatch.context() as patch:
            patch.setitem(images.MAGICK_LIMITS, limit, value)
            assert images._read_jpeg_with_pillow(jpeg, "x.jpg", images.MAX_PIXELS, None, False) is None, limit


def test_truncated_jpegs_stay_errors_with_load_truncated_images_on(monkeypatch):
    from PIL import ImageFile

    jpeg = _encode(_photo(), quality=90)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set by some other library in the process
    assert images._read_jpeg_with_pillow(jpeg, "x.jpg", images.MAX_PIXELS, None, False) is None
    for data in (jpeg[: len(jpeg) // 2], jpeg[:-2]):
        with pytest.raises(images.ImageError, match="truncated"):
            images.read_image(data, name="cut.jpg")


def test_threads_decode_at_once():
    jpegs = [_encode(make_photo(seed, 300, 400), quality=90) for seed in range(4)]
    expected = [_pillow(data) for data in jpegs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(images.read_image, jpegs * 4))
    for index, decoded in enumerate(results):
        assert np.array_equal(decoded, expected[index % 4])


def _luma_only(data: bytes) -> bytes:
    """The grey JPEG that ``jpegtran -grayscale`` makes of ``data``: its luma coefficients, the chroma dropped
    (whatever its EXIF orientation, unlike :func:`koala.jpeg_luma.luma_only`)."""
    import shutil
    import subprocess

    if shutil.which("jpegtran") is None:
        pytest.skip("jpegtran is not installed")
    return subprocess.run(["jpegtran", "-grayscale", "-copy", "all"], input=data, capture_output=True,
                          check=True).stdout


def _without_jfif(data: bytes) -> bytes:
    """``data`` less its JFIF segment: with an Adobe segment's transform flag 0, libjpeg then takes the three
    components as RGB (with a JFIF segment, as Y'CbCr whatever the Adobe segment says)."""
    assert data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00"
    return data[:2] + data[4 + int.from_bytes(data[4:6], "big"):]


def _encode_png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _with_orientation(array: np.ndarray, orientation: int, **options) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(array, exif=exif.tobytes(), **options)


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("quality", [75, 90, 95])
@pytest.mark.parametrize("subsampling", [2, 0], ids=["4:2:0", "4:4:4"])
@pytest.mark.parametrize("picture", ["grey photo", "colour photo"])
def test_ycbcr_decode_gives_the_luma_only_jpeg_s_grey_and_read_image_s_rgb(picture, subsampling, quality,
                                                                            orientation):
    """One Y'CbCr decode of a colour JPEG gives, level for level, both what decoding its luma alone gives (libjpeg's
    IDCT of a component does not depend on the others) and the RGB that read_image gives, at every scale."""
    array = np.repeat(_grey()[..., None], 3, axis=-1) if picture == "grey photo" else _photo()
    data = _with_orientation(array, orientation, quality=quality, subsampling=subsampling)
    luma_only = _luma_only(data)
    for shrink_to, scale in ((None, 1), (78, 2), (39, 4), (19, 8)):
        ycbcr = images.read_jpeg_ycbcr(data, shrink_to=shrink_to)
        stored = (-(-HEIGHT // scale), -(-WIDTH // scale))
        assert ycbcr.dtype == np.uint8 and ycbcr.shape == ((stored if orientation == 1 else stored[::-1]) + (3,))
        grey = _pillow(luma_only, keep_grey=True, shrink_to=shrink_to)
        assert np.array_equal(ycbcr[..., 0], grey), shrink_to
        assert np.array_equal(images.jpeg_ycbcr_to_rgb(ycbcr), _pillow(data, shrink_to=shrink_to)), shrink_to


def test_ycbcr_decode_declines_what_read_image_does_not_give_pillow(monkeypatch):
    """None for what is not a plain colour JPEG (read_image then decodes it with ImageMagick, or reports the damage);
    the same errors as read_image for files no reader takes."""
    from PIL import ImageFile

    photo = _photo()
    jpeg = _encode(photo, quality=90)
    declined = {
        "grey": _encode(_grey(), quality=90),
        "progressive": _encode(photo, progressive=True),
        "restart markers": _encode(photo, restart_marker_blocks=4),
        "RGB-coded": _with_adobe_rgb_flag(_without_jfif(_encode(photo, quality=90, subsampling=0))),
        "CMYK": _cmyk_jpeg()[0],
        "PNG": _encode_png(photo),
        **_damaged(),
    }
    for case, data in declined.items():
        assert images.read_jpeg_ycbcr(data, name="x.jpg") is None, case
    assert _pillow(declined["RGB-coded"]).shape == (HEIGHT, WIDTH, 3)  # read_image's Pillow reader takes it
    with monkeypatch.context() as patch:
        patch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        assert images.read_jpeg_ycbcr(jpeg) is None
    with monkeypatch.context() as patch:  # what benchmarks and tests use for "every JPEG through ImageMagick"
        patch.setattr(images, "_read_jpeg_with_pillow", lambda *args, **kwargs: None)
        assert images.read_jpeg_ycbcr(jpeg) is None
    with pytest.raises(images.ImageError, match="x.jpg: image is too large"):
        images.read_jpeg_ycbcr(jpeg, name="x.jpg", max_pixels=HEIGHT * WIDTH - 1)
    with pytest.raises(images.ImageError, match="x.jpg: file is empty"):
        images.read_jpeg_ycbcr(b"", name="x.jpg")
    with pytest.raises(images.ImageError, match="not a supported image"):
        images.read_jpeg_ycbcr(b"GIF" * 10, name="x.jpg")


def _beyond_imagemagick_s_memory(monkeypatch, capacity: int) -> None:
    """ImageMagick's memory as a system policy caps it (Debian's: 256 MiB), so large grey decodes go to Pillow."""
    images.configure_imagemagick()
    monkeypatch.setattr(images.MAGICK_MEMORY, "capacity", capacity)


def test_a_cut_grey_jpeg_too_large_for_imagemagick_is_refused(monkeypatch):
    """An 8-bit grey JPEG over 15 MP never fits ImageMagick's 256 MiB (two pixel caches): Pillow decodes it alone,
    and a plain one cut short (with an end marker after the cut, which Pillow alone would decode silently, the rest
    of the picture grey) is refused, through the Pillow reader's damage check."""
    from PIL import ImageFile

    _beyond_imagemagick_s_memory(monkeypatch, 256 * 1024**2)
    height, width = 3500, 4800  # 16.8 MP
    rows, columns = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(7).integers(0, 24, (height, width))
    grey = (96 + 60 * np.sin(columns / 310.0) * np.cos(rows / 190.0) + noise).astype(np.uint8)
    data = _with_orientation(grey, 6, quality=90)
    assert images.magick_decode_bytes(data, "JPEG", width, height) > images.MAGICK_MEMORY.capacity
    cut = data[: len(data) * 2 // 3] + b"\xff\xd9"
    assert images._read_jpeg_with_pillow(cut, "scan.jpg", images.MAX_PIXELS, None, True) is None
    for load_truncated_images in (False, True):  # Pillow finishes a cut file silently when that is on
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated_images)
        with pytest.raises(images.ImageError, match=r"^scan\.jpg: damaged or truncated JPEG data \(image file is"):
            images.read_image(cut, name="scan.jpg", keep_grey=True)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    # the whole file: the same upright pixels whether the Pillow reader takes it first or declines it (as it does
    # for a header with anything doubtful in it) and ImageMagick's memory sends it to Pillow alone
    upright = images.read_image(data, keep_grey=True)
    assert upright.shape == (width, height)
    with monkeypatch.context() as patch:
        patch.setattr(images, "_read_jpeg_with_pillow", lambda *args, **kwargs: None)
        assert np.array_equal(images.read_image(data, keep_grey=True), upright)
        assert np.array_equal(images.read_image(data)[..., 1], upright)


def test_other_grey_jpegs_too_large_for_imagemagick_keep_pillow_s_checks(monkeypatch):
    """Progressive JPEGs and restart markers (not plain: no padding check) are decoded by Pillow as they are: a file
    cut short is refused, but one cut and then given an end marker decodes (documented in _read_grey_with_pillow)."""
    cases = {"progressive": _encode(_grey(), quality=90, progressive=True),
             "restart markers": _encode(_grey(), quality=90, restart_marker_blocks=2)}
    expected = {case: _imagemagick(data, keep_grey=True) for case, data in cases.items()}
    _beyond_imagemagick_s_memory(monkeypatch, 1000)
    for case, data in cases.items():
        assert images.magick_decode_bytes(data, "JPEG", WIDTH, HEIGHT) > 1000
        assert np.abs(images.read_image(data, keep_grey=True).astype(int) - expected[case]).max() <= TOLERANCE, case
        with pytest.raises(images.ImageError, match=r"^cut\.jpg: damaged or truncated JPEG data"):
            images.read_image(data[: len(data) * 2 // 3], name="cut.jpg", keep_grey=True)
        assert images.read_image(data[: len(data) * 2 // 3] + b"\xff\xd9", keep_grey=True).shape == (HEIGHT, WIDTH)
