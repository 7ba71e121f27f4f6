"""The backend interface every model implementation follows, and the values passed across it.

A backend turns a validated `ChatRequest` into a `Completion` (`generate`) or into a `TextStream` of
`Delta`s (`stream`). Both raise `operategpt.errors` failures before any text is produced, so the HTTP layer
can still answer with the right status; `stream` does its admission and upstream call eagerly for that reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from operategpt.errors import Overloaded


class ModelBusy(Overloaded):
    """The local model's queue is full (or the wait for it ran out): try again later (`retry_after`)."""


class UpstreamRateLimited(Overloaded):
    """The upstream API answered 429; an `Overloaded`, so callers get a 429 (with the upstream's Retry-After)
    and back off, and the manager's passive health counts it."""


@dataclass(frozen=True)
class ChatRequest:
    """One generation request, already validated."""

    messages: list[dict[str, str]]
    temperature: float
    max_tokens: int
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str = "stop"
    usage: Usage | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer; the last one carries the finish reason."""

    text: str = ""
    finish_reason: str | None = None


class TextStream:
    """An iterator with a `close()` that always runs its cleanup exactly once.

    A plain generator's `finally` does not run when it is closed before its first item (a client
    that hangs up early), so the resources a stream holds are released by `close()` as well as by
    reaching the end. WSGI servers call `close()` on the response body, which reaches this one.
    """

    def __init__(self, items: Iterator[Delta], on_close: Callable[[], None] | None = None):
        self._items = items
        self._on_close = on_close
        self._closed = False
        self._lock = threading.Lock()

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> Delta:
        try:
            return next(self._items)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            close_items = getattr(self._items, "close", None)
            if close_items is not None:
                close_items()
        finally:
            if self._on_close is not None:
                self._on_close()


class Backend(Protocol):
    """What the HTTP layer needs from a model."""

    name: str

    def generate(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> TextStream: ...

    def stats(self) -> dict[str, object]: ...
