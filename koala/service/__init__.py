"""The web service and its page: upload a photo, get it back coloured at full resolution.

Routes::

    GET  /              the page (koala/static/index.html, with /static/app.js and /static/style.css)
    POST /api/colorize  image in (the raw request body, or the multipart form field ``file``),
                        colour image out: JPEG or PNG, by ``?format=jpeg|png``, else ``Accept``, else
                        JPEG for a JPEG upload and PNG for anything else
    GET  /healthz       {"ok", "model", "busy", "queued", "receiving", "workers", "queue", "max_upload_bytes",
                         "max_pixels", ...} (the page reads its limits here)
    GET  /favicon.ico   the page's icon (an SVG)

How a request goes::

    connection ── no complete request head within --header-timeout (also between keep-alive requests) ─► closed
    arrives ── Content-Length over the limit? ──────────────────────────► 413 (nothing read)
            ── a bad ?format=, or already --receiving uploads coming in? ─► 400 / 503 + Retry-After, once the
                                                                          body has been read and dropped
            ── body streamed into memory, counted as it comes ──────────► 413 as soon as it passes the limit,
                                                                          408 if slower than --min-upload-rate
            ── running + waiting already at workers + queue? ──────────► 503 + Retry-After
            ── waits for one of the N workers (leaves if the client goes)
            ── in a worker thread: sniff format (415), header size (413), completeness (422),
               decode with ImageMagick (422 / 413; 503 if its memory stays taken), colourise, encode ─► 200

A place among the workers and the queue is taken only once the whole body is in, so slow senders cannot take
the places of others: they hold one of the ``receiving`` slots (memory for one upload each) until their body
is in, or until they fall below the minimum rate. Every answer to a request whose body is within the limit
comes after the body has been read (dropped, when the answer is already known), so a client still sending
reads its 503 instead of a connection reset.

Nothing from an upload is written to disk: the body is read with ``request.stream()`` into memory
(Starlette's own form parser would spool files over 1 MiB to a temporary file, so multipart bodies are
parsed here, in memory, with python-multipart's streaming parser), ImageMagick's ``disk`` resource limit
is 0 in this process (checked at start-up: the service refuses to start otherwise), and nothing about an
upload except its size, format and timing is logged.

The model (head and embedder) is loaded once per process, at start-up, and warmed up with one small
image so that the first request does not pay for tracing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import io
import logging
import math
import re
import struct
import time
import warnings
from pathlib import Path

from koala import images

logger = logging.getLogger("koala.service")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

DEFAULT_MAX_UPLOAD_MB = 30
DEFAULT_MAX_PIXELS = 25_000_000
"""25 MP: a 300-dpi A4 scan is 8.7 MP. Debian's ImageMagick policy (memory 256 MiB + map 512 MiB, and disk 0
here) cannot decode much more than 30 MP at once in one process; each running colourisation of a 25 MP photo
also needs about 1.5 GB of NumPy/Keras memory."""

MULTIPART_FIELD = "file"
OUTPUT_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


@dataclasses.dataclass
class ServiceSettings:
    """What ``koala serve`` can be told; the defaults suit one small server.

    Args:
        model_path: a model folder (``model.keras`` + ``config.json``); None for ``$KOALA_MODEL`` or
            ``models/default``.
        workers: colourisations that may run at once (one thread each).
        queue: requests that may wait for a worker; beyond ``workers + queue`` the answer is 503.
        max_upload_bytes: largest request body accepted (413 beyond it).
        max_pixels: largest image (width × height) accepted (413 beyond it).
        receiving: uploads that may be coming in at once (each held in memory, up to the upload limit); beyond
            it the body is read and dropped and the answer is 503.
        min_upload_rate: bytes per second an upload must average once ``upload_grace_s`` have passed (408
            otherwise): a slow sender holds a receiving slot for seconds, not minutes.
        upload_grace_s: time any upload gets before the rate counts.
        body_timeout_s: the most any upload may take, whatever its rate (408 beyond it).
        header_timeout_s: time a connection gets to send a complete request head, from when it opens or its
            previous answer was sent (closed otherwise).
        keep_alive_s: how long an idle keep-alive connection stays open after an answer.
        max_connections: open connections (and requests) beyond which the server answers 503 at once.
        jpeg_quality: quality of JPEG answers.
        embedder_weights: override the embedder weights recorded in the model's config.
    """

    model_path: str | None = None
    workers: int = 1
    queue: int = 4
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    receiving: int = 16
    min_upload_rate: float = 10 * 1024
    upload_grace_s: float = 5.0
    body_timeout_s: float = 300.0
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 100
    jpeg_quality: int = 92
    embedder_weights: str | None = None

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.queue < 0:
            raise ValueError(f"queue must be 0 or more, got {self.queue}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"the upload limit must be positive, got {self.max_upload_bytes}")
        if self.max_pixels < 1:
            raise ValueError(f"the pixel limit must be positive, got {self.max_pixels}")
        if self.receiving < 1:
            raise ValueError(f"receiving must be at least 1, got {self.receiving}")
        if self.max_connections < self.receiving + self.workers + self.queue:
            raise ValueError(
                f"max_connections ({self.max_connections}) must be at least receiving + workers + queue "
                f"({self.receiving + self.workers + self.queue})"
            )
        for name in ("min_upload_rate", "upload_grace_s", "body_timeout_s", "header_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class Problem(Exception):
    """An answer other than 200, with a reason a person can read."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


