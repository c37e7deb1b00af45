"""Answers other than 200: a :class:`Problem` carries the status and a reason a person can read, and becomes a
JSON answer; reasons from :func:`koala.images.read_image` are mapped to the status they mean.
"""

from __future__ import annotations

from koala import images


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
