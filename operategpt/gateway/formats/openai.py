"""The `openai` format: an OpenAI-compatible API. The client's request is the body (its model renamed to the
worker's upstream model), the reply is passed on as it is, and streams are relayed event by event."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from operategpt.errors import BadReply, BadRequest, StreamBroken
from operategpt.gateway import shapes
from operategpt.gateway.formats.base import Exchange, Format
from operategpt.gateway.relay import Relay
from operategpt.http.sse import EventSplitter

if TYPE_CHECKING:
    from operategpt.gateway.inputs import ChatInput, EmbeddingInput, Prompt
    from operategpt.gateway.table import Route
    from operategpt.http.client import Reply
    from operategpt.schemas.seed import RegisterRequest


class OpenAIFormat(Format):
    name = "openai"
    # Its reply shape is known, so a registration gives no extract path.
    default_extract = "choices[0].message.content"

    def check(self, registration: RegisterRequest) -> None:
        given = [name for name in ("body", "response_extract") if getattr(registration, name)]
        if given:
            raise BadRequest(f"an openai-format worker takes no {' or '.join(given)}: the client's request is the body")

    def complete(self, route: Route, prompt: Prompt, http: Exchange) -> str:
        body: dict[str, Any] = {"model": route.upstream_model, "messages": [{"role": "user", "content": prompt.text}]}
        if prompt.temperature is not None:
            body["temperature"] = prompt.temperature
        return route.call.extract(http.send(route.call.request(prompt.values, body)).text())

    def chat(self, route: Route, chat: ChatInput, http: Exchange) -> bytes:
        return _json_document(http.send(route.call.request(chat.values, _body(route, chat.body))), route)

    def chat_stream(self, route: Route, chat: ChatInput, http: Exchange) -> Iterable[bytes]:
        request = route.call.request(chat.values, _body(route, chat.body))
        if not any(name.lower() == "accept" for name in request.headers):
            request.headers["Accept"] = "text/event-stream"
        stream = http.open_stream(request)
        if "text/event-stream" not in stream.content_type.lower():
            # Some OpenAI-compatible servers ignore `stream`: their whole answer becomes a one-chunk stream.
            try:
                text = route.call.extract(stream.read().decode("utf-8", errors="replace"))
            finally:
                stream.close()
            return shapes.one_chunk_stream(chat.model, text)
        try:
            # Up to the first complete event here, while a failure can still fail over; then relayed.
            chunks = iter(stream)
            splitter = EventSplitter(http.max_bytes)
            for chunk in chunks:
                head = splitter.feed(chunk)
                if head:
                    return Relay(head, chunks, splitter, stream.close, route.id)
            raise StreamBroken(f"worker at {stream.where} ended its stream before the first event")
        except BaseException:
            stream.close()
            raise

    def embeddings(self, route: Route, request: EmbeddingInput, http: Exchange) -> bytes:
        return _json_document(http.send(route.call.request(request.values, _body(route, request.body))), route)


def _body(route: Route, body: Any) -> dict[str, Any]:
    return {**body, "model": route.upstream_model}


def _json_document(reply: Reply, route: Route) -> bytes:
    """The worker's reply, passed on unchanged once it is known to be JSON."""
    if "json" not in reply.content_type.lower():
        raise BadReply(f"worker {route.id} answered with Content-Type '{reply.content_type}', not JSON")
    return reply.body
