"""Generate the bad-input corpus: hostile, broken and awkward photos, each with its expected outcome.

Every file is made here from numbers (Pillow, wand, raw bytes), so the corpus needs no downloads and
can be rebuilt anywhere::

    python tests/make_bad_inputs.py /tmp/bad-inputs      # writes the files and prints the table

From Python, ``make_corpus(folder)`` returns ``{file name: Expected}``. An image outcome comes with
the upright picture the reader must return (compared with a tolerance, since JPEG is lossy); an error
outcome with words the one-line message must contain. ``prepare`` says what ``koala prepare`` should
do with the file ("added", or "left out: <words of the reason>").

Sizes are kept small; the "too large" cases use a lowered pixel limit (:data:`TEST_MAX_PIXELS`, passed as
``max_pixels=`` or ``$KOALA_MAX_PIXELS``) instead of a really large file.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

TEST_MAX_PIXELS = 110_000
"""The pixel limit the corpus is meant to be read with: above the 10000 × 10 strip, below ``above-limit.png``."""

NON_ASCII_NAME = "Grand-mère à l’été 1943 (scan 2).jpg"


@dataclasses.dataclass
class Expected:
    outcome: str  # "image" or "error"
    reason: str = ""  # for errors: words the message must contain (case-insensitive)
    reference: np.ndarray | None = None  # for images: the upright uint8 RGB picture expected
    tolerance: float = 8.0  # mean absolute difference allowed against the reference
    prepare: str = "added"  # "added" or "left out: <words of the reason>"
    note: str = ""

    @property
    def is_error(self) -> bool:
        return self.outcome == "error"


def make_photo(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """A colourful synthetic photo: smooth colour gradients, a few coloured discs, some texture (the
    tests' one generator; tests/conftest.py re-exports it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            0.5 + 0.4 * np.sin(x / width * np.pi * rng.uniform(1, 3) + rng.uniform(0, 6)),
            0.5 + 0.4 * np.sin(y / height * np.pi * rng.uniform(1, 3) + rng.uniform(0, 6)),
            0.5 + 0.4 * np.cos((x + y) / (width + height) * np.pi * rng.uniform(1, 3)),
        ],
        axis=-1,
    )
    for _ in range(4):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, 30)
        mask = (y - cy) ** 2 + (x - cx) ** 2 < radius**2
        base[mask] = rng.uniform(0, 1, size=3)
    base += rng.normal(0, 0.02, size=base.shape)
    return (np.clip(base, 0, 1) * 255).astype(np.uint8)


