"""The web service and its page: upload a photo, get it back coloured at full resolution.

Routes::

    GET  /              the page (koala/static/index.html, with /static/app.js and /static/style.css)
    POST /api/colorize  image in (the raw request body, or the multipart form field ``file``),
                        colour image out: JPEG or PNG, by ``?format=jpeg|png``, else ``Accept``, else
                        JPEG for a JPEG upload and PNG for anything else
    GET  /healthz       {"ok", "model", "busy", "queued", "workers", "queue", ...}

How a request goes::

    arrives ── Content-Length over the limit? ──────────────────────────► 413 (nothing read)
            ── running + waiting already at workers + queue? ──────────► 503 + Retry-After (nothing read)
            ── body streamed into memory, counted as it comes ──────────► 413 as soon as it passes the limit
            ── waits for one of the N workers (leaves if the client goes)
            ── in a worker thread: sniff format (415), header size (413), completeness (422),
               decode with ImageMagick (422 / 413), colourise, encode ──► 200 image

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

STATIC_DIR = Path(__file__).resolve().parent / "static"

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
        body_timeout_s: how long a client may take to send its upload (408 beyond it).
        jpeg_quality: quality of JPEG answers.
        embedder_weights: override the embedder weights recorded in the model's config.
    """

    model_path: str | None = None
    workers: int = 1
    queue: int = 4
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    body_timeout_s: float = 60.0
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

    Used from the event loop only, so plain counters are enough. A request is *admitted* (counted) from
    the moment it is accepted, while its body arrives and while it waits, until its answer is ready.
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


async def read_upload(request, limit: int) -> tuple[bytes, str | None]:
    """Stream the body into memory (raw or multipart), stopping with 413 as soon as it passes ``limit``."""
    sink = _sink_for(request.headers.get("content-type", ""))
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise Problem(413, f"The upload is larger than the limit of {_megabytes(limit)}.",
                          headers={"Connection": "close"})
        if chunk:
            sink.write(chunk)
    return sink.finish()


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
    if lowered.startswith("not a supported image"):
        return Problem(415, "This is not a photo Koala can read: send a JPEG, PNG, TIFF, WebP, GIF or BMP image.")
    if "cache resources exhausted" in lowered:
        return Problem(413, "The image is too large for this server's image memory: try a smaller one.")
    if "too large" in lowered or "exceeds limit" in lowered or "memory" in lowered:
        return Problem(413, f"The image is too large ({reason}).")
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


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def download_name(filename: str | None, image_format: str) -> str:
    stem = Path(filename).stem if filename else "photo"
    stem = _SAFE_NAME.sub("-", stem).strip(".-")[:80] or "photo"
    return f"{stem}-coloured.{'jpg' if image_format == 'JPEG' else 'png'}"


class KoalaService:
    """The state of one server process: settings, the loaded colouriser, admission and the worker threads."""

    def __init__(self, settings: ServiceSettings, colorizer=None):
        self.settings = settings
        self.colorizer = colorizer
        self.admission: Admission | None = None
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.model_name = Path(settings.model_path).name if settings.model_path else None
        self.magick_disk_limit: int | None = None
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

        if not self.started:
            raise Problem(503, "The colouriser is still starting.", headers={"Retry-After": "5"})
        query_format = request.query_params.get("format")
        if query_format is not None:
            choose_format(query_format, "", None)  # a bad ?format= is a 400 before anything is read
        limit = self.settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise Problem(400, "The Content-Length header is not a number.", headers={"Connection": "close"})
            if int(declared) > limit:
                raise Problem(413, f"The upload is larger than the limit of {_megabytes(limit)}.",
                              headers={"Connection": "close"})
        admission = self.admission
        if not admission.try_admit():
            seconds = admission.retry_after()
            logger.info("busy: %d running, %d waiting; turned a request away", admission.running, admission.queued)
            raise Problem(503, f"The colouriser is busy, try again in {seconds} s.",
                          headers={"Retry-After": str(seconds), "Connection": "close"})
        try:
            try:
                data, filename = await asyncio.wait_for(read_upload(request, limit), self.settings.body_timeout_s)
            except asyncio.TimeoutError:
                raise Problem(408, "The upload took too long.", headers={"Connection": "close"}) from None
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is listening
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
                "Content-Disposition": f'inline; filename="{download_name(filename, output_format)}"',
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
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected_error},
    )
    app.state.service = service
    return app
