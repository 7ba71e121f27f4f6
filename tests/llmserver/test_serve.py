"""How the inference server is run: its gunicorn settings through the one runner, and leaving before stopping."""

from __future__ import annotations

import signal
from dataclasses import replace
from typing import Any

import pytest
import requests
from gunicorn.arbiter import Arbiter

from operategpt.deploy import run as runner
from operategpt.llmserver import serve
from operategpt.llmserver.config import ServerSettings
from tests.llmserver.conftest import FakeManager, eventually
from tests.support.servers import FakeUpstream


def test_gunicorn_settings(proxy_settings: ServerSettings) -> None:
    settings = replace(proxy_settings, host="::", port=8123, server_threads=5, llm_name="m1", log_level="warning")
    options = serve.gunicorn_settings(settings, when_ready=print)
    assert options["bind"] == "[::]:8123"
    assert (options["workers"], options["worker_class"], options["threads"]) == (1, "gthread", 5)
    assert (options["timeout"], options["graceful_timeout"]) == (serve.WORKER_TIMEOUT, serve.GRACEFUL_TIMEOUT)
    assert options["proc_name"] == "operategpt-llmserver-m1"
    assert options["when_ready"] is print
    logging = options["logconfig_dict"]
    assert logging["root"]["level"] == "WARNING"
    assert logging["loggers"]["gunicorn.access"]["level"] == "WARNING"
    assert logging["formatters"]["main"]["()"] == "operategpt.deploy.logformat.TextFormatter"
    json_logs = serve.gunicorn_settings(replace(settings, log_format="json", log_level="debug"))["logconfig_dict"]
    assert json_logs["formatters"]["main"]["()"] == "operategpt.deploy.logformat.JsonFormatter"
    assert json_logs["loggers"]["gunicorn.access"]["level"] == "DEBUG"


def test_the_runner_takes_the_settings_as_gunicorn_settings(proxy_settings: ServerSettings) -> None:
    cfg = runner.Server(lambda: None, serve.gunicorn_settings(proxy_settings), name="llmserver").cfg
    assert (cfg.workers, cfg.worker_class_str, cfg.threads, cfg.timeout) == (1, "gthread", 16, serve.WORKER_TIMEOUT)
    assert cfg.proc_name == "operategpt-llmserver-proxyllm"
    assert cfg.bind == [f"127.0.0.1:{proxy_settings.port}"]
    assert cfg.logger_class.__name__ == "GunicornLogger"


def test_an_unknown_gunicorn_setting_is_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        runner.Server(lambda: None, {"workers": 1, "wrokers": 2})
    assert "unknown gunicorn settings: wrokers" in capsys.readouterr().err


@pytest.mark.parametrize("handler", ["handle_term", "handle_int", "handle_quit"])
def test_the_master_runs_before_stop_before_it_stops(monkeypatch, handler: str) -> None:
    happened: list[str] = []
    monkeypatch.setattr(Arbiter, handler, lambda self: happened.append("gunicorn stops"))
    app = runner.Server(lambda: None, {"workers": 1}, before_stop=lambda: happened.append("before_stop"))
    getattr(runner._Arbiter(app), handler)()
    assert happened == ["before_stop", "gunicorn stops"]


def test_serve_registers_when_ready_and_leaves_before_stop(monkeypatch, proxy_settings, fake_manager) -> None:
    ran: dict[str, Any] = {}
    monkeypatch.setattr(serve, "run", lambda factory, settings, **options: ran.update(settings, **options))
    monkeypatch.setattr(serve, "local_health_check", lambda settings: lambda: True)
    serve.serve(replace(proxy_settings, manager_url=fake_manager.url))
    assert ran["name"] == "llmserver"

    ran["when_ready"](None)
    assert eventually(lambda: ("proxyllm", proxy_settings.chat_url) in fake_manager.workers)
    ran["before_stop"]()
    assert fake_manager.workers == {}
    ran["on_exit"](None)  # after a signal, nothing left to do
    assert len(fake_manager.calls("/api/server/offline")) == 1


def test_sigterm_leaves_the_listing_while_the_server_still_serves(
    start_llmserver, fake_manager: FakeManager, fake_openai: FakeUpstream
) -> None:
    server = start_llmserver(
        {
            "LLM_NAME": "proxyllm",
            "OPEN_AI_PROXY_SERVER_URL": fake_openai.url("/v1/chat/completions"),
            "OPEN_AI_KEY": "sk-test",
            "LLM_MANAGER_URL": fake_manager.url,
            "LLM_REGISTER_INTERVAL": "0.2",
        }
    )
    assert eventually(lambda: len(fake_manager.workers) == 1)
    answered_while_leaving = []
    handle = fake_manager.handle

    def offline_probes_the_server(request):
        if request.path == "/api/server/offline":
            # The master waits for this reply before it stops the worker: the server must still answer.
            try:
                answered_while_leaving.append(requests.get(f"{server.url}/health", timeout=5).status_code)
            except requests.RequestException as exc:
                answered_while_leaving.append(repr(exc))
        return handle(request)

    fake_manager.server.handler = offline_probes_the_server
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert answered_while_leaving == [200]
    assert fake_manager.workers == {}


def test_json_logs(start_llmserver, fake_openai: FakeUpstream) -> None:
    import json

    server = start_llmserver(
        {
            "LLM_NAME": "proxyllm",
            "OPEN_AI_PROXY_SERVER_URL": fake_openai.url("/v1/chat/completions"),
            "OPEN_AI_KEY": "sk-test",
            "LOG_FORMAT": "json",
        }
    )
    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert {"gunicorn.error", "operategpt.llmserver.serve"} <= {line["logger"] for line in lines}
    assert any("LLM_MANAGER_URL is not set" in line["msg"] for line in lines)
