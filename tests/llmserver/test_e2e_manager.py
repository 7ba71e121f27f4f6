"""Acceptance: the real manager (`python operategpt/llms/worker_manager.py`) with real llmservers on SmolLM2.

Every process here is real: the manager under gunicorn with a temporary SQLite registry, and
`python operategpt/llms/llmserver.py` subprocesses running the bundled GGUF. Nobody registers the
llmservers by hand; they do it themselves.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.llmserver.conftest import LLMServerProcess, eventually
from tests.support.servers import ManagerProcess

MODEL = "smollm2-e2e"


@pytest.fixture
def manager(tmp_path) -> Iterator[ManagerProcess]:
    with ManagerProcess(
        "sqlite:///" + str(tmp_path / "registry.db"),
        how="script",
        env={"LB_STRATEGY": "weighted_round_robin", "HEALTH_CHECK_INTERVAL": "1"},
    ) as manager:
        yield manager


@pytest.fixture
def start_model_server(start_llmserver, manager: ManagerProcess) -> Callable[..., LLMServerProcess]:
    def start(weight: int = 1, port: int | None = None) -> LLMServerProcess:
        return start_llmserver(
            {
                **({"LLM_SERVER_PORT": str(port)} if port else {}),
                "LLM_NAME": MODEL,
                "LLM_MANAGER_URL": manager.url,
                "LLM_WEIGHT": str(weight),
                "LLM_REGISTER_INTERVAL": "1",
                # Several servers share this machine's cores with the manager and the tests.
                "LLM_THREADS": "1",
                "LLM_MAX_TOKENS": "8",
            }
        )

    return start


def listed_urls(manager: ManagerProcess) -> set[str]:
    reply = requests.get(f"{manager.url}/api/server/workers", params={"model_name": MODEL}, timeout=5)
    assert reply.status_code == 200
    return {worker["req_url_template"] for worker in reply.json()["data"]}


def ask(manager: ManagerProcess, prompt: str = "Name a color.", temperature: float = 0) -> requests.Response:
    body = {"input": prompt, "model_name": MODEL, "temperature": temperature}
    return requests.post(f"{manager.url}/api/v1/chat/completions", json=body, timeout=60)


def served(server: LLMServerProcess) -> int:
    return requests.get(f"{server.url}/health", timeout=5).json()["served"]


def stream(base_url: str, body: dict) -> tuple[list[str], list[float], dict]:
    """The content pieces of a streamed chat completion, when each arrived (s after sending), its last event."""
    started = time.monotonic()
    pieces: list[str] = []
    arrived: list[float] = []
    last: dict = {}
    with requests.post(f"{base_url}/v1/chat/completions", json={**body, "stream": True}, stream=True,
                       timeout=60) as reply:
        assert reply.status_code == 200, reply.text
        for line in reply.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            last = json.loads(line[len(b"data: "):])
            content = last["choices"][0]["delta"].get("content")
            if content:
                pieces.append(content)
                arrived.append(time.monotonic() - started)
    return pieces, arrived, last


def test_self_registered_smollm2_answers_through_the_manager(manager, start_model_server) -> None:
    server = start_model_server()
    generate_url = f"{server.url}/api/generate"
    chat_url = f"{server.url}/v1/chat/completions"
    assert eventually(lambda: chat_url in listed_urls(manager), timeout=20), server.log()

    first, second = ask(manager), ask(manager)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["success"] is True
    assert body["msg"] == "execute succeed"
    assert body["result"].strip()
    assert second.json()["result"] == body["result"]
    # Written by the model: the same text the llmserver generates itself at temperature 0.
    direct = requests.post(generate_url, json={"input": "Name a color.", "temperature": 0}, timeout=60)
    assert direct.text == body["result"]

    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert eventually(lambda: chat_url not in listed_urls(manager), timeout=5)


def test_a_conversation_streams_through_the_manager_as_it_does_direct(manager, start_model_server) -> None:
    server = start_model_server()
    assert eventually(lambda: f"{server.url}/v1/chat/completions" in listed_urls(manager), timeout=20)
    conversation = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a pirate. Always answer like a pirate."},
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Ahoy, Ada!"},
            {"role": "user", "content": "Tell me a story about the sea."},
        ],
        "temperature": 0,
        "max_tokens": 24,
    }
    through, arrived, last = stream(manager.url, conversation)
    direct, _, _ = stream(server.url, conversation)
    # The whole conversation and max_tokens reached the model: the same text as asked direct, token by token
    # (more than LLM_MAX_TOKENS=8, cut at 24), and the pieces arrived as they were generated, not at the end.
    assert through == direct
    assert 10 <= len(through) <= 24
    assert last["choices"][0]["finish_reason"] == "length"
    assert arrived[-1] - arrived[0] > 0.1, arrived
    without_the_system_message = {**conversation, "messages": conversation["messages"][1:]}
    assert stream(manager.url, without_the_system_message)[0] != through

    story = {"model": MODEL, "messages": conversation["messages"][-1:], "temperature": 0, "max_tokens": 20}
    reply = requests.post(f"{manager.url}/v1/chat/completions", json=story, timeout=60)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["usage"]["completion_tokens"] == 20
    assert answer["choices"][0]["finish_reason"] == "length"


def listed_row(manager: ManagerProcess, url: str) -> dict | None:
    reply = requests.get(f"{manager.url}/api/server/workers", params={"model_name": MODEL}, timeout=5)
    return next((worker for worker in reply.json()["data"] if worker["req_url_template"] == url), None)


def test_the_operators_drain_and_offline_win_over_the_servers_registration(manager, start_model_server) -> None:
    server = start_model_server(weight=2)
    chat_url = f"{server.url}/v1/chat/completions"
    assert eventually(lambda: chat_url in listed_urls(manager), timeout=20)

    # The operator drains it: the same worker registered again with weight 0.
    drain = {"model_name": MODEL, "req_url_template": chat_url, "api_format": "openai", "weight": 0,
             "health_url": f"{server.url}/health", "owner": "operategpt"}
    assert requests.post(f"{manager.url}/api/server/register", json=drain, timeout=5).status_code == 200
    # The server crashes (its row stays) and is restarted: it registers again, and the drain holds.
    server.kill()
    restarted = start_model_server(weight=2, port=server.port)
    assert eventually(lambda: "registered" in restarted.log(), timeout=20), restarted.log()
    assert "weight 0" in restarted.log()
    assert listed_row(manager, chat_url)["weight"] == 0

    # The operator takes it offline: it stays out (the server checks every second).
    offline = {"model_name": MODEL, "req_url_template": chat_url}
    assert requests.post(f"{manager.url}/api/server/offline", json=offline, timeout=5).status_code == 200
    assert eventually(lambda: "taken offline by the operator" in restarted.log(), timeout=10), restarted.log()
    time.sleep(3)
    assert chat_url not in listed_urls(manager)
    assert restarted.proc is not None and restarted.proc.poll() is None


def test_two_servers_split_traffic_by_weight_and_survive_a_stop(manager, start_model_server) -> None:
    heavy, light = start_model_server(weight=3), start_model_server(weight=1)
    urls = {f"{heavy.url}/v1/chat/completions", f"{light.url}/v1/chat/completions"}
    assert eventually(lambda: urls <= listed_urls(manager), timeout=20)

    replies = [ask(manager, temperature=0) for _ in range(24)]
    assert all(reply.status_code == 200 and reply.json()["success"] for reply in replies)
    counts = served(heavy), served(light)
    assert sum(counts) == 24
    assert light.proc is not None and counts[1] > 0
    assert 0.6 <= counts[0] / 24 <= 0.9, counts

    # Stop one while requests keep coming: every request still succeeds.
    failures: list[str] = []
    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            reply = ask(manager)
            if reply.status_code != 200:
                failures.append(f"{reply.status_code} {reply.text}")

    clients = [threading.Thread(target=traffic) for _ in range(2)]
    for client in clients:
        client.start()
    before = served(light)
    assert eventually(lambda: served(light) >= before + 2, timeout=20)
    heavy.signal(signal.SIGTERM)
    assert heavy.wait(30) == 0
    after_stop = served(light)
    assert eventually(lambda: served(light) >= after_stop + 6, timeout=30)
    done.set()
    for client in clients:
        client.join(60)
    assert failures == []
    assert listed_urls(manager) == {f"{light.url}/v1/chat/completions"}


def test_a_crashed_server_is_failed_over(manager, start_model_server) -> None:
    crashing, steady = start_model_server(), start_model_server()
    assert eventually(lambda: len(listed_urls(manager)) == 2, timeout=20)
    crashing.kill()  # SIGKILL: no chance to leave the listing
    replies = [ask(manager) for _ in range(10)]
    assert [reply.status_code for reply in replies] == [200] * 10
    assert served(steady) == 10
