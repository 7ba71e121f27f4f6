"""The `proxyllm` backend: forwards chat requests to an OpenAI-compatible `/chat/completions` API.

Upstream failures become `APIError`s with a status that says whose problem it is: a rejected key
(401/403) is our configuration, so 502 naming the status; 429 stays 429 (callers back off and the
manager's passive health counts it); 400/422 is the request's fault, so 400; the rest is 502.
A reply of 200 that carries no answer is a 502 too — never a success holding an error body.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError, ReadTimeoutError

from operategpt.errors import BadRequest, ConnectFailed, GatewayError, UpstreamError, UpstreamTimeout
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
_READ_SIZE = 64 * 1024


def chat_completions_url(base: str) -> str:
    """`OPEN_AI_PROXY_SERVER_URL` may be the full endpoint (the seed's form) or the API root (`…/v1`)."""
    base = base.rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


class ProxyBackend:
    """Calls one upstream model with one key; a `requests.Session` pooled to the server's threads."""

    def __init__(
        self,
        url: str,
        api_key: str,
        model: str,
        timeout: float,
        *,
        pool_size: int = 16,
        session: requests.Session | None = None,
    ):
        self.name = "proxyllm"
        self.url = chat_completions_url(url)
        # Messages name only scheme://host:port: a path or query may carry a key.
        self._where = _origin(self.url)
        self.model = model
        self._api_key = api_key
        self._timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        self._session = session or requests.Session()
        # Calls go exactly to OPEN_AI_PROXY_SERVER_URL; .netrc must not replace our Authorization.
        self._session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

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
        response = self._post(request, stream=False)
        try:
            reply = _json_reply(self._read_capped(response))
        finally:
            response.close()
        return _completion_from_reply(reply)

    def stream(self, request: ChatRequest) -> TextStream:
        response = self._post(request, stream=True)
        content_type = response.headers.get("Content-Type", "")
        if "text/event-stream" not in content_type:
            # Some OpenAI-compatible servers ignore `stream`; their whole answer is one delta.
            try:
                completion = _completion_from_reply(_json_reply(self._read_capped(response)))
            finally:
                response.close()
            return TextStream(iter([Delta(completion.text), Delta(finish_reason=completion.finish_reason)]))
        return TextStream(self._deltas(response), on_close=response.close)

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

    def _post(self, request: ChatRequest, stream: bool) -> requests.Response:
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if stream:
            headers["Accept"] = "text/event-stream"
        started = time.monotonic()
        try:
            response = self._session.post(
                self.url,
                json=self._payload(request, stream),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            raise UpstreamTimeout(f"upstream {self._where} did not answer within {self._timeout[1]:g} s",
                                  sent=True) from None
        except requests.RequestException as exc:
            raise ConnectFailed(f"cannot reach upstream {self._where}: {type(exc).__name__}") from None
        logger.debug("upstream %s answered %s in %.2fs", self._where, response.status_code, time.monotonic() - started)
        if not 200 <= response.status_code < 300:
            try:
                raise self._status_error(response)
            finally:
                response.close()
        return response

    def _status_error(self, response: requests.Response) -> GatewayError:
        status = response.status_code
        try:
            excerpt = self._excerpt(self._read_capped(response, EXCERPT_CHARS * 20))
        except GatewayError:
            excerpt = ""
        detail = f" {excerpt}" if excerpt else ""
        if status in (401, 403):
            return UpstreamError(
                f"upstream rejected OPEN_AI_KEY (HTTP {status}); check the key for {self._where}:{detail}"
            )
        if status == 429:
            retry_after = response.headers.get("Retry-After", "")
            return UpstreamRateLimited(f"upstream rate limit (HTTP 429):{detail}",
                                       retry_after=float(retry_after) if retry_after.isdigit() else None)
        if status in (400, 422):
            return BadRequest(f"upstream rejected the request (HTTP {status}):{detail}")
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            return UpstreamError(f"upstream redirected (HTTP {status} to {location!r}); redirects are not followed")
        if status == 404:
            return UpstreamError(
                f"upstream HTTP 404 (check OPEN_AI_PROXY_SERVER_URL and PROXYLLM_BACKEND={self.model!r}):{detail}"
            )
        return UpstreamError(f"upstream HTTP {status}:{detail}")

    def _excerpt(self, raw: bytes) -> str:
        text = raw.decode("utf-8", "replace")
        try:
            message = json.loads(text)["error"]["message"]
            if isinstance(message, str):
                text = message
        except (ValueError, KeyError, TypeError):
            pass
        text = re.sub(r"\s+", " ", text).strip()
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:EXCERPT_CHARS]

    def _read_capped(self, response: requests.Response, limit: int = MAX_REPLY_BYTES) -> bytes:
        data = bytearray()
        try:
            for chunk in response.iter_content(_READ_SIZE):
                data += chunk
                if len(data) > limit:
                    if limit < MAX_REPLY_BYTES:
                        return bytes(data[:limit])
                    raise UpstreamError(f"upstream reply is larger than {MAX_REPLY_BYTES} bytes")
        except requests.Timeout:
            raise UpstreamTimeout(f"upstream {self._where} stopped answering for {self._timeout[1]:g} s",
                                  sent=True) from None
        except requests.RequestException as exc:
            raise UpstreamError(f"upstream {self._where} broke off its reply: {type(exc).__name__}") from None
        return bytes(data)

    def _deltas(self, response: requests.Response) -> Iterator[Delta]:
        finished = False
        try:
            for data in _sse_data(response.raw):
                if data == "[DONE]":
                    break
                chunk = _json_reply(data.encode("utf-8"))
                if "error" in chunk:
                    raise UpstreamError(f"upstream failed mid-stream: {self._excerpt(data.encode('utf-8'))}")
                for choice in chunk.get("choices") or []:
                    delta = (choice or {}).get("delta") or {}
                    text = delta.get("content") or ""
                    reason = choice.get("finish_reason")
                    if text or reason:
                        finished = finished or bool(reason)
                        yield Delta(text, reason)
        except (requests.Timeout, ReadTimeoutError):
            raise UpstreamTimeout(f"upstream {self._where} stopped streaming for {self._timeout[1]:g} s",
                                  sent=True) from None
        except (requests.RequestException, HTTPError, OSError) as exc:
            raise UpstreamError(f"upstream {self._where} broke off its stream: {type(exc).__name__}") from None
        finally:
            response.close()
        if not finished:
            yield Delta(finish_reason="stop")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _sse_data(raw: Any) -> Iterator[str]:
    """The `data` of each Server-Sent Event, as soon as its blank line arrives."""
    buffer = b""
    data_lines: list[str] = []
    while True:
        chunk = raw.read1(_READ_SIZE)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > MAX_REPLY_BYTES:
            raise UpstreamError(f"upstream stream event is larger than {MAX_REPLY_BYTES} bytes")
        while True:
            line, sep, rest = buffer.partition(b"\n")
            if not sep:
                break
            buffer = rest
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            if text == "":
                if data_lines:
                    yield "\n".join(data_lines)
                    data_lines = []
            elif text.startswith("data:"):
                data_lines.append(text[5:].removeprefix(" "))
    if data_lines:
        yield "\n".join(data_lines)


def _json_reply(raw: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(raw)
    except ValueError:
        excerpt = re.sub(r"\s+", " ", raw[:EXCERPT_CHARS].decode("utf-8", "replace"))
        raise UpstreamError(f"upstream reply is not JSON: {excerpt!r}") from None
    if not isinstance(reply, dict):
        raise UpstreamError("upstream reply is not a JSON object")
    return reply


def _completion_from_reply(reply: dict[str, Any]) -> Completion:
    try:
        choice = reply["choices"][0]
        message = choice["message"]
        content = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamError("upstream reply has no choices[0].message") from None
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise UpstreamError("upstream reply's choices[0].message.content is not a string")
    usage = reply.get("usage")
    counts = (usage.get("prompt_tokens"), usage.get("completion_tokens")) if isinstance(usage, dict) else ()
    return Completion(
        text=content,
        finish_reason=choice.get("finish_reason") or "stop",
        usage=Usage(*counts) if counts and all(isinstance(n, int) for n in counts) else None,
    )