_ERROR_NAMES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    413: "too_large", 415: "unsupported_media_type", 422: "unreadable_image", 500: "internal_error",
    503: "busy",
}


def problem_response(problem: Problem):
    from starlette.responses import JSONResponse

    body = {"error": _ERROR_NAMES.get(problem.status, "error"), "reason": problem.reason, "status": problem.status}
    headers = {"Cache-Control": "no-store", **problem.headers}
    return JSONResponse(body, status_code=problem.status, headers=headers)


class Admission:
    """At most ``workers`` colourisations run at once and at most ``queue`` more wait; the rest are turned away.

    Used from the event loop only, so plain counters are enough. A request is *admitted* (counted) once its
    whole body has arrived (a slow sender never holds a place), while it waits and runs, until its answer is
    ready.
    """

    def __init__(self, workers: int, queue: int, initial_seconds: float = 2.0):
        self.workers = workers
        self.queue = queue
        self.admitted = 0
        self.running = 0
        self.average_seconds = initial_seconds
        self._semaphore = asyncio.Semaphore(workers)

    @property
    def queued(self) -> int:
        return self.admitted - self.running

    def try_admit(self) -> bool:
        if self.admitted >= self.workers + self.queue:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the work ahead of a newcomer shared by the workers."""
        ahead = self.admitted + 1
        return max(1, min(120, math.ceil(self.average_seconds * ahead / self.workers)))

    def record(self, seconds: float) -> None:
        self.average_seconds = 0.8 * self.average_seconds + 0.2 * seconds

    async def wait_for_worker(self, client_gone) -> bool:
        """Wait for a free worker; False (and no worker held) if ``client_gone`` finishes first."""
        acquire = asyncio.ensure_future(self._semaphore.acquire())
        gone = asyncio.ensure_future(client_gone())
        try:
            done, _ = await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._abandon(acquire, gone)
            raise
        if acquire in done and gone not in done:
            gone.cancel()
            self.running += 1
            return True
        await self._abandon(acquire, gone)
        return False

    async def _abandon(self, acquire, gone) -> None:
        gone.cancel()
        acquire.cancel()
        try:
            await acquire
        except asyncio.CancelledError:
            return
        self._semaphore.release()  # it was acquired after all: give it back

    def release_worker(self) -> None:
        self.running -= 1
        self._semaphore.release()


class _RawSink:
    """The request body is the image."""

    def __init__(self):
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def finish(self) -> tuple[bytes, str | None]:
        return bytes(self.data), None


class _MultipartSink:
    """Parse multipart/form-data in memory as it streams in; keep only the first ``file`` field."""

    def __init__(self, boundary: bytes):
        from python_multipart.multipart import MultipartParser

        self.data: bytearray | None = None
        self.filename: str | None = None
        self._keeping = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        })

    def _part_begin(self) -> None:
        self._headers = {}
        self._keeping = False

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == MULTIPART_FIELD and self.data is None:
            self._keeping = True
            self.data = bytearray()
            filename = options.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keeping:
            self.data.extend(data[start:end])

    def _part_end(self) -> None:
        self._keeping = False

    def write(self, chunk: bytes) -> None:
        from python_multipart.exceptions import MultipartParseError

        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise Problem(400, "The multipart form data is malformed.") from None

    def finish(self) -> tuple[bytes, str | None]:
        from python_multipart.exceptions import MultipartParseError

        try:
            self._parser.finalize()
        except MultipartParseError:
            raise Problem(400, "The multipart form data is malformed or incomplete.") from None
        if self.data is None:
            raise Problem(400, f"The form has no '{MULTIPART_FIELD}' field: send the photo as '{MULTIPART_FIELD}'.")
        return bytes(self.data), self.filename


def _sink_for(content_type: str):
    from python_multipart.multipart import parse_options_header

    media_type, options = parse_options_header(content_type)
    if media_type == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise Problem(400, "The multipart request has no boundary.")
        return _MultipartSink(boundary)
    return _RawSink()


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


@dataclasses.dataclass(frozen=True)
class UploadPace:
    """How fast a body must arrive: ``grace_s + received / min_rate`` seconds for what has come so far, and
    never more than ``total_s`` in all."""

    min_rate: float
    grace_s: float
    total_s: float

    def allowed(self, received: int) -> float:
        return min(self.total_s, self.grace_s + received / self.min_rate)


class BodyTimeout(Exception):
    """The body arrived slower than its :class:`UploadPace` allows."""


async def receive_body(request, write, limit: int, pace: UploadPace) -> int:
    """Receive the whole body, giving each chunk to ``write``; returns its size.

    Raises:
        Problem: 413 as soon as the body passes ``limit``.
        BodyTimeout: the body is slower than ``pace`` (the wait for each chunk is bounded by it, so a client
            that sends nothing at all is timed out too).
        starlette.requests.ClientDisconnect: the client went away.
    """
    from starlette.requests import ClientDisconnect

    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0
    while True:
        remaining = started + pace.allowed(received) - loop.time()
        if remaining <= 0:
            raise BodyTimeout()
        try:
            message = await asyncio.wait_for(request.receive(), remaining)
        except asyncio.TimeoutError:
            raise BodyTimeout() from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise Problem(413, f"The upload is larger than the limit of {_megabytes(limit)}.",
                          headers={"Connection": "close"})
        if chunk:
            write(chunk)
        if not message.get("more_body", False):
            return received


async def read_upload(request, limit: int, pace: UploadPace) -> tuple[bytes, str | None]:
    """Stream the body into memory (raw or multipart): 413 past ``limit``, 408 slower than ``pace``."""
    sink = _sink_for(request.headers.get("content-type", ""))
    try:
        await receive_body(request, sink.write, limit, pace)
    except BodyTimeout:
        raise Problem(408, f"The upload was too slow: it must arrive at {pace.min_rate / 1024:.0f} KB/s or faster "
                      f"(after the first {pace.grace_s:g} s).", headers={"Connection": "close"}) from None
    return sink.finish()


async def drain_body(request, limit: int, pace: UploadPace) -> bool:
    """Read the body and drop it, so that an answer given before reading it reaches a client still sending
    (closing with unread data makes the kernel reset the connection, and the answer is lost). Bounded like an
    upload; False if the body could not be read to its end (the connection is then closed after the answer)."""
    from starlette.requests import ClientDisconnect

    try:
        await receive_body(request, lambda chunk: None, limit, pace)
    except (Problem, BodyTimeout, ClientDisconnect):
        return False
    return True


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


def image_error_problem(error: images.ImageError) -> Problem:
    """Map a reason from :func:`koala.images.read_image` to an HTTP answer."""
    reason = error.reason
    lowered = reason.lower()
    if isinstance(error, images.ImageBusy):
        return Problem(503, "The colouriser is busy with other large photos, try again in 10 s.",
                       headers={"Retry-After": "10"})
    if lowered.startswith("not a supported image"):
        return Problem(415, "This is not a photo Koala can read: send a JPEG, PNG, TIFF, WebP, GIF or BMP image.")
    if "cache resources exhausted" in lowered:
        return Problem(413, "The image is too large for this server's image memory: try a smaller one.")
    if "too large" in lowered or "exceeds limit" in lowered:
        return Problem(413, f"The image is too large ({reason}).")
    if "memory" in lowered:
        return Problem(413, "The image is too large for this server's image memory: try a smaller one.")
    if lowered.startswith("file is empty"):
        return Problem(400, "The request has no image in it.")
    if "returns false" in lowered or "delegate" in lowered:
        # wand's generic message: say it plainly
        return Problem(422, "The image is damaged or incomplete and could not be decoded.")
    return Problem(422, f"The image could not be read: {reason}.")


def encode_answer(rgb, image_format: str, quality: int) -> bytes:
    """Encode the answer with Pillow, in memory.

    Not :func:`koala.images.encode_image`: under Debian's ImageMagick policy (memory 256 MiB, map 512 MiB)
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


