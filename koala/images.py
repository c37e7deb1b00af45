"""Reading users' photos safely.

Every photo that enters Koala from a user (training sources, images to colourise, uploads to the
service) is read here, through ImageMagick (the ``wand`` binding), with:

* the format recognised from the file's first bytes, and only raster photo formats accepted
  (JPEG, PNG, TIFF, WebP, GIF, BMP), so ImageMagick's script-like coders (SVG, MVG, MSL, text,
  URL fetching) are never reached, whatever the file is called;
* resource limits set from code (memory, map, disk, area, width, height, time) and a pixel-count
  check on the header before any pixel is decoded (decompression bombs);
* the coder ImageMagick actually used checked again after reading the header (defence in depth);
* damage treated as an error: ImageMagick 6 only *warns* about a truncated JPEG ("Premature end of
  JPEG file") and fills the missing part with grey, so the warnings it records on the decoded image
  are inspected and corrupt-image warnings refused;
* EXIF orientation applied, CMYK converted to sRGB, alpha flattened onto white, 16-bit reduced to
  8-bit, palettes expanded, animations reduced to their first frame (the only one decoded);
* ImageMagick's pixel memory shared out between threads: its memory limit is per process (Debian's policy
  caps it at 256 MiB, and with the disk limit at 0 there is nowhere else to go), so a decode starts only once
  the memory it needs is free (:data:`MAGICK_MEMORY`), instead of failing half-way because another thread's
  photo took it. An 8-bit greyscale JPEG or PNG needs two pixel caches in ImageMagick 6 (18 bytes a pixel:
  256 MiB is 15 MP); one that could never fit is decoded by Pillow instead, after ImageMagick has read and
  checked its header (a plain JPEG with the damage check described below: :func:`_read_grey_with_pillow`).

Plain PNGs and TIFFs (8-bit RGB, 8- or 16-bit grey, no transparency or palette, common lossless compressions)
are decoded by Pillow instead (:func:`_read_with_pillow`: 3 to 8 times faster), and so are plain JPEGs (8-bit grey
or colour, sequential, in one scan with its end marker, no restart markers: :func:`_read_jpeg_with_pillow`, 4 times
faster for a grey 12 MP JPEG, 1.5 times for a colour one, the same when only a reduced scale is decoded), after the
same sniffing and with the same limits (:data:`MAX_SIDE`, the pixel limit, and :data:`MAGICK_LIMITS`' width,
height, area and memory, checked on the header), the same EXIF orientation (ImageMagick's reading of a JPEG's
header) and the same pixels. Pillow hides libjpeg's warnings, so a JPEG scan's data is handed to it such that data
ending early shows as a cut file; anything Pillow has the least trouble with is handed to ImageMagick, which
decodes it or reports the damage in its words. ``keep_depth`` keeps a 16-bit grey photo's 16 bits (archive masters
written as TIFF). :func:`read_jpeg_ycbcr` decodes a plain colour JPEG the same way, to its Y'CbCr planes: its luma and
its colour from one decode.

Every failure is an :class:`ImageError` naming the file and the reason. Writing results (atomically) is
:mod:`koala.outputs`'s.
"""

from __future__ import annotations

import contextlib
import functools
import ctypes
import math
import os
import re
import struct
import threading
import warnings
from pathlib import Path

import numpy as np

MAX_PIXELS = int(os.environ.get("KOALA_MAX_PIXELS", 80_000_000))
"""Largest image (width × height) Koala will decode; 80 MP covers a 600-dpi 8×10-inch scan.
Read when :func:`read_image` is called, so tests may lower it (or set ``$KOALA_MAX_PIXELS``)."""

MAX_SIDE = 30_000
"""Largest width or height accepted."""

MAX_FILE_BYTES = int(os.environ.get("KOALA_MAX_FILE_BYTES", 200 * 1024 * 1024))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".gif", ".bmp")

# ImageMagick resource limits, in bytes / pixels / seconds. "disk": 0 keeps pixel caches off disk.
MAGICK_LIMITS = {
    "memory": 2 * 1024**3,
    "map": 2 * 1024**3,
    "disk": 0,
    "area": MAX_PIXELS * 2,
    "width": MAX_SIDE,
    "height": MAX_SIDE,
    # ImageMagick 6's "time" limit is not per image: it counts from the process's first pixel operation
    # and then ends the whole process with a fatal error ("time limit exceeded"), so a fixed 120 s would kill
    # the web service or a long batch run 120 s after its first photo. Changing it later restarts that clock,
    # which races with other threads' decodes (a fatal error at once). So it is set once, to 30 days: decode
    # time per image is bounded instead by the pixel, area, memory and map limits above.
    "time": 30 * 24 * 3600,
}



# Magic numbers of the formats we accept, mapped to ImageMagick's coder name.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)

# The coders ImageMagick may report for the formats above (checked after the header is read).
_ALLOWED_CODERS = frozenset({"JPEG", "PNG", "TIFF", "GIF", "BMP", "BMP2", "BMP3", "WEBP"})

# ImageMagick's ExceptionType values.
_CORRUPT_IMAGE_WARNING = 325
_ERROR_EXCEPTION = 400
# Corrupt-image warnings that do not mean pixels are missing (libjpeg's, for files that decode fully).
_HARMLESS_WARNINGS = ("extraneous bytes before marker",)

_limits_configured = False
_limits_lock = threading.Lock()


class ImageError(Exception):
    """An image could not be read or written. ``str(error)`` is one line: ``"<file>: <reason>"``."""

    def __init__(self, source: str | os.PathLike | None, reason: str):
        self.source = str(source) if source is not None else "<image>"
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class ImageBusy(ImageError):
    """ImageMagick's memory stayed taken by other decodes for too long: try again shortly."""


MAGICK_WAIT_S = 30.0
"""How long a decode waits for ImageMagick's memory before giving up with :class:`ImageBusy`."""


