"""The HTTP protocol: uvicorn's h11 protocol with a deadline for each request head."""

from __future__ import annotations

import asyncio
import contextlib
import logging

logger = logging.getLogger("koala.service")


def http_protocol(header_timeout_s: float):
    """uvicorn's h11 protocol, with a deadline for each request head.

    uvicorn times out only a keep-alive connection that stays silent after an answer (``timeout_keep_alive``),
    and it cancels that timer at the first byte that arrives: a connection that sends nothing after opening,
    or sends a request head a byte at a time, stays open for ever. Here a connection gets ``header_timeout_s``
    to send a complete request head, counted from when it opens or its previous answer was sent, however the
    bytes trickle in; then it is closed. Bodies are timed by the service itself
    (:class:`koala.service.upload_pacing.UploadPace`).
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
