"""The local backend: one GGUF model run in this process by llama-cpp-python (the `local` extra).

The model is loaded once per process and used by one request at a time (llama.cpp contexts are not
thread-safe). Requests beyond the one running wait in a bounded queue: `LLM_QUEUE_SIZE` may wait,
each at most `LLM_QUEUE_TIMEOUT` seconds; anything more is refused at once with 429.
The chat template is the one stored in the GGUF. Each request starts from a fresh context, so at
temperature 0 (greedy) the same request gives the same answer whatever was asked before it. Above 0
the sampling seed is the request's `seed`, else `LLM_SEED`, else a new random one per request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from operategpt.errors import BadRequest
from operategpt.llmserver.backends.base import ChatRequest, Completion, Delta, ModelBusy, TextStream, Usage
from operategpt.llmserver.config import ServerSettings
from operategpt.settings import ConfigError

logger = logging.getLogger(__name__)


def load_llama(settings: ServerSettings) -> Any:
    """Load the GGUF at `settings.model_path`; a missing llama-cpp-python is a start-up error."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ConfigError(
            "the local backend needs llama-cpp-python: pip install 'operategpt[local]' (or set LLM_NAME=proxyllm)"
        ) from None
    started = time.monotonic()
    llama = Llama(
        model_path=settings.model_path,
        n_ctx=settings.context_length,
        n_threads=settings.n_threads,
        n_threads_batch=settings.n_threads,
        verbose=False,
    )
    logger.info(
        "loaded %s in %.1fs (context %d tokens, %d threads, chat format %s)",
        settings.model_path,
        time.monotonic() - started,
        settings.context_length,
        settings.n_threads,
        llama.chat_format,
    )
    return llama


class LocalBackend:
    """Serialises access to one loaded `Llama` and bounds how many requests may wait for it."""

    def __init__(self, llama: Any, *, model_file: str, queue_size: int, queue_timeout: float, seed: int):
        self.name = "local"
        self._llama = llama
        self._model_file = model_file
        self._queue_size = queue_size
        self._queue_timeout = queue_timeout
        self._seed = seed
        # One slot for the running request plus the waiting room.
        self._slots = threading.BoundedSemaphore(1 + queue_size)
        self._model_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._admitted = 0

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> LocalBackend:
        return cls(
            load_llama(settings),
            model_file=Path(settings.model_path).name,
            queue_size=settings.queue_size,
            queue_timeout=settings.queue_timeout,
            seed=settings.seed,
        )

    def stats(self) -> dict[str, object]:
        with self._count_lock:
            admitted = self._admitted
        return {
            "backend": self.name,
            "model_file": self._model_file,
            "in_flight": admitted,
            "queue_size": self._queue_size,
        }

    def generate(self, request: ChatRequest) -> Completion:
        release = self._admit()
        try:
            reply = self._call(request, stream=False)
        finally:
            release()
        choice = reply["choices"][0]
        usage = reply.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
        )

    def stream(self, request: ChatRequest) -> TextStream:
        release = self._admit()
        try:
            chunks = self._call(request, stream=True)
            # The first chunk comes after the prompt is evaluated: a prompt too long for the context
            # fails here, while a 400 can still be sent.
            first = next(chunks, None)
        except ValueError as exc:
            release()
            raise BadRequest(str(exc)) from None
        except BaseException:
            release()
            raise
        return TextStream(self._deltas(first, chunks), on_close=release)

    def _admit(self) -> Callable[[], None]:
        """Take a queue slot and then the model; the returned function gives both back, once."""
        if not self._slots.acquire(blocking=False):
            raise ModelBusy(
                f"the model is busy: 1 request running and {self._queue_size} waiting (LLM_QUEUE_SIZE); retry later",
                retry_after=1,
            )
        with self._count_lock:
            self._admitted += 1
        if not self._model_lock.acquire(timeout=self._queue_timeout):
            self._leave()
            raise ModelBusy(
                f"waited {self._queue_timeout:g} s for the model without getting it (LLM_QUEUE_TIMEOUT); retry later",
                retry_after=1,
            )
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            self._model_lock.release()
            self._leave()

        return release

    def _leave(self) -> None:
        with self._count_lock:
            self._admitted -= 1
        self._slots.release()

    def _call(self, request: ChatRequest, stream: bool) -> Any:
        kwargs: dict[str, Any] = {
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": self._seed_for(request),
            "stream": stream,
        }
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.stop:
            kwargs["stop"] = request.stop
        # Forget the previous request's cached prompt: reusing a cached prefix evaluates the rest in a
        # different batch, which changes the logits slightly, so temperature 0 would not repeat itself.
        self._llama.reset()
        try:
            return self._llama.create_chat_completion(**kwargs)
        except ValueError as exc:
            # llama-cpp-python raises ValueError for requests it cannot run, e.g. a prompt longer
            # than the context window; its message is plain and safe to show.
            raise BadRequest(str(exc)) from None

    def _seed_for(self, request: ChatRequest) -> int:
        if request.seed is not None:
            return request.seed
        if self._seed >= 0:
            return self._seed
        return random.randrange(2**31)

    def _deltas(self, first: dict[str, Any] | None, chunks: Iterator[dict[str, Any]]) -> Iterator[Delta]:
        pending = [first] if first is not None else []
        for chunk in _chain(pending, chunks):
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                reason = choice.get("finish_reason")
                if text or reason:
                    yield Delta(text, reason)


def _chain(head: list[dict[str, Any]], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from head
    try:
        yield from rest
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
