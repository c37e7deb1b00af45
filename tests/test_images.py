"""Unit tests of koala/images.py (safe reading, limits, orientation) and koala/outputs.py (atomic writes)."""

import errno
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from koala import images, outputs
from tests.conftest import make_photo
from tests.make_bad_inputs import _jpeg_with_orientation, pixel_flood_png, quadrants


def _encode(array, image_format, **options):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, image_format, **options)
    return buffer.getvalue()


def test_valid_formats_read_back_exactly_or_nearly():
    photo = make_photo(1, 40, 56)
    for image_format, tolerance in (("PNG", 0), ("BMP", 0), ("TIFF", 0), ("WEBP", 0), ("JPEG", 6)):
        options = {"lossless": True} if image_format == "WEBP" else {"quality": 95, "subsampling": 0} if image_format == "JPEG" else {}
        decoded = images.read_image(_encode(photo, image_format, **options), name=f"x.{image_format}")
        assert decoded.dtype == np.uint8 and decoded.shape == photo.shape, image_format
        assert np.abs(decoded.astype(int) - photo).mean() <= tolerance, image_format


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9, -2])
def test_truncated_jpeg_is_an_error_not_a_grey_filled_image(cut):
    jpeg = _encode(make_photo(2), "JPEG", quality=90)
    data = jpeg[:cut] if cut < 0 else jpeg[: int(len(jpeg) * cut)]
    with pytest.raises(images.ImageError, match="truncated"):
        images.read_image(data, name="cut.jpg")
    # ... and the same file complete is fine, also with the reduced-scale decoding used by prepare.
    assert images.read_image(jpeg, shrink_to=32).shape[2] == 3


def test_jpeg_with_harmless_extra_bytes_is_accepted():
    jpeg = _encode(make_photo(3), "JPEG")
    for data in (jpeg + b"trailing data after the end marker" * 10, jpeg[:-2] + b"\x00\x00\xff\xd9"):
        assert images.read_image(data).shape == (96, 128, 3)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_png_is_an_error(cut):
    png = _encode(make_photo(4), "PNG")
    with pytest.raises(images.ImageError, match="truncated") as caught:
        images.read_image(png[: int(len(png) * cut)], name="cut.png")
    assert str(caught.value).startswith("cut.png: ") and "\n" not in str(caught.value)


def test_header_size_reads_png_gif_bmp_jpeg_without_decoding():
    photo = make_photo(5, 24, 40)
    for image_format in ("PNG", "GIF", "BMP", "JPEG"):
        assert images.header_size(_encode(photo, image_format)) == (40, 24), image_format
    assert images.header_size(pixel_flood_png(50_000, 40_000)) == (50_000, 40_000)
    assert images.header_size(b"\xff\xd8\xff") is None
    assert images.header_size(b"not an image") is None


def test_pixel_flood_is_refused_before_imagemagick_decodes(monkeypatch):
    import wand.image

    def refuse(*args, **kwargs):
        raise AssertionError("ImageMagick must not see a pixel flood")

    monkeypatch.setattr(wand.image.Image, "ping", refuse)
    with pytest.raises(images.ImageError, match="too large"):
        images.read_image(pixel_flood_png(), name="flood.png")
    with pytest.raises(images.ImageError, match="too large"):
        images.read_image(pixel_flood_png(20_000, 20_000), name="flood.png")  # under MAX_SIDE, over MAX_PIXELS


def test_pixel_limit_follows_the_module_setting_and_the_argument(monkeypatch):
    png = _encode(make_photo(6, 30, 40), "PNG")
    assert images.read_image(png).shape == (30, 40, 3)
    with pytest.raises(images.ImageError, match="too large"):
        images.read_image(png, max_pixels=1000)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(images.ImageError, match="too large"):
        images.read_image(png)


def test_imagemagick_limits_are_set_from_code():
    from wand.resource import limits

    images.configure_imagemagick()
    for name, value in images.MAGICK_LIMITS.items():
        # A system policy (policy.xml) may only lower a limit further.
        assert limits[name] <= value, name
    assert limits["width"] <= images.MAX_SIDE and limits["disk"] == 0
    assert limits["time"] == images.MAGICK_LIMITS["time"]


