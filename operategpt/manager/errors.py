"""One JSON error path for every failure: API errors, HTTP errors (404/405/413) and crashes."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from operategpt.core.errors import APIError

log = logging.getLogger(__name__)


def error_response(status: int, msg: str, headers: dict[str, str] | None = None) -> ResponseReturnValue:
    return jsonify(success=False, msg=msg), status, headers or {}


def _api_error(exc: APIError) -> ResponseReturnValue:
    return error_response(exc.status, exc.message, exc.headers)


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    headers = {}
    if isinstance(exc, NotFound):
        msg = f"no route for {request.method} {request.path}"
    elif isinstance(exc, MethodNotAllowed):
        allowed = sorted(set(exc.valid_methods or ()) - {"HEAD", "OPTIONS"})
        msg = f"method {request.method} is not allowed for {request.path}; use {', '.join(allowed)}"
        headers["Allow"] = ", ".join(exc.valid_methods or ())
    elif isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        msg = f"request body is larger than the limit of {limit} bytes" if limit else "request body is too large"
    else:
        msg = f"{exc.name}: {exc.description}" if exc.description else str(exc.name)
    return error_response(exc.code or 500, msg, headers)


def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal error; see the manager's log")


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
