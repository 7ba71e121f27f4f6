"""The mock upstream: Debian's nginx-light with fixed JSON replies, and its echo module for delays and streams.

nginx answers a fixed reply in tens of microseconds on one worker process, so the manager, not the mock,
is what a benchmark through the manager measures. `MockUpstream.start` checks every location once.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

from .procs import children, free_port, stop_process, wait_for_port

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

SEED_REPLY = {"data": {"items": [{"attributes": {"answer": "Hello! I am a mock model served by nginx."}}]}}
CHAT_REPLY = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "mock",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! I am a mock model served by nginx."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 4, "completion_tokens": 10, "total_tokens": 14},
}

# The streamed reply: one event at once, then one every STREAM_GAP_S, then [DONE] (about 1 s in all).
STREAM_EVENTS = 5
STREAM_GAP_S = 0.25

# Paths on the mock.
INSTANT = "/instant"
DELAY200 = "/delay200"
CHUNKED = "/chunked"  # the seed reply at once, but chunked like the delayed ones (the echo module's framing)
DELAY1000 = "/delay1000"
CHAT = "/v1/chat/completions"
STREAM = "/sse/v1/chat/completions"


def _compact(document: object) -> str:
    text = json.dumps(document, separators=(",", ":"))
    # Everything below goes inside single-quoted nginx strings, where `'`, `\` and `$` would mean something.
    if any(char in text for char in "'\\$"):
        raise ValueError("mock replies must not contain quotes, backslashes or dollars")
    return text


def _chunk(index: int) -> str:
    delta = {"role": "assistant", "content": f"token{index} "} if index == 0 else {"content": f"token{index} "}
    return _compact({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "mock",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    })


def nginx_config(prefix: Path, port: int) -> str:
    seed = _compact(SEED_REPLY)
    chat = _compact(CHAT_REPLY)
    stream_lines: list[str] = []
    for index in range(STREAM_EVENTS):
        if index:
            stream_lines.append(f"echo_sleep {STREAM_GAP_S};")
        stream_lines += [f"echo 'data: {_chunk(index)}';", "echo;", "echo_flush;"]
    stream_lines += ["echo 'data: [DONE]';", "echo;"]
    stream_body = "\n            ".join(stream_lines)
    return f"""\
load_module {ECHO_MODULE};
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # A mock that closes kept-alive connections would make the manager's pool see resets it would not see
    # against a real, long-lived upstream.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location = {INSTANT} {{
            default_type application/json;
            return 200 '{seed}';
        }}
        location = {CHUNKED} {{
            default_type application/json;
            echo '{seed}';
        }}
        location = {DELAY200} {{
            default_type application/json;
            echo_sleep 0.2;
            echo '{seed}';
        }}
        location = {DELAY1000} {{
            default_type application/json;
            echo_sleep 1;
            echo '{seed}';
        }}
        location = {CHAT} {{
            default_type application/json;
            return 200 '{chat}';
        }}
        location = {STREAM} {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            {stream_body}
        }}
        location / {{
            default_type application/json;
            return 404 '{{"error":"no such mock path"}}';
        }}
    }}
}}
"""


class MockUpstream:
    """nginx with `nginx_config`, run in the foreground (`daemon off`) from a private prefix directory."""

    def __init__(self, workdir: Path):
        self.prefix = workdir / "nginx"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MockUpstream:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not ECHO_MODULE.exists():
            raise RuntimeError(f"the nginx echo module is missing: install libnginx-mod-http-echo ({ECHO_MODULE})")
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(nginx_config(self.prefix, self.port))
        log = (self.prefix / "nginx-stdout.log").open("wb")
        self.proc = subprocess.Popen(
            [nginx, "-p", str(self.prefix), "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_for_port(self.port, timeout=10, proc=self.proc):
            raise RuntimeError(f"nginx did not start; see {self.prefix}/nginx-error.log")
        return self

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGQUIT, timeout=5)  # SIGQUIT: nginx's graceful shutdown