def quadrants(height: int = 32, width: int = 48) -> np.ndarray:
    """An upright test card: red top-left, green top-right, blue bottom-left, yellow bottom-right."""
    card = np.zeros((height, width, 3), np.uint8)
    card[: height // 2, : width // 2] = (220, 30, 30)
    card[: height // 2, width // 2 :] = (30, 200, 40)
    card[height // 2 :, : width // 2] = (30, 40, 220)
    card[height // 2 :, width // 2 :] = (230, 220, 30)
    return card


def _encode(array: np.ndarray, image_format: str, mode: str | None = None, **options) -> bytes:
    from PIL import Image

    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def pixel_flood_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG of a few hundred bytes whose header claims width × height RGB pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


# EXIF orientation n: the transpose that turns the upright picture into the stored pixels (the inverse
# of what a viewer applies: 6 is shown rotated 90° clockwise, so it is stored rotated 90° anticlockwise).
def _stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    from PIL import Image

    inverse = {
        1: None,
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    image = Image.fromarray(upright)
    return np.asarray(image.transpose(inverse) if inverse is not None else image)


def _jpeg_with_orientation(upright: np.ndarray, orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(_stored_for_orientation(upright, orientation), "JPEG", quality=95, exif=exif.tobytes())


def _sixteen_bit_tiff(height: int = 40, width: int = 56) -> tuple[bytes, np.ndarray]:
    from wand.image import Image

    y, x = np.mgrid[0:height, 0:width]
    deep = np.stack(
        [x * 65535 // (width - 1), y * 65535 // (height - 1), (x + y) * 65535 // (width + height - 2)], axis=-1
    ).astype(np.uint16)
    with Image.from_array(deep, channel_map="RGB", storage="short") as image:
        image.format = "TIFF"
        image.depth = 16
        data = image.make_blob()
    assert struct.unpack("<H", data[2:4])[0] == 42
    return data, np.round(deep / 257.0).astype(np.uint8)


def _cmyk_jpeg() -> tuple[bytes, np.ndarray]:
    from wand.image import Image

    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:24] = (200, 40, 40)
    rgb[24:] = (40, 60, 200)
    with Image.from_array(rgb, channel_map="RGB") as image:
        image.transform_colorspace("cmyk")
        image.format = "JPEG"
        image.compression_quality = 95
        data = image.make_blob()
    return data, rgb


def _palette_png() -> tuple[bytes, np.ndarray]:
    from PIL import Image

    paletted = Image.fromarray(make_photo(31, 64, 80)).quantize(colors=32)
    buffer = io.BytesIO()
    paletted.save(buffer, "PNG")
    return buffer.getvalue(), np.asarray(paletted.convert("RGB"))


def _alpha_png() -> tuple[bytes, np.ndarray]:
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., :3] = make_photo(32, 48, 64)
    rgba[..., 3] = 255
    rgba[:, 32:, 3] = 0  # the right half is fully transparent
    rgba[:, 32:, :3] = (0, 0, 0)  # ... and black underneath, so "ignore alpha" would show black
    expected = rgba[..., :3].copy()
    expected[:, 32:] = 255  # flattened onto white
    return _encode(rgba, "PNG"), expected


def _animated_gif() -> tuple[bytes, np.ndarray]:
    from PIL import Image

    first = np.zeros((40, 40, 3), np.uint8)
    first[:, :20] = (255, 0, 0)
    first[:, 20:] = (0, 255, 0)
    frames = [Image.fromarray(first), Image.fromarray(np.full((40, 40, 3), (0, 0, 255), np.uint8))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue(), first


def _sepia(rgb: np.ndarray) -> np.ndarray:
    grey = rgb.mean(axis=-1, keepdims=True) / 255.0
    tone = np.array([1.0, 0.86, 0.66])
    return np.clip(grey * tone * 255 + np.array([20, 10, 0]), 0, 255).astype(np.uint8)


def hostile_scripts(url: str, written_file: Path, local_file: Path) -> dict[str, bytes]:
    """SVG, MVG and MSL files that would fetch ``url``, read ``local_file`` or write ``written_file``."""
    svg = (
        '<?xml version="1.0" standalone="no"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64">\n'
        f'  <image x="0" y="0" width="64" height="64" xlink:href="{url}" href="{url}"/>\n'
        f'  <image x="0" y="0" width="64" height="64" xlink:href="file://{local_file}"/>\n'
        "</svg>\n"
    )
    mvg = (
        "push graphic-context\n"
        "viewbox 0 0 64 64\n"
        f"image over 0,0 0,0 '{url}'\n"
        f"image over 0,0 0,0 'text:{local_file}'\n"
        "pop graphic-context\n"
    )
    msl = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<image>\n"
        f'  <read filename="{url}" />\n'
        f'  <read filename="{local_file}" />\n'
        f'  <write filename="{written_file}" />\n'
        "</image>\n"
    )
    return {"svg": svg.encode(), "mvg": mvg.encode(), "msl": msl.encode()}


def make_corpus(
    folder: str | Path,
    *,
    url: str = "http://127.0.0.1:9/koala-must-not-fetch.png",
    written_file: str | Path | None = None,
) -> dict[str, Expected]:
    """Write the corpus into ``folder``; returns ``{file name: Expected}``.

    Args:
        folder: where to write (created if needed).
        url: the external reference planted in the SVG, MVG and MSL files (point it at a local server
            to prove it is never fetched).
        written_file: the file the MSL script would write (default: ``folder/../msl-was-executed.png``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written_file = Path(written_file) if written_file else folder.parent / "msl-was-executed.png"
    corpus: dict[str, Expected] = {}
    files: dict[str, bytes] = {}

    def add(name: str, data: bytes, expected: Expected) -> None:
        files[name] = data
        corpus[name] = expected

    colourful = make_photo(40)
    jpeg = _encode(colourful, "JPEG", quality=92)
    png = _encode(make_photo(41), "PNG")

    # Broken files.
    add("empty.jpg", b"", Expected("error", "empty", prepare="left out: empty"))
    add("text-named.jpg", b"These are my holiday notes, not a photo.\n" * 20,
        Expected("error", "not a supported image", prepare="left out: not a supported image"))
    add("truncated.jpg", jpeg[: len(jpeg) * 2 // 3],
        Expected("error", "truncated", prepare="left out: truncated", note="libjpeg: Premature end of JPEG file"))
    add("truncated-end.jpg", jpeg[:-2],
        Expected("error", "truncated", prepare="left out: truncated", note="only the end-of-image marker is missing"))
    add("truncated.png", png[: len(png) // 2], Expected("error", "truncated", prepare="left out: truncated"))
    add("pixel-flood.png", pixel_flood_png(), Expected("error", "too large", prepare="left out: too large",
                                                      note="a 330-byte file claiming 50000 × 50000"))
    add("above-limit.png", _encode(make_photo(42, 300, 400), "PNG"),
        Expected("error", "too large", prepare="left out: too large",
                 note=f"valid 400 × 300; refused with the pixel limit at {TEST_MAX_PIXELS}"))

    # Odd but valid pictures.
    pixel = np.array([[[200, 60, 30]]], np.uint8)
    add("one-pixel.png", _encode(pixel, "PNG"),
        Expected("image", reference=pixel, tolerance=0, prepare="left out: monochrome"))
    strip = np.zeros((10, 10_000, 3), np.uint8)
    strip[..., 0] = np.linspace(0, 255, 10_000).astype(np.uint8)
    strip[..., 2] = 255 - strip[..., 0]
    strip[5:, :, 1] = 200
    add("strip-10000x10.png", _encode(strip, "PNG"), Expected("image", reference=strip, tolerance=0,
                                                             prepare="added"))
    tiff, tiff_expected = _sixteen_bit_tiff()
    add("sixteen-bit.tif", tiff, Expected("image", reference=tiff_expected, tolerance=1.0))
    cmyk, cmyk_expected = _cmyk_jpeg()
    add("cmyk.jpg", cmyk, Expected("image", reference=cmyk_expected, tolerance=12.0))
    palette, palette_expected = _palette_png()
    add("palette.png", palette, Expected("image", reference=palette_expected, tolerance=0))
    alpha, alpha_expected = _alpha_png()
    add("alpha.png", alpha, Expected("image", reference=alpha_expected, tolerance=0.5,
                                     note="transparent half must come out white"))
    gif, gif_expected = _animated_gif()
    add("animated.gif", gif, Expected("image", reference=gif_expected, tolerance=1.0, note="first frame"))
    card = quadrants()
    for orientation in range(1, 9):
        add(f"orientation-{orientation}.jpg", _jpeg_with_orientation(card, orientation),
            Expected("image", reference=card, tolerance=10.0, note="red corner must end top-left"))
    grey = make_photo(43).mean(axis=-1).astype(np.uint8)
    add("greyscale.jpg", _encode(grey, "JPEG", quality=95),
        Expected("image", reference=np.repeat(grey[..., None], 3, axis=-1), tolerance=3.0,
                 prepare="left out: greyscale"))
    grey_rgb = np.repeat(make_photo(44).mean(axis=-1).astype(np.uint8)[..., None], 3, axis=-1)
    add("grey-but-rgb.jpg", _encode(grey_rgb, "JPEG", quality=95, subsampling=0),
        Expected("image", reference=grey_rgb, tolerance=3.0, prepare="left out: greyscale"))
    sepia = _sepia(make_photo(45))
    add("sepia-scan.jpg", _encode(sepia, "JPEG", quality=95),
        Expected("image", reference=sepia, tolerance=4.0, prepare="left out: monochrome"))
    add("colourful.jpg", jpeg, Expected("image", reference=colourful, tolerance=8.0))
    non_ascii = make_photo(46)
    add(NON_ASCII_NAME, _encode(non_ascii, "JPEG", quality=95), Expected("image", reference=non_ascii, tolerance=8.0))

    # Script-like formats with external references: must be refused without being interpreted, under
    # their own names and disguised with a photo extension.
    scripts = hostile_scripts(url, written_file, folder / "colourful.jpg")
    for kind, data in scripts.items():
        reason = "not a supported image"
        add(f"external-refs.{kind}", data, Expected("error", reason, prepare="not taken",
                                                     note="not an image extension: only named directly"))
        disguise = {"svg": "png", "mvg": "jpg", "msl": "gif"}[kind]
        add(f"{kind}-disguised.{disguise}", data, Expected("error", reason, prepare=f"left out: {reason}"))

    for name, data in files.items():
        (folder / name).write_bytes(data)
    return corpus


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/make_bad_inputs.py FOLDER", file=sys.stderr)
        return 2
    corpus = make_corpus(argv[0])
    width = max(len(name) for name in corpus)
    for name, expected in corpus.items():
        what = f"error ({expected.reason})" if expected.is_error else "image"
        print(f"{name:<{width}}  {what:<32}  prepare: {expected.prepare}")
    print(f"{len(corpus)} files in {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
