"""Calls to workers: one pooled HTTP session per process, capped or streamed replies, classified failures."""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from operategpt.core.allowlist import HostAllowlist
from operategpt.core.errors import UpstreamError, UpstreamTimeout
from operategpt.core.redact import MASK, secret_values

EXCERPT_CHARS = 200
_CHUNK = 64 * 1024


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class UpstreamClient:
    """Sends one request to a worker and returns its reply, or raises a classified UpstreamError.

    Failures that another worker might not have (connection refused, timeouts, 5xx, 408, 429)
    are marked retryable; the caller decides whether to fail over.
    """

    def __init__(
        self,
        *,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        max_bytes: int,
        allowlist: HostAllowlist | None = None,
    ):
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_bytes = max_bytes
        self.session = requests.Session()
        # Proxy variables and .netrc are not consulted: a gateway's upstream calls must go exactly
        # where the registry says, and looking them up on every request is slow.
        self.session.trust_env = False
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        if allowlist:
            adapter.poolmanager.pool_classes_by_scheme = _guarded_pools(allowlist)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def send(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        where = _where(url)
        limit = timeout or self.read_timeout
        with _classified(where, limit):
            response = self._request(method, url, body, headers, limit)
            with response:
                payload = _read_capped(response, where, self.max_bytes)
        if not 200 <= response.status_code < 300:
            raise _status_error(where, response.status_code, payload, headers)
        return Reply(response.status_code, payload, response.headers.get("Content-Type", ""))

    def open_stream(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> UpstreamStream:
        """Send a request and return as soon as the reply's status and headers are in, its body unread.

        Everything up to that point fails as `send` fails, a non-2xx status included, so the caller can
        still fail over. The body is then read as it arrives; the read timeout applies between chunks.
        """
        where = _where(url)
        limit = timeout or self.read_timeout
        with _classified(where, limit):
            response = self._request(method, url, body, headers, limit)
        if not 200 <= response.status_code < 300:
            with response:
                try:
                    with _classified(where, limit):
                        # Only what the error message shows: an error page may be large, or never end.
                        excerpt = response.raw.read(EXCERPT_CHARS * 4, decode_content=True)
                except UpstreamError:
                    excerpt = b""
            raise _status_error(where, response.status_code, excerpt, headers)
        return UpstreamStream(response, where, limit, self.max_bytes)

    def _request(
        self, method: str, url: str, body: Any, headers: Mapping[str, str] | None, limit: float
    ) -> requests.Response:
        send_headers = dict(headers or {})
        data = None
        if body is not None and method != "GET":
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            if not any(name.lower() == "content-type" for name in send_headers):
                send_headers["Content-Type"] = "application/json"
        return self.session.request(
            method,
            url,
            data=data,
            headers=send_headers,
            timeout=(self.connect_timeout, limit),
            allow_redirects=False,
            stream=True,
        )

    def close(self) -> None:
        self.session.close()


class UpstreamStream:
    """A reply whose body is being streamed: iterate for its chunks as they arrive; close() drops the connection.

    Iteration raises the same classified UpstreamErrors as `UpstreamClient.send`. Closing before the end
    closes the connection (the worker sees the client go away) instead of returning it to the pool.
    """

    def __init__(self, response: requests.Response, where: str, limit: float, max_bytes: int):
        self.status = response.status_code
        self.content_type = response.headers.get("Content-Type", "")
        self.where = where
        self._response = response
        self._limit = limit
        self._max_bytes = max_bytes

    def __iter__(self) -> Iterator[bytes]:
        read1 = self._response.raw.read1
        with _classified(self.where, self._limit):
            # read1 returns whatever has arrived (up to _CHUNK) instead of waiting to fill _CHUNK bytes,
            # so a small event is passed on the moment it lands.
            while chunk := read1(_CHUNK, decode_content=True):
                yield chunk

    def read(self) -> bytes:
        """The whole remaining body, capped like `send` caps replies."""
        with _classified(self.where, self._limit):
            return _read_capped(self._response, self.where, self._max_bytes)

    def close(self) -> None:
        self._response.close()


class HostNotAllowed(Exception):
    """Deliberately not an OSError: urllib3 would take it for a network failure and wrap it."""


def _guarded_pools(allowlist: HostAllowlist) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools that resolve a host, check the addresses against the allowlist, and connect to the
    checked address itself — so DNS cannot answer differently between the check and the connect."""

    def guard(base: type[HTTPConnection]) -> type[HTTPConnection]:
        class Guarded(base):  # type: ignore[valid-type, misc]
            def _new_conn(self) -> socket.socket:
                host = self._dns_host
                if allowlist.allows_name(host):
                    return super()._new_conn()
                self._dns_host = _allowed_address(allowlist, host, self.port)
                try:
                    return super()._new_conn()
                finally:
                    self._dns_host = host

        return Guarded

    class Pool(HTTPConnectionPool):
        ConnectionCls = guard(HTTPConnection)

    class SecurePool(HTTPSConnectionPool):
        ConnectionCls = guard(HTTPSConnection)

    return {"http": Pool, "https": SecurePool}


def _allowed_address(allowlist: HostAllowlist, host: str, port: int) -> str:
    addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    for address in addresses:
        if allowlist.allows_address(address):
            return address
    raise HostNotAllowed(f"{host} resolves to {', '.join(dict.fromkeys(addresses))}, outside UPSTREAM_ALLOWED_HOSTS")


@contextmanager
def _classified(where: str, limit: float) -> Iterator[None]:
    """Turn requests/urllib3 failures into UpstreamErrors marked retryable when another worker may succeed."""
    try:
        yield
    except HostNotAllowed as exc:
        raise UpstreamError(f"refused to call worker at {where}: {exc}") from None
    except requests.exceptions.ConnectTimeout:
        raise UpstreamTimeout(f"timed out connecting to worker at {where}") from None
    except (requests.exceptions.ReadTimeout, ReadTimeoutError):
        raise UpstreamTimeout(f"worker at {where} did not answer within {limit:g} s") from None
    except (requests.exceptions.ConnectionError, ProtocolError) as exc:
        raise UpstreamError(f"could not reach worker at {where}: {_reason(exc)}", retryable=True) from None
    except (requests.exceptions.RequestException, HTTPError) as exc:
        raise UpstreamError(f"could not call worker at {where}: {_reason(exc)}") from None


def _status_error(where: str, status: int, payload: bytes, sent: Mapping[str, str] | None) -> UpstreamError:
    excerpt = " ".join(payload[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace").split())
    # An error page may echo the request back: never pass a credential we sent on to the client.
    for secret in secret_values(sent):
        excerpt = excerpt.replace(secret, MASK)
    if len(excerpt) > EXCERPT_CHARS:
        excerpt = excerpt[:EXCERPT_CHARS] + "..."
    return UpstreamError(
        f"worker at {where} answered HTTP {status}" + (f": {excerpt}" if excerpt else ""),
        retryable=status >= 500 or status in (408, 429),
    )


def _read_capped(response: requests.Response, where: str, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UpstreamError(f"reply from worker at {where} is larger than {max_bytes} bytes")
    chunks = []
    size = 0
    for chunk in response.raw.stream(_CHUNK, decode_content=True):
        size += len(chunk)
        if size > max_bytes:
            raise UpstreamError(f"reply from worker at {where} is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _where(url: str) -> str:
    """Scheme, host and port only: paths and queries may carry keys."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _reason(exc: BaseException) -> str:
    """A short human reason from a requests/urllib3 exception chain, without reprs of internals."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "host name could not be resolved"
        if isinstance(current, OSError) and current.errno is not None:
            return (current.strerror or errno.errorcode.get(current.errno, "network error")).lower()
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))
    if isinstance(exc, requests.exceptions.InvalidHeader):
        return "invalid header value"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return "invalid URL"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, ProtocolError)):
        return "connection closed before the reply was complete"
    return "connection failed"
