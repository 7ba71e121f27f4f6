"""What each operation asks of a worker, independent of the worker's format: the prompt or the client's
OpenAI body, and the placeholder values a template worker is filled from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Prompt:
    """A seed completion: one prompt."""

    text: str
    temperature: float | None  # as the client gave it (None: the worker's own default)
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatInput:
    """An OpenAI chat completion: the client's body as sent (unknown fields included)."""

    model: str
    body: Mapping[str, Any]
    values: Mapping[str, Any]  # USER_PROMPT is the last user message's text, absent when there is none


@dataclass(frozen=True, slots=True)
class EmbeddingInput:
    model: str
    body: Mapping[str, Any]
    values: Mapping[str, Any]
    encoding_format: str | None
