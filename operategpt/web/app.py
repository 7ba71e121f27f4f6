"""The manager's application factory: the only way to build the gateway app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response

from operategpt.gateway.balancing import InFlight, make_strategy
from operategpt.gateway.health import HealthMonitor
from operategpt.gateway.registry.db import Database
from operategpt.gateway.service import Gateway
from operategpt.gateway.table import RoutingTable
from operategpt.http.allowlist import HostAllowlist
from operategpt.http.client import UpstreamClient
from operategpt.settings import ConfigError, Settings
from operategpt.web import openai, openapi, ops, seed, status
from operategpt.web.auth import Credentials
from operategpt.web.errors import allowed_methods, register_errorhandlers
from operategpt.web.jsonreply import ReplyJSONProvider
from operategpt.web.requestlog import register_request_log

log = logging.getLogger(__name__)


class ManagerFlask(Flask):
    json_provider_class = ReplyJSONProvider

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # Every view, hook and error handler here is synchronous; Flask would inspect each one on every
        # request to find out (a measurable share of the hot path).
        return func

    def make_default_options_response(self) -> Response:
        # Flask would advertise the methods of catch-all error routes too.
        response = super().make_default_options_response()
        allowed = allowed_methods(response.allow)
        response.allow.clear()
        response.allow.update([*allowed, "OPTIONS"])
        return response


def create_app(settings: Settings | None = None) -> Flask:
    """Build the manager. Migrations are not applied here: the entry points do that once, before workers fork."""
    settings = settings or Settings.from_env()
    app = ManagerFlask("operategpt.web")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    register_extensions(app, settings)
    register_auth(app, settings)
    register_request_log(app)
    register_blueprints(app)
    register_errorhandlers(app)
    return app


def register_extensions(app: Flask, settings: Settings) -> None:
    inflight = InFlight()
    try:
        strategy = make_strategy(settings.lb_strategy, inflight=inflight)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    try:
        allowlist = HostAllowlist(settings.upstream_allowed_hosts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    upstream = UpstreamClient(
        pool_size=settings.upstream_pool_size,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_timeout,
        max_bytes=settings.upstream_max_bytes,
        allowlist=allowlist,
    )
    routing = RoutingTable(db, settings.registry_sync_interval)
    health = HealthMonitor(settings, db, routing)
    app.extensions["operategpt"] = Gateway(settings, db, routing, strategy, inflight, upstream, health, allowlist)
    if settings.health_checks:
        health.start()


def register_auth(app: Flask, settings: Settings) -> None:
    app.extensions["operategpt.auth"] = Credentials(settings.admin_token, settings.api_keys)
    if settings.admin_token is None:
        log.warning("MANAGER_ADMIN_TOKEN is not set: admin routes (register, offline, workers) answer loopback "
                    "clients only")


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(seed.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(openai.bp)
