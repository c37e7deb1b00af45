"""The service's settings: :class:`ServiceSettings`, the limits and defaults of ``koala serve``."""

from __future__ import annotations

import dataclasses

DEFAULT_MAX_UPLOAD_MB = 30
DEFAULT_MAX_PIXELS = 25_000_000
"""25 MP: a 300-dpi A4 scan is 8.7 MP. Debian's ImageMagick policy (memory 256 MiB + map 512 MiB, and disk 0
here) cannot decode much more than 30 MP at once in one process; each running colourisation of a 25 MP photo
also needs about 1.5 GB of NumPy/Keras memory."""


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
        nice_when_ready: once the model is loaded, lower the process's CPU priority by this much (every thread),
            so that on a machine shared with other replicas a replica that is starting, say after a crash, gets
            the CPU first and is back sooner (``deploy/serve-replicas`` uses 5).
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
    nice_when_ready: int = 0

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


def megabytes(size: int) -> str:
    """A size as people read it in an answer or the log: "30 MB", "512 KB"."""
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"
