"""Colour JPEGs that keep a grey JPEG's own lightness data, coefficient for coefficient.

Most archive scans of black-and-white photos are one-channel (greyscale) baseline JPEGs. Colourising one
the ordinary way decodes all its pixels, joins them with the predicted colour, and encodes every pixel
again: slow (about 200 ms of a 12-megapixel photo's 260 ms on two cores), and a second round of JPEG loss on
the detail of the scan.

A JPEG file may carry its colour components in separate scans ("non-interleaved", allowed in baseline
JPEG, ITU-T T.81 B.2.3). A grey JPEG's single scan *is* such a scan of the luma component Y, so this
module writes the colour result as:

* the input's own luma scan, its entropy-coded bytes copied unchanged (same quantisation and Huffman
  tables): the output's Y' is bit-for-bit the input's, with no decoding or re-encoding of its pixels;
* two new scans for the chroma components Cb and Cr, at half the width and height (4:2:0 sampling),
  computed from the colour predicted at 256 px and encoded by Pillow (libjpeg) as small grey JPEGs
  whose scans are spliced in.

Only the 1/8-scale image is ever decoded (for the network's input), which libjpeg does from the DC
coefficients. The price: the colour join happens in Y'CbCr rather than in Lab, so the output's L* is
close to the photo's lightness but not exactly it (luma Y' is kept exactly instead; they differ a little
in saturated colours). ``koala colorize --reencode`` keeps the exact-L* path.

Anything this module does not recognise as a plain grey baseline JPEG (progressive, arithmetic-coded,
12-bit, colour, a rotating EXIF orientation, a missing end marker) is left to the ordinary path, which
also reports damaged files.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import struct

import numpy as np

from koala import color

SOI, EOI, SOS, DQT, DHT, DRI = 0xD8, 0xD9, 0xDA, 0xDB, 0xC4, 0xDD
SEQUENTIAL_HUFFMAN = (0xC0, 0xC1)  # baseline, extended sequential
_OTHER_FRAMES = frozenset(range(0xC2, 0xD0)) - {DHT, 0xC8}  # progressive, lossless, hierarchical, arithmetic
_JFIF_APP0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
# ITU-T T.81 Annex K.1's chrominance quantisation table, in natural (row-major) order
_CHROMA_TABLE = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
     47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32
)


@dataclasses.dataclass(frozen=True)
class GreyJpeg:
    """The parts of a one-component sequential JPEG that the colour file reuses."""

    width: int
    height: int
    frame_marker: int
    quant_table: int
    segments: list[bytes]
    """Whole marker segments to keep, in file order: APPn (less grey ICC profiles and Adobe's colour
    transform flag, which would be wrong for a colour file), COM, DQT, DHT, DRI."""
    scan_tables: int
    """The scan's Huffman table selectors (Td << 4 | Ta)."""
    restart_interval: int
    entropy: bytes
    """The scan's entropy-coded data, from after its header up to the end-of-image marker."""


def _segments(data: bytes):
    """The marker segments of a JPEG's header, from after SOI: (marker, payload, whole segment, end offset).

    Stops early, without an error, at anything that is not a complete segment with a length (a cut file,
    bytes where a marker should be, a stand-alone marker such as SOI or RSTn): callers treat a walk that
    ends before the segment they need as "not for this path".
    """
    if data[:2] != b"\xff\xd8":
        return
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        while position < len(data) and data[position] == 0xFF:  # fill bytes
            position += 1
        if position + 3 > len(data):
            return
        marker = data[position]
        if marker in (SOI, EOI, 0x01) or 0xD0 <= marker <= 0xD7:
            return
        length = struct.unpack(">H", data[position + 1:position + 3])[0]
        end = position + 1 + length
        if length < 2 or end > len(data):
            return
        yield marker, data[position + 3:end], b"\xff" + data[position:end], end
        position = end


