"""The ASGI application: the routes of a :class:`~koala.service.endpoints.KoalaService`, and answers for
errors outside them.
"""

from __future__ import annotations

import contextlib
import logging

from koala.service.endpoints import STATIC_DIR, KoalaService
from koala.service.problems import Problem, problem_response
from koala.service.settings import ServiceSettings

logger = logging.getLogger("koala.service")


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
