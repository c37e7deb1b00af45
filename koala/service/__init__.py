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

The package, one concept a module, in the order a request meets them::

    settings.py        ServiceSettings: what ``koala serve`` can be told, and its defaults
    protocol.py        the HTTP protocol: uvicorn's h11 with a deadline for each request head
    app.py             create_app: the ASGI application, its routes and error answers
    endpoints.py       KoalaService: the process's state (model, admission, workers) and its endpoints
    upload_parsing.py  the body as it streams in: the raw image, or multipart parsed in memory
    upload_pacing.py   receiving the body: the size limit (413) and the minimum pace (408)
    admission.py       Admission: workers and queue places, 503 + Retry-After beyond them
    image_checks.py    the declared size (413) and completeness (422) of an upload, before decoding
    formats.py         the answer's format (JPEG or PNG: ?format=, Accept, the upload's) and its encoding
    download_names.py  the coloured photo's name in Content-Disposition
    problems.py        Problem: every answer other than 200, as JSON with a reason a person can read
"""

from koala.service.app import create_app
from koala.service.endpoints import KoalaService
from koala.service.protocol import http_protocol
from koala.service.settings import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, ServiceSettings

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_MB", "KoalaService", "ServiceSettings", "create_app",
           "http_protocol"]
