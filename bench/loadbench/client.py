"""A small asyncio HTTP/1.1 client (keep-alive, Content-Length and chunked replies) for what wrk cannot time:
the first byte of a streamed reply, and a fixed number of distinct requests (registrations).

It costs tens of microseconds per request, so it stays out of the way of the manager on a shared 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    first_byte_s: float | None  # seconds from the request's last byte sent to its first body byte read
    total_s: float

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Reply:
        return await asyncio.wait_for(self._request(method, path, body), timeout)

    async def _request(self, method: str, path: str, body: Any) -> Reply:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 24)
        assert self.reader is not None
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: */*\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + payload)
        await self.writer.drain()
        sent = time.perf_counter()
        try:
            reply = await _read_reply(self.reader, sent)
        except BaseException:
            await self.close()
            raise
        if reply.headers.get("connection", "").lower() == "close":
            await self.close()
        return reply

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _read_reply(reader: asyncio.StreamReader, sent: float) -> Reply:
    status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    first: float | None = None
    parts: list[bytes] = []
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                    pass
                break
            chunk = (await reader.readexactly(size + 2))[:-2]
            if first is None:
                first = time.perf_counter() - sent
            parts.append(chunk)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length:
            parts.append(await reader.readexactly(length))
            first = time.perf_counter() - sent
    else:
        while chunk := await reader.read(65536):
            if first is None:
                first = time.perf_counter() - sent
            parts.append(chunk)
        headers["connection"] = "close"
    return Reply(status, headers, b"".join(parts), first, time.perf_counter() - sent)


@dataclass
class BatchResult:
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


async def run_batch(
    host: str, port: int, make: Callable[[int], tuple[str, str, Any]], count: int, concurrency: int
) -> BatchResult:
    """Send requests make(0) .. make(count - 1), `concurrency` kept-alive connections at a time."""
    indices = iter(range(count))
    result = BatchResult(0.0)

    async def worker() -> None:
        connection = Connection(host, port)
        for index in indices:
            method, path, body = make(index)
            try:
                reply = await connection.request(method, path, body)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                result.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            result.statuses[reply.status] = result.statuses.get(reply.status, 0) + 1
            result.latencies_s.append(reply.total_s)
            if reply.status != 200 and len(result.failures) < 20:
                result.failures.append(f"HTTP {reply.status}: {reply.body[:200]!r}")
        await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class StreamResult:
    first_byte_s: list[float]
    streams: int
    failures: list[str]
    seconds: float


async def run_streams(
    host: str, port: int, path: str, body: Any, *, concurrency: int, seconds: float, warmup_s: float, ramp_s: float
) -> StreamResult:
    """Keep `concurrency` streams open for `seconds`, each connection asking again as its stream ends.

    Connections start spread over `ramp_s` (no thundering herd); first bytes of streams begun in the first
    `warmup_s` seconds are not counted.
    """
    first_bytes: list[float] = []
    failures: list[str] = []
    streams = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def worker() -> None:
        nonlocal streams
        await asyncio.sleep(random.uniform(0, ramp_s))
        connection = Connection(host, port)
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                reply = await connection.request("POST", path, body)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.05)
                continue
            if reply.status != 200 or reply.first_byte_s is None or b"[DONE]" not in reply.body:
                failures.append(f"HTTP {reply.status}: {reply.body[:200]!r}")
                continue
            streams += 1
            if began - started >= warmup_s:
                first_bytes.append(reply.first_byte_s)
        await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return StreamResult(first_bytes, streams, failures, time.perf_counter() - started)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]
