"""Receiving a request body: counted as it comes (413 past the limit) and timed by an
:class:`UploadPace` (408 for a sender slower than the minimum rate), so a slow sender holds its receiving slot
for seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import dataclasses

from koala.service.problems import Problem
from koala.service.settings import megabytes
from koala.service.upload_parsing import sink_for


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
            raise Problem(413, f"The upload is larger than the limit of {megabytes(limit)}.",
                          headers={"Connection": "close"})
        if chunk:
            write(chunk)
        if not message.get("more_body", False):
            return received


async def read_upload(request, limit: int, pace: UploadPace) -> tuple[bytes, str | None]:
    """Stream the body into memory (raw or multipart): 413 past ``limit``, 408 slower than ``pace``."""
    sink = sink_for(request.headers.get("content-type", ""))
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
