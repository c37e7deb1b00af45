"""Writing results: every file Koala writes is complete or absent, and images are encoded in memory.

A file is written to a temporary file beside the target, flushed to the disk and renamed into place, so a run
stopped at any moment (even ``kill -9``) leaves the old file or the new one there, never half of one; a failure
is an :class:`koala.images.ImageError` naming the file and the reason. Photos, models' JSON, manifests, reports
and figures are all written this way.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from koala.images import ImageError

_UMASK = os.umask(0)
os.umask(_UMASK)


PNG_COMPRESS_LEVEL = 2
"""Deflate level for PNG outputs (:func:`_encode_png`), in ISA-L's terms (0 to 3; 2 is its default). A 12 MP
colourised scan with film grain, CPU time of all threads: level 0 154 ms for 19.1 MB, 1 162 ms / 16.6 MB,
2 164 ms / 16.2 MB; zlib at its fastest level took 3.5 times as long for the same size, Pillow's own encoder
(zlib level 3, a filter chosen per row) 2.6 s for 14.6 MB (benchmarks/README.md)."""

TIFF_DEFLATE_LEVEL = 1
"""Deflate level (ISA-L's, as for PNG) for 8- and 16-bit TIFF outputs, with horizontal differencing (the TIFF
predictor), strips compressed on all cores (:func:`_encode_tiff`). A 12 MP 16-bit colourised master, CPU time:
level 0 297 ms for 56.5 MB, 1 327 ms / 43.1 MB, 2 369 ms / 45.3 MB, 3 509 ms / 53.7 MB (its noisy low bits do not
compress; the zlib writer before, level 1 on two cores: 762 ms wall, 44.9 MB)."""


def encode_image(rgb, image_format: str, quality: int = 95) -> bytes:
    """Encode an RGB image as JPEG, PNG, TIFF or WebP bytes, in memory: a uint8 array (H, W, 3), a Pillow RGB
    image, or for TIFF a uint16 array (H, W, 3) (16-bit colour, for 16-bit masters).

    Encoding uses Pillow (TIFF: tifffile), not ImageMagick: our own pixels need no defensive decoder, and
    ImageMagick 6 under Debian's memory policy with the disk cache off aborts the whole process (a C assertion,
    not an exception) when asked to encode images above about 35 MP.
    """
    import io

    from PIL import Image as PILImage

    image_format = image_format.upper().replace("JPG", "JPEG")
    if image_format not in ("JPEG", "PNG", "TIFF", "WEBP"):
        raise ValueError(f"cannot write format {image_format!r}")
    if image_format == "TIFF":
        return _encode_tiff(rgb)
    if isinstance(rgb, PILImage.Image) and rgb.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {rgb.mode}")
    if image_format == "PNG":
        return _encode_png(rgb)
    if not isinstance(rgb, PILImage.Image):
        rgb = PILImage.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    options = {"quality": quality}
    # JPEG keeps Pillow's 4:2:0 chroma subsampling: our colour is upsampled from 256 px anyway.
    buffer = io.BytesIO()
    rgb.save(buffer, format=image_format, **options)
    return buffer.getvalue()


_PNG_PIECE_ROWS = 256
"""Rows per piece of a PNG's image data compressed on its own thread (:func:`_encode_png`)."""


