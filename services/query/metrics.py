"""Request metrics of the read API: Prometheus text at /metrics on the local server, CloudWatch embedded
metric format (EMF) log lines on Lambda (CloudWatch turns each line into metrics; no agent, no API call).

Both record, per request, the route template (never the raw path: feature names would explode the
label set), the method, the status and the duration.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST
EMF_NAMESPACE = "wideviews/query"
# Seconds: a dot plot is milliseconds, a page of a million cells about a second.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics(Protocol):
    def observe(self, route: str, method: str, status: int, seconds: float, size_bytes: int, request_id: str) -> None:
        """Record one answered request (route, method, status, latency and body size)."""


class PrometheusMetrics:
    """Counters and a latency histogram in a registry of their own (served at /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "wideviews_query_requests", "Requests answered", ["route", "method", "status"], registry=self.registry
        )
        self._seconds = Histogram(
            "wideviews_query_request_seconds", "Time to answer a request", ["route", "method"], buckets=_BUCKETS, registry=self.registry
        )
        self._bytes = Counter("wideviews_query_response_bytes", "Response body bytes sent", ["route"], registry=self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float, size_bytes: int, request_id: str) -> None:
        """Count one answered request in the Prometheus registry."""
        self._requests.labels(route, method, str(status)).inc()
        self._seconds.labels(route, method).observe(seconds)
        self._bytes.labels(route).inc(size_bytes)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class EmbeddedMetrics:
    """One EMF JSON line per request on stdout (Lambda sends stdout to CloudWatch Logs)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def observe(self, route: str, method: str, status: int, seconds: float, size_bytes: int, request_id: str) -> None:
        """Write one answered request as a CloudWatch EMF line."""
        line = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": EMF_NAMESPACE,
                        "Dimensions": [["route", "status_class"]],
                        "Metrics": [
                            {"Name": "latency", "Unit": "Milliseconds"},
                            {"Name": "response_bytes", "Unit": "Bytes"},
                            {"Name": "requests", "Unit": "Count"},
                        ],
                    }
                ],
            },
            "route": route,
            "status_class": f"{status // 100}xx",
            "latency": round(seconds * 1000, 3),
            "response_bytes": size_bytes,
            "requests": 1,
            "method": method,
            "status": status,
            "request_id": request_id,
        }
        stream = self._stream or sys.stdout
        stream.write(orjson.dumps(line).decode() + "\n")
        stream.flush()
