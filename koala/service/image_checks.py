"""Checks on an upload's bytes before ImageMagick decodes them: the size its header declares (413) and
whether a JPEG or WebP file is complete (422).
"""

from __future__ import annotations

import io
import struct

from koala.images import filtered_warnings
from koala.service.problems import Problem


def check_declared_size(data: bytes, image_format: str, max_pixels: int) -> None:
    """413 if the image's header declares more than ``max_pixels`` pixels (read by Pillow; nothing decoded).

    ImageMagick's own ping refuses such headers too, but once a side passes its width/height/area limits
    it says only that a delegate failed; this answers first and says what is wrong. Pillow's format class
    is called directly, as ``Image.open`` does, but without its own decompression-bomb error, so that the
    message can give the size.
    """
    from PIL import Image as PILImage

    try:
        PILImage.init()
        factory, _ = PILImage.OPEN[image_format]
        with filtered_warnings(("ignore", Warning)):  # (one process-wide list of filters: see there)
            with factory(io.BytesIO(data)) as probe:
                width, height = probe.size
    except Exception:  # noqa: BLE001 - Pillow could not read the header: ImageMagick decides below
        return
    if width * height > max_pixels:
        raise Problem(
            413,
            f"The image is too large: {width}×{height} is {width * height / 1e6:.1f} megapixels "
            f"and the limit is {max_pixels / 1e6:.0f}.",
        )


def check_complete(data: bytes, image_format: str) -> None:
    """422 for truncated JPEG and WebP files, which ImageMagick decodes with only a warning (grey rows).

    A JPEG is complete when an end-of-image marker follows its first scan (inside entropy-coded data a
    0xFF byte is always stuffed, so the marker cannot appear there by chance; bytes after the end marker
    are allowed). A WebP is complete when it is as long as its RIFF header says.
    """
    if image_format == "JPEG":
        scan_start = _first_jpeg_scan(data)
        if scan_start is None or data.find(b"\xff\xd9", scan_start) < 0:
            raise Problem(422, "The JPEG file is incomplete: it ends before the end of the image.")
    elif image_format == "WEBP" and len(data) >= 12:
        (riff_size,) = struct.unpack("<I", data[4:8])
        if len(data) < riff_size + 8:
            raise Problem(422, "The WebP file is incomplete: it is shorter than its header says.")


def _first_jpeg_scan(data: bytes) -> int | None:
    """Offset of the first scan's entropy-coded data, walking the marker segments after SOI; None if cut short."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return position  # not a marker where one should be: leave the judgement to ImageMagick
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == 0xDA:  # start of scan: its header, then the entropy-coded data
            return position + 2 + length if position + 2 + length <= len(data) else None
        position += 2 + length
    return None
