"""Prometheus metrics of one server, in a registry of its own (several apps may live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SIZE_BUCKETS_BYTES = tuple(float(1 << shift) for shift in range(10, 27, 2))


class ServiceMetrics:
    """The counters, gauges and histograms the service updates, and their text exposition.

    Args:
        in_flight: reads the requests in flight now.
        capacity: the most requests in flight.
    """

    def __init__(self, *, in_flight: Callable[[], int], capacity: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "efface_http_requests", "HTTP requests answered.", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "efface_http_request_duration_seconds",
            "Time from receiving a request to having its answer.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "efface_queue_wait_seconds",
            "Time an uploaded image waited for a worker.",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.processing = Histogram(
            "efface_processing_seconds",
            "Decode, detection, anonymization and encoding of one image.",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.upload_bytes = Histogram(
            "efface_upload_bytes", "Size of the uploaded images.", buckets=_SIZE_BUCKETS_BYTES, registry=self.registry
        )
        self.faces = Counter("efface_faces_detected", "Faces detected.", registry=self.registry)
        self.rejected = Counter(
            "efface_rejected_requests", "Requests refused, by error type.", ["type"], registry=self.registry
        )
        Gauge("efface_requests_in_flight", "Requests admitted and not done.", registry=self.registry).set_function(
            in_flight
        )
        Gauge("efface_requests_capacity", "The most requests in flight.", registry=self.registry).set(capacity)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
