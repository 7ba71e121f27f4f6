"""The `proxyllm` backend: forwards chat requests to an OpenAI-compatible `/chat/completions` API.

Calls go through the manager's HTTP client (`operategpt.http.client`): it caps replies, and names what
went wrong with a transport (`ConnectFailed`, `UpstreamTimeout`, `StreamBroken`, ...). What a non-2xx
status means is this backend's policy: a rejected key (401/403) is our configuration, so a 502 naming
the status; 429 stays a 429 (`UpstreamRateLimited`: callers back off and the manager's passive health
counts it); 400/422 is the request's fault, so 400; the rest is a 502. A reply of 200 that carries no
answer is a 502 too, never a success holding an error body. The API key never appears in a message.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from operategpt.errors import BadReply, BadRequest, GatewayError, UpstreamError, UpstreamStatus
from operategpt.http.client import UpstreamClient, UpstreamStream
from operategpt.http.sse import EventTooLarge, event_data
from operategpt.llmserver.backends.base import (
    ChatRequest,
    Completion,
    Delta,
    TextStream,
    UpstreamRateLimited,
    Usage,
)
from operategpt.llmserver.config import ServerSettings

logger = logging.getLogger(__name__)

MAX_REPLY_BYTES = 16 * 1024 * 1024
EXCERPT_CHARS = 300
CONNECT_TIMEOUT = 10.0
# The first `"message": "..."` of an error body, found even when the excerpt cuts the JSON short.
_MESSAGE = re.compile(r'"message"\s*:\s*("(?:[^"\\]|\\.)*")')
# The client names the far end of a call "worker" (the manager's word); for this server it is the upstream.
_WORKER = re.compile(r"\bworker(?: at)?\b")


def chat_completions_url(base: str) -> str:
    """`OPEN_AI_PROXY_SERVER_URL` may be the full endpoint (the seed's form) or the API root (`…/v1`)."""
    base = base.rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


class ProxyBackend:
    """Calls one upstream model with one key, over keep-alive connections pooled to the server's threads."""

    def __init__(self, url: str, api_key: str, model: str, timeout: float, *, pool_size: int = 16):
        self.name = "proxyllm"
        self.url = chat_completions_url(url)
        # Messages name only scheme://host:port: a path or query may carry a key.
        parts = urlsplit(self.url)
        self._where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self.model = model
        self._api_key = api_key
        # Calls go exactly to OPEN_AI_PROXY_SERVER_URL: the client reads no proxy variables and no .netrc.
        self._client = UpstreamClient(
            pool_size=pool_size,
            connect_timeout=min(CONNECT_TIMEOUT, timeout),
            read_timeout=timeout,
            max_bytes=MAX_REPLY_BYTES,
        )

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ProxyBackend:
        return cls(
            settings.proxy_url,
            settings.proxy_api_key,
            settings.proxy_model,
            settings.proxy_timeout,
            pool_size=settings.server_threads,
        )

    def stats(self) -> dict[str, object]:
        return {"backend": self.name, "upstream_model": self.model}

    def generate(self, request: ChatRequest) -> Completion:
        started = time.monotonic()
        try:
            reply = self._client.send("POST", self.url, body=self._payload(request, False),
                                      headers=self._headers("application/json"))
        except UpstreamError as exc:
            raise self._failure(exc) from None
        logger.debug("upstream answered %s in %.2fs", reply.status, time.monotonic() - started)
        return _completion_from_reply(self._json(reply.body))

    def stream(self, request: ChatRequest) -> TextStream:
        try:
            response = self._client.open_stream("POST", self.url, body=self._payload(request, True),
                                                headers=self._headers("text/event-stream"))
        except UpstreamError as exc:
            raise self._failure(exc) from None
        if "text/event-stream" not in response.content_type:
            # Some OpenAI-compatible servers ignore `stream`; their whole answer is one delta.
            try:
                body = response.read()
            except UpstreamError as exc:
                raise self._failure(exc) from None
            finally:
                response.close()
            completion = _completion_from_reply(self._json(body))
            return TextStream(iter([Delta(completion.text), Delta(finish_reason=completion.finish_reason)]))
        return TextStream(self._deltas(response), on_close=response.close)

    def _headers(self, accept: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": accept}

    def _payload(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": stream,
        }
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if request.stop:
            payload["stop"] = request.stop
        if request.seed is not None:
            payload["seed"] = request.seed
        return payload

    def _failure(self, exc: UpstreamError) -> GatewayError:
        """What a failed call means here: a status by this backend's policy, anything else as the client named it."""
        if isinstance(exc, UpstreamStatus):
            return self._status_error(exc)
        return _reworded(exc)

    def _status_error(self, exc: UpstreamStatus) -> GatewayError:
        status = exc.status
        where = self._where
        # The client's message ends with an excerpt of the reply, secrets it sent already masked.
        excerpt = self._excerpt(exc.message.partition(f" answered HTTP {status}: ")[2])
        detail = f" {excerpt}" if excerpt else ""
        if status in (401, 403):
            return UpstreamError(f"upstream rejected OPEN_AI_KEY (HTTP {status}); check the key for {where}:{detail}")
        if status == 429:
            return UpstreamRateLimited(f"upstream rate limit (HTTP 429):{detail}", retry_after=exc.retry_after)
        if status in (400, 422):
            return BadRequest(f"upstream rejected the request (HTTP {status}):{detail}")
        if 300 <= status < 400:
            return UpstreamError(
                f"upstream redirected (HTTP {status}); redirects are not followed: check OPEN_AI_PROXY_SERVER_URL"
            )
        if status == 404:
            return UpstreamError(
                f"upstream HTTP 404 (check OPEN_AI_PROXY_SERVER_URL and PROXYLLM_BACKEND={self.model!r}):{detail}"
            )
        return UpstreamError(f"upstream HTTP {status}:{detail}")

    def _excerpt(self, text: str) -> str:
        """The upstream's own message when the text is an OpenAI error object, else the text; never the key."""
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            found = _MESSAGE.search(text)
            message = _json_string(found.group(1)) if found else None
        if isinstance(message, str):
            text = message
        return self._redacted(re.sub(r"\s+", " ", text).strip())[:EXCERPT_CHARS]

    def _redacted(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            reply = json.loads(raw)
        except ValueError:
            excerpt = self._redacted(re.sub(r"\s+", " ", raw[: EXCERPT_CHARS * 4].decode("utf-8", "replace")))
            raise BadReply(f"upstream reply is not JSON: {excerpt[:EXCERPT_CHARS]!r}") from None
        if not isinstance(reply, dict):
            raise BadReply("upstream reply is not a JSON object")
        return reply

    def _deltas(self, response: UpstreamStream) -> Iterator[Delta]:
        finished = False
        try:
            for data in event_data(self._chunks(response), MAX_REPLY_BYTES):
                if data == "[DONE]":
                    break
                chunk = self._json(data.encode("utf-8"))
                if "error" in chunk:
                    raise UpstreamError(f"upstream failed mid-stream: {self._excerpt(data)}")
                for choice in chunk.get("choices") or []:
                    delta = (choice or {}).get("delta") or {}
                    text = delta.get("content") or ""
                    reason = choice.get("finish_reason")
                    if text or reason:
                        finished = finished or bool(reason)
                        yield Delta(text, reason)
        except EventTooLarge as exc:
            raise _reworded(exc) from None
        finally:
            response.close()
        if not finished:
            yield Delta(finish_reason="stop")

    def _chunks(self, response: UpstreamStream) -> Iterator[bytes]:
        try:
            yield from response
        except UpstreamError as exc:
            raise self._failure(exc) from None


def _reworded(exc: UpstreamError) -> UpstreamError:
    """The client's failure, same class and attributes, naming the upstream where it says "worker"."""
    exc.message = _WORKER.sub("upstream", exc.message, count=1)
    exc.args = (exc.message,)
    return exc


def _json_string(literal: str) -> str | None:
    try:
        value = json.loads(literal)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _completion_from_reply(reply: dict[str, Any]) -> Completion:
    try:
        choice = reply["choices"][0]
        message = choice["message"]
        content = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise BadReply("upstream reply has no choices[0].message") from None
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise BadReply("upstream reply's choices[0].message.content is not a string")
    usage = reply.get("usage")
    counts = (usage.get("prompt_tokens"), usage.get("completion_tokens")) if isinstance(usage, dict) else ()
    return Completion(
        text=content,
        finish_reason=choice.get("finish_reason") or "stop",
        usage=Usage(*counts) if counts and all(isinstance(n, int) for n in counts) else None,
    )
