"""Prometheus metrics and what is known about the request being served (model, worker, retries, latency).

Metrics use prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (the
shipped gunicorn settings set it), so /metrics sums every gunicorn process. Labels carry the
route, model, worker and outcome — never a prompt or a secret.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric

from operategpt.gateway.balancing import OBSERVED_COOLING_DOWN, UNHEALTHY, observed_state
from operategpt.gateway.table import RoutingTable

REQUEST_ID_HEADER = "X-Request-ID"

REQUESTS = Counter("operategpt_requests", "Requests answered", ["route", "model", "worker", "outcome"])
ATTEMPTS = Counter("operategpt_upstream_attempts", "Calls to workers", ["model", "worker", "outcome"])
UPSTREAM_SECONDS = Histogram(
    "operategpt_upstream_seconds", "Latency of calls to workers", ["model", "worker"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
FAILOVERS = Counter("operategpt_failovers", "Requests retried on another worker", ["model"])
IN_FLIGHT = Gauge("operategpt_in_flight_requests", "Requests in progress", multiprocess_mode="livesum")


@dataclass
class RequestInfo:
    """What the log line and metrics say about one request; filled in as the request is served."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str | None = None
    worker_id: int | None = None
    retries: int = 0
    upstream_ms: float = 0.0
    broken: bool = False  # a stream that failed after its first byte (its status was already 200)


current_request: ContextVar[RequestInfo | None] = ContextVar("operategpt_request", default=None)


# A labelled child is looked up on every request; prometheus_client checks and locks on each .labels() call,
# so the children are cached here (there are as many as the metrics themselves keep anyway).
_request_counter = functools.cache(REQUESTS.labels)
_attempt_counter = functools.cache(ATTEMPTS.labels)
_upstream_histogram = functools.cache(UPSTREAM_SECONDS.labels)


def record_request(route: str, model: str | None, worker_id: int | None, outcome: str) -> None:
    _request_counter(route, model or "", "" if worker_id is None else str(worker_id), outcome).inc()


def record_attempt(model: str, worker_id: int, outcome: str, seconds: float) -> None:
    """Called when an attempt ends (outcome "ok" or the failure's kind; `retry.outcome`)."""
    _attempt_counter(model, worker_id, outcome).inc()
    _upstream_histogram(model, worker_id).observe(seconds)


def record_failover(model: str) -> None:
    FAILOVERS.labels(model).inc()


def worker_counts() -> dict[int, tuple[int, int]]:
    """Calls and failed calls per worker id, summed over every process since the manager started."""
    counts: dict[int, list[int]] = {}
    for metric in _registry().collect():
        if metric.name != "operategpt_upstream_attempts":
            continue
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            entry = counts.setdefault(int(sample.labels["worker"]), [0, 0])
            entry[0] += int(sample.value)
            if sample.labels["outcome"] != "ok":
                entry[1] += int(sample.value)
    return {worker: (calls, failures) for worker, (calls, failures) in counts.items()}


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


class _WorkerHealth:
    """Worker health as gauges, read at scrape time from the routing table (shared through the database)."""

    def __init__(self, routing: RoutingTable):
        self.routing = routing

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily("operategpt_worker_up", "1 if the worker is routable by health",
                                    labels=["model", "worker", "status"])
        weight = GaugeMetricFamily("operategpt_worker_weight", "Configured weight", labels=["model", "worker"])
        now = time.time()
        for model, routes in self.routing.all_routes().items():
            for route in routes:
                # Health only: a drained worker can be up (its weight says why it gets no traffic).
                observed = observed_state(route, now)
                up = observed not in (UNHEALTHY, OBSERVED_COOLING_DOWN)
                healthy.add_metric([model, str(route.id), observed], 1 if up else 0)
                weight.add_metric([model, str(route.id)], route.weight)
        yield healthy
        yield weight


def exposition(routing: RoutingTable) -> bytes:
    """The /metrics text: every process's counters plus worker health from the registry."""
    health = CollectorRegistry(auto_describe=False)
    health.register(_WorkerHealth(routing))
    return generate_latest(_registry()) + generate_latest(health)
