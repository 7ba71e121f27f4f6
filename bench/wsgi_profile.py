"""CPU per request of the manager's WSGI app alone, without gunicorn: the part of the hot path this project owns.

    .venv/bin/python bench/wsgi_profile.py [--requests 20000] [--route seed|openai]
        [--location instant|chunked|delay200] [--profile [--sort cumulative]]

Starts the nginx mock (bench/loadbench/mock.py), builds the app with `create_app` on a temporary SQLite
registry, registers one worker and calls the app in a loop on one thread, as gunicorn's worker thread
would (a prepared WSGI environ; the upstream call is real, over loopback to nginx). Prints microseconds of
process CPU per request; `--profile` adds cProfile's top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadbench import mock
from loadbench.mock import MockUpstream


def environ(method: str, path: str, body: bytes) -> dict:
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8007",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8007",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--route", choices=("seed", "openai"), default="seed")
    parser.add_argument("--location", choices=("instant", "chunked", "delay200"), default="instant",
                        help="seed route: which mock reply (chunked: at once but chunked, as the delayed ones are)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative, ...)")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="operategpt-wsgi-") as scratch:
        workdir = Path(scratch)
        upstream = MockUpstream(workdir).start()
        try:
            return run(args, workdir, upstream)
        finally:
            upstream.stop()


def run(args: argparse.Namespace, workdir: Path, upstream: MockUpstream) -> int:
    os.environ["LOG_LEVEL"] = "warning"
    from operategpt.gateway.registry.db import upgrade
    from operategpt.settings import Settings
    from operategpt.web.app import create_app

    url = f"sqlite:///{workdir}/registry.db"
    upgrade(url)
    app = create_app(Settings.from_env({}, database_url=url, health_checks=False))
    client = app.test_client()
    if args.route == "seed":
        location = {"instant": mock.INSTANT, "chunked": mock.CHUNKED, "delay200": mock.DELAY200}[args.location]
        worker = {"model_name": "m", "req_url_template": upstream.base + location,
                  "body": {"input": "{USER_PROMPT}"}, "response_extract": "data.items[].attributes.answer"}
        path, body = "/api/v1/chat/completions", {"input": "who are you?", "model_name": "m"}
    else:
        worker = {"model_name": "m", "req_url_template": upstream.base + mock.CHAT, "api_format": "openai"}
        path, body = "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "who are you?"}]}
    assert client.post("/api/server/register", json=worker).status_code == 200
    payload = json.dumps(body).encode()

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(status)

    def once() -> None:
        for _ in app(environ("POST", path, payload), start_response):
            pass

    for _ in range(min(500, args.requests)):
        once()
    profiler = cProfile.Profile() if args.profile else None
    started_cpu, started = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    for _ in range(args.requests):
        once()
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    print(f"{args.route}: {args.requests} requests, {cpu / args.requests * 1e6:.0f} µs CPU and "
          f"{wall / args.requests * 1e6:.0f} µs wall per request")
    if profiler:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
