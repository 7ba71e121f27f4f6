"""Real HTTP servers on loopback for tests: a programmable fake upstream and a manager run as production runs it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Request], Response]


def json_reply(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any) -> None:
        pass


@dataclass
class FakeUpstream:
    """A threaded HTTP server whose replies come from `handler`; it records every request it gets."""

    handler: Handler
    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: Any = None
        self._lock = threading.Lock()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _app(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        with self._lock:
            self.seen.append(Seen(
                request.method, request.path, dict(request.headers), request.get_data(),
                request.query_string.decode(),
            ))
        return self.handler(request)(environ, start_response)

    def start(self) -> FakeUpstream:
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=_QuietHandler)
        self._server.daemon_threads = True
        self._server.socket.listen(1024)  # werkzeug's default backlog drops bursts of hundreds of connections
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class ManagerProcess:
    """The manager in a subprocess: `gunicorn wsgi:app` from the checkout, or the seed's worker_manager.py."""

    def __init__(self, database_url: str, *, how: str = "gunicorn", workers: int = 2, env: dict | None = None,
                 stderr: Any = None):
        self.port = free_port()
        self.database_url = database_url
        self.how = how
        self.workers = workers
        self.extra_env = env or {}
        self.stderr = stderr
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.how == "gunicorn":
            return [sys.executable, "-m", "gunicorn", "wsgi:app"]
        if self.how == "script":
            return [sys.executable, "operategpt/llms/worker_manager.py"]
        raise ValueError(self.how)

    def start(self) -> ManagerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "LLM_MANAGE_SERVER_HOST": "127.0.0.1",
            "LLM_MANAGE_SERVER_PORT": str(self.port),
            "GUNICORN_WORKERS": str(self.workers),
            "LOG_LEVEL": "warning",
            **self.extra_env,
        }
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=env, start_new_session=True, stderr=self.stderr)
        if not wait_until(self._ready, timeout=30):
            self.stop(signal.SIGKILL)
            raise RuntimeError(f"manager did not start ({' '.join(self.command())})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"manager exited with {self.proc.returncode}")
        try:
            return requests.get(self.url + "/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Signal the whole process group (gunicorn master and workers) and wait for it to end."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.proc = None

    def __enter__(self) -> ManagerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TcpRelay:
    """A byte-for-byte TCP forwarder on its own loopback port to `target_port`: a same-host proxy (or NAT) in
    front of a server, one that adds no header of its own."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.port = free_port()
        self.target = (target_host, target_port)
        self._listener: socket.socket | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> TcpRelay:
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=1024)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
