"""Active health: probe rounds under a cluster-wide lease.

Every process runs a checker thread, but only the holder of the `health-checker` lease row
probes; the others try to take the lease as it expires, so one checker runs across all
processes and instances sharing the database. Workers sharing a probe target (the same
health URL, or without one the same host and port) share one probe per round. Status changes
move the registry version (`Registry.save_probes`), so every process routes on them within
REGISTRY_SYNC_INTERVAL.
"""

from __future__ import annotations

import atexit
import logging
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
from operategpt.gateway.registry import Registry, store
from operategpt.gateway.registry.models import as_utc, utcnow
from operategpt.gateway.table import RoutingTable
from operategpt.http.ownaddress import via_mark
from operategpt.http.redact import redact
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
    def __init__(self, settings: Settings, registry: Registry, routing: RoutingTable):
        self.settings = settings
        self.registry = registry
        self.db = registry.db
        self.routing = routing
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- active checks ----------------------------------------------------------------------

    def run_round(self) -> RoundReport:
        """Probe every worker once and write what was seen; usable without the lease (CLI)."""
        started = time.perf_counter()
        with self.db.read() as session:
            rows = store.probe_rows(session)
        # Workers that share a probe target are probed once: at 10,000 workers on a few servers, a
        # connection per worker would cost seconds of CPU per round in a process that also serves requests.
        targets: dict[tuple[str, bool], int] = {}
        indices = [targets.setdefault(_probe_target(row), len(targets)) for row in rows]
        probed = probe_all(
            [Target(index, url, http) for (url, http), index in targets.items()],
            self.settings.health_check_timeout,
            self.settings.health_check_concurrency,
            via_mark(self.settings.instance_id),
        )
        results = [probed[index] for index in indices]
        now = utcnow()
        threshold = self.settings.health_unhealthy_threshold
        updates = []
        changed = 0
        report_rows = []
        # Unpacked rather than read by attribute: a Row's attributes cost ten times as much, at 10,000 workers a round.
        for (worker_id, model_name, url, health_url, was, failed_before, cooldown_until), result in zip(
                rows, results, strict=True):
            # One success makes a worker healthy; `threshold` failures in a row make it unhealthy.
            failures = 0 if result.ok else failed_before + 1
            status = "healthy" if result.ok else "unhealthy" if failures >= threshold else was
            # A passing probe also ends a cooldown that failed requests started (as Kong's active checks readmit
            # a target): a worker shown healthy is one that gets traffic.
            readmitted = result.ok and cooldown_until is not None and as_utc(cooldown_until) > now
            changed += status != was or readmitted
            update = {
                "worker_id": worker_id,
                "status": status,
                "consecutive_failures": failures,
                "last_latency_ms": result.latency_ms,
                "last_checked_at": now,
            }
            if result.ok:
                update["passed"] = True
            else:
                update.update(last_error=redact(result.error or "probe failed"), last_error_at=now,
                              last_error_source="probe")
            updates.append(update)
            report_rows.append((worker_id, model_name, health_url or url, status, result))
        self.registry.save_probes(updates, statuses_changed=bool(changed))
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
            return store.take_lease(session, LEASE_NAME, self.holder, utcnow(), ttl)

    def start(self) -> None:
        """Run the checker in a daemon thread of this process (call after any fork)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="operategpt-health", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the thread and hand the lease back, so another process takes over at once."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(self.settings.health_check_timeout + 5)
        self._thread = None
        try:
            with self.db.write() as session:
                store.release_lease(session, LEASE_NAME, self.holder)
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
