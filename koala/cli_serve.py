"""``koala serve``: the web service and its page (see :mod:`koala.service`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    from koala.service import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, ServiceSettings

    defaults = ServiceSettings()

    parser = subparsers.add_parser(
        "serve", help="run the colouriser as a web service with a page",
        description="Serve the page at / and POST /api/colorize (raw image body or multipart field 'file'). "
        "At most --workers photos are coloured at once and --queue more wait; beyond that the answer is "
        "503 with Retry-After. A photo takes a place only once its upload is complete: at most --receiving "
        "uploads come in at once, each at --min-upload-rate or faster. Uploads are kept in memory only, never "
        "written to disk.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="model folder (default: $KOALA_MODEL or models/default)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--workers", type=int, default=1, help="colourisations at once (threads in this process)")
    parser.add_argument("--queue", type=int, default=4, help="requests that may wait for a worker")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help="largest upload accepted, in MiB (413 beyond it)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="largest image accepted, width × height (413 beyond it)")
    parser.add_argument("--receiving", type=int, default=defaults.receiving,
                        help="uploads that may come in at once (memory: this × --max-upload-mb); beyond it, 503")
    parser.add_argument("--min-upload-rate", type=float, default=defaults.min_upload_rate / 1024,
                        help="KiB/s an upload must average after --upload-grace seconds (408 otherwise)")
    parser.add_argument("--upload-grace", type=float, default=defaults.upload_grace_s,
                        help="seconds every upload gets before its rate counts")
    parser.add_argument("--body-timeout", type=float, default=defaults.body_timeout_s,
                        help="the most seconds any upload may take (408 beyond it)")
    parser.add_argument("--header-timeout", type=float, default=defaults.header_timeout_s,
                        help="seconds a connection gets to send a complete request head (then it is closed)")
    parser.add_argument("--keep-alive", type=float, default=defaults.keep_alive_s,
                        help="seconds an idle connection stays open after an answer")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections,
                        help="open connections beyond which every request gets 503 at once")
    parser.add_argument("--embedder-weights", default=None, help="override the embedder weights (e.g. a local .h5)")
    parser.add_argument("--nice-when-ready", type=int, default=0, choices=range(0, 20), metavar="N",
                        help="once the model is loaded, lower this process's CPU priority by N (0-19): a replica "
                        "that is starting beside others then gets the CPU first")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="do not log each request (the access log never has image data in it)")
    parser.set_defaults(handler=run_serve)


def run_serve(arguments) -> int:
    import logging

    import uvicorn

    from koala.colorize import default_model_path
    from koala.service import ServiceSettings, create_app, http_protocol

    model_path = Path(arguments.model) if arguments.model else default_model_path()
    if not (model_path / "config.json").is_file():
        print(f"error: {model_path} is not a model folder (no config.json); pass --model", file=sys.stderr)
        return 2
    try:
        settings = ServiceSettings(
            model_path=str(model_path), workers=arguments.workers, queue=arguments.queue,
            max_upload_bytes=int(arguments.max_upload_mb * 1024 * 1024), max_pixels=arguments.max_pixels,
            receiving=arguments.receiving, min_upload_rate=arguments.min_upload_rate * 1024,
            upload_grace_s=arguments.upload_grace, body_timeout_s=arguments.body_timeout,
            header_timeout_s=arguments.header_timeout, keep_alive_s=arguments.keep_alive,
            max_connections=arguments.max_connections, embedder_weights=arguments.embedder_weights,
            nice_when_ready=arguments.nice_when_ready,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    uvicorn.run(
        app, host=arguments.host, port=arguments.port, log_level=arguments.log_level,
        access_log=arguments.access_log, lifespan="on", server_header=False, timeout_graceful_shutdown=10,
        http=http_protocol(settings.header_timeout_s), timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections,
    )
    return 0