def parse(data: bytes) -> GreyJpeg | None:
    """The grey JPEG in ``data``, or None when it is not a plain one-scan, 8-bit, one-component
    Huffman JPEG with an end marker and an upright (or no) EXIF orientation."""
    segments, frame, restart_interval = [], None, 0
    for marker, payload, segment, position in _segments(data):
        if marker in SEQUENTIAL_HUFFMAN:
            if len(payload) != 9 or payload[0] != 8 or payload[5] != 1:
                return None  # 12-bit, or not one component
            height, width = struct.unpack(">HH", payload[1:5])
            if width == 0 or height == 0:
                return None  # height given later by a DNL marker
            frame = (marker, width, height, payload[6], payload[8])
        elif marker in _OTHER_FRAMES:
            return None
        elif marker == DQT:
            if not _dqt_is_8bit(payload):
                return None
            segments.append(segment)
        elif marker == DRI:
            if len(payload) != 2:
                return None
            restart_interval = struct.unpack(">H", payload)[0]
            segments.append(segment)
        elif marker == DHT:
            segments.append(segment)
        elif marker == SOS:
            if frame is None or len(payload) != 6 or payload[0] != 1 or payload[1] != frame[3]:
                return None
            if payload[3:6] != b"\x00\x3f\x00":
                return None
            scan_end = _scan_end(data, position)
            if scan_end is None:
                return None  # truncated, a second scan, or a DNL marker: not for this path
            marker_type, width, height, _, quant_table = frame
            return GreyJpeg(width, height, marker_type, quant_table, segments, payload[2], restart_interval,
                            data[position:scan_end])
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:
            if marker == 0xE1 and payload.startswith(b"Exif\x00\x00") and _exif_orientation(payload[6:]) not in (0, 1):
                return None  # the ordinary path turns the pixels upright
            if marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
                continue  # a grey profile does not describe a colour image
            if marker == 0xEE and payload.startswith(b"Adobe"):
                continue  # its transform flag would declare the colour components RGB
            segments.append(segment)
        else:
            return None
    return None


TRANSCODE_TIMEOUT_S = 60


def luma_only(data: bytes, max_pixels: int) -> bytes | None:
    """Any other JPEG made into a grey one that :func:`parse` accepts, losslessly: ``jpegtran -grayscale``
    (libjpeg-turbo, in its own process) keeps the luma's DCT coefficients and drops the chroma, without
    decoding to pixels. For three-channel scans of grey pictures and for progressive JPEGs.

    None when jpegtran is not installed, the JPEG's header declares more than ``max_pixels`` pixels (checked
    first: jpegtran would hold every coefficient in memory), its EXIF orientation turns the picture, it is not
    grey or Y'CbCr (CMYK, RGB-coded), or jpegtran reports anything at all (a damaged file, which the ordinary
    reader then reports properly).
    """
    import shutil
    import subprocess

    from koala import images

    program = shutil.which("jpegtran")
    declared = images.header_size(data) if data[:2] == b"\xff\xd8" else None
    if program is None or declared is None or declared[0] * declared[1] > max_pixels or not transcodable(data):
        return None
    try:
        done = subprocess.run([program, "-grayscale", "-copy", "all"], input=data, capture_output=True,
                              timeout=TRANSCODE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or done.stderr:
        return None
    return done.stdout


def transcodable(data: bytes) -> bool:
    """Whether the headers before the first frame allow keeping component 1 as the luma: no EXIF rotation or
    flip, and one component or three in Y'CbCr (not RGB-coded, where component 1 is red; not CMYK)."""
    adobe_transform = None
    for marker, payload, _, _ in _segments(data):
        if marker in SEQUENTIAL_HUFFMAN or marker in _OTHER_FRAMES - {0xCC}:  # 0xCC: arithmetic tables
            components = payload[5] if len(payload) > 5 else 0
            ids = bytes(payload[6 + 3 * index] for index in range(components) if 6 + 3 * index < len(payload))
            if components == 1:
                return True
            return components == 3 and adobe_transform != 0 and ids != b"RGB"
        if marker == SOS:
            return False
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00") and _exif_orientation(payload[6:]) not in (0, 1):
            return False
        if marker == 0xEE and payload.startswith(b"Adobe") and len(payload) >= 12:
            adobe_transform = payload[11]
    return False


def _scan_end(data: bytes, start: int) -> int | None:
    """Where the entropy-coded data from ``start`` ends, if the marker that ends it is the end of the image.

    Inside a scan a 0xFF byte is followed by 0x00 (byte stuffing), a restart marker (0xD0..0xD7) or
    more 0xFF fill bytes; the first 0xFF followed by anything else is the next marker.
    """
    stream = np.frombuffer(data, dtype=np.uint8, offset=start)
    candidates = np.flatnonzero(stream[:-1] == 0xFF)
    following = stream[candidates + 1]
    markers = candidates[(following != 0x00) & (following != 0xFF) & ((following < 0xD0) | (following > 0xD7))]
    if len(markers) == 0 or stream[markers[0] + 1] != EOI:
        return None
    end = start + int(markers[0])
    while end > start and data[end - 1] == 0xFF:  # fill bytes belong to the marker, not the scan
        end -= 1
    return end


def _dqt_is_8bit(payload: bytes) -> bool:
    offset = 0
    while offset < len(payload):
        if payload[offset] >> 4 != 0:
            return False
        offset += 65
    return offset == len(payload)


def _exif_orientation(tiff: bytes) -> int:
    """The EXIF orientation tag of IFD0, or 0 if absent or unreadable."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        offset = struct.unpack(order + "I", tiff[4:8])[0]
        count = struct.unpack(order + "H", tiff[offset:offset + 2])[0]
        for index in range(count):
            entry = tiff[offset + 2 + 12 * index:offset + 14 + 12 * index]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and kind == 3:
                return struct.unpack(order + "H", entry[8:10])[0]
    except (KeyError, struct.error, IndexError):
        return 0
    return 0


def chroma_small(
    grey_small: np.ndarray, ab_norm: np.ndarray, slope: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cb and Cr (uint8) at the size of ``grey_small``, a reduced copy of the photo, for the predicted ab
    (normalised, any size; with ``slope``, the offset and slope of :func:`koala.color.edge_aware_ab`): the
    colour joined in Lab there (L* from the grey levels, as the ordinary path does at full size) and
    converted to JFIF Y'CbCr. :func:`colour_jpeg` enlarges them."""
    small_height, small_width = grey_small.shape[:2]
    rgb = color.join_grey_ab(grey_small.reshape(small_height, small_width), ab_norm, slope).astype(np.float32)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    cb = 128.0 - 0.168736 * red - 0.331264 * green + 0.5 * blue
    cr = 128.0 + 0.5 * red - 0.418688 * green - 0.081312 * blue
    return tuple(np.clip(np.rint(plane), 0, 255).astype(np.uint8) for plane in (cb, cr))


def _encode_plane(plane: np.ndarray, size: tuple[int, int], quality: int) -> GreyJpeg:
    """Enlarge a chroma plane to ``size`` (width, height), bilinear, and encode it as a grey JPEG."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(plane), "L")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    # libjpeg's standard chrominance table at this quality, for a plane that Pillow sees as a grey image
    image.save(buffer, format="JPEG", qtables=[_scaled_chroma_table(quality)], optimize=False)
    encoded = parse(buffer.getvalue())
    if encoded is None:  # Pillow writes plain baseline JPEGs; anything else is a bug here
        raise RuntimeError("Pillow did not write a one-scan baseline JPEG for a chroma plane")
    return encoded


def _scaled_chroma_table(quality: int) -> list[int]:
    """ITU-T T.81 Annex K's chrominance table (natural order) scaled as libjpeg scales it for ``quality``."""
    quality = min(100, max(1, int(quality)))
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_CHROMA_TABLE * scale + 50) // 100, 1, 255).tolist()


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _renumbered(encoded: GreyJpeg, marker: int, table: int) -> bytes:
    """``encoded``'s DQT or DHT segments with every table's destination id set to ``table``."""
    out = []
    for segment in encoded.segments:
        if segment[1] != marker:
            continue
        payload, offset = bytearray(segment[4:]), 0
        while offset < len(payload):
            payload[offset] = (payload[offset] & 0xF0) | table
            offset += 65 if marker == DQT else 17 + sum(payload[offset + 1:offset + 17])
        out.append(_segment(marker, bytes(payload)))
    return b"".join(out)


