"""Observed worker state: active health rounds under a cluster-wide lease, and passive failures from traffic.

Every process runs a checker thread, but only the holder of the `health-checker` lease row
probes; the others try to take the lease as it expires, so one checker runs across all
processes and instances sharing the database. Workers sharing a probe target (the same
health URL, or without one the same host and port) share one probe per round. Status changes
move the registry version, so every process routes on them within REGISTRY_SYNC_INTERVAL.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Row

from operategpt.gateway.health.probe import ProbeResult, Target, probe_all
from operategpt.gateway.registry import store as registry
from operategpt.gateway.registry.db import Database
from operategpt.gateway.registry.models import utcnow
from operategpt.gateway.table import Route, RoutingTable
from operategpt.settings import Settings

log = logging.getLogger(__name__)

LEASE_NAME = "health-checker"


@dataclass(frozen=True, slots=True)
class RoundReport:
    probed: int
    healthy: int
    unhealthy: int
    changed: int
    seconds: float
    results: tuple[tuple[int, str, str, str, ProbeResult], ...]  # (id, model, url, status, result)


class HealthMonitor:
    def __init__(self, settings: Settings, db: Database, routing: RoutingTable):
        self.settings = settings
        self.db = db
        self.routing = routing
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._suspects: set[int] = set()  # workers whose passive failures this process has counted
        self._suspects_lock = threading.Lock()

    # -- active checks ----------------------------------------------------------------------

    def run_round(self) -> RoundReport:
        """Probe every worker once and write what was seen; usable without the lease (CLI)."""
        started = time.perf_counter()
        with self.db.read() as session:
            rows = registry.probe_rows(session)
        # Workers that share a probe target are probed once: at 10,000 workers on a few servers, a
        # connection per worker would cost seconds of CPU per round in a process that also serves requests.
        targets: dict[tuple[str, bool], int] = {}
        indices = [targets.setdefault(_probe_target(row), len(targets)) for row in rows]
        probed = probe_all(
            [Target(index, url, http) for (url, http), index in targets.items()],
            self.settings.health_check_timeout,
            self.settings.health_check_concurrency,
        )
        results = [probed[index] for index in indices]
        now = utcnow()
        threshold = self.settings.health_unhealthy_threshold
        updates = []
        changed = 0
        report_rows = []
        # Unpacked rather than read by attribute: a Row's attributes cost ten times as much, at 10,000 workers a round.
        for (worker_id, model_name, url, health_url, was, failed_before), result in zip(rows, results, strict=True):
            # One success makes a worker healthy; `threshold` failures in a row make it unhealthy.
            failures = 0 if result.ok else failed_before + 1
            status = "healthy" if result.ok else "unhealthy" if failures >= threshold else was
            changed += status != was
            updates.append({
                "worker_id": worker_id,
                "status": status,
                "consecutive_failures": failures,
                "last_latency_ms": result.latency_ms,
                "last_error": result.error,
                "last_checked_at": now,
            })
            report_rows.append((worker_id, model_name, health_url or url, status, result))
        with self.db.write() as session:
            registry.save_probe_results(session, updates)
            if changed:
                registry.bump_version(session)
        if changed:
            # In this thread, so no request waits for the reload.
            self.routing.catch_up()
        healthy = sum(1 for row in report_rows if row[3] == "healthy")
        unhealthy = sum(1 for row in report_rows if row[3] == "unhealthy")
        seconds = time.perf_counter() - started
        log.info("health round: %d probed, %d healthy, %d unhealthy, %d changed in %.2f s",
                 len(rows), healthy, unhealthy, changed, seconds)
        return RoundReport(len(rows), healthy, unhealthy, changed, seconds, tuple(report_rows))

    def hold_lease(self) -> bool:
        ttl = timedelta(seconds=self.settings.health_lease_ttl)
        with self.db.write() as session:
            return registry.take_lease(session, LEASE_NAME, self.holder, utcnow(), ttl)

    def start(self) -> None:
        """Run the checker, and the routing table's refresher, in daemon threads of this process (call after any
        fork)."""
        if self._thread is not None:
            return
        self.routing.start()
        self._thread = threading.Thread(target=self._loop, name="operategpt-health", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the threads and hand the lease back, so another process takes over at once."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(self.settings.health_check_timeout + 5)
        self._thread = None
        self.routing.stop()
        try:
            with self.db.write() as session:
                registry.release_lease(session, LEASE_NAME, self.holder)
        except Exception:
            log.warning("could not release the health-checker lease; it will expire", exc_info=True)

    def _loop(self) -> None:
        interval = self.settings.health_check_interval
        # A process without the lease retries often enough to take over within 2x the lease TTL.
        standby = min(interval, self.settings.health_lease_ttl / 2)
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                if self.hold_lease():
                    started = time.monotonic()
                    self.run_round()
                    wait = max(0.0, interval - (time.monotonic() - started))
                else:
                    wait = standby
            except Exception:
                log.exception("health round failed; retrying in %.1f s", standby)
                wait = standby

    # -- passive health ---------------------------------------------------------------------

    def record_failure(self, route: Route, error: str) -> None:
        """A real request failed in a way another worker might not have: count it across processes."""
        now = utcnow()
        cooled = False
        try:
            with self.db.write() as session:
                failures = registry.add_passive_failure(session, route.id, error, now)
                if failures is not None and failures >= self.settings.passive_failure_threshold:
                    until = now + timedelta(seconds=self.settings.cooldown_seconds)
                    registry.start_cooldown(session, route.id, until)
                    cooled = True
        except Exception:
            log.warning("could not record a passive failure of worker %d", route.id, exc_info=True)
            return
        with self._suspects_lock:
            self._suspects.add(route.id)
        if cooled:
            log.warning("worker %d cools down for %.0f s after %d failed requests in a row: %s", route.id,
                        self.settings.cooldown_seconds, self.settings.passive_failure_threshold, error)
            self.routing.refresh({route.model_name})

    def record_success(self, route: Route) -> None:
        """Reset the failure count, touching the database only for workers this process saw failing."""
        if route.id not in self._suspects:
            return
        with self._suspects_lock:
            self._suspects.discard(route.id)
        try:
            with self.db.write() as session:
                registry.reset_passive_failures(session, route.id)
        except Exception:
            log.warning("could not reset the passive failures of worker %d", route.id, exc_info=True)

    def retry_after(self) -> int:
        return max(1, math.ceil(self.settings.health_check_interval))


def _probe_target(row: Row) -> tuple[str, bool]:
    """What probing this worker checks, as (url, http): a GET of its health URL, or else a TCP connection
    to its URL's host and port, which every worker on that host and port shares."""
    if row.health_url is not None:
        return row.health_url, True
    # A match rather than urlsplit: a tenth of the time, for every worker of every round.
    origin = _ORIGIN.match(row.req_url_template)
    # Without one the URL is malformed (a row written past the API): the probe itself reports what is wrong.
    return origin[0] if origin else row.req_url_template, False


# scheme://host:port, up to where the path, query or fragment starts
_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
