"""Admission: how many colourisations run at once, how many wait, and when to try again."""

from __future__ import annotations

import asyncio
import math


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
