"""Passive health: failures of real requests, counted across processes, put a worker in cooldown.

After PASSIVE_FAILURE_THRESHOLD failed requests in a row a worker gets no traffic for COOLDOWN_SECONDS, in
every process and instance sharing the registry. Attempts report here when they end (`router.Attempt`).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from operategpt.gateway.registry import Registry
from operategpt.gateway.registry.models import utcnow
from operategpt.gateway.table import Route, RoutingTable

log = logging.getLogger(__name__)


class PassiveHealth:
    def __init__(self, registry: Registry, routing: RoutingTable, threshold: int, cooldown_seconds: float):
        self.registry = registry
        self.routing = routing
        self.threshold = threshold
        self.cooldown_seconds = cooldown_seconds
        self._suspects: set[int] = set()  # workers whose passive failures this process has counted
        self._lock = threading.Lock()

    def record_failure(self, route: Route, error: str) -> None:
        """A real request failed in a way that counts against the worker: count it across processes."""
        now = utcnow()
        try:
            cooled = self.registry.count_failure(route.id, error, now, self.threshold,
                                                 now + timedelta(seconds=self.cooldown_seconds))
        except Exception:
            log.warning("could not record a passive failure of worker %d", route.id, exc_info=True)
            return
        with self._lock:
            self._suspects.add(route.id)
        if cooled:
            log.warning("worker %d cools down for %.0f s after %d failed requests in a row: %s", route.id,
                        self.cooldown_seconds, self.threshold, error)
            self.routing.refresh({route.model_name})

    def record_success(self, route: Route) -> None:
        """Reset the failure count, touching the database only for workers this process saw failing."""
        if route.id not in self._suspects:
            return
        with self._lock:
            self._suspects.discard(route.id)
        try:
            self.registry.reset_failures(route.id)
        except Exception:
            log.warning("could not reset the passive failures of worker %d", route.id, exc_info=True)
