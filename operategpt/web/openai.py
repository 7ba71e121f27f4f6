"""The OpenAI-compatible API under /v1: models, chat completions (streamed too) and embeddings.

Every failure under /v1 — bad input, unknown model or path, wrong method, a worker's failure — is an
OpenAI error object with the matching status, so the openai SDK raises the matching exception. The seed
routes keep their own `{"success": false, "msg"}` replies. A client key in `Authorization: Bearer` is
accepted and never forwarded to workers.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import MapAdapter

from operategpt.errors import APIError
from operategpt.gateway import chat
from operategpt.gateway.service import WORKER_HEADER
from operategpt.schemas.openai import ChatCompletionRequest, EmbeddingRequest
from operategpt.schemas.replies import ChatCompletion, EmbeddingList, ModelCard, ModelList, OpenAIError
from operategpt.web import gateway
from operategpt.web.auth import requires
from operategpt.web.docs import Operation, accepts, documented

log = logging.getLogger(__name__)

bp = Blueprint("openai", __name__, url_prefix="/v1")

# Proxies must pass events on as they come (X-Accel-Buffering is nginx's switch) and never cache them.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


_ERRORS = {status: OpenAIError for status in (400, 401, 403, 404, 405, 413, 502, 503, 504)}


@bp.get("/models")
@documented(Operation("Models with a routable worker", {200: ModelList, **_ERRORS}, auth="client", tag="openai"))
@requires("client")
def models() -> ResponseReturnValue:
    return jsonify(object="list", data=chat.list_models(gateway()))


@bp.get("/models/<path:model>")
@documented(Operation("One model", {200: ModelCard, **_ERRORS}, auth="client", tag="openai"))
@requires("client")
def model(model: str) -> ResponseReturnValue:
    return jsonify(chat.get_model(gateway(), model))


@bp.post("/chat/completions")
@documented(Operation("Chat completion; with stream: true, Server-Sent Events",
                      {200: ChatCompletion, **_ERRORS}, auth="client", tag="openai"))
@requires("client")
@accepts(ChatCompletionRequest)
def chat_completions(payload: ChatCompletionRequest) -> ResponseReturnValue:
    return _reply(chat.chat(gateway(), payload))


@bp.post("/embeddings")
@documented(Operation("Embeddings", {200: EmbeddingList, **_ERRORS}, auth="client", tag="openai"))
@requires("client")
@accepts(EmbeddingRequest)
def embeddings(payload: EmbeddingRequest) -> ResponseReturnValue:
    return _reply(chat.embeddings(gateway(), payload))


# Routing errors (404, 405) happen before a blueprint is chosen, so the app-wide handlers would answer them
# seed-style. This rule catches every other /v1 path and method to answer them the OpenAI way.
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@bp.route("/<path:path>", methods=_METHODS)
def unknown(path: str) -> ResponseReturnValue:
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = [method for method in _METHODS if _endpoint(adapter, method) not in (None, "openai.unknown")]
    if allowed:
        message = f"method {request.method} is not allowed for {request.path}; use {', '.join(allowed)}"
        return _error(chat.error_object(message, 405, "method_not_allowed"), 405, {"Allow": ", ".join(allowed)})
    message = f"unknown request URL: {request.method} {request.path}"
    return _error(chat.error_object(message, 404, "unknown_url"), 404)


def _endpoint(adapter: MapAdapter, method: str) -> str | None:
    try:
        endpoint, _ = adapter.match(request.path, method=method)
    except HTTPException:
        return None
    return str(endpoint)


def _reply(answer: chat.Answer) -> Response:
    headers = {WORKER_HEADER: str(answer.worker_id)}
    if answer.stream:
        return Response(answer.body, mimetype="text/event-stream", headers={**headers, **STREAM_HEADERS})
    return Response(answer.body, mimetype="application/json", headers=headers)


def _error(body: dict, status: int, headers: dict[str, str] | None = None) -> ResponseReturnValue:
    return jsonify(body), status, headers or {}


@bp.errorhandler(APIError)
def _api_error(exc: APIError) -> ResponseReturnValue:
    return _error(chat.error_of(exc), exc.status, exc.headers)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    status = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        limit = request.max_content_length
        message = f"request body is larger than the limit of {limit} bytes" if limit else "request body is too large"
        return _error(chat.error_object(message, status, "request_too_large"), status)
    message = f"{exc.name}: {exc.description}" if exc.description else str(exc.name)
    return _error(chat.error_object(message, status), status)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _error(chat.error_object("internal error; see the manager's log", 500, "internal_error"), 500)
