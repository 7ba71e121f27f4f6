"""The manager's load benchmark: every figure of issue #7 in one run, each beside the mock upstream alone.

    .venv/bin/python bench/run.py [--quick] [--only latency,throughput,...] [--keep]

1. Starts a mock upstream that is not the bottleneck: Debian's nginx-light (one worker process) with fixed
   JSON replies, and its echo module for delayed and streamed replies; measures it alone with wrk first.
2. Starts the manager exactly as production does: `gunicorn wsgi:app` from the repository root, so the shipped
   gunicorn.conf.py applies (GUNICORN_* from this environment pass through), a temporary SQLite registry,
   default settings (active health checks on), LOG_LEVEL=warning.
3. Registers workers through the API and drives load with wrk (Lua scripts for the POST bodies, percentiles
   printed as JSON by `done()`); streams and registrations are timed with a small asyncio client.
4. Prints one table: figure | target | manager | direct | met?

Everything runs on this machine's cores together (wrk, nginx, manager): a busy machine gives worse figures.
The figures:

- latency:   one client, latency added over direct (p50, p99) on the seed route and on /v1/chat/completions
- throughput: 32 clients, instant upstream, requests/s and errors (plus CPU per request)
- delay200:  200 clients, upstream answering after 200 ms
- delay1000: 1,000 clients, upstream answering after 1 s
- stream:    first byte with 200 concurrent streams, through the manager and direct
- memory:    RSS of each worker after 10,000 and 100,000 requests
- registry:  10,000 workers registered through the API: registrations/s, GET /api/server/workers, completion p50
- profile:   py-spy on each worker under the 32-client load (not a figure: a summary printed after the table)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadbench import mock, profiling
from loadbench.client import Connection, StreamResult, percentile, run_batch, run_streams
from loadbench.manager import GUNICORN_KNOBS, Manager, shipped_settings
from loadbench.mock import MockUpstream
from loadbench.procs import cpu_seconds, load_average
from loadbench.wrk import Request, WrkResult, run_wrk

FIGURES = ("memory", "latency", "throughput", "profile", "delay200", "delay1000", "stream", "registry")

PROMPT = "who are you?"
SEED_MODEL = "bench-seed"
DELAY200_MODEL = "bench-delay200"
DELAY1000_MODEL = "bench-delay1000"
OPENAI_MODEL = "bench-openai"
STREAM_MODEL = "bench-stream"
EXTRACT = "data.items[].attributes.answer"
SEED_BODY = {"input": "{USER_PROMPT}", "model_name": "{MODEL_NAME}"}
MESSAGES = [{"role": "user", "content": PROMPT}]


@dataclass(frozen=True)
class Plan:
    latency_s: float
    throughput_s: float
    delay200_s: float
    delay1000_s: float
    stream_s: float
    memory_first: int
    memory_total: int
    registry_workers: int
    registry_after_s: float  # long enough to include a health round over the whole registry
    profile_s: float


FULL = Plan(10, 15, 15, 20, 15, 10_000, 100_000, 10_000, 15, 10)
QUICK = Plan(3, 4, 5, 6, 6, 2_000, 20_000, 1_000, 4, 5)


@dataclass
class Row:
    figure: str
    target: str
    manager: str
    direct: str
    met: bool | None  # None: no target, or not measurable yet


@dataclass
class Bench:
    plan: Plan
    workdir: Path
    only: set[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    direct: dict[str, Any] = field(default_factory=dict)
    chat_available: bool = True
    mock: MockUpstream | None = None
    manager: Manager | None = None
    profile_report: str = ""

    # -- helpers --------------------------------------------------------------------------------

    def wants(self, figure: str) -> bool:
        return figure in self.only

    def wrk_direct(self, path: str, body: Any, connections: int, seconds: float, timeout_s: float = 5) -> WrkResult:
        assert self.mock is not None
        return run_wrk(self.mock.base, [Request(path, body)], connections=connections, seconds=seconds,
                       workdir=self.workdir, timeout_s=timeout_s)

    def wrk_manager(
        self, requests: list[Request], connections: int, seconds: float, timeout_s: float = 5
    ) -> WrkResult:
        assert self.manager is not None
        result = run_wrk(self.manager.base, requests, connections=connections, seconds=seconds,
                         workdir=self.workdir, timeout_s=timeout_s)
        self.manager.requests_served += result.requests
        return result

    def add(self, figure: str, target: str, manager: str, direct: str, met: bool | None) -> None:
        self.rows.append(Row(figure, target, manager, direct, met))
        print(f"  {figure}: {manager} (direct {direct}) -> {_met(met)}", flush=True)


def seed_request(model: str = SEED_MODEL) -> Request:
    return Request("/api/v1/chat/completions", {"input": PROMPT, "model_name": model})


def chat_request(model: str = OPENAI_MODEL, stream: bool = False) -> Request:
    body: dict[str, Any] = {"model": model, "messages": MESSAGES}
    if stream:
        body["stream"] = True
    return Request("/v1/chat/completions", body)


# The body the manager sends the seed worker, so the direct figures carry the same request.
UPSTREAM_SEED_BODY = {"input": PROMPT, "model_name": SEED_MODEL}
UPSTREAM_CHAT_BODY = {"model": "mock", "messages": MESSAGES}


# -- the mock alone -------------------------------------------------------------------------------


def measure_direct(bench: Bench) -> None:
    plan = bench.plan
    print(f"\nmock upstream alone (nginx, 1 worker process) at {bench.mock.base if bench.mock else '?'}:", flush=True)
    if bench.wants("latency") or bench.wants("registry"):
        bench.direct["latency_seed"] = r = bench.wrk_direct(mock.INSTANT, UPSTREAM_SEED_BODY, 1, plan.latency_s)
        print(f"  1 client, {mock.INSTANT}: p50 {r.p50_ms:.3f} ms, p99 {r.p99_ms:.3f} ms, {r.rps:,.0f} req/s")
    if bench.wants("latency"):
        bench.direct["latency_chat"] = r = bench.wrk_direct(mock.CHAT, UPSTREAM_CHAT_BODY, 1, plan.latency_s)
        print(f"  1 client, {mock.CHAT}: p50 {r.p50_ms:.3f} ms, p99 {r.p99_ms:.3f} ms, {r.rps:,.0f} req/s")
    if bench.wants("throughput"):
        bench.direct["throughput"] = r = bench.wrk_direct(mock.INSTANT, UPSTREAM_SEED_BODY, 32, plan.throughput_s)
        print(f"  32 clients, {mock.INSTANT}: {r.rps:,.0f} req/s, {r.describe_errors()}, p99 {r.p99_ms:.2f} ms")
    if bench.wants("delay200"):
        bench.direct["delay200"] = r = bench.wrk_direct(mock.DELAY200, UPSTREAM_SEED_BODY, 200, plan.delay200_s)
        print(f"  200 clients, {mock.DELAY200}: {r.rps:,.0f} req/s, {r.describe_errors()}, p99 {r.p99_ms:.1f} ms")
    if bench.wants("delay1000"):
        bench.direct["delay1000"] = r = bench.wrk_direct(
            mock.DELAY1000, UPSTREAM_SEED_BODY, 1000, plan.delay1000_s, timeout_s=10
        )
        print(f"  1000 clients, {mock.DELAY1000}: {r.rps:,.0f} req/s, {r.describe_errors()}, p99 {r.p99_ms:.0f} ms")
    if bench.wants("stream"):
        assert bench.mock is not None
        body = {**UPSTREAM_CHAT_BODY, "stream": True}
        bench.direct["stream"] = s = streams(bench, bench.mock.port, mock.STREAM, body)
        print(f"  200 streams, {mock.STREAM}: first byte p50 {_ms(percentile(s.first_byte_s, 50))}, "
              f"p99 {_ms(percentile(s.first_byte_s, 99))}, {s.streams / s.seconds:,.0f} streams/s, "
              f"{len(s.failures)} failures")


def streams(bench: Bench, port: int, path: str, body: Any) -> StreamResult:
    warmup = 2.0
    return asyncio.run(run_streams("127.0.0.1", port, path, body, concurrency=200,
                                   seconds=bench.plan.stream_s + warmup, warmup_s=warmup, ramp_s=1.0))


# -- set-up ---------------------------------------------------------------------------------------


def register_workers(bench: Bench) -> None:
    manager, upstream = bench.manager, bench.mock
    assert manager is not None and upstream is not None
    for model, path in ((SEED_MODEL, mock.INSTANT), (DELAY200_MODEL, mock.DELAY200),
                        (DELAY1000_MODEL, mock.DELAY1000)):
        manager.register({"model_name": model, "req_url_template": upstream.base + path, "body": SEED_BODY,
                          "owner": "bench", "response_extract": EXTRACT})
    status, reply = manager.call("POST", "/api/v1/chat/completions", {"input": PROMPT, "model_name": SEED_MODEL})
    if status != 200 or reply.get("result") != mock.SEED_REPLY["data"]["items"][0]["attributes"]["answer"]:
        raise RuntimeError(f"the seed route does not answer as expected: {status} {reply}")
    for model, path in ((OPENAI_MODEL, mock.CHAT), (STREAM_MODEL, mock.STREAM)):
        status, reply = manager.call("POST", "/api/server/register", {
            "model_name": model, "req_url_template": upstream.base + path, "owner": "bench",
            "api_format": "openai", "upstream_model": "mock",
        })
        if status != 200:
            bench.chat_available = False
            bench.notes.append(f"registering an openai-format worker answered {status}: {reply}")
            return
    status, reply = manager.call("POST", "/v1/chat/completions", {"model": OPENAI_MODEL, "messages": MESSAGES})
    if status == 404 or status == 405:
        bench.chat_available = False
        bench.notes.append(f"POST /v1/chat/completions answered {status} on the manager: not available yet")
    elif status != 200 or not isinstance(reply, dict) or "choices" not in reply:
        raise RuntimeError(f"/v1/chat/completions does not answer as expected: {status} {reply}")


def warm_up(bench: Bench) -> None:
    requests = [seed_request(), *([chat_request()] if bench.chat_available else [])]
    bench.wrk_manager(requests, connections=32, seconds=2)


# -- the figures ----------------------------------------------------------------------------------


def figure_memory(bench: Bench) -> None:
    manager = bench.manager
    assert manager is not None
    requests = [seed_request(), *([chat_request()] if bench.chat_available else [])]
    first, total = bench.plan.memory_first, bench.plan.memory_total

    def load_until(count: int) -> None:
        rate = 1000.0
        while manager.requests_served < count:
            seconds = min(10.0, max(1.0, (count - manager.requests_served) / rate))
            result = bench.wrk_manager(requests, connections=32, seconds=seconds)
            rate = max(100.0, result.rps)
            if result.error_count:
                bench.notes.append(f"memory load: {result.describe_errors()}")

    load_until(first)
    served_first, rss_first = manager.requests_served, manager.rss()
    load_until(total)
    served_total, rss_total = manager.requests_served, manager.rss()
    peak = max(rss_total.values())
    growth = max((rss_total[pid] - rss_first[pid]) / rss_first[pid] for pid in rss_total if pid in rss_first)
    per_worker = ", ".join(f"{rss_first.get(pid, float('nan')):.1f}->{mib:.1f}" for pid, mib in rss_total.items())
    mix = "seed + chat routes" if bench.chat_available else "seed route"
    bench.add(f"memory: RSS per worker after {served_total:,} requests ({mix}, 32 clients)", "≤ 120 MB",
              f"max {peak:.1f} MiB", "—", peak <= 120)
    bench.add(f"memory: RSS growth {served_first:,} -> {served_total:,} requests", "≤ 5 %",
              f"{100 * growth:+.1f} % (MiB per worker: {per_worker})", "—", growth <= 0.05)


def figure_latency(bench: Bench) -> None:
    seconds = bench.plan.latency_s
    cases = [("seed route", "latency_seed", seed_request())]
    if bench.chat_available:
        cases.append(("/v1/chat/completions", "latency_chat", chat_request()))
    for label, key, request in cases:
        through = bench.wrk_manager([request], connections=1, seconds=seconds)
        direct: WrkResult = bench.direct[key]
        added50, added99 = through.p50_ms - direct.p50_ms, through.p99_ms - direct.p99_ms
        errors = "" if not through.error_count else f", {through.describe_errors()}"
        bench.add(f"1 client, {label}: added p50", "≤ 0.8 ms",
                  f"+{added50:.3f} ms (p50 {through.p50_ms:.3f} ms, {through.rps:,.0f} req/s{errors})",
                  f"p50 {direct.p50_ms:.3f} ms", added50 <= 0.8 and not through.error_count)
        bench.add(f"1 client, {label}: added p99", "≤ 3 ms",
                  f"+{added99:.3f} ms (p99 {through.p99_ms:.3f} ms)", f"p99 {direct.p99_ms:.3f} ms",
                  added99 <= 3 and not through.error_count)
    if not bench.chat_available:
        for which in ("p50", "p99"):
            bench.add(f"1 client, /v1/chat/completions: added {which}", "≤ 0.8 ms" if which == "p50" else "≤ 3 ms",
                      "not available yet", "—", None)


def figure_throughput(bench: Bench) -> None:
    manager, upstream = bench.manager, bench.mock
    assert manager is not None and upstream is not None
    nginx_pids = upstream.worker_pids()
    cpu_before, nginx_before = manager.cpu(), sum(cpu_seconds(pid) for pid in nginx_pids)
    result = bench.wrk_manager([seed_request()], connections=32, seconds=bench.plan.throughput_s)
    cpu_used, nginx_used = manager.cpu() - cpu_before, sum(cpu_seconds(pid) for pid in nginx_pids) - nginx_before
    direct: WrkResult = bench.direct["throughput"]
    bench.add("32 clients, instant upstream, seed route", "≥ 1,500 req/s, 0 errors",
              f"{result.rps:,.0f} req/s, {result.describe_errors()}, p50 {result.p50_ms:.1f} / p99 "
              f"{result.p99_ms:.1f} ms", f"{direct.rps:,.0f} req/s", result.rps >= 1500 and not result.error_count)
    if result.requests:
        bench.notes.append(
            f"CPU per request at 32 clients: manager {1e6 * cpu_used / result.requests:,.0f} µs "
            f"(all gunicorn processes), nginx {1e6 * nginx_used / result.requests:,.0f} µs"
        )
    if bench.chat_available:
        chat = bench.wrk_manager([chat_request()], connections=32, seconds=bench.plan.throughput_s)
        bench.add("32 clients, instant upstream, /v1/chat/completions", "— (not a target)",
                  f"{chat.rps:,.0f} req/s, {chat.describe_errors()}, p99 {chat.p99_ms:.1f} ms",
                  f"{direct.rps:,.0f} req/s (seed path)", None)


def figure_delayed(bench: Bench, clients: int, model: str, seconds: float, minimum: float, key: str) -> None:
    delay_s = 0.2 if clients == 200 else 1.0
    assert bench.manager is not None
    cpu_before = bench.manager.cpu()
    result = bench.wrk_manager([seed_request(model)], connections=clients, seconds=seconds, timeout_s=10)
    if result.requests:
        cpu = 1e6 * (bench.manager.cpu() - cpu_before) / result.requests
        bench.notes.append(f"CPU per request at {clients:,} clients: manager {cpu:,.0f} µs (all gunicorn processes)")
    direct: WrkResult = bench.direct[key]
    bench.add(f"{clients:,} clients, upstream answering after {delay_s * 1000:.0f} ms",
              f"≥ {minimum:,.0f} req/s, 0 errors/timeouts",
              f"{result.rps:,.0f} req/s, {result.describe_errors()}, "
              f"p50 {result.p50_ms:.0f} / p99 {result.p99_ms:.0f} ms",
              f"{direct.rps:,.0f} req/s, p99 {direct.p99_ms:.0f} ms",
              result.rps >= minimum and not result.error_count)


def figure_stream(bench: Bench) -> None:
    direct: StreamResult = bench.direct["stream"]
    if not bench.chat_available:
        bench.add("200 streams: first byte added (p50)", "≤ 2 ms", "not available yet", "—", None)
        return
    assert bench.manager is not None
    through = streams(bench, bench.manager.port, "/v1/chat/completions",
                      {"model": STREAM_MODEL, "messages": MESSAGES, "stream": True})
    bench.manager.requests_served += through.streams
    d50, d99 = percentile(direct.first_byte_s, 50), percentile(direct.first_byte_s, 99)
    m50, m99 = percentile(through.first_byte_s, 50), percentile(through.first_byte_s, 99)
    failures = f", {len(through.failures)} failures" if through.failures else ""
    bench.add("200 concurrent streams: first byte added (p50)", "≤ 2 ms",
              f"+{_ms(m50 - d50)} (p50 {_ms(m50)}, p99 {_ms(m99)}, {through.streams / through.seconds:,.0f} "
              f"streams/s{failures})", f"p50 {_ms(d50)}, p99 {_ms(d99)}",
              (m50 - d50) <= 0.002 and not through.failures)
    if through.failures:
        bench.notes.append(f"stream failures (first of {len(through.failures)}): {through.failures[0]}")


def figure_registry(bench: Bench) -> None:
    manager, upstream = bench.manager, bench.mock
    assert manager is not None and upstream is not None
    count = bench.plan.registry_workers
    before = bench.wrk_manager([seed_request()], connections=1, seconds=bench.plan.latency_s)

    def registration(index: int) -> tuple[str, str, Any]:
        return "POST", "/api/server/register", {
            "model_name": f"bench-scale-{index // 10:05d}",
            "req_url_template": f"{upstream.base}{mock.INSTANT}?worker={index}",
            "body": {"input": "{USER_PROMPT}"},
            "owner": "bench",
            "response_extract": EXTRACT,
        }

    batch = asyncio.run(run_batch("127.0.0.1", manager.port, registration, count, concurrency=8))
    manager.requests_served += count
    rate = batch.ok / batch.seconds
    bad = count - batch.ok
    bench.add(f"registry: {count:,} registrations through the API (8 clients)", "≥ 300 /s",
              f"{rate:,.0f} /s ({batch.seconds:.1f} s, p50 {_ms(percentile(batch.latencies_s, 50))}, "
              f"p99 {_ms(percentile(batch.latencies_s, 99))}{f', {bad} failed' if bad else ''})", "—",
              rate >= 300 and not bad)
    if batch.failures:
        bench.notes.append(f"registration failures (first of {len(batch.failures)}): {batch.failures[0]}")

    timings, listed = [], 0
    for _ in range(5):
        reply = asyncio.run(_get("127.0.0.1", manager.port, "/api/server/workers"))
        timings.append(reply[0])
        listed = reply[1]
    manager.requests_served += 5
    worst = max(timings)
    median = statistics.median(timings)
    bench.add(f"registry: GET /api/server/workers with {listed:,} workers", "≤ 250 ms",
              f"median {_ms(median)}, worst {_ms(worst)} of 5", "—", median <= 0.25)

    after = bench.wrk_manager([seed_request()], connections=1, seconds=bench.plan.registry_after_s)
    ratio = after.p50_ms / before.p50_ms
    errors = "" if not after.error_count else f", {after.describe_errors()}"
    bench.add(f"registry: completion p50 with {listed:,} workers (1 client)", "≤ 1.10x the 1-worker p50",
              f"{ratio:.2f}x (p50 {after.p50_ms:.3f} ms, p99 {after.p99_ms:.3f} ms{errors})",
              f"1 worker: p50 {before.p50_ms:.3f} ms, p99 {before.p99_ms:.3f} ms",
              ratio <= 1.10 and not after.error_count)


async def _get(host: str, port: int, path: str) -> tuple[float, int]:
    connection = Connection(host, port)
    try:
        started = time.perf_counter()
        reply = await connection.request("GET", path)
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    if reply.status != 200:
        raise RuntimeError(f"GET {path} answered {reply.status}")
    return elapsed, len(reply.json()["data"])


def figure_profile(bench: Bench) -> None:
    manager = bench.manager
    assert manager is not None
    if profiling.py_spy() is None:
        bench.notes.append("profile skipped: py-spy is not installed (.venv/bin/pip install py-spy)")
        return
    seconds = bench.plan.profile_s
    outcome: dict[str, WrkResult] = {}
    load = threading.Thread(target=lambda: outcome.setdefault(
        "wrk", bench.wrk_manager([seed_request()], connections=32, seconds=seconds + 3)))
    load.start()
    time.sleep(1.5)
    outputs = []
    recorders = []
    for pid in manager.worker_pids():
        output = bench.workdir / f"profile-{pid}.txt"
        outputs.append(output)
        recorders.append(profiling.record(pid, seconds, output))
    for recorder in recorders:
        _, stderr = recorder.communicate()
        if recorder.returncode:
            bench.notes.append(f"py-spy failed: {stderr.decode(errors='replace')[-300:]}")
    load.join()
    summary = profiling.summarize([path for path in outputs if path.exists()])
    rps = outcome["wrk"].rps if "wrk" in outcome else 0.0
    bench.profile_report = (f"py-spy --gil, {seconds:g} s on each of {len(outputs)} workers under 32 clients "
                            f"(seed route, {rps:,.0f} req/s while sampled); raw stacks in {bench.workdir}\n"
                            + summary.report())
    (bench.workdir / "profile-summary.txt").write_text(bench.profile_report)


# -- running it -----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _met(met: bool | None) -> str:
    return "n/a" if met is None else "yes" if met else "NO"


def raise_open_files(wanted: int = 65536) -> int:
    """1,000 wrk connections, the manager's 1,000 more and their upstream sockets need many descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model or platform.processor()}), Python {platform.python_version()}"


