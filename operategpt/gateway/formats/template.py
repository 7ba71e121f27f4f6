"""The `template` format: any JSON-over-HTTP API, called by filling the registration's URL, header and body
templates and reading the answer at its response_extract path. OpenAI's shapes are built around the answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from operategpt.errors import BadReply, BadRequest
from operategpt.gateway import shapes
from operategpt.gateway.formats.base import Call, Exchange, Format

if TYPE_CHECKING:
    from operategpt.gateway.inputs import ChatInput, EmbeddingInput, Prompt
    from operategpt.gateway.table import Route
    from operategpt.schemas.seed import RegisterRequest


class TemplateFormat(Format):
    name = "template"

    def check(self, registration: RegisterRequest) -> None:
        if registration.upstream_model is not None:
            raise BadRequest("upstream_model applies only to workers with api_format 'openai'")

    def check_call(self, call: Call) -> None:
        if "USER_PROMPT" not in call.names:
            raise BadRequest("{USER_PROMPT} must appear in the body, the URL or a header value")

    def complete(self, route: Route, prompt: Prompt, http: Exchange) -> str:
        return _answer(route, prompt.values, http)

    def chat(self, route: Route, chat: ChatInput, http: Exchange) -> bytes:
        return shapes.chat_completion(chat.model, _chat_answer(route, chat, http))

    def chat_stream(self, route: Route, chat: ChatInput, http: Exchange) -> list[bytes]:
        return shapes.one_chunk_stream(chat.model, _chat_answer(route, chat, http))

    def embeddings(self, route: Route, request: EmbeddingInput, http: Exchange) -> bytes:
        """One call per input text (a template takes one {USER_PROMPT}), wrapped into an OpenAI embedding list."""
        given = request.body["input"]
        texts = [given] if isinstance(given, str) else given
        if not all(isinstance(text, str) for text in texts):
            raise BadRequest(
                f"the worker of model '{request.model}' takes text; token-array input needs an openai-format worker"
            )
        vectors = [_vector(route, _answer(route, {**request.values, "USER_PROMPT": text}, http)) for text in texts]
        return shapes.embedding_list(request.model, vectors, request.encoding_format)


def _answer(route: Route, values: Mapping[str, Any], http: Exchange) -> str:
    call = route.call
    return call.extract(http.send(call.request(values)).text())


def _chat_answer(route: Route, chat: ChatInput, http: Exchange) -> str:
    if "USER_PROMPT" not in chat.values and "USER_PROMPT" in route.call.names:
        raise BadRequest(
            f"the worker of model '{chat.model}' fills {{USER_PROMPT}} with the last message whose role is "
            "'user', and messages has none"
        )
    return _answer(route, chat.values, http)


def _vector(route: Route, text: str) -> list[float]:
    try:
        vector = json.loads(text)
    except ValueError:
        vector = None
    if not (isinstance(vector, list) and vector and all(type(x) in (int, float) for x in vector)):
        raise BadReply(
            f"worker {route.id} answered no embedding: response_extract '{route.call.extract.path}' "
            "did not give an array of numbers"
        )
    return vector