class MagickMemory:
    """ImageMagick's pixel-cache memory in this process, handed out to the threads that decode.

    ``capacity`` is ImageMagick's effective memory limit (what :data:`MAGICK_LIMITS` asked for, capped by the
    system policy), read when the limits are applied.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self.capacity = 0
        self.in_use = 0

    @contextlib.contextmanager
    def reserve(self, nbytes: int, label, wait_s: float | None = None):
        wait_s = MAGICK_WAIT_S if wait_s is None else wait_s
        with self._condition:
            if not self._condition.wait_for(lambda: self.in_use + nbytes <= self.capacity or self.in_use == 0,
                                            timeout=wait_s):
                raise ImageBusy(label, f"ImageMagick's memory is taken by other photos (waited {wait_s:g} s)")
            self.in_use += nbytes
        try:
            yield
        finally:
            with self._condition:
                self.in_use -= nbytes
                self._condition.notify_all()


MAGICK_MEMORY = MagickMemory()


_WARNINGS_LOCK = threading.RLock()


@contextlib.contextmanager
def filtered_warnings(*filters: tuple[str, type]):
    """``warnings.catch_warnings`` with ``filters`` ((action, category) pairs, the last one first, as
    ``warnings.simplefilter`` adds them), for code that runs on several threads at once.

    Python's warning filters are one list per process (before Python 3.14), and a thread leaving
    ``catch_warnings`` puts the list back as it found it on entry: two threads inside such blocks at once can leave
    one block's filters in place for good. It happened: a folder run's reader threads left every warning an error
    for the rest of the process, and training and a notebook run after it failed on a NumPy deprecation warning.
    So every such block in Koala holds one lock (they are all short: a header read, or one Pillow decode), and the
    ImageMagick reader raises wand's warnings without any filter (:func:`_strict_image_class`).
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        for action, category in filters:
            warnings.simplefilter(action, category)
        yield


@functools.lru_cache(maxsize=1)
def _strict_image_class():
    """wand's ``Image``, raising a ``WandWarning`` (a MagickWand API problem, such as a coder that could not be
    read) as an exception where wand issues it as a Python warning: the effect of an "error" warnings filter for
    that class, without changing the process's filters (see :func:`filtered_warnings`)."""
    from wand.exceptions import WandWarning
    from wand.image import Image

    class StrictImage(Image):
        def raise_exception(self, stacklevel=1):
            error = self.get_exception()
            if isinstance(error, WandWarning):
                raise error
            if isinstance(error, Warning):
                warnings.warn(error, stacklevel=stacklevel + 1)
            elif isinstance(error, Exception):
                raise error

    return StrictImage


def configure_imagemagick() -> None:
    """Import wand and apply :data:`MAGICK_LIMITS` to this process's ImageMagick, once (idempotent).

    Every function here that uses wand calls this before its first wand import. wand's modules import one another
    (``resource``, ``api``, ``version``, ``image``), and reader threads importing them for the first time at once can
    meet a half-initialised module: one folder run failed once with "cannot import name 'limits' from
    'wand.resource'" and did not fail again. Importing them all here, under the lock, before any decode, means no
    thread imports wand while another is part-way through.
    """
    global _limits_configured
    if _limits_configured:
        return
    with _limits_lock:  # once per process, before any thread decodes (see MAGICK_LIMITS["time"])
        if _limits_configured:
            return
        import wand.image  # noqa: F401  (it imports the others: api, color, exceptions, resource, version)
        from wand.resource import limits

        for name, value in MAGICK_LIMITS.items():
            limits[name] = value
        MAGICK_MEMORY.capacity = int(limits["memory"])  # after the policy's cap
        _limits_configured = True


