"""The gateway: registry, routing table, balancing, health, format adapters and the operations over them.

`build_gateway(settings)` is the one place its parts are made and wired, for the web app and the command
line alike; `Gateway.start()` starts the background loops (each started by its owner), `close()` ends them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from operategpt.gateway.balancing import InFlight, make_strategy
from operategpt.gateway.health import HealthMonitor, PassiveHealth
from operategpt.gateway.operations import Operations
from operategpt.gateway.registry import Registry
from operategpt.gateway.registry.changes import ChangeListener
from operategpt.gateway.registry.db import Database
from operategpt.gateway.retry import RetryPolicy
from operategpt.gateway.router import Router
from operategpt.gateway.table import RoutingTable
from operategpt.gateway.workers import Workers
from operategpt.http.allowlist import HostAllowlist
from operategpt.http.client import UpstreamClient
from operategpt.http.ownaddress import OwnAddresses, via_mark
from operategpt.settings import ConfigError, Settings


@dataclass
class Gateway:
    settings: Settings
    db: Database
    table: RoutingTable
    router: Router
    workers: Workers
    operations: Operations
    health: HealthMonitor
    upstream: UpstreamClient
    registry: Registry
    changes: ChangeListener | None  # PostgreSQL only

    def start(self) -> None:
        """Start this process's background loops (after any fork), unless HEALTH_CHECKS is off: the routing
        table's refresher, the health checker and, on PostgreSQL, the listener for other instances' changes.
        Without them requests re-check the table themselves when it is due; the host's generation (no thread)
        still makes changes acknowledged on this host take effect at once."""
        self.registry.generation.open()
        if self.settings.health_checks:
            self.table.start()
            self.health.start()
            if self.changes is not None:
                self.changes.start()

    def close(self) -> None:
        if self.changes is not None:
            self.changes.stop()
        self.health.stop()
        self.table.stop()
        self.upstream.close()
        self.db.dispose()


def build_gateway(settings: Settings) -> Gateway:
    """Every part of the gateway, wired; nothing started (see `Gateway.start`). Raises ConfigError."""
    inflight = InFlight()
    try:
        strategy = make_strategy(settings.lb_strategy, inflight=inflight)
        allowlist = HostAllowlist(settings.upstream_allowed_hosts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    own = OwnAddresses(settings.server_host, settings.server_port)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    registry = Registry(db)
    table = RoutingTable(db, settings.registry_sync_interval, registry.generation)
    upstream = UpstreamClient(
        pool_size=settings.upstream_pool_size,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_timeout,
        max_bytes=settings.upstream_max_bytes,
        allowlist=allowlist,
        own=own,
    )
    passive = PassiveHealth(registry, table, settings.passive_failure_threshold, settings.cooldown_seconds)
    router = Router(
        table, strategy, inflight, upstream, passive, RetryPolicy(settings.max_retries),
        upstream_timeout=settings.upstream_timeout,
        request_deadline=settings.request_deadline,
        retry_after=max(1, math.ceil(settings.health_check_interval)),
        via=via_mark(settings.instance_id),
    )
    return Gateway(
        settings=settings,
        db=db,
        table=table,
        router=router,
        workers=Workers(registry, table, allowlist, own),
        operations=Operations(router, table, registry, settings.llm_name, settings.default_temperature),
        health=HealthMonitor(settings, registry, table),
        upstream=upstream,
        registry=registry,
        changes=ChangeListener(settings.database_url, table.sync) if ChangeListener.supports(settings.database_url)
        else None,
    )
