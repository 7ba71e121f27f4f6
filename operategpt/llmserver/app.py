"""The inference server's app factory and its one place that turns errors into JSON replies.

Errors on `/v1/…` routes use OpenAI's error object (`{"error": {"message", "type", "code"}}`) so
OpenAI clients understand them; every other route uses the seed's `{"success": false, "msg"}`.
"""

from __future__ import annotations

import logging

from flask import Flask

from operategpt.llmserver import api
from operategpt.llmserver.backends import build_backend
from operategpt.llmserver.backends.base import Backend
from operategpt.llmserver.config import ServerSettings
from operategpt.llmserver.state import ServerState
from operategpt.web import errors as web_errors

logger = logging.getLogger(__name__)


def create_app(settings: ServerSettings | None = None, backend: Backend | None = None) -> Flask:
    """Build the server; the backend (and so a local model) is created here unless one is given."""
    settings = settings or ServerSettings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ServerState(settings, backend or build_backend(settings)).init_app(app)
    app.register_blueprint(api.bp)
    register_errorhandlers(app)
    return app


def register_errorhandlers(app: Flask) -> None:
    web_errors.register_errorhandlers(app, "internal error in the inference server")
