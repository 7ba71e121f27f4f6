"""The OpenAI-compatible API under /v1: models, chat completions (streamed too) and embeddings.

Every failure under /v1 — bad input, unknown model or path, wrong method, a worker's failure — is an
OpenAI error object with the matching status, so the openai SDK raises the matching exception. The seed
routes keep their own `{"success": false, "msg"}` replies. A client key in `Authorization: Bearer` is
accepted and never forwarded to workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from operategpt.errors import GatewayError
from operategpt.gateway.operations import Answer
from operategpt.http.sse import event
from operategpt.schemas.openai import ChatCompletionRequest, EmbeddingRequest
from operategpt.schemas.replies import ChatCompletion, EmbeddingList, ModelCard, ModelList, OpenAIError
from operategpt.web.auth import requires
from operategpt.web.current import gateway
from operategpt.web.docs import Operation, accepts, documented
from operategpt.web.errors import WORKER_HEADER, openai_error_of

log = logging.getLogger(__name__)

bp = Blueprint("openai", __name__, url_prefix="/v1")

# Proxies must pass events on as they come (X-Accel-Buffering is nginx's switch) and never cache them.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


_ERRORS = {status: OpenAIError for status in (400, 401, 403, 404, 405, 413, 502, 503, 504)}


@bp.get("/models")
@documented(Operation("Models with a routable worker", {200: ModelList, **_ERRORS}, auth="client", tag="openai"))
@requires("client")
def models() -> ResponseReturnValue:
    return jsonify(object="list", data=gateway().operations.list_models())


@bp.get("/models/<path:model>")
@documented(Operation("One model", {200: ModelCard, **_ERRORS}, auth="client", tag="openai"))
@requires("client")
def model(model: str) -> ResponseReturnValue:
    return jsonify(gateway().operations.get_model(model))


@bp.post("/chat/completions")
@documented(Operation("Chat completion; with stream: true, Server-Sent Events",
                      {200: ChatCompletion, **_ERRORS}, auth="client", tag="openai"))
@requires("client")
@accepts(ChatCompletionRequest)
def chat_completions(payload: ChatCompletionRequest) -> ResponseReturnValue:
    return _reply(gateway().operations.chat(payload))


@bp.post("/embeddings")
@documented(Operation("Embeddings", {200: EmbeddingList, **_ERRORS}, auth="client", tag="openai"))
@requires("client")
@accepts(EmbeddingRequest)
def embeddings(payload: EmbeddingRequest) -> ResponseReturnValue:
    return _reply(gateway().operations.embeddings(payload))


def _reply(answer: Answer) -> Response:
    headers = {WORKER_HEADER: str(answer.worker_id)}
    if answer.stream:
        return Response(_Events(answer.body), mimetype="text/event-stream", headers={**headers, **STREAM_HEADERS})
    return Response(answer.body, mimetype="application/json", headers=headers)


class _Events:
    """A stream's events; a failure after the first byte (too late for a status) ends it with an OpenAI error
    object as its last event, which the openai SDK raises as an APIError. close() reaches the relay."""

    def __init__(self, events: Iterable[bytes]):
        self._events = events

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._events
        except GatewayError as exc:
            yield event(openai_error_of(exc))

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()