def sniff_format(header: bytes) -> str | None:
    """ImageMagick's coder name for an accepted format recognised from the first bytes, else None."""
    for signature, name in _SIGNATURES:
        if header.startswith(signature):
            return name
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "WEBP"
    return None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def find_images(inputs: list[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (file, path relative to its root) pairs, sorted, skipping hidden files.

    A file named directly is always returned (so a wrongly named file still gets a clear error);
    inside folders only files with an image extension are taken.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                if file.is_file() and is_image_file(file):
                    found.append((file, relative))
        else:
            found.append((path, Path(path.name)))
    return found


def read_file_bytes(source: str | os.PathLike) -> bytes:
    """A file's bytes, or an :class:`ImageError` naming it (missing, a folder, unreadable, over the size limit)."""
    path = Path(source)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(source, f"file is too large ({size} bytes; the limit is {MAX_FILE_BYTES})")
        return path.read_bytes()
    except IsADirectoryError:
        raise ImageError(source, "is a folder, not an image file") from None
    except FileNotFoundError:
        raise ImageError(source, "file not found") from None
    except PermissionError:
        raise ImageError(source, "permission denied") from None
    except OSError as error:
        raise ImageError(source, f"could not read the file ({error.strerror or error})") from None


def _magick_reason(error: Exception | str) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    # ImageMagick messages look like "Premature end of JPEG file `buffer.JPEG' @ warning/jpeg.c/..." :
    # keep the words (the quoted name is ImageMagick's, not the user's file).
    text = text.split(" @ ")[0]
    text = re.sub(r"\s*`[^']*'", "", text)
    return text.replace("`", "'").strip() or type(error).__name__


def read_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    shrink_to: int | None = None,
    keep_grey: bool = False,
    keep_depth: bool = False,
) -> np.ndarray:
    """Read a photo as an upright uint8 sRGB array of shape (height, width, 3).

    Args:
        source: a path, or the file's bytes (uploads).
        name: what to call the image in errors (defaults to the path).
        max_pixels: refuse images whose header declares more pixels than this (default :data:`MAX_PIXELS`).
        shrink_to: a hint that the caller only needs the image at about this short side; JPEGs are then
            decoded at a reduced scale (libjpeg's DCT scaling, through Pillow's ``draft`` or ImageMagick's
            ``jpeg:size``), which is several times faster. Both sides stay at least ``shrink_to`` (or the photo's
            own side); the scale is 1/2, 1/4 or 1/8 (ImageMagick's may also be 3/8).
        keep_grey: return a greyscale photo as (height, width) grey levels instead of three equal channels
            (a third of the memory, and its lightness is a table look-up: see :func:`koala.color.rgb_to_lightness`).
        keep_depth: with ``keep_grey``, return a 16-bit greyscale photo (an archive master) as uint16 grey levels
            instead of reducing it to 8 bits.

    Plain 8-bit RGB and 8- or 16-bit greyscale PNGs and TIFFs (:func:`_read_with_pillow`) and plain sequential
    8-bit grey and colour JPEGs (:func:`_read_jpeg_with_pillow`) are decoded by Pillow: several times faster than
    ImageMagick at full size, with the same checks, orientation and pixels; anything else, and anything Pillow has
    the least trouble with, by ImageMagick.

    Raises:
        ImageError: naming the file and the reason, for anything that is not a readable photo.
    """
    configure_imagemagick()  # first: it imports wand (see there)
    from wand.exceptions import WandError, WandException, WandWarning

    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    label, data, image_format = _source_checked(source, name, max_pixels)
    if image_format in ("PNG", "TIFF"):
        decoded = _read_with_pillow(data, label, image_format, max_pixels, keep_grey, keep_depth)
        if decoded is not None:
            return decoded
    elif image_format == "JPEG":
        decoded = _read_jpeg_with_pillow(data, label, max_pixels, shrink_to, keep_grey)
        if decoded is not None:
            return decoded
    Image = _strict_image_class()  # WandWarnings raised, without touching the process's warning filters
    try:
        try:
            probe = Image.ping(blob=data, format=_first_frame(image_format))
        except (WandError, WandException) as error:
            if "returns false" not in str(error):
                raise
            raise ImageError(
                label, f"cannot read the {image_format} header (damaged, or beyond ImageMagick's size limits)"
            ) from None
        with probe:
            width, height, coder = probe.width, probe.height, probe.format
        _check_coder(label, coder, image_format)
        if width <= 0 or height <= 0:
            raise ImageError(label, f"damaged or truncated {image_format} file (no picture size in its header)")
        _check_size(label, width, height, max_pixels)
        cost = magick_decode_bytes(data, image_format, width, height, shrink_to)
        if cost > MAGICK_MEMORY.capacity and _is_grey_8bit(data, image_format):
            return _read_grey_with_pillow(data, label, image_format, max_pixels, shrink_to, keep_grey)
        with MAGICK_MEMORY.reserve(cost, label), Image() as image:
            if shrink_to and image_format == "JPEG":
                # ImageMagick scales by min(width / hint width, height / hint height), truncated to a whole
                # number: a side shorter than the hint gave 0 (a 10 × 10000 strip was "enlarged" to 20 × 20000
                # or refused), so the hint never exceeds the photo's own sides
                image.options["jpeg:size"] = f"{min(shrink_to, width)}x{min(shrink_to, height)}"
            image.read(blob=data, format=_first_frame(image_format))
            _check_coder(label, image.format, image_format)
            problem = _decode_problem(image)
            if problem:
                raise ImageError(label, f"damaged or truncated image ({problem})")
            if len(image.sequence) > 1:  # a format whose frames [0] does not select
                with Image(image=image.sequence[0]) as first:
                    return _to_rgb_array(first, keep_grey, keep_depth)
            return _to_rgb_array(image, keep_grey, keep_depth)
    except ImageError:
        raise
    except WandWarning as warning:
        raise ImageError(label, f"damaged image ({_magick_reason(warning)})") from None
    except (WandError, WandException) as error:
        if "returns false" in str(error):  # wand's words when ImageMagick failed and left no message
            raise ImageError(label, f"damaged or truncated {image_format} data (ImageMagick could not decode it)") from None
        raise ImageError(label, f"cannot decode ({_magick_reason(error)})") from None
    except MemoryError:
        raise ImageError(label, "not enough memory to decode this image") from None
    except ValueError as error:
        raise ImageError(label, f"cannot decode ({error})") from None


def _source_checked(
    source: str | os.PathLike | bytes, name: str | None, max_pixels: int
) -> tuple[str | None, bytes, str]:
    """(what to call the photo in errors, its bytes, its sniffed format) after the checks every decode starts with:
    a readable, non-empty file of an accepted format whose header (where it can be read without decoding) declares
    no more than ``max_pixels`` pixels."""
    label = name if name is not None else (None if isinstance(source, bytes) else str(source))
    data = source if isinstance(source, bytes) else read_file_bytes(source)
    if not data:
        raise ImageError(label, "file is empty")
    image_format = sniff_format(data[:16])
    if image_format is None:
        raise ImageError(label, "not a supported image (accepted: JPEG, PNG, TIFF, WebP, GIF, BMP)")
    declared = header_size(data)
    if declared is not None:
        _check_size(label, *declared, max_pixels)
    return label, data, image_format


def read_jpeg_ycbcr(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    shrink_to: int | None = None,
) -> np.ndarray | None:
    """A plain colour JPEG's Y'CbCr planes as libjpeg decodes them, before its conversion to RGB: an upright uint8
    array of shape (height, width, 3). None for any other photo: then :func:`read_image` decodes it, or reports
    what is wrong with it.

    For callers that need a colour photo's luma and its colour from one decode. The Y' plane (``[..., 0]``) is
    exactly what decoding the JPEG's luma alone gives (libjpeg's IDCT of one component does not depend on the
    others): at every scale, it equals :func:`read_image` (``keep_grey``) of the grey JPEG that ``jpegtran
    -grayscale`` makes of the file. :func:`jpeg_ycbcr_to_rgb` of the array is exactly :func:`read_image`'s RGB of the
    file. (Both checked by the tests on 4:2:0 and 4:4:4 files at every scale.)

    The file is taken when :func:`read_image` would decode it with Pillow (:func:`_read_jpeg_with_pillow`): the
    same sniffing, limits (an ImageError beyond them), damage check, EXIF orientation (ImageMagick's reading of the
    header) and ``shrink_to`` scale. None for anything else: a grey or non-JPEG photo, a JPEG that is not plain
    (progressive, restart markers, ...), RGB-coded (no Y'CbCr to give) or damaged, and whatever Pillow has the least
    trouble with.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    label, data, image_format = _source_checked(source, name, max_pixels)
    if image_format != "JPEG":
        return None
    configure_imagemagick()  # the orientation is read by ImageMagick
    return _read_jpeg_with_pillow(data, label, max_pixels, shrink_to, keep_grey=False, ycbcr=True)


def _ycbcr_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """libjpeg's tables for its integer Y'CbCr to RGB conversion (jdcolor.c, ``build_ycc_rgb_table``), by Cb or Cr
    level: red's and blue's offsets, and green's two terms in 16-bit fixed point (rounded once, after their sum)."""
    centred = np.arange(256, dtype=np.int64) - 128

    def fixed(value: float) -> int:
        return int(value * 65536 + 0.5)

    half = 1 << 15
    red_from_cr = (fixed(1.40200) * centred + half) >> 16
    blue_from_cb = (fixed(1.77200) * centred + half) >> 16
    green_from_cr = -fixed(0.71414) * centred
    green_from_cb = -fixed(0.34414) * centred + half
    return tuple(table.astype(np.int32) for table in (red_from_cr, blue_from_cb, green_from_cb, green_from_cr))


_YCBCR_TO_RGB = _ycbcr_tables()


def jpeg_ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """uint8 RGB from JPEG's Y'CbCr levels (height, width, 3), with libjpeg's integer arithmetic: for
    :func:`read_jpeg_ycbcr`'s planes, exactly the RGB that libjpeg decodes (and :func:`read_image` returns).

    Meant for reduced copies (a few hundred pixels a side: a few milliseconds); a full-size RGB photo is
    :func:`read_image`'s."""
    red_from_cr, blue_from_cb, green_from_cb, green_from_cr = _YCBCR_TO_RGB
    luma = ycbcr[..., 0].astype(np.int32)
    cb, cr = ycbcr[..., 1], ycbcr[..., 2]
    rgb = np.empty(ycbcr.shape, dtype=np.uint8)
    rgb[..., 0] = np.clip(luma + red_from_cr[cr], 0, 255)
    rgb[..., 1] = np.clip(luma + ((green_from_cb[cb] + green_from_cr[cr]) >> 16), 0, 255)
    rgb[..., 2] = np.clip(luma + blue_from_cb[cb], 0, 255)
    return rgb


def image_size(source: str | os.PathLike | bytes, *, name: str | None = None) -> tuple[int, int]:
    """A photo's upright (width, height) from its header, without decoding the pixels.

    For callers that decoded at a reduced scale (``read_image(..., shrink_to=...)``). The file is given
    to ImageMagick as bytes with its sniffed format, never by name (a name like ``msl:x.jpg`` or
    ``x.jpg[9999x9999]`` means something to ImageMagick).
    """
    configure_imagemagick()  # first: it imports wand (see there)
    from wand.exceptions import WandException
    from wand.image import Image

    label = name if name is not None else (None if isinstance(source, bytes) else str(source))
    data = source if isinstance(source, bytes) else read_file_bytes(source)
    image_format = sniff_format(data[:16])
    if image_format is None:
        raise ImageError(label, "not a supported image (accepted: JPEG, PNG, TIFF, WebP, GIF, BMP)")
    try:
        with filtered_warnings(("ignore", Warning)):
            with Image.ping(blob=data, format=image_format) as probe:
                width, height, orientation = probe.width, probe.height, probe.orientation
    except WandException as error:
        raise ImageError(label, f"cannot read the header ({_magick_reason(error)})") from None
    if orientation in ("left_top", "right_top", "right_bottom", "left_bottom"):  # EXIF 5-8: rotated 90°
        width, height = height, width
    return width, height


def _check_size(label, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(label, "image has no pixels")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageError(label, f"image is too large ({width}×{height}; the limit is {MAX_SIDE} pixels a side)")
    if width * height > max_pixels:
        raise ImageError(
            label,
            f"image is too large ({width}×{height} = {width * height / 1e6:.1f} MP; "
            f"the limit is {max_pixels / 1e6:g} MP)",
        )


def _check_coder(label, coder: str | None, expected: str) -> None:
    """Defence in depth: the coder ImageMagick used must be the raster coder we asked for."""
    if (coder or "").upper() not in _ALLOWED_CODERS or not (coder or "").upper().startswith(expected[:3]):
        raise ImageError(label, f"refused: ImageMagick read it as {coder!r}, not {expected}")


def _first_frame(image_format: str) -> str:
    """The format to give ImageMagick: only the first frame of an animation or multi-page TIFF is decoded."""
    return f"{image_format}[0]" if image_format in ("GIF", "TIFF") else image_format


_BYTES_PER_PIXEL = 10
"""ImageMagick 6 (Q16) pixel cache: 8 bytes a pixel, and 2 more for palette, greyscale and CMYK images."""
_GREY_BYTES_PER_PIXEL = 18
"""8-bit greyscale JPEG and PNG: a DirectClass cache (8) and then the PseudoClass one (10), both at once."""


def magick_decode_bytes(data: bytes, image_format: str, width: int, height: int, shrink_to: int | None = None) -> int:
    """An upper bound of the memory ImageMagick needs to decode this photo (its first frame)."""
    pixels = width * height
    if shrink_to and image_format == "JPEG":
        # libjpeg decodes at M/8 scale with M the smallest that keeps both sides at least the hint: each side is
        # then under twice the hint's share of it, and never under 1/8
        share = max(min(shrink_to, width) / width, min(shrink_to, height) / height)
        pixels = math.ceil(pixels * max(1 / 64, min(1.0, (2 * share) ** 2)))
    per_pixel = _GREY_BYTES_PER_PIXEL if _is_grey_8bit(data, image_format) else _BYTES_PER_PIXEL
    return pixels * per_pixel


def _is_grey_8bit(data: bytes, image_format: str) -> bool:
    """A PNG of colour type 0 with 8 bits or fewer, or a JPEG with one component."""
    if image_format == "PNG":
        return len(data) >= 26 and data[12:16] == b"IHDR" and data[25] == 0 and data[24] <= 8
    if image_format == "JPEG":
        try:
            frame = _jpeg_frame_header(data)
        except struct.error:
            return False
        return frame is not None and len(frame) >= 6 and frame[5] == 1
    return False


def _read_grey_with_pillow(data: bytes, label, image_format: str, max_pixels: int, shrink_to: int | None,
                           keep_grey: bool) -> np.ndarray:
    """Decode an 8-bit greyscale JPEG or PNG that ImageMagick's memory could never hold, with Pillow (one byte a
    pixel), upright; damage is an error, since ImageMagick cannot decode it to report the damage in its words.

    A plain JPEG (:func:`_plain_jpeg`) is decoded as :func:`_read_jpeg_with_pillow` decodes it, with the same damage
    check (its scan's data given without the end marker: data that ends early is a truncated file); when that
    fails, the file is damaged (or something else Pillow has trouble with): an :class:`ImageError` giving Pillow's
    words. Any other JPEG (progressive, restart markers, ...) is decoded by Pillow as it is: a file cut short is
    refused ("image file is truncated"), but data that ends early at a marker inside the file (a cut file with an
    end marker appended, damage before a restart marker) decodes with the rest of the picture grey, unreported,
    since Pillow passes on none of libjpeg's warnings. A PNG's data is checked by zlib and its chunks' CRCs.
    """
    import io

    from PIL import Image as PILImage
    from PIL import ImageOps

    try:
        with filtered_warnings(("ignore", Warning)):  # the size was checked above, against the caller's limit
            if image_format == "JPEG":
                layout = _plain_jpeg(data)
                if layout is not None:
                    pixels = _decode_plain_jpeg(data, layout, label, max_pixels, shrink_to)
                    return pixels if keep_grey else np.repeat(pixels[..., None], 3, axis=-1)
            with PILImage.open(io.BytesIO(data), formats=[image_format]) as picture:
                picture.load()
                upright = ImageOps.exif_transpose(picture)
                grey = np.asarray(upright.convert("L"))
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(label, "not enough memory to decode this image") from None
    except (OSError, SyntaxError, ValueError, struct.error) as error:  # Pillow's words for data it cannot decode
        raise ImageError(label, f"damaged or truncated {image_format} data ({error or type(error).__name__})") from None
    except Exception as error:  # noqa: BLE001 (ImageMagick cannot take it either: Pillow's words are the reason)
        raise ImageError(label, f"cannot decode ({error or type(error).__name__})") from None
    return grey if keep_grey else np.repeat(grey[..., None], 3, axis=-1)


_PILLOW_TIFF_COMPRESSIONS = frozenset({"raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits"})
_EXIF_ORIENTATIONS = {2: "top_right", 3: "bottom_right", 4: "bottom_left", 5: "left_top", 6: "right_top",
                      7: "right_bottom", 8: "left_bottom"}


def _read_with_pillow(data: bytes, label, image_format: str, max_pixels: int, keep_grey: bool,
                      keep_depth: bool) -> np.ndarray | None:
    """Decode a plain PNG or TIFF with Pillow: 8-bit RGB, or 8- or 16-bit grey, no transparency, no palette (and
    for TIFF, one of the common lossless compressions, the usual photometric interpretation): the scans archives
    keep, 3 to 8 times faster than ImageMagick. None for anything else, and for anything Pillow fails on in any
    way, so that ImageMagick decodes it, or reports the damage in its own words.

    The same limits as ImageMagick's: :data:`MAX_SIDE`, ``max_pixels`` and :data:`MAGICK_LIMITS` (width, height,
    area, memory), checked on the header before any pixel is decoded; Pillow is told the format (never guesses
    it) and refuses truncated data (``LOAD_TRUNCATED_IMAGES`` is off).
    """
    import io

    from PIL import Image as PILImage
    from PIL import ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        return None
    try:
        with filtered_warnings(("ignore", Warning)):  # Pillow's own bomb warning: the limits are checked here
            picture = PILImage.open(io.BytesIO(data), formats=[image_format])
        with picture:
            with filtered_warnings(("ignore", Warning)):  # the header only: decoders run on all threads at once
                mode, (width, height) = picture.mode, picture.size
                if not _pillow_can_read(picture, image_format, data):
                    return None
                if not _within_magick_limits(width, height, mode):
                    return None  # ImageMagick refuses it, in its words
                _check_size(label, width, height, max_pixels)
                orientation = picture.getexif().get(0x0112, 1) if image_format == "TIFF" else 1
            picture.load()
            pixels = _pillow_array(picture)
    except ImageError:
        raise
    except Exception:  # noqa: BLE001 (any failure: ImageMagick decodes it or reports what is wrong)
        return None
    if pixels.shape[:2] != (height, width):
        return None
    if mode.startswith("I"):  # 16-bit grey
        if keep_grey and keep_depth:
            pixels = pixels.astype(np.uint16)
        else:
            pixels = eight_bit(pixels)
    elif pixels.dtype != np.uint8:
        return None
    pixels = upright(pixels, _EXIF_ORIENTATIONS.get(orientation))
    if pixels.ndim == 2 and not keep_grey:
        return np.repeat(pixels[..., None], 3, axis=-1)
    return pixels


def _pillow_can_read(picture, image_format: str, data: bytes) -> bool:
    """Whether ``picture`` (opened, not loaded) is a plain image that :func:`_read_with_pillow` decodes."""
    if picture.mode not in ("L", "RGB", "I;16", "I;16B", "I") or "transparency" in picture.info:
        return False
    if image_format == "PNG":  # 8-bit grey or RGB, 16-bit grey (IHDR's bit depth and colour type)
        return data[12:16] == b"IHDR" and (data[24], data[25]) in ((8, 0), (16, 0), (8, 2))
    tags = picture.tag_v2
    bits = tags.get(258, (8,))
    bits = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)
    photometric = tags.get(262)
    samples = tags.get(277, 1)
    sample_format = tags.get(339, 1)
    sample_format = sample_format[0] if isinstance(sample_format, (tuple, list)) else sample_format
    if picture.mode == "RGB":
        plain = photometric == 2 and samples == 3 and set(bits) == {8}
    elif picture.mode == "L":
        plain = photometric == 1 and samples == 1 and bits == (8,)
    else:
        plain = photometric == 1 and samples == 1 and bits == (16,)
    return (plain and sample_format == 1 and picture.info.get("compression") in _PILLOW_TIFF_COMPRESSIONS
            and 338 not in tags)  # no extra samples (alpha)


def _within_magick_limits(width: int, height: int, mode: str) -> bool:
    """Whether :data:`MAGICK_LIMITS` (width, height, area, memory) allow a picture of this size in Pillow's
    ``mode``: the Pillow readers hand anything beyond them to ImageMagick, which refuses it in its words."""
    bytes_per_pixel = 4 if mode == "RGB" else 2 if mode.startswith("I") else 1
    return (0 < width <= MAGICK_LIMITS["width"] and 0 < height <= MAGICK_LIMITS["height"]
            and width * height <= MAGICK_LIMITS["area"]
            and width * height * bytes_per_pixel <= MAGICK_LIMITS["memory"])


def _read_jpeg_with_pillow(data: bytes, label, max_pixels: int, shrink_to: int | None,
                           keep_grey: bool, ycbcr: bool = False) -> np.ndarray | None:
    """Decode a plain 8-bit grey or colour JPEG with Pillow (libjpeg-turbo, without ImageMagick's pixel cache:
    4 times faster for a grey JPEG, 1.5 times for a colour one at 12 MP; the same at a reduced scale, where the
    entropy decoding is all the work), upright and as ImageMagick decodes it (the same libjpeg-turbo defaults: the
    levels agree exactly in the tests); None for anything else, and for anything Pillow fails on in any way, so that
    ImageMagick decodes it or reports the damage in its words.

    Pillow passes on none of libjpeg's warnings: entropy-coded data that ends early at a marker (ImageMagick
    refuses it: "Corrupt JPEG data: premature end of data segment") is completed with zeros and decodes silently,
    the rest of the picture mid-grey. So only sequential JPEGs in one scan ended by the end-of-image marker are
    taken (:func:`_plain_jpeg`), and Pillow is given the scan's data without that marker, followed by
    :data:`_JPEG_PADDING` zero bytes: data that ends early then runs out, which Pillow reports as a truncated file
    (``LOAD_TRUNCATED_IMAGES`` is off, and a cut file runs out anyway). Progressive JPEGs and restart markers stay
    with ImageMagick: their data also ends at markers inside the file, where no such check is possible. What
    libjpeg would still warn about: data short by no more than the padding completes (a few coefficients of the last
    block), and "bad Huffman code" in damaged data, which libjpeg reports only outside its fast path (so
    ImageMagick misses most of those too).

    The size limits are checked on the header, as for PNG and TIFF. The EXIF orientation is ImageMagick's reading
    of the header (a ``ping``, a few microseconds), so it is the one ImageMagick applies to the JPEGs it decodes;
    embedded colour profiles are ignored, as ImageMagick does. ``shrink_to``: libjpeg's DCT scaling (Pillow's
    ``draft``) by 1/2, 1/4 or 1/8, the smallest that leaves both sides at least ``shrink_to`` (or the photo's own
    side): the scale ImageMagick's ``jpeg:size`` hint chooses, except where that is 3/8 and Pillow's 1/2 (a larger
    picture).

    ``ycbcr``: a colour JPEG's Y'CbCr planes, as libjpeg decodes them before converting them to RGB
    (:func:`read_jpeg_ycbcr`); None for a grey one.
    """
    from PIL import Image as PILImage
    from PIL import ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        return None
    try:
        layout = _plain_jpeg(data)
        if layout is None:
            return None
        # any warning (a doubtful header): ImageMagick decides; Pillow's bomb warning: the limits are checked here
        pixels = _decode_plain_jpeg(data, layout, label, max_pixels, shrink_to, ycbcr,
                                    header_warnings=(("error", Warning), ("ignore", PILImage.DecompressionBombWarning)))
    except ImageError:
        raise
    except Exception:  # noqa: BLE001 (any failure: ImageMagick decodes it or reports what is wrong)
        return None
    if pixels.ndim == 2 and not keep_grey:
        return np.repeat(pixels[..., None], 3, axis=-1)
    return pixels


class _EndWatcher:
    """A file's bytes for Pillow, noting whether Pillow ever reached their end: with the end-of-image marker
    replaced by :data:`_JPEG_PADDING`, libjpeg decodes a whole scan without reaching it, so one that does is cut
    short (whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says, which makes Pillow finish such a file silently)."""

    def __init__(self, data: bytes):
        import io

        self._stream = io.BytesIO(data)
        self.ran_out = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        if not chunk and size != 0:
            self.ran_out = True
        return chunk

    def __getattr__(self, attribute):  # seek, tell, ...
        return getattr(self._stream, attribute)


def _decode_plain_jpeg(data: bytes, layout: tuple[int, int, int], label, max_pixels: int, shrink_to: int | None,
                       ycbcr: bool = False, header_warnings: tuple = (("ignore", Warning),)) -> np.ndarray:
    """The pixels of a plain JPEG (``layout`` from :func:`_plain_jpeg`) decoded by Pillow, upright: grey levels
    (height, width), RGB, or with ``ycbcr`` Y'CbCr (height, width, 3). Raises :class:`ImageError` beyond the limits,
    and anything else (an ``OSError`` for a scan cut short, a ``ValueError`` for a file that is not what its header
    said or not for this reader) for the caller to turn into a refusal or a hand-over to ImageMagick.

    The header is read with ``header_warnings`` (:func:`filtered_warnings`: under Koala's warnings lock); the scan
    is decoded outside it, so that several threads decode at once."""
    from PIL import Image as PILImage

    width, height, scan_end = layout
    stream = _EndWatcher(data[:scan_end] + bytes(_JPEG_PADDING))
    with filtered_warnings(*header_warnings):
        orientation = _magick_orientation(data)
        picture = PILImage.open(stream, formats=["JPEG"])
    with picture:
        mode = picture.mode
        if mode not in (("RGB",) if ycbcr else ("L", "RGB")) or picture.size != (width, height):
            raise ValueError(f"Pillow opened it as a {mode} picture of {picture.size}")
        if not _within_magick_limits(width, height, mode):
            raise ValueError("beyond ImageMagick's limits")  # ImageMagick refuses it, in its words
        _check_size(label, width, height, max_pixels)
        scale = 1
        if shrink_to:
            hint = (min(shrink_to, width), min(shrink_to, height))
            scale = max(factor for factor in (1, 2, 4, 8) if factor <= min(width // hint[0], height // hint[1]))
        if shrink_to or ycbcr:
            with filtered_warnings(*header_warnings):
                picture.draft("YCbCr" if ycbcr else mode, hint if shrink_to else None)
        if picture.size != (-(-width // scale), -(-height // scale)) or (ycbcr and picture.mode != "YCbCr"):
            raise ValueError(f"Pillow's draft gave a {picture.mode} picture of {picture.size}")
        picture.load()
        if stream.ran_out:
            raise OSError("image file is truncated")
        pixels = _pillow_array(picture)
    if pixels.dtype != np.uint8 or pixels.shape[:2] != (-(-height // scale), -(-width // scale)):
        raise ValueError(f"unexpected pixels: {pixels.dtype} {pixels.shape}")
    return upright(pixels, orientation)


def _pillow_array(picture) -> np.ndarray:
    """A loaded Pillow image's pixels as a NumPy array. An RGB (or Y'CbCr) image is copied out in bands of rows: 3 to
    4 times faster than ``np.asarray``, which first packs the whole picture into one bytes object (12 MP: 10 ms, not
    35)."""
    if picture.mode not in ("RGB", "YCbCr"):
        return np.asarray(picture)
    width, height = picture.size
    rows = max(1, (1 << 20) // (4 * width))  # about 1 MiB of Pillow's 4-byte pixels at a time
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, rows):
        pixels[top : top + rows] = np.asarray(picture.crop((0, top, width, min(height, top + rows))))
    return pixels


_JPEG_PADDING = 8
"""Zero bytes after a JPEG scan's data given to Pillow in place of the end marker: libjpeg's bit reader fills up
to 57 bits ahead of the bits it needs, so a whole scan needs at most 8 bytes more, which it does not decode."""


def _magick_orientation(data: bytes) -> str | None:
    """ImageMagick's name for a JPEG's EXIF orientation, read from the header only (a fraction of a millisecond)."""
    from wand.image import Image

    with Image.ping(blob=data, format="JPEG") as probe:
        if (probe.format or "").upper() != "JPEG":  # then the ImageMagick path refuses it, naming the file
            raise ValueError(f"ImageMagick read it as {probe.format!r}")
        return probe.orientation


_JPEG_TABLES_AND_NOTES = frozenset({0xC4, 0xDB, 0xFE, *range(0xE0, 0xF0)})
"""Segments that may come before the scan: Huffman and quantisation tables, comments, APPn (EXIF, ICC, ...)."""


def _plain_jpeg(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, where the scan's data ends) of a JPEG that :func:`_read_jpeg_with_pillow` decodes, else None.

    One 8-bit baseline or extended-sequential Huffman frame of 1 or 3 components, its height in the header; no
    restart interval; one scan of all the components; its entropy-coded data ended by the end-of-image marker
    (anything after that marker is ignored, as libjpeg does).
    """
    frame = None
    position = 2
    while True:
        if position >= len(data) or data[position] != 0xFF:
            return None  # bytes where a marker should be, or a cut file
        while position < len(data) and data[position] == 0xFF:
            position += 1
        if position + 3 > len(data):
            return None
        marker = data[position]
        length = struct.unpack(">H", data[position + 1 : position + 3])[0]
        end = position + 1 + length
        payload = data[position + 3 : end]
        if length < 2 or end > len(data):
            return None
        if marker in (0xC0, 0xC1):
            if frame is not None or len(payload) < 6:
                return None
            precision, (height, width), count = payload[0], struct.unpack(">HH", payload[1:5]), payload[5]
            if precision != 8 or width == 0 or height == 0 or count not in (1, 3) or len(payload) != 6 + 3 * count:
                return None
            frame = (width, height, {payload[6 + 3 * index] for index in range(count)})
            if len(frame[2]) != count:
                return None
        elif marker == 0xDA:  # start of scan
            count = payload[0] if payload else 0
            if (frame is None or len(payload) != 4 + 2 * count or set(payload[1 : 1 + 2 * count : 2]) != frame[2]
                    or payload[-3:] != b"\x00\x3f\x00"):
                return None  # not one scan of every component
            scan_end = _jpeg_scan_end(data, end)
            return None if scan_end is None else (frame[0], frame[1], scan_end)
        elif marker == 0xDD:  # restart interval
            if payload != b"\x00\x00":
                return None
        elif marker not in _JPEG_TABLES_AND_NOTES:
            return None  # another kind of frame (progressive, lossless, arithmetic coding), a stray marker ...
        position = end


def _jpeg_scan_end(data: bytes, start: int) -> int | None:
    """Where the entropy-coded data from ``start`` ends, when the first marker after it is the end of the image
    (inside the data a 0xFF byte is followed by 0x00 or by more 0xFF fill bytes; restart markers are refused)."""
    stream = np.frombuffer(data, dtype=np.uint8, offset=start)
    prefixes = np.flatnonzero(stream[:-1] == 0xFF)
    following = stream[prefixes + 1]
    markers = prefixes[(following != 0x00) & (following != 0xFF)]
    if len(markers) == 0 or stream[markers[0] + 1] != 0xD9:
        return None
    end = start + int(markers[0])
    while end > start and data[end - 1] == 0xFF:  # fill bytes belong to the marker
        end -= 1
    return end


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, GIF, BMP or JPEG header, without decoding; None if unknown.

    Checked before ImageMagick sees the file, so a pixel flood (a tiny file claiming 50000×50000)
    gets a clear "too large" instead of whatever limit ImageMagick trips over.
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data.startswith(b"BM") and len(data) >= 26:
            header_bytes = struct.unpack("<I", data[14:18])[0]
            if header_bytes == 12:
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    frame = _jpeg_frame_header(data)
    if frame is None or len(frame) < 5:
        return None
    height, width = struct.unpack(">HH", frame[1:5])
    return width, height


def _jpeg_frame_header(data: bytes) -> bytes | None:
    """The start-of-frame segment's payload (precision, height, width, components, ...), or None."""
    start_of_frame = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    index = 2
    for _ in range(10_000):
        while index < len(data) and data[index] == 0xFF:
            index += 1
        if index >= len(data):
            return None
        marker = data[index]
        index += 1
        if marker in start_of_frame:
            return data[index + 2 : index + 8]
        if marker == 0xD9 or marker == 0xDA:  # end of image, or pixel data before any frame header
            return None
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            continue
        index += struct.unpack(">H", data[index : index + 2])[0]
    return None


class _ExceptionInfo(ctypes.Structure):
    # The head of MagickCore's ExceptionInfo (ImageMagick 6 and 7).
    _fields_ = [
        ("severity", ctypes.c_int),
        ("error_number", ctypes.c_int),
        ("reason", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
    ]


_image_exception_api = None


def _image_exception(image) -> tuple[int, str] | None:
    """The most severe problem ImageMagick 6 recorded on the decoded image itself, or None.

    ImageMagick 6's coders report warnings such as libjpeg's "Premature end of JPEG file" on the
    image (``image->exception``), where wand never looks; MagickCore's ``GetImageException`` fetches it.
    """
    global _image_exception_api
    from wand.api import library, libmagick

    if _image_exception_api is None:
        try:
            library.GetImageFromMagickWand.argtypes = [ctypes.c_void_p]
            library.GetImageFromMagickWand.restype = ctypes.c_void_p
            libmagick.AcquireExceptionInfo.argtypes = []
            libmagick.AcquireExceptionInfo.restype = ctypes.POINTER(_ExceptionInfo)
            libmagick.GetImageException.argtypes = [ctypes.c_void_p, ctypes.POINTER(_ExceptionInfo)]
            libmagick.GetImageException.restype = None
            libmagick.DestroyExceptionInfo.argtypes = [ctypes.POINTER(_ExceptionInfo)]
            libmagick.DestroyExceptionInfo.restype = ctypes.c_void_p
            _image_exception_api = True
        except AttributeError:  # ImageMagick 7 has no GetImageException: its coders report to the wand
            _image_exception_api = False
    if not _image_exception_api:
        return None
    pointer = library.GetImageFromMagickWand(image.wand)
    if not pointer:
        return None
    info = libmagick.AcquireExceptionInfo()
    try:
        libmagick.GetImageException(pointer, info)
        severity = info.contents.severity
        reason = (info.contents.reason or b"").decode("utf-8", "replace")
        description = (info.contents.description or b"").decode("utf-8", "replace")
    finally:
        libmagick.DestroyExceptionInfo(info)
    if not severity:
        return None
    return severity, f"{reason} ({description})" if description else reason


def _decode_problem(image) -> str | None:
    """Why a successfully read image is damaged (missing or corrupt pixel data), or None if it is whole."""
    found = _image_exception(image)
    if found is None:
        exception = image.get_exception()  # ImageMagick 7 reports coder warnings to the wand
        if exception is not None:
            found = (getattr(exception, "wand_error_code", 0) or 0, str(exception))
    if found is None:
        return None
    severity, message = found
    message = _magick_reason(message)
    if severity >= _ERROR_EXCEPTION:
        return message
    if severity == _CORRUPT_IMAGE_WARNING and not any(text in message for text in _HARMLESS_WARNINGS):
        return message
    return None


def _to_rgb_array(image, keep_grey: bool = False, keep_depth: bool = False) -> np.ndarray:
    from wand.color import Color

    orientation = image.orientation
    if _colorspace(image) in ("cmyk", "cmy"):
        image.transform_colorspace("srgb")
    if image.alpha_channel:
        image.background_color = Color("white")
        image.alpha_channel = "remove"
    if keep_grey and keep_depth and image.depth > 8 and _colorspace(image) == "gray":
        levels = np.empty((image.height, image.width), dtype=np.uint16)
        if not _export_pixels(image, "R", levels, storage="short"):
            raise ValueError("could not export the pixels")
        return upright(levels, orientation)
    image.depth = 8
    width, height = image.width, image.height
    colorspace = _colorspace(image)
    grey = colorspace == "gray"
    if grey or colorspace in ("srgb", "rgb"):
        # Copy the pixels straight into a numpy array: a third of the time of encoding an RGB or GRAY
        # blob, and no converted copy of the image (which, for a grey photo exported as RGB, needs a
        # second pixel cache: under Debian's policy, 256 MiB of memory and no disk, a 12-megapixel
        # grey JPEG could not be read at all).
        pixels = np.empty((height, width) if grey else (height, width, 3), dtype=np.uint8)
        if not _export_pixels(image, "R" if grey else "RGB", pixels):
            raise ValueError("could not export the pixels")
        pixels = upright(pixels, orientation)
        if grey and not keep_grey:
            return np.repeat(pixels[..., None], 3, axis=-1)
        return pixels
    raw = image.make_blob(format="RGB")
    if raw is None or len(raw) != width * height * 3:
        raise ValueError("unexpected pixel data size")
    return upright(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy(), orientation)


def eight_bit(pixels: np.ndarray) -> np.ndarray:
    """A uint8 copy of 16-bit levels, rounded as ImageMagick rounds them; uint8 ones as they are."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def upright(pixels: np.ndarray, orientation: str | None) -> np.ndarray:
    """Apply an EXIF orientation (ImageMagick's name for it) to decoded pixels, as a contiguous copy.

    Done in NumPy rather than with ImageMagick's ``auto_orient``, which needs a second pixel cache as large as
    the first (a 20 MP phone photo taken upright could not be decoded within 256 MiB)."""
    turned = {
        "top_right": lambda a: a[:, ::-1],                      # 2: mirrored left to right
        "bottom_right": lambda a: a[::-1, ::-1],                # 3: upside down
        "bottom_left": lambda a: a[::-1],                       # 4: mirrored top to bottom
        "left_top": lambda a: a.swapaxes(0, 1),                 # 5: transposed
        "right_top": lambda a: np.rot90(a, k=-1),               # 6: turned a quarter clockwise
        "right_bottom": lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # 7: transverse
        "left_bottom": lambda a: np.rot90(a, k=1),              # 8: turned a quarter anticlockwise
    }.get(orientation or "", lambda a: a)(pixels)
    return np.ascontiguousarray(turned)


def _colorspace(image) -> str:
    """The image's colorspace name; "" for one this wand does not know (e.g. ImageMagick's LinearGray)."""
    try:
        return image.colorspace
    except IndexError:
        return ""


def _export_pixels(image, channel_map: str, out: np.ndarray, storage: str = "char") -> bool:
    """MagickExportImagePixels into ``out`` (uint8 for "char", uint16 for "short"; C-contiguous,
    height × width × len(channel_map))."""
    from wand.api import library
    from wand.image import STORAGE_TYPES

    return bool(
        library.MagickExportImagePixels(
            image.wand, 0, 0, image.width, image.height, channel_map.encode(),
            STORAGE_TYPES.index(storage), out.ctypes.data,
        )
    )


def resize_and_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so the short side is ``size`` (area-averaging when shrinking), then centre-crop a square."""
    from PIL import Image as PILImage

    # Crop the centre square first, then resize: the same picture, but a 10000 × 10 strip is not first
    # enlarged to 256000 × 256 pixels.
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = np.ascontiguousarray(rgb[top : top + side, left : left + side])
    return np.asarray(PILImage.fromarray(square).resize((size, size), PILImage.Resampling.LANCZOS, reducing_gap=3.0))


def resize_exact(rgb_or_grey: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 image to size × size, ignoring the aspect ratio (the whole picture is kept)."""
    from PIL import Image as PILImage

    return np.asarray(
        PILImage.fromarray(rgb_or_grey).resize((size, size), PILImage.Resampling.BILINEAR, reducing_gap=2.0)
    )
