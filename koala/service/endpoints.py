""":class:`KoalaService`: the state of one server process (settings, the loaded colouriser, admission,
the worker threads) and the endpoints that answer with it: the page, ``/api/colorize``, ``/healthz`` and the icon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from pathlib import Path

from koala import images
from koala.service.admission import Admission
from koala.service.download_names import content_disposition
from koala.service.formats import MEDIA_TYPES, choose_format, encode_answer
from koala.service.image_checks import check_complete, check_declared_size
from koala.service.problems import Problem, image_error_problem, problem_response
from koala.service.settings import ServiceSettings, megabytes
from koala.service.upload_pacing import UploadPace, drain_body, read_upload
from koala.service.upload_parsing import sink_for

logger = logging.getLogger("koala.service")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


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

        images.configure_imagemagick()  # first: it imports wand
        from wand.resource import limits

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
        if self.settings.nice_when_ready:
            lower_priority(self.settings.nice_when_ready)
        self.started = True
        logger.info(
            "ready: %d worker(s), queue %d, upload limit %s, pixel limit %.0f MP, ImageMagick disk limit %d",
            self.settings.workers, self.settings.queue, megabytes(self.settings.max_upload_bytes),
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
                raise Problem(413, f"The upload is larger than the limit of {megabytes(limit)}.",
                              headers={"Connection": "close"})
        query_format = request.query_params.get("format")
        admission = self.admission
        early: Problem | None = None  # an answer known before the body is read
        try:
            if not self.started:
                raise Problem(503, "The colouriser is still starting.", headers={"Retry-After": "5"})
            if query_format is not None:
                choose_format(query_format, "", None)  # a bad ?format= is a 400
            sink_for(request.headers.get("content-type", ""))  # a multipart body without a boundary is a 400
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


def lower_priority(increment: int) -> None:
    """Raise the nice value of every thread of this process by ``increment`` (on Linux a nice value belongs to a
    thread, and the model's compute threads already exist); threads started later inherit it."""
    for task in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else [0]:
        thread = int(task)
        try:
            os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + increment)
        except OSError:  # a thread that ended meanwhile
            pass


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
