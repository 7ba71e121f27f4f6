"""One JSON error path for every failure: API errors, HTTP errors (404/405/413) and crashes."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from operategpt.errors import APIError
from operategpt.gateway.chat import error_object

log = logging.getLogger(__name__)

# Routes that exist only to answer unknown paths and methods in their API's own error format.
CATCH_ALL_ENDPOINTS = frozenset({"openai.unknown"})


def error_response(status: int, msg: str, headers: dict[str, str] | None = None) -> ResponseReturnValue:
    """The seed API's error shape, or an OpenAI error object under /v1 (reached here only by requests
    no /v1 route matched at all, e.g. a path that routing cannot parse)."""
    if request.path == "/v1" or request.path.startswith("/v1/"):
        return jsonify(error_object(msg, status)), status, headers or {}
    return jsonify(success=False, msg=msg), status, headers or {}


def _api_error(exc: APIError) -> ResponseReturnValue:
    return error_response(exc.status, exc.message, exc.headers)


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    headers = {}
    if isinstance(exc, NotFound):
        msg = f"no route for {request.method} {request.path}"
    elif isinstance(exc, MethodNotAllowed):
        allowed = allowed_methods(exc.valid_methods or ())
        msg = f"method {request.method} is not allowed for {request.path}; use {', '.join(allowed)}"
        headers["Allow"] = ", ".join(allowed)
    elif isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        msg = f"request body is larger than the limit of {limit} bytes" if limit else "request body is too large"
    else:
        msg = f"{exc.name}: {exc.description}" if exc.description else str(exc.name)
    return error_response(exc.code or 500, msg, headers)


def allowed_methods(candidates: Iterable[str]) -> list[str]:
    """The methods the path really serves: not HEAD/OPTIONS, not a catch-all that only answers errors."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in sorted(set(candidates) - {"HEAD", "OPTIONS"}):
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        if endpoint not in CATCH_ALL_ENDPOINTS:
            allowed.append(method)
    return allowed


def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal error; see the manager's log")


def register_errorhandlers(app: Flask) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
