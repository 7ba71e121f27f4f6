"""Drives wrk (Debian's package) with a generated Lua script and reads its figures back as JSON.

The script sets the POST body (or alternates between several requests) and its `done()` prints the
summary and latency percentiles as one JSON line, so nothing is scraped from wrk's human output.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = "BENCH_JSON "
_SCRIPTS = itertools.count(1)

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,"max":%.1f,"mean":%.1f}\\n',
    "MARK", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
""".replace("MARK", MARK)


@dataclass(frozen=True)
class Request:
    path: str
    body: Any = None  # a JSON document; None sends a GET
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]  # connect, read, write, status (non-2xx/3xx), timeout
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def describe_errors(self) -> str:
        if not self.error_count:
            return "0 errors"
        return ", ".join(f"{count} {kind}" for kind, count in self.errors.items() if count)


def _lua_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def lua_script(requests: list[Request]) -> str:
    """One request: wrk's own (cached) request. Several: taken in turn on each connection's thread."""
    if len(requests) == 1:
        only = requests[0]
        lines = [f'wrk.method = "{"GET" if only.body is None else "POST"}"']
        if only.body is not None:
            lines += [f"wrk.body = {_lua_string(json.dumps(only.body))}",
                      'wrk.headers["Content-Type"] = "application/json"']
        lines += [f'wrk.headers["{name}"] = {_lua_string(value)}' for name, value in only.headers]
        return "\n".join(lines) + "\n" + _DONE
    formatted = []
    for item in requests:
        headers = {"Content-Type": "application/json", **dict(item.headers)} if item.body is not None else {}
        header_table = "{" + ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()) + "}"
        body = "nil" if item.body is None else _lua_string(json.dumps(item.body))
        method = "GET" if item.body is None else "POST"
        formatted.append(f'wrk.format("{method}", {_lua_string(item.path)}, {header_table}, {body})')
    return (
        "local prepared = {}\n"
        "local turn = 0\n"
        "init = function(args)\n"
        + "".join(f"  prepared[{i + 1}] = {text}\n" for i, text in enumerate(formatted))
        + "end\n"
        "request = function()\n"
        "  turn = turn % #prepared + 1\n"
        "  return prepared[turn]\n"
        "end\n" + _DONE
    )


def run_wrk(
    base: str,
    requests: list[Request],
    *,
    connections: int,
    seconds: float,
    workdir: Path,
    threads: int | None = None,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Run wrk against `base` (scheme, host and port); `requests[0].path` is the URL's path."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    script = workdir / f"wrk-{next(_SCRIPTS)}.lua"
    script.write_text(lua_script(requests))
    threads = threads or min(2, connections)
    command = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:g}s",
        "-s", str(script), base + requests[0].path,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 60)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            raw = json.loads(line[len(MARK):])
            return WrkResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                errors={kind: raw[kind] for kind in ("connect", "read", "write", "status", "timeout")},
                **{f"{key}_ms": raw[key] / 1000 for key in ("p50", "p90", "p99", "p999", "max", "mean")},
            )
    raise RuntimeError(f"wrk printed no result (exit {done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
