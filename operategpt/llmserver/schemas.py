"""Validation of request bodies into `ChatRequest`s; every problem is a `BadRequest` naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operategpt.errors import BadRequest
from operategpt.llmserver.backends.base import ChatRequest
from operategpt.llmserver.config import ServerSettings

# `model_name` is ignored but accepted: the seed's registration example sends it in the body.
GENERATE_FIELDS = {"input", "temperature", "max_tokens", "model_name"}
CHAT_FIELDS = {
    "model",
    "messages",
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "user",
}
ROLES = {"system", "user", "assistant"}
MAX_STOP_SEQUENCES = 4


def parse_generate(body: Any, settings: ServerSettings) -> ChatRequest:
    """`{"input", "temperature"?, "max_tokens"?}` as a one-message chat."""
    body = _object(body)
    _no_unknown(body, GENERATE_FIELDS)
    prompt = body.get("input")
    if not isinstance(prompt, str):
        raise BadRequest("'input' is required and must be a string")
    if prompt == "":
        raise BadRequest("'input' must not be empty")
    _optional(body, "model_name", str, "a string")
    return ChatRequest(
        messages=[{"role": "user", "content": prompt}],
        temperature=_temperature(body, settings),
        max_tokens=_max_tokens(body, "max_tokens", settings),
    )


def parse_chat(body: Any, settings: ServerSettings) -> tuple[ChatRequest, bool]:
    """An OpenAI chat completion request; returns the request and whether to stream."""
    body = _object(body)
    _no_unknown(body, CHAT_FIELDS)
    _optional(body, "model", str, "a string")
    _optional(body, "user", str, "a string")
    _optional(body, "stream_options", dict, "an object")
    stream = _optional(body, "stream", bool, "true or false") or False
    n = _optional(body, "n", int, "an integer")
    if n is not None and n != 1:
        raise BadRequest("'n' must be 1: one choice per request is supported")
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        raise BadRequest("give 'max_tokens' or 'max_completion_tokens', not both")
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    top_p = _optional(body, "top_p", (int, float), "a number")
    if top_p is not None and not 0 < top_p <= 1:
        raise BadRequest("'top_p' must be greater than 0 and at most 1")
    seed = _optional(body, "seed", int, "an integer")
    if seed is not None and seed < 0:
        raise BadRequest("'seed' must be at least 0")
    request = ChatRequest(
        messages=_messages(body.get("messages")),
        temperature=_temperature(body, settings),
        max_tokens=_max_tokens(body, field, settings),
        top_p=float(top_p) if top_p is not None else None,
        stop=_stop(body.get("stop")),
        seed=seed,
    )
    return request, stream


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _no_unknown(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _optional(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], described: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int subclass; true is not a temperature.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadRequest(f"'{name}' must be {described}")
    if not isinstance(value, kind):
        raise BadRequest(f"'{name}' must be {described}")
    return value


def _temperature(body: Mapping[str, Any], settings: ServerSettings) -> float:
    value = _optional(body, "temperature", (int, float), "a number")
    if value is None:
        return settings.default_temperature
    if not 0 <= value <= 2:
        raise BadRequest("'temperature' must be between 0 and 2")
    return float(value)


def _max_tokens(body: Mapping[str, Any], name: str, settings: ServerSettings) -> int:
    value = _optional(body, name, int, "an integer")
    if value is None:
        return settings.max_tokens
    if value < 1:
        raise BadRequest(f"'{name}' must be at least 1")
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRequest("'messages' is required and must be a non-empty array")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise BadRequest(f"'{where}' must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}")
        messages.append({"role": role, "content": _content(message.get("content"), where)})
    return messages


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"'{where}.content' parts must be text parts; only text is supported")
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"'{where}.content' must be a string or an array of text parts")


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest("'stop' must be a non-empty string or an array of them")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise BadRequest(f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences")
    return stops