def _encode_png(rgb, level: int | None = None) -> bytes:
    """A PNG of a uint8 RGB image with every row "Sub"-filtered (the difference to the pixel on the left), its
    deflate stream compressed in pieces of rows on all cores by ISA-L (``isal.isal_zlib``: standard deflate, about
    3.5 times as fast as zlib's fastest level here, and it releases the GIL) and joined with sync flushes (as pigz
    does) into one valid zlib stream, its Adler-32 combined from the pieces': several times faster than Pillow's
    encoder, whose filter choice per row costs more than the deflate."""
    import struct

    from isal import isal_zlib

    from koala.color import _thread_pool

    from PIL import Image as PILImage

    level = PNG_COMPRESS_LEVEL if level is None else level
    if isinstance(rgb, PILImage.Image):  # (what the join gives) copied out piece by piece, on all cores
        if rgb.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {rgb.mode}")
        width, height = rgb.size

        def rows_of(top: int, bottom: int) -> np.ndarray:
            return np.asarray(rgb.crop((0, top, width, bottom))).reshape(bottom - top, width * 3)
    else:
        array = np.ascontiguousarray(rgb, dtype=np.uint8)
        if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {array.dtype} {array.shape}")
        height, width = array.shape[:2]

        def rows_of(top: int, bottom: int) -> np.ndarray:
            return array[top:bottom].reshape(bottom - top, width * 3)
    pieces = [(top, min(height, top + _PNG_PIECE_ROWS)) for top in range(0, height, _PNG_PIECE_ROWS)]

    def piece(index: int) -> tuple[bytes, int, int]:
        top, bottom = pieces[index]
        rows = rows_of(top, bottom)
        filtered = np.empty((bottom - top, 1 + width * 3), dtype=np.uint8)
        filtered[:, 0] = 1  # Sub
        filtered[:, 1:4] = rows[:, :3]
        np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])
        raw = filtered.data
        compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)  # raw deflate: one header for all
        last = index == len(pieces) - 1
        data = compressor.compress(raw) + compressor.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_SYNC_FLUSH)
        return data, isal_zlib.adler32(raw), filtered.nbytes  # not len(raw): a 2-D view's len is its rows

    compressed = list(_thread_pool().map(piece, range(len(pieces))))
    checksum = 1
    for _, piece_checksum, length in compressed:
        checksum = _adler32_combine(checksum, piece_checksum, length)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = isal_zlib.crc32(payload, isal_zlib.crc32(kind))
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"IDAT", b"\x78\x01")]
    parts += [chunk(b"IDAT", data) for data, _, _ in compressed]
    parts += [chunk(b"IDAT", struct.pack(">I", checksum)), chunk(b"IEND", b"")]
    return b"".join(parts)


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """zlib's adler32_combine: the Adler-32 of two byte strings joined, from theirs and the second's length."""
    base = 65521
    remainder = second_length % base
    sum1 = first & 0xFFFF
    sum2 = (remainder * sum1) % base
    sum1 = (sum1 + (second & 0xFFFF) + base - 1) % base
    sum2 = ((first >> 16) + (second >> 16) + sum2 + base - remainder) % base
    return (sum2 << 16) | sum1


def _encode_tiff(rgb) -> bytes:
    """A TIFF of a uint8 or uint16 RGB image: Adobe deflate with horizontal differencing (predictor 2), strips of
    about 256 KiB (so a reader can decode part of a large scan) differenced and compressed by ISA-L on all cores,
    then handed to tifffile as finished strips."""
    import io

    import tifffile
    from isal import isal_zlib

    from koala.color import _thread_pool

    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 or uint16 RGB image (H, W, 3), got {array.dtype} {array.shape}")
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    height, width = array.shape[:2]
    rows = max(1, (1 << 18) // (width * array.itemsize * 3))

    def strip(top: int) -> bytes:
        block = array[top:top + rows]
        difference = np.empty_like(block)  # each sample less the same channel's on its left, modulo 2^bits
        difference[:, 0] = block[:, 0]
        np.subtract(block[:, 1:], block[:, :-1], out=difference[:, 1:])
        return isal_zlib.compress(difference.data, TIFF_DEFLATE_LEVEL)

    strips = list(_thread_pool().map(strip, range(0, height, rows)))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, iter(strips), shape=array.shape, dtype=array.dtype, byteorder="<", photometric="rgb",
                     compression="zlib", predictor=True, rowsperstrip=rows, metadata=None)
    return buffer.getvalue()


def format_for_path(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
    if suffix not in formats:
        raise ImageError(path, f"cannot write images with the extension {suffix!r}")
    return formats[suffix]


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is either complete or absent (temp file + rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as error:
        raise ImageError(path, f"cannot write here ({error.strerror or error})") from None
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ImageError(path, f"could not write the file ({error.strerror or error})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write a uint8 RGB image atomically; the format follows the extension."""
    write_bytes_atomic(path, encode_image(rgb, format_for_path(path), quality=quality))
