"""The coloured photo's name for the browser: ``<the upload's name>-coloured.jpg|png`` in a
Content-Disposition header.
"""

from __future__ import annotations

import re
from pathlib import Path

_UNSAFE_IN_NAMES = re.compile(r"[^\w.-]+")  # \w is Unicode: letters and digits of any script are kept


def _upload_stem(filename: str | None) -> str:
    return Path(filename.replace("\\", "/")).stem if filename else ""


def _safe_stem(stem: str) -> str:
    return _UNSAFE_IN_NAMES.sub("-", stem).strip(".-_")[:80] or "photo"


def download_name(filename: str | None, image_format: str) -> str:
    """``<the upload's name>-coloured.jpg|png``: letters and digits of any script kept, anything else a dash."""
    return f"{_safe_stem(_upload_stem(filename))}-coloured.{'jpg' if image_format == 'JPEG' else 'png'}"


def content_disposition(filename: str | None, image_format: str) -> str:
    """``inline`` with the download name in ASCII (``filename``, for old clients) and, when the upload's name
    has other letters, in UTF-8 too (``filename*``, RFC 6266): "Großvater.jpg" → "Großvater-coloured.jpg"."""
    import unicodedata
    from urllib.parse import quote

    name = download_name(filename, image_format)
    plain = unicodedata.normalize("NFKD", _upload_stem(filename)).encode("ascii", "ignore").decode()
    ascii_name = f"{_safe_stem(plain)}{name[name.rindex('-coloured.'):]}"
    if ascii_name == name:
        return f'inline; filename="{name}"'
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
