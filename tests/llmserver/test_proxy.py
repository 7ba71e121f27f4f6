"""The proxyllm backend against a fake OpenAI API on loopback: forwarding, streaming, upstream errors."""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest
import requests
from werkzeug.wrappers import Request, Response

from operategpt.llmserver.app import create_app
from operategpt.llmserver.config import ServerSettings
from tests.llmserver.conftest import chat_reply, openai_error, serve_app, sse_events, sse_reply
from tests.support.servers import FakeUpstream, free_port, json_reply

CHAT = {"messages": [{"role": "user", "content": "who are you?"}], "temperature": 0.3, "max_tokens": 17}


@pytest.fixture
def client(proxy_settings: ServerSettings):
    return create_app(proxy_settings).test_client()


def test_forwards_model_key_temperature_and_max_tokens(client, fake_openai: FakeUpstream) -> None:
    reply = client.post("/api/generate", json={"input": "who are you?", "temperature": 0.3, "max_tokens": 17})
    assert reply.status_code == 200
    assert reply.get_data(as_text=True) == "hello from upstream"
    [call] = fake_openai.seen
    assert call.method == "POST"
    assert call.path == "/v1/chat/completions"
    assert call.headers["Authorization"] == "Bearer sk-test-secret"
    assert call.json() == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "who are you?"}],
        "temperature": 0.3,
        "max_tokens": 17,
        "stream": False,
    }


def test_api_root_url_gets_the_chat_path(fake_openai: FakeUpstream, proxy_settings: ServerSettings) -> None:
    from dataclasses import replace

    settings = replace(proxy_settings, proxy_url=fake_openai.url("/v1"))
    reply = create_app(settings).test_client().post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 200
    assert fake_openai.seen[0].path == "/v1/chat/completions"