class KoalaService:
    """The state of one server process: settings, the loaded colouriser, admission and the worker threads."""

    def __init__(self, settings: ServiceSettings, colorizer=None):
        self.settings = settings
        self.colorizer = colorizer
        self.admission: Admission | None = None
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.model_name = Path(settings.model_path).name if settings.model_path else None
        self.magick_disk_limit: int | None = None
        self.receiving = 0  # uploads coming in now (event loop only)
        self.pace = UploadPace(settings.min_upload_rate, settings.upload_grace_s, settings.body_timeout_s)
        self.started = False

    # ---- start-up and shut-down -------------------------------------------------------------------

    def start(self) -> None:
        """Apply and check ImageMagick's limits, load the model once and warm it up."""
        import numpy as np
        from wand.resource import limits

        images.configure_imagemagick()
        self.magick_disk_limit = int(limits["disk"])
        if self.magick_disk_limit != 0:
            raise RuntimeError(
                f"ImageMagick's disk limit is {self.magick_disk_limit}, not 0: pixel caches could reach the disk"
            )
        if self.colorizer is None:
            from koala.colorize import Colorizer

            started = time.perf_counter()
            self.colorizer = Colorizer(self.settings.model_path, embedder_weights=self.settings.embedder_weights)
            logger.info("model %s loaded in %.1f s", self.colorizer.model_path, time.perf_counter() - started)
        self.model_name = Path(getattr(self.colorizer, "model_path", self.model_name or "model")).name
        started = time.perf_counter()
        self.colorizer.colorize(np.full((64, 64, 3), 128, dtype=np.uint8))
        warm_seconds = time.perf_counter() - started
        self.admission = Admission(self.settings.workers, self.settings.queue, initial_seconds=max(0.5, warm_seconds))
        self.executor = concurrent.futures.ThreadPoolExecutor(self.settings.workers, thread_name_prefix="koala-worker")
        self.started = True
        logger.info(
            "ready: %d worker(s), queue %d, upload limit %s, pixel limit %.0f MP, ImageMagick disk limit %d",
            self.settings.workers, self.settings.queue, _megabytes(self.settings.max_upload_bytes),
            self.settings.max_pixels / 1e6, self.magick_disk_limit,
        )

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    # ---- the work, in a worker thread -----------------------------------------------------------------

    def colorize_bytes(self, data: bytes, query_format: str | None, accept: str, name: str | None):
        """Decode, check, colourise and encode one upload. Returns (encoded bytes, format, width, height)."""
        if not data:
            raise Problem(400, "The request has no image in it.")
        input_format = images.sniff_format(data[:16])
        if input_format is None:
            raise Problem(415, "This is not a photo Koala can read: send a JPEG, PNG, TIFF, WebP, GIF or BMP image.")
        output_format = choose_format(query_format, accept, input_format)
        check_declared_size(data, input_format, self.settings.max_pixels)
        check_complete(data, input_format)
        keep_luma = getattr(self.colorizer, "colour_jpeg_keeping_luma", None)
        if keep_luma is not None and input_format == output_format == "JPEG":
            try:  # a JPEG answered as JPEG: its own luma unchanged, the colour beside it
                encoded = keep_luma(data, self.settings.jpeg_quality, name=name or "upload",
                                    max_pixels=self.settings.max_pixels)
            except images.ImageError as error:
                raise image_error_problem(error) from None
            if encoded is not None:
                width, height = images.header_size(encoded)
                return encoded, "JPEG", width, height, input_format
        try:
            rgb = images.read_image(data, name=name or "upload", max_pixels=self.settings.max_pixels)
        except images.ImageError as error:
            raise image_error_problem(error) from None
        coloured = self.colorizer.colorize(rgb)
        encoded = encode_answer(coloured, output_format, self.settings.jpeg_quality)
        return encoded, output_format, rgb.shape[1], rgb.shape[0], input_format

    # ---- HTTP --------------------------------------------------------------------------------------

    async def colorize_endpoint(self, request):
        try:
            return await self._colorize(request)
        except Problem as problem:
            return problem_response(problem)
        except Exception:  # noqa: BLE001 - never a dead worker; the log has the traceback, no image data
            logger.exception("unexpected error while colourising")
            return problem_response(Problem(500, "Something went wrong on our side. Please try again."))

    async def _colorize(self, request):
        from starlette.requests import ClientDisconnect
        from starlette.responses import Response

        settings = self.settings
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise Problem(400, "The Content-Length header is not a number.", headers={"Connection": "close"})
            if int(declared) > limit:
                raise Problem(413, f"The upload is larger than the limit of {_megabytes(limit)}.",
                              headers={"Connection": "close"})
        query_format = request.query_params.get("format")
        admission = self.admission
        early: Problem | None = None  # an answer known before the body is read
        try:
            if not self.started:
                raise Problem(503, "The colouriser is still starting.", headers={"Retry-After": "5"})
            if query_format is not None:
                choose_format(query_format, "", None)  # a bad ?format= is a 400
            _sink_for(request.headers.get("content-type", ""))  # a multipart body without a boundary is a 400
            if self.receiving >= settings.receiving:
                seconds = admission.retry_after()
                logger.info("busy: %d uploads coming in; turned a request away", self.receiving)
                raise Problem(503, f"The colouriser is busy, try again in {seconds} s.",
                              headers={"Retry-After": str(seconds)})
        except Problem as problem:
            early = problem
        if early is not None:
            if not await drain_body(request, limit, self.pace):
                early.headers["Connection"] = "close"
            raise early

        self.receiving += 1
        try:
            data, filename = await read_upload(request, limit, self.pace)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening
        finally:
            self.receiving -= 1

        if not admission.try_admit():
            seconds = admission.retry_after()
            logger.info("busy: %d running, %d waiting; turned a request away", admission.running, admission.queued)
            raise Problem(503, f"The colouriser is busy, try again in {seconds} s.", headers={"Retry-After": str(seconds)})
        try:
            if not await admission.wait_for_worker(lambda: _client_gone(request)):
                logger.info("a client left while waiting for a worker")
                return Response(status_code=400)
            started = time.perf_counter()
            try:
                loop = asyncio.get_running_loop()
                encoded, output_format, width, height, input_format = await loop.run_in_executor(
                    self.executor, self.colorize_bytes, data, query_format, request.headers.get("accept", ""),
                    filename,
                )
            finally:
                admission.release_worker()
            seconds = time.perf_counter() - started
            admission.record(seconds)
            logger.info("coloured a %s of %d×%d (%d bytes) in %.2f s", input_format, width, height, len(data), seconds)
            headers = {
                "Content-Disposition": content_disposition(filename, output_format),
                "Cache-Control": "no-store",
                "X-Koala-Size": f"{width}x{height}",
                "X-Koala-Seconds": f"{seconds:.2f}",
            }
            return Response(encoded, media_type=MEDIA_TYPES[output_format], headers=headers)
        finally:
            admission.leave()

    async def healthz(self, request):
        from starlette.responses import JSONResponse

        admission = self.admission
        body = {
            "ok": self.started,
            "model": self.model_name,
            "busy": admission.running if admission else 0,
            "queued": admission.queued if admission else 0,
            "receiving": self.receiving,
            "workers": self.settings.workers,
            "queue": self.settings.queue,
            "retry_after": admission.retry_after() if admission else None,
            "max_upload_bytes": self.settings.max_upload_bytes,
            "max_pixels": self.settings.max_pixels,
            "imagemagick_disk_limit": self.magick_disk_limit,
        }
        return JSONResponse(body, status_code=200 if self.started else 503, headers={"Cache-Control": "no-store"})

    async def page(self, request):
        from starlette.responses import FileResponse

        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    async def favicon(self, request):
        from starlette.responses import FileResponse

        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "max-age=86400"})


