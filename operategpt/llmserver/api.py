"""The inference server's routes: `/api/generate` (the seed's plain-text API), `/v1/…` (OpenAI), `/health`."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import BadRequest as WerkzeugBadRequest
from werkzeug.wsgi import ClosingIterator

from operategpt.errors import BadRequest, GatewayError
from operategpt.llmserver.backends.base import ChatRequest, Completion, TextStream
from operategpt.llmserver.schemas import parse_chat, parse_generate
from operategpt.llmserver.state import get_state
from operategpt.web.errors import openai_error_of

logger = logging.getLogger(__name__)

bp = Blueprint("llmserver", __name__)


@bp.post("/api/generate")
def generate() -> Response:
    state = get_state()
    completion = _complete(parse_generate(_json_body(), state.settings))
    return Response(completion.text, mimetype="text/plain")


@bp.post("/v1/chat/completions")
def chat_completions() -> Response:
    state = get_state()
    chat, stream = parse_chat(_json_body(), state.settings)
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = state.settings.llm_name
    if stream:
        deltas = state.backend.stream(chat)
        state.count_served()
        body = _sse(deltas, completion_id, created, model)
        return Response(
            ClosingIterator(body, [deltas.close]),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    completion = _complete(chat)
    reply: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason,
            }
        ],
    }
    if completion.usage is not None:
        reply["usage"] = {
            "prompt_tokens": completion.usage.prompt_tokens,
            "completion_tokens": completion.usage.completion_tokens,
            "total_tokens": completion.usage.total_tokens,
        }
    return jsonify(reply)


@bp.get("/v1/models")
def models() -> Response:
    model = get_state().settings.llm_name
    return jsonify(
        {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "operategpt"}]}
    )


@bp.get("/health")
def health() -> Response:
    state = get_state()
    return jsonify(
        {
            "success": True,
            "msg": "ok",
            "model": state.settings.llm_name,
            "served": state.served,
            **state.backend.stats(),
        }
    )


def _json_body() -> Any:
    try:
        return request.get_json(force=True)
    except WerkzeugBadRequest:
        raise BadRequest("the request body must be valid JSON") from None


def _complete(chat: ChatRequest) -> Completion:
    state = get_state()
    started = time.monotonic()
    completion = state.backend.generate(chat)
    state.count_served()
    elapsed = time.monotonic() - started
    if completion.usage is not None:
        tokens = completion.usage.completion_tokens
        logger.info("generated %d tokens in %.2fs (%.1f tokens/s)", tokens, elapsed, tokens / max(elapsed, 1e-9))
    return completion


def _sse(deltas: TextStream, completion_id: str, created: int, model: str) -> Iterator[bytes]:
    """OpenAI `chat.completion.chunk` events; a failure mid-stream becomes an `error` event."""

    def event(delta: dict[str, str], finish_reason: str | None) -> bytes:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

    yield event({"role": "assistant", "content": ""}, None)
    try:
        for delta in deltas:
            yield event({"content": delta.text} if delta.text else {}, delta.finish_reason)
    except GatewayError as error:
        logger.warning("stream %s failed: %s", completion_id, error.message)
        yield _error_event(error)
        return
    except Exception:
        logger.exception("stream %s failed", completion_id)
        yield _error_event(GatewayError("internal error in the inference server", code="internal_error"))
        return
    yield b"data: [DONE]\n\n"


def _error_event(error: GatewayError) -> bytes:
    return f"data: {json.dumps(openai_error_of(error), ensure_ascii=False)}\n\n".encode()
