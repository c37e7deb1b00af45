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


PNG_COMPRESS_LEVEL = 1
"""zlib level for PNG outputs: a 12 MP colourised scan takes about a third of the time of level 3 and ... % more
bytes (benchmarks/README.md, "PNG and TIFF outputs")."""

TIFF_DEFLATE_LEVEL = 1
"""Deflate at zlib level 1 with horizontal differencing (the TIFF predictor), for 8- and 16-bit TIFF outputs."""


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
    if not isinstance(rgb, PILImage.Image):
        rgb = PILImage.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    if rgb.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {rgb.mode}")
    options = {"quality": quality} if image_format in ("JPEG", "WEBP") else {}
    # JPEG keeps Pillow's 4:2:0 chroma subsampling: our colour is upsampled from 256 px anyway.
    if image_format == "PNG":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    buffer = io.BytesIO()
    rgb.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _encode_tiff(rgb) -> bytes:
    import io

    import tifffile

    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 or uint16 RGB image (H, W, 3), got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    # strips of about 256 KiB each, so a reader can decode part of a large scan
    rows = max(1, (1 << 18) // (array.shape[1] * array.itemsize * 3))
    tifffile.imwrite(buffer, np.ascontiguousarray(array), photometric="rgb", compression="zlib",
                     compressionargs={"level": TIFF_DEFLATE_LEVEL},
                     predictor=True, rowsperstrip=rows, metadata=None)
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