def print_table(bench: Bench, header: list[str]) -> None:
    print("\n" + "\n".join(header))
    print("\n| figure | target | manager | direct | met? |")
    print("|---|---|---|---|---|")
    for row in bench.rows:
        print(f"| {row.figure} | {row.target} | {row.manager} | {row.direct} | {_met(row.met)} |")
    if bench.notes:
        print("\nnotes:")
        for note in bench.notes:
            print(f"- {note}")
    if bench.profile_report:
        print("\nprofile:\n" + bench.profile_report)


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="operategpt-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"\nkept {path} (nginx and manager logs, wrk scripts, profiles)")
        else:
            shutil.rmtree(path, ignore_errors=True)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs, 2,000/20,000 requests for memory, "
                                                             "1,000 registry workers")
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated figures to run, in this order: {','.join(FIGURES)}")
    parser.add_argument("--registry-workers", type=int, help="workers to register for the registry figure")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, profiles)")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(FIGURES)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    plan = QUICK if args.quick else FULL
    if args.registry_workers:
        plan = Plan(**{**plan.__dict__, "registry_workers": args.registry_workers})

    # Stop cleanly (nginx and gunicorn included) on Ctrl-C and on SIGTERM, even when started with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    open_files = raise_open_files()
    settings = shipped_settings()
    knobs = ", ".join(f"{name}={os.environ[name]}" for name in GUNICORN_KNOBS if name in os.environ) or "none"
    header = [
        f"machine: {machine()}; load average at start {load_average()}",
        f"manager: gunicorn wsgi:app with the shipped gunicorn.conf.py -> workers={settings['workers']}, "
        f"worker_class={settings['worker_class']}, threads={settings['threads']} (GUNICORN_* set: {knobs})",
        f"mode: {'quick' if args.quick else 'full'}; open files limit {open_files}",
    ]
    print("\n".join(header), flush=True)

    started = time.monotonic()
    with workdir(args.keep) as path:
        bench = Bench(plan, path, only)
        try:
            bench.mock = MockUpstream(path).start()
            measure_direct(bench)
            print(f"\nmanager (gunicorn wsgi:app, log in {path / 'manager.log'}):", flush=True)
            bench.manager = Manager(path).start()
            register_workers(bench)
            warm_up(bench)
            steps: dict[str, Callable[[], None]] = {
                "memory": lambda: figure_memory(bench),
                "latency": lambda: figure_latency(bench),
                "throughput": lambda: figure_throughput(bench),
                "profile": lambda: figure_profile(bench),
                "delay200": lambda: figure_delayed(bench, 200, DELAY200_MODEL, plan.delay200_s, 850, "delay200"),
                "delay1000": lambda: figure_delayed(bench, 1000, DELAY1000_MODEL, plan.delay1000_s, 800, "delay1000"),
                "stream": lambda: figure_stream(bench),
                "registry": lambda: figure_registry(bench),
            }
            memory_trail = []
            for name in FIGURES:
                if name in only:
                    steps[name]()
                    time.sleep(1)  # let kept-alive connections of the last figure go
                    memory_trail.append(f"{name} {bench.manager.memory_summary()}")
            bench.notes.append("RSS and threads per worker after each figure: " + "; ".join(memory_trail))
            served, rss = bench.manager.requests_served, bench.manager.rss()
            bench.add(f"memory: RSS per worker at the end of the run ({served:,} requests, every figure above)",
                      "≤ 120 MB", bench.manager.memory_summary(), "—", max(rss.values()) <= 120)
            pool_full = bench.manager.log_lines("Connection pool is full")
            if pool_full:
                bench.notes.append(f"urllib3 logged 'Connection pool is full, discarding connection' {pool_full:,} "
                                   "times: upstream connections beyond UPSTREAM_POOL_SIZE are opened and closed "
                                   "per request")
            errors = bench.manager.log_lines(" ERROR ")
            if errors:
                bench.notes.append(f"the manager logged {errors:,} ERROR lines; see its log (--keep)")
        finally:
            if bench.manager is not None:
                bench.manager.stop()
            if bench.mock is not None:
                bench.mock.stop()
        header.append(f"load average at end {load_average()}; run took {time.monotonic() - started:.0f} s")
        print_table(bench, header)
    return 0 if all(row.met is not False for row in bench.rows) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: nginx and the manager are stopped, the temporary directory removed", file=sys.stderr)
        sys.exit(130)