def colour_jpeg(grey: GreyJpeg, cb: np.ndarray, cr: np.ndarray, quality: int = 95) -> bytes:
    """The colour JPEG: ``grey``'s luma scan unchanged, then Cb and Cr scans at half its width and height,
    enlarged from ``cb`` and ``cr`` (uint8 planes of any size, e.g. from :func:`chroma_small`)."""
    if cb.ndim != 2 or cb.shape != cr.shape:
        raise ValueError(f"expected two chroma planes of one size, got {cb.shape} and {cr.shape}")
    size = ((grey.width + 1) // 2, (grey.height + 1) // 2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # Pillow releases the GIL to resize and encode
        encoded_cb, encoded_cr = pool.map(_encode_plane, (cb, cr), (size, size), (quality, quality))
    chroma_quant = min({0, 1, 2, 3} - {grey.quant_table})
    app0 = [segment for segment in grey.segments if segment[1] == 0xE0 and segment[4:9] == b"JFIF\x00"]
    others = [segment for segment in grey.segments if segment not in app0]
    parts = [b"\xff\xd8", app0[0] if app0 else _JFIF_APP0, *others]
    parts.append(_renumbered(encoded_cb, DQT, chroma_quant))  # Cr was encoded with the same table
    components = bytes([1, 0x22, grey.quant_table, 2, 0x11, chroma_quant, 3, 0x11, chroma_quant])
    parts.append(_segment(grey.frame_marker, struct.pack(">BHHB", 8, grey.height, grey.width, 3) + components))
    parts.append(_segment(SOS, bytes([1, 1, grey.scan_tables, 0, 63, 0])))
    parts.append(grey.entropy)
    if grey.restart_interval:
        parts.append(_segment(DRI, b"\x00\x00"))  # the chroma scans have no restart markers
    for component, encoded in ((2, encoded_cb), (3, encoded_cr)):
        parts.append(_renumbered(encoded, DHT, 1))  # Huffman tables 1, defined just before the scan that uses them
        parts.append(_segment(SOS, bytes([1, component, 0x11, 0, 63, 0])))
        parts.append(encoded.entropy)
    parts.append(b"\xff\xd9")
    return b"".join(parts)
