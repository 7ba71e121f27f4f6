"""Failures as replies: the HTTP status of each named failure, and one renderer per API.

The core raises `operategpt.errors` classes, which carry no status. Here, and only here, each becomes a
status, and the reply takes the shape of the API its path belongs to: an OpenAI error object under `/v1`
(the openai SDK raises the matching exception when it reads one), the seed's `{"success": false, "msg"}`
everywhere else. Both servers (the manager and the llmserver) install these handlers; one handler per kind
of failure decides by path, so routing errors (404, 405) are answered in the right shape too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from operategpt import errors

log = logging.getLogger(__name__)

WORKER_HEADER = "X-OperateGPT-Worker"

# By class, most specific first: the first class of a failure's MRO found here gives its status.
STATUSES: Mapping[type[errors.GatewayError], int] = {
    errors.BadRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Overloaded: 429,
    errors.UpstreamTimeout: 504,
    errors.UpstreamError: 502,
    errors.NoRoute: 503,
    errors.NotReady: 503,
    errors.LoopDetected: 508,
}

# OpenAI's error types by HTTP status; any other 4xx is invalid_request_error, any 5xx api_error.
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def status_of(exc: errors.GatewayError) -> int:
    for kind in type(exc).__mro__:
        status = STATUSES.get(kind)
        if status is not None:
            return status
    return 500


def headers_of(exc: errors.GatewayError) -> dict[str, str]:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.worker_id is not None:
        headers[WORKER_HEADER] = str(exc.worker_id)
    return headers


def openai_error(message: str, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An OpenAI error object."""
    kind = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_of(exc: errors.GatewayError) -> dict[str, Any]:
    """`exc` as an OpenAI error object (also what a stream that fails after its first byte ends with)."""
    return openai_error(exc.message, status_of(exc), exc.code, exc.param)


class Renderer:
    """How the seed API (and every path outside the OpenAI API) writes its failures."""

    codes = False  # whether replies carry a machine-readable code

    def body(self, status: int, message: str, code: str | None, param: str | None) -> dict[str, Any]:
        return {"success": False, "msg": message}

    def unknown_route(self) -> str:
        return f"no route for {request.method} {request.path}"


class OpenAIRenderer(Renderer):
    codes = True

    def body(self, status: int, message: str, code: str | None, param: str | None) -> dict[str, Any]:
        return openai_error(message, status, code, param)

    def unknown_route(self) -> str:
        return f"unknown request URL: {request.method} {request.path}"


def register_errorhandlers(app: Flask, internal_message: str, openai_prefix: str = "/v1") -> None:
    """Answer every failure of `app` as JSON: OpenAI error objects under `openai_prefix`, seed-style elsewhere."""
    seed, openai = Renderer(), OpenAIRenderer()

    def renderer() -> Renderer:
        path = request.path
        return openai if path == openai_prefix or path.startswith(openai_prefix + "/") else seed

    def reply(status: int, message: str, code: str | None = None, param: str | None = None,
              headers: Mapping[str, str] | None = None) -> Response:
        shape = renderer()
        response: Response = current_app.json.response(shape.body(status, message, code if shape.codes else None,
                                                                  param))
        response.status_code = status
        if headers:
            response.headers.update(headers)
        return response

    def gateway_error(exc: errors.GatewayError) -> Response:
        status = status_of(exc)
        if status == 500:
            log.warning("%s %s failed: %s", request.method, request.path, exc.message)
        return reply(status, exc.message, exc.code, exc.param, headers_of(exc))

    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers: dict[str, str] = {}
        code = None
        if isinstance(exc, NotFound):
            message, code = renderer().unknown_route(), "unknown_url"
        elif isinstance(exc, MethodNotAllowed):
            allowed = sorted(set(exc.valid_methods or ()) - {"HEAD", "OPTIONS"})
            message = f"method {request.method} is not allowed for {request.path}; use {', '.join(allowed)}"
            headers["Allow"] = ", ".join(allowed)
            code = "method_not_allowed"
        elif isinstance(exc, RequestEntityTooLarge):
            limit = request.max_content_length
            message = (f"request body is larger than the limit of {limit} bytes" if limit
                       else "request body is too large")
            code = "request_too_large"
        else:
            message = f"{exc.name}: {exc.description}" if exc.description else str(exc.name)
        return reply(status, message, code, headers=headers)

    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return reply(500, internal_message, "internal_error")

    app.register_error_handler(errors.GatewayError, gateway_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected)