def test_chat_completion_non_streaming(client, fake_openai: FakeUpstream) -> None:
    reply = client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200
    body = reply.json
    assert body["model"] == "proxyllm"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello from upstream"}
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_streaming_is_forwarded_as_it_arrives(proxy_settings: ServerSettings, fake_openai: FakeUpstream) -> None:
    gate = threading.Event()
    fake_openai.handler = lambda request: sse_reply(["Hel", "lo"], gate=gate, tail=[" there"])
    with serve_app(create_app(proxy_settings)) as url:
        reply = requests.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=10)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        lines = reply.iter_lines()
        received = []
        # The first pieces arrive while the upstream is still holding back the rest.
        while "".join(received) != "Hello":
            event = sse_events([next(lines)])
            if event:
                received.append(json.loads(event[0])["choices"][0]["delta"].get("content", ""))
        gate.set()
        rest = sse_events(list(lines))
    assert rest[-1] == "[DONE]"
    chunks = [json.loads(event) for event in rest[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == " there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert fake_openai.seen[0].json()["stream"] is True


def test_official_openai_client_streams_and_not(proxy_settings: ServerSettings, fake_openai: FakeUpstream) -> None:
    with serve_app(create_app(proxy_settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        completion = client.chat.completions.create(model="proxyllm", messages=CHAT["messages"], max_tokens=5)
        assert completion.choices[0].message.content == "hello from upstream"
        fake_openai.handler = lambda request: sse_reply(["a", "b", "c"])
        stream = client.chat.completions.create(model="proxyllm", messages=CHAT["messages"], stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "abc"


def test_upstream_ignoring_stream_still_streams(client, fake_openai: FakeUpstream) -> None:
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse_events(reply.get_data().split(b"\n\n"))
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "hello from upstream"
    assert events[-1] == "[DONE]"


def test_upstream_401_is_a_502_naming_the_key(client, fake_openai: FakeUpstream) -> None:
    fake_openai.handler = lambda request: openai_error(401, "Incorrect API key provided: sk-test-secret.")
    for path, body in (("/api/generate", {"input": "hi"}), ("/v1/chat/completions", {**CHAT, "stream": True})):
        reply = client.post(path, json=body)
        assert reply.status_code == 502
        message = reply.json.get("msg") or reply.json["error"]["message"]
        assert "HTTP 401" in message
        assert "OPEN_AI_KEY" in message
        assert "Incorrect API key provided" in message
        assert "sk-test-secret" not in reply.get_data(as_text=True)


def test_upstream_429_stays_429_with_retry_after(client, fake_openai: FakeUpstream) -> None:
    fake_openai.handler = lambda request: openai_error(429, "Rate limit reached", {"Retry-After": "7"})
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "7"
    assert reply.json == {"success": False, "msg": "upstream rate limit (HTTP 429): Rate limit reached"}
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 429
    assert reply.json["error"]["type"] == "rate_limit_error"


def test_upstream_500_is_a_502(client, fake_openai: FakeUpstream) -> None:
    fake_openai.handler = lambda request: Response("<html>Internal Server Error</html>", status=500)
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 502
    assert reply.json == {"success": False, "msg": "upstream HTTP 500: <html>Internal Server Error</html>"}
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 502
    assert reply.json["error"] == {
        "message": "upstream HTTP 500: <html>Internal Server Error</html>",
        "type": "upstream_error",
        "code": 502,
    }


def test_upstream_400_is_the_requests_fault(client, fake_openai: FakeUpstream) -> None:
    fake_openai.handler = lambda request: openai_error(400, "max_tokens is too large")
    reply = client.post("/api/generate", json={"input": "hi", "max_tokens": 100000})
    assert reply.status_code == 400
    assert reply.json["msg"] == "upstream rejected the request (HTTP 400): max_tokens is too large"


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        (lambda request: Response("not json", status=200), "upstream reply is not JSON"),
        (lambda request: json_reply({"error": {"message": "oops"}}), "upstream reply has no choices[0].message"),
        (lambda request: json_reply({"choices": []}), "upstream reply has no choices[0].message"),
        (lambda request: Response("", status=302, headers={"Location": "http://x/"}), "redirects are not followed"),
    ],
)
def test_a_200_never_carries_an_upstream_failure(client, fake_openai: FakeUpstream, upstream, message) -> None:
    fake_openai.handler = upstream
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 502
    assert message in reply.json["msg"]


def test_error_event_mid_stream(client, fake_openai: FakeUpstream) -> None:
    def broken(request: Request) -> Response:
        body = [b'data: {"choices": [{"delta": {"content": "par"}}]}\n\n', b'data: {"error": {"message": "boom"}}\n\n']
        return Response(body, content_type="text/event-stream")

    fake_openai.handler = broken
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 200
    events = sse_events(reply.get_data().split(b"\n\n"))
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "par"
    assert json.loads(events[-1])["error"]["message"] == "upstream failed mid-stream: boom"


def test_unreachable_upstream_is_a_502(proxy_settings: ServerSettings) -> None:
    from dataclasses import replace

    settings = replace(proxy_settings, proxy_url=f"http://127.0.0.1:{free_port()}/v1/chat/completions")
    reply = create_app(settings).test_client().post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 502
    assert reply.json["msg"].startswith("cannot reach upstream http://127.0.0.1:")


def test_slow_upstream_is_a_504(proxy_settings: ServerSettings, fake_openai: FakeUpstream) -> None:
    from dataclasses import replace

    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return chat_reply("late")

    fake_openai.handler = slow
    settings = replace(proxy_settings, proxy_timeout=0.5)
    reply = create_app(settings).test_client().post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 504
    assert "did not answer within 0.5 s" in reply.json["msg"]


def test_an_upstream_stalling_mid_stream_ends_with_a_timeout_event(
    proxy_settings: ServerSettings, fake_openai: FakeUpstream
) -> None:
    from dataclasses import replace

    gate = threading.Event()
    fake_openai.handler = lambda request: sse_reply(["par"], gate=gate, tail=["tial"])
    client = create_app(replace(proxy_settings, proxy_timeout=0.5)).test_client()
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse_events(reply.get_data().split(b"\n\n"))
    gate.set()
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "par"
    assert json.loads(events[-1])["error"] == {
        "message": f"upstream {fake_openai.url('').rstrip('/')} stopped streaming for 0.5 s",
        "type": "timeout",
        "code": 504,
    }
