"""``ServiceLimits``: what one server process admits, holds and waits for."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_SERVICE_MAX_PIXELS", "MULTIPART_OVERHEAD_BYTES", "ServiceLimits"]

DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
# A 50 MP image decodes to 150 MB of RGB and is handled in a few copies; the CLI's 200 MP would let a few
# concurrent requests take gigabytes.
DEFAULT_SERVICE_MAX_PIXELS = 50_000_000
# Room for the multipart framing and the option fields around the image.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """The bounds of one server process.

    Attributes:
        max_upload_bytes: the largest image accepted; a bigger upload is refused with 413 before it is read.
        max_image_pixels: the most pixels an image may decode to (decompression bombs get 413).
        workers: requests processed at once (threads sharing one model; inference releases the GIL).
        queue_size: further requests admitted to wait for a worker; beyond ``workers + queue_size``
            requests in flight, the server answers 503 with ``Retry-After`` without reading the upload.
        rate_limit_per_min: requests per minute per API key when the key sets none (bursts up to this many).
        upload_timeout_s: the longest a client may take to send its upload (408 after).
        request_timeout_s: the longest a request may wait for and take in processing (503 after).
        retry_after_s: the ``Retry-After`` given with 503.
    """

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_image_pixels: int = DEFAULT_SERVICE_MAX_PIXELS
    workers: int = 2
    queue_size: int = 64
    rate_limit_per_min: int = 600
    upload_timeout_s: float = 30.0
    request_timeout_s: float = 60.0
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_image_pixels", "workers", "rate_limit_per_min"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {self.queue_size}")
        if self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {self.retry_after_s}")
        for name in ("upload_timeout_s", "request_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")

    @property
    def max_in_flight(self) -> int:
        """Requests admitted at once: processing or waiting for a worker."""
        return self.workers + self.queue_size

    @property
    def max_requests(self) -> int:
        """Requests handled at once (their headers complete), refused ones included; beyond them the server
        answers a bare 503. A last guard: refusing and auditing a flood costs memory too. Connections still
        sending their headers do not count (they are closed after ``server.HEADER_TIMEOUT_S``)."""
        return 4 * self.max_in_flight + 64
