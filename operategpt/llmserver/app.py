"""The inference server's app factory and its one place that turns errors into JSON replies.

Errors on `/v1/…` routes use OpenAI's error object (`{"error": {"message", "type", "code"}}`) so
OpenAI clients understand them; every other route uses the seed's `{"success": false, "msg"}`.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from operategpt.errors import APIError
from operategpt.llmserver import api
from operategpt.llmserver.backends import build_backend
from operategpt.llmserver.backends.base import Backend
from operategpt.llmserver.config import ServerSettings
from operategpt.llmserver.state import ServerState

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


def error_response(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    if request.path.startswith("/v1/"):
        body: dict[str, object] = {"error": {"message": message, "type": kind, "code": status}}
    else:
        body = {"success": False, "msg": message}
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_errorhandlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def handle_api_error(error: APIError) -> Response:
        if error.status >= 500:
            logger.warning("%s %s failed: %s", request.method, request.path, error.message)
        return error_response(error.status, error.message, error.kind, error.headers)

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        kind = "invalid_request_error" if status < 500 else "internal_error"
        message = error.description or error.name
        if status == 404:
            message = f"no such route: {request.path}"
        elif status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        elif status == 413:
            message = f"request body larger than MAX_CONTENT_LENGTH ({app.config['MAX_CONTENT_LENGTH']} bytes)"
        headers = dict(error.get_headers()) if status == 405 else {}
        headers.pop("Content-Type", None)
        return error_response(status, message, kind, headers)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error in the inference server", "internal_error")
