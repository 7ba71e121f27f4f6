"""Calls to workers: pooled keep-alive connections per process, capped or streamed replies, classified failures.

urllib3 is used directly: the manager makes at least one such call per request, and going through requests
(settings merging, hooks, cookie jars, adapters) costs more CPU than the HTTP exchange itself.
"""

from __future__ import annotations

import errno
import functools
import http.client
import json
import re
import socket
import ssl
import threading
import time
from base64 import b64encode
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import certifi
from urllib3 import BaseHTTPResponse, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import parse_url
from urllib3.util.ssl_ import create_urllib3_context

from operategpt import __version__
from operategpt.errors import (
    BadReply,
    CallRefused,
    ConnectFailed,
    StreamBroken,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from operategpt.http.allowlist import HostAllowlist
from operategpt.http.ownaddress import OwnAddresses
from operategpt.http.redact import redact, redact_library_logs, secret_values, url_secrets

EXCERPT_CHARS = 200
_CHUNK = 64 * 1024
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps would build one per call
# Sent unless the caller sets them. http.client adds Host, and Content-Length when there is a body.
_DEFAULT_HEADERS = {"User-Agent": f"operategpt/{__version__}", "Accept-Encoding": "gzip, deflate"}
# Header names are RFC 9110 tokens. A value may carry a client's text: it must not start with whitespace
# (a folded line) nor hold a control character (CR and LF would inject headers) or anything latin-1 cannot encode.
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_INVALID_VALUE = re.compile(r"^\s|[^\t\x20-\x7e\x80-\xff]")
# An absolute URL: `scheme://authority`, then the path and the query of the request target (a fragment is not sent).
_URL = re.compile(r"([^:/?#]+://[^/?#]*)([^?#]*)(\?[^#]*)?")

_PoolKey = tuple[str, str, int]  # scheme, host, port

redact_library_logs()  # urllib3 logs request targets (query keys) at DEBUG


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class UpstreamClient:
    """Sends one request to a worker and returns its reply, or raises the UpstreamError that names what
    happened (`operategpt.errors`): whether to try elsewhere is the caller's decision, not the transport's.
    """

    def __init__(
        self,
        *,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        max_bytes: int,
        allowlist: HostAllowlist | None = None,
        own: OwnAddresses | None = None,
    ):
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_bytes = max_bytes
        guarded = bool(allowlist) or own is not None
        self._pools = _Pools(pool_size, _guarded_pools(allowlist or None, own) if guarded else _PLAIN_POOLS)

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
        # The read timeout bounds each socket read; the deadline bounds the whole exchange, so a worker that
        # drips a byte at a time cannot hold the call (and its thread) past `limit`.
        deadline = time.monotonic() + limit
        try:
            response = self._request(method, url, where, body, headers, limit)
            try:
                payload = _read_capped(response, where, self.max_bytes, deadline, limit)
            finally:
                _drop(response)
        except _FAILURES as exc:
            raise _failure(exc, where, limit) from None
        if not 200 <= response.status < 300:
            raise _status_error(where, response.status, payload, (headers, url), response.headers.get("Retry-After"))
        return Reply(response.status, payload, response.headers.get("Content-Type", ""))

    def open_stream(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        total: float | None = None,
    ) -> UpstreamStream:
        """Send a request and return as soon as the reply's status and headers are in, its body unread.

        Everything up to that point fails as `send` fails, a non-2xx status included, so the caller can
        still fail over. The body is then read as it arrives: the read timeout applies between chunks (an
        idle stream), `total` seconds (default: the read timeout) bound the whole stream.
        """
        where = _where(url)
        limit = timeout or self.read_timeout
        deadline = time.monotonic() + (limit if total is None else total)
        try:
            response = self._request(method, url, where, body, headers, limit)
        except _FAILURES as exc:
            raise _failure(exc, where, limit) from None
        if not 200 <= response.status < 300:
            try:
                # Only what the error message shows: an error page may be large, or never end.
                excerpt = response.read(EXCERPT_CHARS * 4)
            except _FAILURES:
                excerpt = b""
            finally:
                _drop(response)
            raise _status_error(where, response.status, excerpt, (headers, url), response.headers.get("Retry-After"))
        return UpstreamStream(response, where, limit, self.max_bytes, deadline)

    def _request(
        self, method: str, url: str, where: str, body: Any, headers: Mapping[str, str] | None, limit: float
    ) -> BaseHTTPResponse:
        pool_key, authorization, target = _split(url)
        given: set[str] = set()
        for name, value in (headers or {}).items():
            if not _NAME.fullmatch(name) or _INVALID_VALUE.search(value):
                raise CallRefused(f"could not call worker at {where}: invalid header value")
            given.add(name.lower())
        send_headers = {name: value for name, value in _DEFAULT_HEADERS.items() if name.lower() not in given}
        if authorization and "authorization" not in given:
            send_headers["Authorization"] = authorization
        send_headers.update(headers or {})
        data = None
        if body is not None and method != "GET":
            data = _JSON.encode(body).encode()
            if "content-type" not in given:
                send_headers["Content-Type"] = "application/json"
        return self._pools.get(pool_key).urlopen(
            method,
            target,
            body=data,
            headers=send_headers,
            timeout=Timeout(connect=self.connect_timeout, read=limit),
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )

    def close(self) -> None:
        """Close every idle connection; the client stays usable and opens new ones as needed."""
        self._pools.clear()


class UpstreamStream:
    """A reply whose body is being streamed: iterate for its chunks as they arrive; close() drops the connection.

    Iteration raises the same classified UpstreamErrors as `UpstreamClient.send`. Closing before the end
    closes the connection (the worker sees the client go away) instead of returning it to the pool.
    """

    def __init__(self, response: BaseHTTPResponse, where: str, limit: float, max_bytes: int,
                 deadline: float | None = None):
        self.status = response.status
        self.content_type = response.headers.get("Content-Type", "")
        self.where = where
        self._response = response
        self._limit = limit
        self._max_bytes = max_bytes
        self._deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        """The read timeout is the idle timeout (between chunks); the deadline bounds the stream as a whole."""
        read1 = self._response.read1
        deadline = self._deadline
        try:
            # read1 returns whatever has arrived (up to _CHUNK) instead of waiting to fill _CHUNK bytes,
            # so a small event is passed on the moment it lands.
            while chunk := read1(_CHUNK):
                yield chunk
                if deadline is not None and time.monotonic() >= deadline and not self._response.isclosed():
                    _drop(self._response)
                    raise UpstreamTimeout(
                        f"worker at {self.where} did not finish its stream within {self._limit:g} s", sent=True
                    )
        except _FAILURES as exc:
            raise _failure(exc, self.where, self._limit, started=True) from None

    def read(self) -> bytes:
        """The whole remaining body, capped like `send` caps replies."""
        try:
            return _read_capped(self._response, self.where, self._max_bytes, self._deadline, self._limit)
        except _FAILURES as exc:
            raise _failure(exc, self.where, self._limit) from None

    def close(self) -> None:
        _drop(self._response)


class _Pools:
    """The connection pools of the `size` most recently called worker hosts, each keeping up to `size` idle
    connections. Not blocking: a burst above that opens extra connections instead of waiting for one."""

    def __init__(self, size: int, classes: Mapping[str, type[HTTPConnectionPool]]):
        self._size = size
        self._classes = classes
        self._pools: OrderedDict[_PoolKey, HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _PoolKey) -> HTTPConnectionPool:
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            scheme, host, port = key
            # No retries and no redirects: the caller fails over. urllib3 reads no proxy variables nor .netrc,
            # so calls go exactly where the registry says.
            tls = {"ssl_context": _certifi_context()} if scheme == "https" else {}
            pool = self._classes[scheme](host, port, maxsize=self._size, block=False, retries=False, **tls)
            self._pools[key] = pool
            if len(self._pools) > self._size:
                self._pools.popitem(last=False)[1].close()
            return pool

    def clear(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()


@functools.cache
def _certifi_context() -> ssl.SSLContext:
    """Certificates are checked against certifi's CA bundle, as requests did, not the system's. Loading it takes
    tens of milliseconds: once per process, not for every new connection."""
    context = create_urllib3_context()
    context.load_verify_locations(certifi.where())
    return context


class HostNotAllowed(Exception):
    """Deliberately not an OSError: urllib3 would take it for a network failure and wrap it."""


_PLAIN_POOLS = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


def _guarded_pools(allowlist: HostAllowlist | None, own: OwnAddresses | None) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools that resolve a host, check the addresses against the allowlist and against the
    manager's own listening addresses, and connect to the checked address itself — so DNS cannot answer
    differently between the check and the connect."""

    def guard(base: type[HTTPConnection]) -> type[HTTPConnection]:
        class Guarded(base):  # type: ignore[valid-type, misc]
            def _new_conn(self) -> socket.socket:
                host = self._dns_host
                to_self = own is not None and own.port == self.port
                if not to_self and (allowlist is None or allowlist.allows_name(host)):
                    return super()._new_conn()
                self._dns_host = _allowed_address(allowlist, own, host, self.port)
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


def _allowed_address(allowlist: HostAllowlist | None, own: OwnAddresses | None, host: str, port: int) -> str:
    addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    named = allowlist is None or allowlist.allows_name(host)
    allowed = [address for address in addresses if named or allowlist.allows_address(address)]
    if not allowed:
        listed = ", ".join(dict.fromkeys(addresses))
        raise HostNotAllowed(f"{host} resolves to {listed}, outside UPSTREAM_ALLOWED_HOSTS")
    for address in allowed:
        if own is None or not own.is_own(address, port):
            return address
    raise HostNotAllowed(f"{host} port {port} is this manager's own listening address (a worker cannot be the "
                         "manager itself)")


def _split(url: str) -> tuple[_PoolKey, str | None, str]:
    """Which pool serves `url`, the Authorization its credentials make (if any), and the request target."""
    match = _URL.match(url.lstrip())  # requests ignored leading whitespace too
    if match is None:
        raise LocationValueError(url)
    origin, path, query = match.groups()
    pool_key, authorization = _origin(origin)
    if "/." in path:
        path = parse_url(origin + path).path  # as requests did, /a/./b/../c is sent as /a/c
    return pool_key, authorization, (path or "/") + (query or "")


def target(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) exactly as a call to `url` would connect: what an allowlist check must look at.
    Raises ValueError for a URL this client cannot call."""
    match = _URL.match(url.lstrip())
    if match is None:
        raise ValueError(f"not an absolute http(s) URL: {url}")
    try:
        return _origin(match.group(1))[0]
    except LocationValueError as exc:
        raise ValueError(f"not a callable URL: {url}") from exc


@functools.lru_cache(maxsize=1024)
def _origin(origin: str) -> tuple[_PoolKey, str | None]:
    """`scheme://[user:password@]host[:port]` checked and normalised (IDNA, case, default port); workers are few."""
    parts = parse_url(origin)
    if parts.scheme not in _PLAIN_POOLS or not parts.host:
        raise LocationValueError(origin)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # As requests did, `user:password@` in the URL is sent as Basic authorization (a lone `user@` is not).
    user, colon, password = (parts.auth or "").partition(":")
    authorization = None
    if colon and (user or password):
        authorization = "Basic " + b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return (parts.scheme, parts.host, port), authorization


# What urllib3 raises for a failed call, and the allowlist's refusal.
_FAILURES = (HTTPError, HostNotAllowed)


def _failure(exc: HTTPError | HostNotAllowed, where: str, limit: float, started: bool = False) -> UpstreamError:
    """What happened to a failed call; `started`: the reply's body had begun to arrive."""
    if isinstance(exc, HostNotAllowed):
        return CallRefused(f"refused to call worker at {where}: {exc}")
    if isinstance(exc, LocationValueError):
        return CallRefused(f"could not call worker at {where}: invalid URL")
    if isinstance(exc, ReadTimeoutError):
        # A read timeout comes after the request was sent in full: the worker may be running it.
        return UpstreamTimeout(f"worker at {where} did not answer within {limit:g} s", sent=True)
    # NewConnectionError (refused, unreachable, unresolvable) before ConnectTimeoutError: urllib3 derives it from it.
    if isinstance(exc, (NewConnectionError, ProtocolError, SSLError)):
        broken = StreamBroken if started else ConnectFailed
        return broken(f"could not reach worker at {where}: {_reason(exc)}")
    if isinstance(exc, ConnectTimeoutError):
        return UpstreamTimeout(f"timed out connecting to worker at {where}", sent=False)
    return UpstreamError(f"could not call worker at {where}: {_reason(exc)}")


def _status_error(
    where: str, status: int, payload: bytes, sent: tuple[Mapping[str, str] | None, str], retry_after: str | None
) -> UpstreamStatus:
    excerpt = " ".join(payload[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace").split())
    # An error page may echo the request back: never pass a credential we sent (a header's, the URL's password
    # or query key, the Basic authorization made from it) on to the client, nor anything that looks like one.
    headers, url = sent
    excerpt = redact(excerpt, [*secret_values(headers), *url_secrets(url)])
    if len(excerpt) > EXCERPT_CHARS:
        excerpt = excerpt[:EXCERPT_CHARS] + "..."
    return UpstreamStatus(
        f"worker at {where} answered HTTP {status}" + (f": {excerpt}" if excerpt else ""), status,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


def _read_capped(
    response: BaseHTTPResponse, where: str, max_bytes: int, deadline: float | None = None, limit: float = 0
) -> bytes:
    remaining = response.length_remaining  # None when the reply declares no Content-Length
    if remaining is not None and remaining > max_bytes:
        raise BadReply(f"reply from worker at {where} is larger than {max_bytes} bytes")
    # Read what has arrived, chunk by chunk, checking the deadline between reads: each read is bounded by the
    # read timeout, the whole body by the deadline. One byte more than allowed tells an oversized reply
    # (decoded, or of unknown length) from one of max_bytes.
    read1 = response.read1
    parts: list[bytes] = []
    size = 0
    while chunk := read1(_CHUNK):
        parts.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise BadReply(f"reply from worker at {where} is larger than {max_bytes} bytes")
        if deadline is not None and time.monotonic() >= deadline and not response.isclosed():
            raise UpstreamTimeout(f"worker at {where} did not send its whole reply within {limit:g} s", sent=True)
    return b"".join(parts)


def _drop(response: BaseHTTPResponse) -> None:
    """Close the connection of a reply that may not have been read to its end (what is left would be taken for
    the next reply on it) and free its place in the pool. A reply read to its end has already given it back."""
    response.close()
    response.release_conn()


def _where(url: str) -> str:
    """Scheme, host and port only: paths and queries may carry keys."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _reason(exc: BaseException) -> str:
    """A short human reason from a urllib3 exception chain, without reprs of internals."""
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
        if isinstance(current, http.client.IncompleteRead):
            return "connection closed before the reply was complete"
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return "connection failed"
