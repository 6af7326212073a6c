"""Prometheus metrics: requests, errors and latency per model and version; batches; swaps and their failures.

    curl -s 127.0.0.1:8080/metrics | grep ^kiln_

Each app gets its own registry, so tests can build many apps in one process. With `kiln serve --workers N`
the CLI sets PROMETHEUS_MULTIPROC_DIR, every worker writes its samples there, and `/metrics` sums them, so a
scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# a request's count, its error count (4xx/5xx only) and its latency (a request that named a model only)
RequestSeries = tuple[Counter, Counter | None, Histogram | None]
CLIENT_CLOSED = 499  # nginx's status for a request whose client closed the connection before the answer
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """All of the server's metrics on one registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "kiln_requests", "HTTP requests answered", ["model", "version", "endpoint", "status"], registry=r
        )
        self.errors = Counter(
            "kiln_request_errors", "HTTP requests answered with a 4xx or 5xx", ["model", "version", "code"], registry=r
        )
        self.latency = Histogram(
            "kiln_request_duration_seconds",
            "Time from request to response, per model and version",
            ["model", "version", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "kiln_batch_rows", "Rows per session run (dynamic batching)", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "kiln_queue_wait_seconds",
            "Time the oldest request of a batch waited",
            ["model"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.run_seconds = Histogram(
            "kiln_inference_duration_seconds",
            "Session run time per batch",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.swaps = Counter("kiln_model_swaps", "Versions swapped in live", ["model"], registry=r)
        self.swap_failures = Counter(
            "kiln_model_swap_failures", "Swaps refused; the old version kept serving", ["model", "step"], registry=r
        )
        self.disconnects = Counter(
            "kiln_client_disconnects",
            "Requests whose client went away before the answer (counted as status 499, not as errors)",
            ["endpoint"],
            registry=r,
        )
        self._request_series: dict[tuple[str, str, str, int], RequestSeries] = {}
        mode = {"multiprocess_mode": "mostrecent"} if multiprocess else {}
        self.swap_failing = Gauge(
            "kiln_model_swap_failing",
            "1 while the last swap attempt of the model failed",
            ["model"],
            registry=r,
            **mode,  # type: ignore[arg-type]
        )
        self.loaded_at = Gauge(
            "kiln_model_loaded_timestamp_seconds",
            "When the served version went live",
            ["model", "version", "alias"],
            registry=r,
            **mode,  # type: ignore[arg-type]
        )

    def observe_request(self, model: str, version: str, endpoint: str, status: int, seconds: float) -> None:
        key = (model, version, endpoint, status)
        series = self._request_series.get(key) or self._request_series.setdefault(key, self._series(*key))
        count, errors, latency = series
        count.inc()
        if errors is not None:
            errors.inc()
        if latency is not None:
            latency.observe(seconds)

    def _series(self, model: str, version: str, endpoint: str, status: int) -> RequestSeries:
        """The labelled children one request updates. Kept per label set: `labels()` takes a lock and checks its
        values on every call, for series that are never removed (the labels are model, version, route template
        and status, so there are a few of them)."""
        errors = None
        if status >= 400 and status != CLIENT_CLOSED:  # a client that went away is not an error of the server
            errors = self.errors.labels(model, version, str(status))
        latency = self.latency.labels(model, version, endpoint) if model else None
        return self.requests.labels(model, version, endpoint, str(status)), errors, latency

    def batch_observer(self, model: str, version: str) -> Callable[[int, float, float], None]:
        rows_hist = self.batch_rows.labels(model)
        wait_hist = self.queue_wait.labels(model)
        run_hist = self.run_seconds.labels(model, version)

        def observe(rows: int, waited: float, ran: float) -> None:
            rows_hist.observe(rows)
            wait_hist.observe(waited)
            run_hist.observe(ran)

        return observe

    def swap_succeeded(self, model: str) -> None:
        self.swaps.labels(model).inc()

    def swap_failed(self, model: str, step: str) -> None:
        self.swap_failures.labels(model, step).inc()
        self.swap_failing.labels(model).set(1)

    def swap_recovered(self, model: str) -> None:
        """The alias points at the served version again: the refused version is no longer wanted."""
        self.swap_failing.labels(model).set(0)

    def client_disconnected(self, endpoint: str) -> None:
        self.disconnects.labels(endpoint).inc()

    def model_loaded(self, model: str, version: str, alias: str, timestamp: float) -> None:
        self.swap_failing.labels(model).set(0)
        for labels in list(self.loaded_at._metrics):  # one series per model: drop the old version's
            if labels[0] == model:
                self.loaded_at.remove(*labels)
        self.loaded_at.labels(model, version, alias).set(timestamp)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
