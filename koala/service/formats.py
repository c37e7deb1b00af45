"""The answer's format: JPEG or PNG, negotiated from ``?format=``, then ``Accept``, then the upload's own
format; and the answer encoded in memory.
"""

from __future__ import annotations

import io

from koala.service.problems import Problem

OUTPUT_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


def choose_format(query_format: str | None, accept: str, input_format: str | None) -> str:
    """JPEG or PNG: ``?format=`` first, then the Accept header, then JPEG for JPEG input and PNG otherwise."""
    if query_format:
        chosen = OUTPUT_FORMATS.get(query_format.strip().lower())
        if chosen is None:
            raise Problem(400, f"Unknown format {query_format[:20]!r}: use format=jpeg or format=png.")
        return chosen
    accepted = _accepted_media_types(accept)
    wants_jpeg = accepted.get("image/jpeg", 0) > 0
    wants_png = accepted.get("image/png", 0) > 0
    if wants_jpeg and (not wants_png or accepted["image/jpeg"] > accepted["image/png"]):
        return "JPEG"
    if wants_png and (not wants_jpeg or accepted["image/png"] > accepted["image/jpeg"]):
        return "PNG"
    return "JPEG" if input_format == "JPEG" else "PNG"


def _accepted_media_types(accept: str) -> dict[str, float]:
    accepted: dict[str, float] = {}
    for item in accept.split(","):
        parts = [part.strip() for part in item.split(";")]
        media_type, quality = parts[0].lower(), 1.0
        for parameter in parts[1:]:
            if parameter.startswith("q="):
                try:
                    quality = float(parameter[2:])
                except ValueError:
                    quality = 0.0
        if media_type:
            accepted[media_type] = quality
    return accepted


def encode_answer(rgb, image_format: str, quality: int) -> bytes:
    """Encode the answer with Pillow, in memory.

    Not :func:`koala.outputs.encode_image`: under Debian's ImageMagick policy (memory 256 MiB, map 512 MiB)
    and with the disk limit at 0, wand aborts the whole process (a C assertion in ResetImagePixels) when
    it cannot allocate a large image for writing, where Pillow needs only the array's own memory.
    """
    import numpy as np
    from PIL import Image as PILImage

    output = io.BytesIO()
    picture = PILImage.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if image_format == "JPEG":
        picture.save(output, "JPEG", quality=quality, optimize=False, subsampling=0 if quality >= 90 else 2)
    else:
        picture.save(output, "PNG", compress_level=3)
    return output.getvalue()
