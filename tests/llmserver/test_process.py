"""The real entry point `python operategpt/llms/llmserver.py` under gunicorn, as an operator runs it."""

from __future__ import annotations

import signal
import subprocess
import sys

import requests

from tests.llmserver.conftest import LLMSERVER_SCRIPT, FakeManager, eventually
from tests.support.servers import ROOT, FakeUpstream


def test_serves_registers_itself_and_leaves_on_sigterm(start_llmserver, fake_manager: FakeManager) -> None:
    server = start_llmserver(
        {"LLM_NAME": "smollm2", "LLM_MANAGER_URL": fake_manager.url, "LLM_THREADS": "1", "LLM_MAX_TOKENS": "8"}
    )
    generate_url = f"{server.url}/api/generate"
    chat_url = f"{server.url}/v1/chat/completions"
    assert eventually(lambda: ("smollm2", chat_url) in fake_manager.workers)
    registered = fake_manager.workers[("smollm2", chat_url)]
    assert registered["health_url"] == f"{server.url}/health"
    assert registered["api_format"] == "openai"

    reply = requests.post(generate_url, json={"input": "Say hello.", "temperature": 0}, timeout=30)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.text.strip()

    # A client that hangs up mid-stream gives the model back.
    story = {"messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 400, "stream": True}
    stream = requests.post(f"{server.url}/v1/chat/completions", json=story, stream=True, timeout=30)
    lines = stream.iter_lines()
    assert next(lines).startswith(b"data: ")
    assert requests.get(f"{server.url}/health", timeout=5).json()["in_flight"] == 1
    stream.close()
    assert eventually(lambda: requests.get(f"{server.url}/health", timeout=5).json()["in_flight"] == 0, timeout=5)

    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert fake_manager.workers == {}
    offline = fake_manager.calls("/api/server/offline")
    assert offline[0].json() == {"model_name": "smollm2", "req_url_template": chat_url}
    log = server.log()
    assert "gthread" in log
    assert "registered smollm2" in log


def test_proxyllm_serves_through_the_entry_point(start_llmserver, fake_openai: FakeUpstream) -> None:
    server = start_llmserver(
        {
            "LLM_NAME": "proxyllm",
            "OPEN_AI_PROXY_SERVER_URL": fake_openai.url("/v1/chat/completions"),
            "OPEN_AI_KEY": "sk-test",
            "PROXYLLM_BACKEND": "fake-model",
        }
    )
    reply = requests.post(f"{server.url}/api/generate", json={"input": "hi"}, timeout=10)
    assert reply.text == "hello from upstream"
    assert fake_openai.seen[0].json()["model"] == "fake-model"


def test_missing_key_is_a_clear_start_up_error(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "LLM_NAME": "proxyllm"}
    done = subprocess.run(
        [sys.executable, str(LLMSERVER_SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert "configuration error" in done.stderr
    assert "OPEN_AI_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_dotenv_is_read_and_the_environment_wins(tmp_path, fake_openai: FakeUpstream, start_llmserver) -> None:
    (tmp_path / ".env").write_text(
        "LLM_NAME=proxyllm\n"
        f"OPEN_AI_PROXY_SERVER_URL={fake_openai.url('/v1/chat/completions')}\n"
        "OPEN_AI_KEY=sk-from-dotenv\n"
        "PROXYLLM_BACKEND=from-dotenv\n"
    )
    server = start_llmserver({"PROXYLLM_BACKEND": "from-environment"})
    requests.post(f"{server.url}/api/generate", json={"input": "hi"}, timeout=10)
    call = fake_openai.seen[0]
    assert call.headers["Authorization"] == "Bearer sk-from-dotenv"
    assert call.json()["model"] == "from-environment"
