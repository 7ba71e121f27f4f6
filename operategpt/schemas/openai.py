"""Request schemas for the OpenAI-compatible routes (`/v1/...`).

Same conventions as `schemas`: strict pydantic models (no coercion: "1" is not a number, 1 is not a
boolean) validated from the raw body, errors described by `schemas.describe`. One difference: fields
this gateway does not interpret (`max_tokens`, `tools`, `response_format`, a message's `name`, ...)
are kept rather than refused, because an `openai`-format worker receives the client's request as is.
Only the fields the gateway itself reads are checked here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

from operategpt.schemas.seed import ModelName, Schema

# OpenAI's own limit; a template worker is called once per input, so it also bounds that fan-out.
MAX_EMBEDDING_INPUTS = 2048


class PassThrough(Schema):
    """A strict schema that keeps unknown fields for the worker."""

    model_config = ConfigDict(extra="allow")


def _content(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, dict) and isinstance(part.get("type"), str) for part in value):
        return value
    raise ValueError("must be a string, null or an array of content parts (objects with a string 'type')")


def _embedding_input(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if len(value) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"takes at most {MAX_EMBEDDING_INPUTS} inputs, got {len(value)}")
        if all(isinstance(item, str) for item in value) or _tokens(value):
            return value
        if all(isinstance(item, list) and item and _tokens(item) for item in value):
            return value
    raise ValueError("must be a string, a non-empty array of strings, or token arrays (arrays of integers)")


def _tokens(value: list[Any]) -> bool:
    return all(type(item) is int for item in value)


class Message(PassThrough):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[Any, AfterValidator(_content)] = None


class ChatCompletionRequest(PassThrough):
    model: ModelName
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None


class EmbeddingRequest(PassThrough):
    model: ModelName
    input: Annotated[Any, AfterValidator(_embedding_input)]
    encoding_format: Literal["float", "base64"] | None = None
