"""Active health probes: many at once on one event loop, each bounded by a timeout.

A target with a health URL is up when a GET answers 2xx; without one, when its host and
port accept a TCP connection. Only the status line is read, and redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Target:
    id: int
    url: str  # the worker's URL (for TCP) or its health URL
    http: bool  # GET the URL and expect 2xx, rather than only connect


@dataclass(frozen=True, slots=True)
class ProbeResult:
    id: int
    ok: bool
    latency_ms: float | None
    error: str | None


def probe_all(targets: Sequence[Target], timeout: float, concurrency: int = 1024, via: str = "") -> list[ProbeResult]:
    """Probe every target, `concurrency` at a time; with no more targets than that, returns within about
    `timeout` whatever the targets do (black holes included). `via`: the manager's Via mark, sent with
    every HTTP probe (a probe that reaches the manager itself is then never taken for a loopback admin)."""
    if not targets:
        return []
    return asyncio.run(_probe_all(targets, timeout, concurrency, via))


async def _probe_all(targets: Sequence[Target], timeout: float, concurrency: int, via: str) -> list[ProbeResult]:
    slots = asyncio.Semaphore(concurrency)
    return list(await asyncio.gather(*(_probe(target, timeout, slots, via) for target in targets)))


async def _probe(target: Target, timeout: float, slots: asyncio.Semaphore, via: str) -> ProbeResult:
    async with slots:
        return await _timed_probe(target, timeout, via)


async def _timed_probe(target: Target, timeout: float, via: str = "") -> ProbeResult:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(_check(target, via), timeout)
    except asyncio.TimeoutError:
        return ProbeResult(target.id, False, None, f"no answer within {timeout:g} s")
    except ProbeFailed as exc:
        return ProbeResult(target.id, False, None, str(exc))
    except (OSError, ssl.SSLError, ValueError, UnicodeError) as exc:
        return ProbeResult(target.id, False, None, _reason(exc))
    return ProbeResult(target.id, True, (time.perf_counter() - started) * 1000, None)


class ProbeFailed(Exception):
    pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "host name could not be resolved"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


async def _check(target: Target, via: str = "") -> None:
    parts = urlsplit(target.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProbeFailed(f"cannot probe {parts.scheme or 'a relative'} URL")
    if "{" in parts.netloc:
        raise ProbeFailed("cannot probe a URL whose host is a placeholder; give the worker a health_url")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    reader, writer = await asyncio.open_connection(
        parts.hostname, port, ssl=ssl.create_default_context() if secure and target.http else None
    )
    try:
        if not target.http:
            return
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        mark = f"Via: {via}\r\n" if via else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{mark}Connection: close\r\n\r\n".encode("ascii"))
        await writer.drain()
        status_line = await reader.readline()
        fields = status_line.split(None, 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            raise ProbeFailed("health URL did not answer HTTP")
        status = int(fields[1])
        if not 200 <= status < 300:
            raise ProbeFailed(f"health URL answered HTTP {status}")
    finally:
        writer.close()
        # The verdict is already made; a reset while closing changes nothing.
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