def test_wand_is_imported_once_before_any_thread_uses_it():
    """configure_imagemagick imports all of wand's modules the readers use, under its lock, so reader threads never
    import wand for the first time at once (a folder run once failed with "cannot import name 'limits' from
    'wand.resource'"). In a fresh process: nothing of wand before, every module after."""
    script = textwrap.dedent(
        """
        import sys
        from koala import images
        assert not any(name.startswith("wand") for name in sys.modules), sorted(sys.modules)
        images.configure_imagemagick()
        missing = [m for m in ("wand.api", "wand.color", "wand.exceptions", "wand.image", "wand.resource")
                   if m not in sys.modules]
        assert not missing, missing
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_the_time_limit_cannot_end_a_long_running_process():
    """ImageMagick 6 counts its time limit from the process's first pixel operation and then *ends the process*
    ("time limit exceeded", exit status 1): with the 120 s we first set, `koala serve` and long batch runs died
    120 s after their first photo. It must be set once and long (changing it restarts the clock, which races
    with other threads' decodes)."""
    from wand.resource import limits

    images.configure_imagemagick()
    assert limits["time"] >= 7 * 24 * 3600
    before = limits["time"]
    images.read_image(outputs.encode_image(np.full((8, 8, 3), 50, np.uint8), "PNG"))
    assert limits["time"] == before  # reading never touches it


def test_threads_reading_at_once_do_not_crash_the_process(tmp_path):
    """Many threads decoding at once in a fresh process (as prepare and the service do) survive."""
    import subprocess
    import sys

    for index in range(16):
        outputs.write_image(tmp_path / f"{index}.jpg", np.full((300, 400, 3), index * 10, np.uint8))
    script = (
        "import concurrent.futures, pathlib; from koala import images\n"
        f"paths = sorted(pathlib.Path({str(tmp_path)!r}).glob('*.jpg')) * 8\n"
        "with concurrent.futures.ThreadPoolExecutor(8) as pool:\n"
        "    shapes = list(pool.map(images.read_image, paths))\n"
        "print(len(shapes))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "128", result.stderr[-500:]


def test_imagemagick_limits_take_effect(tmp_path):
    # A fresh process, so the limits can be lowered before they are applied: ImageMagick itself must then
    # refuse an image that our own header check lets through (max_pixels raised, width over the limit).
    png = tmp_path / "wide.png"
    png.write_bytes(_encode(make_photo(7, 10, 300), "PNG"))
    script = textwrap.dedent(
        f"""
        from koala import images
        images.MAGICK_LIMITS.update(width=200, height=200)
        try:
            images.read_image({str(png)!r}, max_pixels=10**9)
        except images.ImageError as error:
            print("refused:", error)
        else:
            print("decoded")
        """
    )
    monkey_side = images.MAX_SIDE
    assert monkey_side > 300
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("refused:"), result.stdout + result.stderr


def test_every_exif_orientation_comes_out_upright():
    card = quadrants()
    for orientation in range(1, 9):
        data = _jpeg_with_orientation(card, orientation)
        decoded = images.read_image(data, name=f"o{orientation}.jpg")
        assert decoded.shape == card.shape, orientation
        assert np.abs(decoded.astype(int) - card).mean() < 10, orientation
        assert decoded[2, 2, 0] > 180 and decoded[2, 2, 1] < 80, orientation  # red corner top-left
        assert images.image_size(data) == (card.shape[1], card.shape[0]), orientation
        # The reduced-scale decode used by prepare is upright too.
        assert images.read_image(data, shrink_to=8).shape[:2] in ((32, 48), (16, 24), (8, 12)), orientation


def test_image_size_never_hands_imagemagick_a_file_name(tmp_path):
    # "msl:x.jpg" would name ImageMagick's MSL coder if the name were passed to it.
    weird = tmp_path / "msl:photo[9999x9999].jpg"
    weird.write_bytes(_encode(make_photo(8, 20, 30), "JPEG"))
    assert images.image_size(weird) == (30, 20)
    assert images.read_image(weird).shape == (20, 30, 3)


def test_coder_check_refuses_anything_but_the_sniffed_raster_coder():
    images._check_coder("x", "JPEG", "JPEG")
    images._check_coder("x", "BMP3", "BMP")
    for coder, expected in (("MSL", "JPEG"), ("SVG", "PNG"), ("MVG", "GIF"), ("PNG", "JPEG"), (None, "PNG")):
        with pytest.raises(images.ImageError, match="refused"):
            images._check_coder("x", coder, expected)


def test_resize_and_crop_crops_before_resizing():
    strip = np.zeros((10, 10_000, 3), np.uint8)
    strip[:, 4995:5005] = 255  # the centre 10 × 10 square is white, everything else black
    square = images.resize_and_crop(strip, 64)
    assert square.shape == (64, 64, 3) and square.min() > 200
    photo = make_photo(9, 60, 80)
    assert images.resize_and_crop(photo, 32).shape == (32, 32, 3)


class FullDiskWriter(io.BufferedWriter):
    """A file handle on a full disk: every write fails with ENOSPC."""

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def simulate_full_disk(monkeypatch):
    """Make the files that koala.images writes fail as on a full disk (it writes through os.fdopen)."""
    monkeypatch.setattr(os, "fdopen", lambda descriptor, *args, **kwargs: FullDiskWriter(io.FileIO(descriptor, "wb")))


def test_atomic_write_leaves_nothing_on_disk_full(tmp_path, monkeypatch):
    target = tmp_path / "out" / "result.png"
    simulate_full_disk(monkeypatch)
    with pytest.raises(images.ImageError, match="No space left on device") as caught:
        outputs.write_image(target, make_photo(10, 20, 20))
    assert str(caught.value).startswith(str(target))
    monkeypatch.undo()
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_write_keeps_the_old_file_when_the_new_one_fails(tmp_path, monkeypatch):
    target = tmp_path / "result.png"
    outputs.write_image(target, make_photo(11, 20, 20))
    before = target.read_bytes()
    monkeypatch.setattr(os, "fsync", lambda descriptor: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(images.ImageError, match="I/O error"):
        outputs.write_image(target, make_photo(12, 20, 20))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["result.png"]


def test_errors_are_one_line_and_name_the_file(tmp_path):
    cases = {
        "missing.jpg": None,
        "folder.jpg": "dir",
        "empty.png": b"",
        "notes.jpg": b"hello\nworld\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(images.ImageError) as caught:
            images.read_image(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 300, message


def test_shrink_hint_never_enlarges_or_refuses_strips(tmp_path):
    """ImageMagick's JPEG size hint once turned a side shorter than the hint into a scale of 0: a 10 × 3000 strip
    came back as 20 × 6000 and a 10 × 10000 one was refused ("width or height exceeds limit")."""
    from PIL import Image

    for height, width, hint, expected in ((10, 3000, 256, (10, 3000)), (10, 10000, 512, (10, 10000)),
                                          (300, 200, 512, (300, 200)), (2400, 3200, 256, (300, 400))):
        path = tmp_path / f"strip-{height}x{width}.jpg"
        Image.fromarray((np.arange(height * width) % 251).astype(np.uint8).reshape(height, width), "L").save(path)
        assert images.read_image(path, keep_grey=True, shrink_to=hint).shape == expected


def test_decoding_on_many_threads_leaves_the_warning_filters_as_they_were(tmp_path):
    """Python's warning filters are one list per process: readers that changed them on several threads at once
    once left every warning an error for the rest of the process (a folder run, then training failed)."""
    import concurrent.futures
    import io
    import warnings

    from PIL import Image

    photo = make_photo(41, 300, 400)
    files = []
    for kind in ("JPEG", "PNG", "TIFF"):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format=kind)
        files.append(buffer.getvalue())
    before = list(warnings.filters)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        shapes = list(pool.map(lambda index: images.read_image(files[index % 3], name=f"{index}").shape, range(240)))
    assert shapes == [(300, 400, 3)] * 240
    assert warnings.filters == before
