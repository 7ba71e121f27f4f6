"""Streaming through the manager: time to first byte against the upstream direct, and memory over many streams.

    .venv/bin/python bench/stream_bench.py [--workers 2] [--threads N] [--concurrency 200] [--requests 10000]

Starts a fake OpenAI-compatible upstream (asyncio, in its own process) that streams chat chunks, a manager
as production runs it (`gunicorn wsgi:app` with the shipped settings; --workers/--threads override them),
registers the upstream as an `openai` worker and drives both with an asyncio HTTP/1.1 client (keep-alive,
chunked decoding), so the client itself stays cheap at hundreds of streams:

1. TTFB — request sent to first event received — one stream at a time, direct and through the manager;
2. the same with --concurrency streams open at once (each stream lasts ~1 s, so they all overlap);
3. RSS of every manager process before and after --requests streamed requests.

The stream shape is chosen per request through extra body fields (`bench_events`, `bench_gap_ms`), which
the manager passes through to openai-format workers like any other field.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.servers import ManagerProcess, free_port, wait_until

CHAT_PATH = "/v1/chat/completions"


# -- the upstream -------------------------------------------------------------------------------------


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = _headers(head)
            body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            gap = body.get("bench_gap_ms", 0) / 1000
            for index in range(body.get("bench_events", 5)):
                if index and gap:
                    await asyncio.sleep(gap)
                chunk = {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": f"token {index} "}, "finish_reason": None}],
                }
                _write_chunk(writer, b"data: " + json.dumps(chunk).encode() + b"\n\n")
                await writer.drain()
            _write_chunk(writer, b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client went away (the manager's health probe connects and leaves)
    finally:
        writer.close()


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}


def run_upstream(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the client ---------------------------------------------------------------------------------------


async def _stream_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, body: bytes) -> float:
    """One streamed chat request on an open connection; the seconds from sending it to its first event."""
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer sk-bench\r\nContent-Length: %d\r\n\r\n%s" % (CHAT_PATH.encode(), port, len(body), body)
    )
    await writer.drain()
    sent = time.perf_counter()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"HTTP {status.decode()}: {head.decode('latin-1')}")
    headers = _headers(head)
    if headers.get("transfer-encoding") != "chunked":
        raise RuntimeError("expected a chunked event stream")
    first = None
    received = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            break
        data = (await reader.readexactly(size + 2))[:-2]
        if first is None:
            first = time.perf_counter()
        received += data[-32:]
    if not received.endswith(b"data: [DONE]\n\n"):
        raise RuntimeError("stream ended without [DONE]")
    assert first is not None
    return first - sent


async def _drive(
    port: int, concurrency: int, per_connection: int, events: int, gap_ms: int, stagger_s: float
) -> list[float]:
    body = json.dumps(
        {
            "model": "bench",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "bench_events": events,
            "bench_gap_ms": gap_ms,
        }
    ).encode()
    ttfbs: list[float] = []

    async def connection(delay: float) -> None:
        await asyncio.sleep(delay)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(per_connection):
                ttfbs.append(await _stream_once(reader, writer, port, body))
        finally:
            writer.close()

    # Evenly spread first requests: streams then arrive one at a time while `concurrency` of them are open.
    await asyncio.gather(*(connection(stagger_s * index / concurrency) for index in range(concurrency)))
    return ttfbs


def drive(
    port: int, concurrency: int, per_connection: int, events: int, gap_ms: int, stagger_s: float = 0.0
) -> list[float]:
    """TTFBs of `concurrency` connections doing `per_connection` streams each; all start at once unless staggered."""
    return asyncio.run(_drive(port, concurrency, per_connection, events, gap_ms, stagger_s))


# -- measuring ----------------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p90": cuts[89] * 1000, "p99": cuts[98] * 1000, "max": ordered[-1] * 1000}


def manager_processes(master: int) -> list[int]:
    """The gunicorn worker processes: children of the master."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    children.append(int(entry))
    return sorted(children)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def report_ttfb(label: str, direct: list[float], managed: list[float]) -> None:
    d, m = percentiles(direct), percentiles(managed)
    print(f"\n{label}: {len(managed)} streams each way")
    print(f"  {'':>10} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms)")
    print(f"  {'direct':>10} " + " ".join(f"{d[k]:8.2f}" for k in ("p50", "p90", "p99", "max")))
    print(f"  {'manager':>10} " + " ".join(f"{m[k]:8.2f}" for k in ("p50", "p90", "p99", "max")))
    print(f"  {'difference':>10} " + " ".join(f"{m[k] - d[k]:8.2f}" for k in ("p50", "p90", "p99", "max")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn processes (GUNICORN_WORKERS)")
    parser.add_argument("--threads", type=int, default=None, help="GUNICORN_THREADS (default: the shipped one)")
    parser.add_argument("--concurrency", type=int, default=200, help="streams open at once in step 2")
    parser.add_argument("--requests", type=int, default=10_000, help="streamed requests between the RSS readings")
    args = parser.parse_args()

    env = {"UPSTREAM_POOL_SIZE": str(args.threads or 256)}
    if args.threads:
        env["GUNICORN_THREADS"] = str(args.threads)
    upstream_port = free_port()
    upstream = multiprocessing.Process(target=run_upstream, args=(upstream_port,), daemon=True)
    upstream.start()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ManagerProcess("sqlite:///" + str(Path(tmp) / "bench.db"), workers=args.workers, env=env) as manager,
    ):
        assert wait_until(lambda: _reachable(upstream_port))
        reply = requests.post(
            manager.url + "/api/server/register",
            json={
                "model_name": "bench",
                "req_url_template": f"http://127.0.0.1:{upstream_port}{CHAT_PATH}",
                "api_format": "openai",
            },
            timeout=10,
        )
        reply.raise_for_status()
        assert manager.proc is not None
        pids = manager_processes(manager.proc.pid)
        print(f"manager: {args.workers} processes {pids}, threads={args.threads or 'shipped default'}")
        cold = {pid: rss_mib(pid) for pid in pids}

        # Warm-up: imports, pools and caches of every process, both paths.
        drive(manager.port, 8, 25, events=3, gap_ms=0)
        drive(upstream_port, 8, 25, events=3, gap_ms=0)

        sequential = dict(concurrency=1, per_connection=300, events=3, gap_ms=1)
        report_ttfb("1 stream at a time", drive(upstream_port, **sequential), drive(manager.port, **sequential))

        # ~1 s streams. Staggered: the connections start spread over one stream's length, so `concurrency`
        # streams stay open and new ones arrive steadily. Burst: all start in the same millisecond.
        for shape, stagger in (("staggered", 1.0), ("burst", 0.0)):
            parallel = dict(concurrency=args.concurrency, per_connection=4, events=20, gap_ms=50, stagger_s=stagger)
            direct = drive(upstream_port, **parallel)
            managed = drive(manager.port, **parallel)
            report_ttfb(f"{args.concurrency} concurrent streams, {shape} (~1 s each)", direct, managed)
        print("  threads per process after:", {pid: threads_of(pid) for pid in pids})

        before = {pid: rss_mib(pid) for pid in pids}
        print(f"\nRSS over {args.requests} streamed requests (5 events each, 50 connections):")
        print("  cold (after start):    " + ", ".join(f"{pid}: {cold[pid]:.1f} MiB" for pid in pids))
        print("  before (after warm-up):" + ", ".join(f" {pid}: {before[pid]:.1f} MiB" for pid in pids))
        done = 0
        step = max(1, args.requests // 5)
        started = time.perf_counter()
        while done < args.requests:
            batch = min(step, args.requests - done)
            drive(manager.port, 50, max(1, batch // 50), events=5, gap_ms=0)
            done += 50 * max(1, batch // 50)
            print(f"  after {done:>6}:         " + ", ".join(f" {pid}: {rss_mib(pid):.1f} MiB" for pid in pids))
        rate = done / (time.perf_counter() - started)
        print(f"  ({rate:.0f} streams/s through the manager)")
    upstream.terminate()


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