async def _client_gone(request) -> None:
    """Return once the client has disconnected (the body has been read, so the next message says so)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def http_protocol(header_timeout_s: float):
    """uvicorn's h11 protocol, with a deadline for each request head.

    uvicorn times out only a keep-alive connection that stays silent after an answer (``timeout_keep_alive``),
    and it cancels that timer at the first byte that arrives: a connection that sends nothing after opening,
    or sends a request head a byte at a time, stays open for ever. Here a connection gets ``header_timeout_s``
    to send a complete request head, counted from when it opens or its previous answer was sent, however the
    bytes trickle in; then it is closed. Bodies are timed by the service itself (:class:`UploadPace`).
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutProtocol(H11Protocol):
        head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._watch_head()

        def connection_lost(self, exc) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def handle_events(self) -> None:  # after new bytes, and after each answer (the next cycle starts)
            super().handle_events()
            self._watch_head()

        def _watch_head(self) -> None:
            waiting_for_head = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
            if waiting_for_head and self.head_timer is None:
                self.head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)
            elif not waiting_for_head:
                self._stop_head_timer()

        def _stop_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timed_out(self) -> None:
            self.head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                logger.info("closed a connection that sent no complete request head in %g s", header_timeout_s)
                with contextlib.suppress(h11.LocalProtocolError):
                    self.conn.send(h11.ConnectionClosed())
                self.transport.close()

    return HeadTimeoutProtocol


def create_app(settings: ServiceSettings | None = None, colorizer=None):
    """The ASGI application. The model is loaded when the server starts (lifespan), once per process."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    service = KoalaService(settings or ServiceSettings(), colorizer=colorizer)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.start()
        try:
            yield
        finally:
            service.stop()

    async def http_error(request, error: HTTPException):
        reasons = {404: "There is nothing at this address.", 405: "This address does not take that kind of request."}
        reason = reasons.get(error.status_code, error.detail or "The request was not accepted.")
        return problem_response(Problem(error.status_code, reason, headers=error.headers))

    async def unexpected_error(request, error: Exception):
        logger.error("unexpected %s outside the colouriser", type(error).__name__)
        return problem_response(Problem(500, "Something went wrong on our side. Please try again."))

    routes = [
        Route("/", service.page, methods=["GET", "HEAD"]),
        Route("/api/colorize", service.colorize_endpoint, methods=["POST"]),
        Route("/healthz", service.healthz, methods=["GET", "HEAD"]),
        Route("/favicon.ico", service.favicon, methods=["GET", "HEAD"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected_error},
    )
    app.state.service = service
    return app
