"""The manager's application factory: the only way to build the gateway app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask

from operategpt.gateway import build_gateway
from operategpt.http import headerparse
from operategpt.settings import Settings
from operategpt.web import openai, openapi, ops, seed, status
from operategpt.web.auth import Credentials, register_loop_guard
from operategpt.web.errors import register_errorhandlers
from operategpt.web.jsonreply import ReplyJSONProvider
from operategpt.web.requestlog import register_request_log

log = logging.getLogger(__name__)


class ManagerFlask(Flask):
    json_provider_class = ReplyJSONProvider

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # Every view, hook and error handler here is synchronous; Flask would inspect each one on every
        # request to find out (a measurable share of the hot path).
        return func


def create_app(settings: Settings | None = None) -> Flask:
    """Build the manager. Migrations are not applied here: the entry points do that once, before workers fork."""
    settings = settings or Settings.from_env()
    app = ManagerFlask("operategpt.web")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    register_extensions(app, settings)
    register_auth(app, settings)
    register_request_log(app)
    register_loop_guard(app, settings.instance_id)
    register_blueprints(app)
    register_errorhandlers(app, "internal error; see the manager's log")
    return app


def register_extensions(app: Flask, settings: Settings) -> None:
    # http.client reads every reply's headers with the email package, a quarter of an upstream call's CPU; this
    # parser gives the same result for every header block at a fraction of the cost (for the whole process).
    headerparse.install()
    gateway = build_gateway(settings)
    app.extensions["operategpt"] = gateway
    gateway.start()


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
