"""The OpenAI-compatible operations: the model list, chat completions (whole or streamed) and embeddings.

Every request is served through `Gateway.dispatch`, so picking, failover and passive health are the seed
route's. The function handed to dispatch does everything up to the first byte the client will get — for a
stream: open it, check the status, read the first event — and nothing after, so a request fails over only
while the client has seen nothing. After that the stream is relayed as it arrives.

An `openai`-format worker gets the client's body as is, `model` renamed to its upstream model. A template
worker gets its template filled from the request and its extracted answer wrapped into OpenAI's shapes.
This module also owns those shapes, errors included.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from operategpt.errors import APIError, BadRequest, NotFound, UpstreamError
from operategpt.gateway.balancing import candidates
from operategpt.gateway.registry import store as registry
from operategpt.gateway.registry.models import as_utc
from operategpt.gateway.service import Gateway
from operategpt.gateway.table import Route
from operategpt.http.client import Reply, UpstreamStream
from operategpt.http.sse import DONE, EventSplitter, event
from operategpt.schemas.openai import ChatCompletionRequest, EmbeddingRequest, Message
from operategpt.templating.templates import MissingValueError

log = logging.getLogger(__name__)

EMBEDDING = "embedding"
OPENAI = "openai"
# OpenAI's error types by HTTP status; any other 4xx is invalid_request_error, any 5xx api_error.
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


class ModelNotFound(NotFound):
    code = "model_not_found"
    param = "model"


class WrongModelType(BadRequest):
    code = "wrong_model_type"
    param = "model"


def error_object(message: str, status: int, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An OpenAI error object: the openai SDK raises the exception matching `status` when it reads one."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_of(exc: APIError) -> dict[str, Any]:
    """`exc` as an OpenAI error object; a server-side failure's code says which kind it was."""
    code = getattr(exc, "code", None) or (exc.kind if exc.status >= 500 else None)
    return error_object(exc.message, exc.status, code, getattr(exc, "param", None))


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply for the HTTP layer: a JSON document, or (`stream`) events to send as they come, then close."""

    body: bytes | Iterable[bytes]
    worker_id: int
    stream: bool = False


# -- models ---------------------------------------------------------------------------------------


def list_models(gateway: Gateway) -> list[dict[str, Any]]:
    """Every model with at least one routable worker, as OpenAI model objects sorted by id."""
    now = time.time()
    routable = {
        name: pool for name, routes in gateway.routing.all_routes().items() if (pool := candidates(routes, now))
    }
    return _model_objects(gateway, routable, None)


def get_model(gateway: Gateway, name: str) -> dict[str, Any]:
    pool = candidates(gateway.routing.routes(name), time.time())
    found = _model_objects(gateway, {name: pool}, name) if pool else []
    if not found:
        raise ModelNotFound(f"model '{name}' does not exist or has no routable worker")
    return found[0]


def _model_objects(gateway: Gateway, routable: Mapping[str, Sequence[Route]], only: str | None) -> list[dict[str, Any]]:
    """OpenAI model objects for the `routable` models (the routable workers of each); `only` narrows the read."""
    if not routable:
        return []
    # The owner and registration time are not on the routes; listing models is rare enough to read them.
    owners: dict[str, str] = {}
    created: dict[str, int] = {}
    with gateway.db.read() as session:
        for worker in registry.list_workers(session, only):
            name = worker.model_name
            owners[name] = owners.get(name) or worker.owner
            registered = as_utc(worker.created_at)
            if registered is not None:
                stamp = int(registered.timestamp())
                created[name] = min(created.get(name, stamp), stamp)
    return [
        {
            "id": name,
            "object": "model",
            "created": created.get(name, 0),
            "owned_by": owners.get(name) or "operategpt",
            "model_type": routable[name][0].model_type,
        }
        for name in sorted(routable)
        if name in owners
    ]


def _check_model(gateway: Gateway, model: str, *, embedding: bool) -> None:
    """Refuse a model with no workers, or of the wrong type for the route, before anything is sent."""
    routes = gateway.routing.routes(model)
    if not routes:
        raise ModelNotFound(f"model '{model}' does not exist: no worker is registered for it")
    types = sorted({route.model_type for route in routes})
    if embedding and EMBEDDING not in types:
        raise WrongModelType(
            f"model '{model}' has model_type '{'/'.join(types)}'; /v1/embeddings serves models of type 'embedding'"
        )
    if not embedding and types == [EMBEDDING]:
        raise WrongModelType(f"model '{model}' has model_type 'embedding'; ask /v1/embeddings for it")


# -- chat -----------------------------------------------------------------------------------------


def chat(gateway: Gateway, request: ChatCompletionRequest) -> Answer:
    _check_model(gateway, request.model, embedding=False)
    call = _ChatCall(gateway, request)
    if request.stream:
        events, route = gateway.dispatch(request.model, call.open_stream)
        return Answer(events, route.id, stream=True)
    document, route = gateway.dispatch(request.model, call.complete)
    return Answer(document, route.id)


class _ChatCall:
    """One chat request, ready to run on whichever worker dispatch picks (once per attempt)."""

    def __init__(self, gateway: Gateway, request: ChatCompletionRequest):
        self.gateway = gateway
        self.model = request.model
        # The client's body as sent, extra fields included: what an openai-format worker receives.
        self.body = request.model_dump(exclude_unset=True)
        temperature = request.temperature
        self.values: dict[str, Any] = {
            "MESSAGES": self.body["messages"],
            "MODEL_NAME": request.model,
            "MODEL_TEMPERATURE": gateway.settings.default_temperature if temperature is None else temperature,
        }
        prompt = _last_user_text(request.messages)
        if prompt is not None:
            self.values["USER_PROMPT"] = prompt

    def complete(self, route: Route) -> bytes:
        if route.api_format == OPENAI:
            url, headers = _target(route, self.values)
            reply = self.gateway.upstream.send(
                route.method, url, body=self._upstream_body(route), headers=headers, timeout=route.timeout_s
            )
            return _json_document(reply, route)
        return _dumps(
            {
                **self._head("chat.completion"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self._template_text(route)},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    def open_stream(self, route: Route) -> Iterable[bytes]:
        if route.api_format != OPENAI:
            return self._one_chunk_stream(self._template_text(route))
        url, headers = _target(route, self.values)
        if not any(name.lower() == "accept" for name in headers):
            headers["Accept"] = "text/event-stream"
        stream = self.gateway.upstream.open_stream(
            route.method, url, body=self._upstream_body(route), headers=headers, timeout=route.timeout_s
        )
        if "text/event-stream" in stream.content_type.lower():
            return _open_relay(self.gateway, route, stream)
        # Some OpenAI-compatible servers ignore `stream`: their whole answer becomes a one-chunk stream.
        try:
            text = route.call.extract(stream.read().decode("utf-8", errors="replace"))
        finally:
            stream.close()
        return self._one_chunk_stream(text)

    def _upstream_body(self, route: Route) -> dict[str, Any]:
        return {**self.body, "model": route.upstream_model}

    def _template_text(self, route: Route) -> str:
        if "USER_PROMPT" not in self.values and "USER_PROMPT" in route.call.names:
            raise BadRequest(
                f"the worker of model '{self.model}' fills {{USER_PROMPT}} with the last message whose role is "
                "'user', and messages has none"
            )
        return _template_text(self.gateway, route, self.values)

    def _head(self, kind: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": kind,
            "created": int(time.time()),
            "model": self.model,
        }

    def _one_chunk_stream(self, text: str) -> list[bytes]:
        head = self._head("chat.completion.chunk")
        return [
            event(
                {
                    **head,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}],
                }
            ),
            event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            DONE,
        ]


def _last_user_text(messages: Sequence[Message]) -> str | None:
    """The content of the last user message as text (a list of parts: its text parts, one per line)."""
    for message in reversed(messages):
        if message.role == "user":
            content = message.content
            if content is None or isinstance(content, str):
                return content or ""
            return "\n".join(
                part["text"] for part in content if part["type"] == "text" and isinstance(part.get("text"), str)
            )
    return None


# -- streaming ------------------------------------------------------------------------------------


def _open_relay(gateway: Gateway, route: Route, stream: UpstreamStream) -> _Relay:
    """Read up to the first complete event (still inside dispatch, so a failure here fails over), then relay."""
    resources = ExitStack()
    resources.callback(stream.close)
    try:
        chunks = iter(stream)
        splitter = EventSplitter(gateway.upstream.max_bytes)
        head = b""
        for chunk in chunks:
            head = splitter.feed(chunk)
            if head:
                break
        else:
            raise UpstreamError(f"worker at {stream.where} ended its stream before the first event", retryable=True)
        # dispatch counts the request in flight only while opening; the relay keeps counting until it closes.
        resources.enter_context(gateway.inflight.track(route.id))
    except BaseException:
        resources.close()
        raise
    return _Relay(route.id, head, chunks, splitter, resources)


class _Relay:
    """An upstream event stream passed on as it arrives; close() closes the upstream request and the count.

    The WSGI server calls close() when the reply is done or when the client has gone (its next write fails),
    so a client hanging up closes the request to the worker. Only whole events are passed on (`EventSplitter`),
    so a failure after the first byte — too late to fail over — can still end the stream with a well-formed
    error event rather than a silent truncation; the openai SDK raises APIError on it.
    """

    def __init__(
        self, worker_id: int, head: bytes, chunks: Iterator[bytes], splitter: EventSplitter, resources: ExitStack
    ):
        self._worker_id = worker_id
        self._head = head
        self._chunks = chunks
        self._splitter = splitter
        self._resources = resources

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield self._head
            for chunk in self._chunks:
                events = self._splitter.feed(chunk)
                if events:
                    yield events
            rest = self._splitter.rest()
            if rest:
                yield rest
        except UpstreamError as exc:
            log.warning("worker %d failed mid-stream: %s", self._worker_id, exc.message)
            yield event(error_of(exc))
        finally:
            self.close()

    def close(self) -> None:
        self._resources.close()


# -- embeddings -----------------------------------------------------------------------------------


def embeddings(gateway: Gateway, request: EmbeddingRequest) -> Answer:
    _check_model(gateway, request.model, embedding=True)
    body = request.model_dump(exclude_unset=True)
    values: dict[str, Any] = {
        "MODEL_NAME": request.model,
        "MODEL_TEMPERATURE": gateway.settings.default_temperature,
    }
    if isinstance(request.input, str):
        values["USER_PROMPT"] = request.input

    def embed(route: Route) -> bytes:
        if route.api_format == OPENAI:
            url, headers = _target(route, values)
            reply = gateway.upstream.send(
                route.method,
                url,
                body={**body, "model": route.upstream_model},
                headers=headers,
                timeout=route.timeout_s,
            )
            return _json_document(reply, route)
        return _template_embeddings(gateway, route, request, values)

    document, route = gateway.dispatch(request.model, embed)
    return Answer(document, route.id)


def _template_embeddings(gateway: Gateway, route: Route, request: EmbeddingRequest, values: dict[str, Any]) -> bytes:
    """One call per input text (a template takes one {USER_PROMPT}), wrapped into an OpenAI embedding list."""
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not all(isinstance(text, str) for text in texts):
        raise BadRequest(
            f"the worker of model '{request.model}' takes text; token-array input needs an openai-format worker"
        )
    data = []
    for index, text in enumerate(texts):
        vector = _vector(route, _template_text(gateway, route, {**values, "USER_PROMPT": text}))
        data.append({"object": "embedding", "index": index, "embedding": _encode(vector, request.encoding_format)})
    # A template worker reports no token counts; the field is required by OpenAI's schema, so it says 0.
    return _dumps(
        {"object": "list", "data": data, "model": request.model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}
    )


def _vector(route: Route, text: str) -> list[float]:
    try:
        vector = json.loads(text)
    except ValueError:
        vector = None
    if not (isinstance(vector, list) and vector and all(type(x) in (int, float) for x in vector)):
        raise UpstreamError(
            f"worker {route.id} answered no embedding: response_extract '{route.call.extract.path}' "
            "did not give an array of numbers"
        )
    return vector


def _encode(vector: list[float], encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        # As OpenAI encodes it: little-endian float32, base64.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


# -- calls ----------------------------------------------------------------------------------------


def _target(route: Route, values: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The rendered URL and headers of a call to `route`; a placeholder with no value is a 400."""
    call = route.call
    if not call.names <= values.keys():
        raise MissingValueError(call.names - values.keys())
    return call.url.render(values), {name: template.render(values) for name, template in call.headers}


def _template_text(gateway: Gateway, route: Route, values: Mapping[str, Any]) -> str:
    """Call a template worker with its templates filled from `values`; the answer its extract path points at."""
    url, headers = _target(route, values)
    body = None if route.call.body is None else route.call.body.render(values)
    reply = gateway.upstream.send(route.method, url, body=body, headers=headers, timeout=route.timeout_s)
    return route.call.extract(reply.text())


def _json_document(reply: Reply, route: Route) -> bytes:
    """An openai-format worker's reply, passed on unchanged once it is known to be JSON."""
    if "json" not in reply.content_type.lower():
        raise UpstreamError(f"worker {route.id} answered with Content-Type '{reply.content_type}', not JSON")
    return reply.body


def _dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
