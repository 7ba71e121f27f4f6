"""The local backend with the real SmolLM2-135M-Instruct GGUF: text, determinism, streaming, the queue."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from operategpt.llmserver.app import create_app
from operategpt.llmserver.backends.local import LocalBackend
from operategpt.llmserver.config import ServerSettings
from tests.llmserver.conftest import sse_events

SETTINGS = ServerSettings(llm_name="smollm2", max_tokens=24)
PROMPT = {"input": "What is the capital of France?", "temperature": 0, "max_tokens": 24}


def chat(stream: bool = False, max_tokens: int = 24) -> dict:
    return {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
    }


def test_generates_text_and_is_deterministic_at_temperature_0(make_local_backend: Callable[..., LocalBackend]) -> None:
    client = create_app(SETTINGS, backend=make_local_backend()).test_client()
    first = client.post("/api/generate", json=PROMPT)
    # Whatever was asked in between (and left in the model's cache) does not change the answer.
    client.post("/api/generate", json={**PROMPT, "input": "Tell me a joke."})
    second = client.post("/api/generate", json=PROMPT)
    assert first.status_code == 200
    assert first.mimetype == "text/plain"
    text = first.get_data(as_text=True)
    assert text.strip()
    assert second.get_data(as_text=True) == text


def test_sampling_varies_unless_a_seed_is_fixed(make_local_backend: Callable[..., LocalBackend]) -> None:
    poem = {"messages": [{"role": "user", "content": "Write a poem about the sea."}], "temperature": 1.2}
    random_client = create_app(SETTINGS, backend=make_local_backend()).test_client()
    answers = {random_client.post("/v1/chat/completions", json=poem).json["choices"][0]["message"]["content"]}
    answers.add(random_client.post("/v1/chat/completions", json=poem).json["choices"][0]["message"]["content"])
    answers.add(random_client.post("/v1/chat/completions", json=poem).json["choices"][0]["message"]["content"])
    assert len(answers) > 1

    seeded = {**poem, "seed": 1234}
    first = random_client.post("/v1/chat/completions", json=seeded).json["choices"][0]["message"]["content"]
    again = random_client.post("/v1/chat/completions", json=seeded).json["choices"][0]["message"]["content"]
    assert first == again

    fixed_client = create_app(SETTINGS, backend=make_local_backend(seed=7)).test_client()
    first = fixed_client.post("/v1/chat/completions", json=poem).json["choices"][0]["message"]["content"]
    again = fixed_client.post("/v1/chat/completions", json=poem).json["choices"][0]["message"]["content"]
    assert first == again


def test_chat_completion_reports_usage(make_local_backend: Callable[..., LocalBackend]) -> None:
    client = create_app(SETTINGS, backend=make_local_backend()).test_client()
    reply = client.post("/v1/chat/completions", json=chat(max_tokens=5))
    assert reply.status_code == 200
    body = reply.json
    assert body["choices"][0]["message"]["content"].strip()
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 5
    assert body["usage"]["prompt_tokens"] > 0


def test_stream_gives_the_same_text_as_one_answer(make_local_backend: Callable[..., LocalBackend]) -> None:
    client = create_app(SETTINGS, backend=make_local_backend()).test_client()
    whole = client.post("/v1/chat/completions", json=chat()).json["choices"][0]["message"]["content"]
    reply = client.post("/v1/chat/completions", json=chat(stream=True))
    assert reply.status_code == 200
    events = sse_events(reply.get_data().split(b"\n\n"))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) > 3
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_prompt_longer_than_the_context_is_a_400(make_local_backend: Callable[..., LocalBackend]) -> None:
    client = create_app(SETTINGS, backend=make_local_backend()).test_client()
    long_input = "tell me more " * 400  # well over the 512-token context of the test model
    reply = client.post("/api/generate", json={"input": long_input})
    assert reply.status_code == 400
    assert "context" in reply.json["msg"]
    stream = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": long_input}], "stream": True}
    )
    assert stream.status_code == 400
    # Nothing is left holding the model.
    assert client.post("/api/generate", json=PROMPT).status_code == 200


def test_full_queue_answers_429_and_frees_up(make_local_backend: Callable[..., LocalBackend]) -> None:
    backend = make_local_backend(queue_size=0)
    client = create_app(SETTINGS, backend=backend).test_client()
    # An open stream holds the model until it is closed.
    holding = client.post("/v1/chat/completions", json=chat(stream=True), buffered=False)
    assert holding.status_code == 200
    assert backend.stats()["in_flight"] == 1

    busy = client.post("/api/generate", json=PROMPT)
    assert busy.status_code == 429
    assert busy.headers["Retry-After"] == "1"
    assert "LLM_QUEUE_SIZE" in busy.json["msg"]
    busy_chat = client.post("/v1/chat/completions", json=chat())
    assert busy_chat.status_code == 429
    assert busy_chat.json["error"]["type"] == "rate_limit_error"

    holding.close()
    assert backend.stats()["in_flight"] == 0
    assert client.post("/api/generate", json=PROMPT).status_code == 200


def test_queued_requests_wait_their_turn(make_local_backend: Callable[..., LocalBackend]) -> None:
    backend = make_local_backend(queue_size=1, queue_timeout=30)
    client = create_app(SETTINGS, backend=backend).test_client()
    holding = client.post("/v1/chat/completions", json=chat(stream=True), buffered=False)
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(client.post("/api/generate", json=PROMPT).status_code))
    waiter.start()
    deadline = time.monotonic() + 5
    while backend.stats()["in_flight"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.stats()["in_flight"] == 2
    # One running, one waiting: the next is refused.
    assert client.post("/api/generate", json=PROMPT).status_code == 429
    holding.close()
    waiter.join(30)
    assert results == [200]


def test_a_wait_longer_than_the_queue_timeout_is_a_429(make_local_backend: Callable[..., LocalBackend]) -> None:
    backend = make_local_backend(queue_size=1, queue_timeout=0.2)
    client = create_app(SETTINGS, backend=backend).test_client()
    holding = client.post("/v1/chat/completions", json=chat(stream=True), buffered=False)
    reply = client.post("/api/generate", json=PROMPT)
    assert reply.status_code == 429
    assert "LLM_QUEUE_TIMEOUT" in reply.json["msg"]
    holding.close()
    assert backend.stats()["in_flight"] == 0
