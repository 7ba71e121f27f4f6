"""The inference server's app factory; its failures are replied to by the shared `operategpt.web.errors`.

Errors on `/v1/…` routes use OpenAI's error object (`{"error": {"message", "type", "param", "code"}}`) so
OpenAI clients understand them; every other route uses the seed's `{"success": false, "msg"}`.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from operategpt.llmserver import api
from operategpt.llmserver.backends import build_backend
from operategpt.llmserver.backends.base import Backend
from operategpt.llmserver.config import ServerSettings
from operategpt.llmserver.state import ServerState
from operategpt.web import errors as web_errors

logger = logging.getLogger(__name__)

OPENAI_PREFIX = "/v1"


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
    web_errors.register_errorhandlers(app, "internal error in the inference server", openai_prefix=OPENAI_PREFIX)
    # Flask picks the handler of the most specific class: this one wins over the shared HTTPException handler.
    app.register_error_handler(RequestEntityTooLarge, _too_large)


def _too_large(exc: RequestEntityTooLarge) -> Response:
    """The shared reply, naming the setting an operator raises (the inference server's own MAX_CONTENT_LENGTH)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    message = f"request body larger than MAX_CONTENT_LENGTH ({limit} bytes)"
    path = request.path
    openai = path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")
    shape = web_errors.OpenAIRenderer() if openai else web_errors.Renderer()
    response: Response = current_app.json.response(
        shape.body(413, message, "request_too_large" if shape.codes else None, None)
    )
    response.status_code = 413
    return response
