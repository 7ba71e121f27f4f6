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
        "type": "api_error",
        "param": None,
        "code": "upstream_error",
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
    assert reply.json["msg"].startswith("could not reach upstream http://127.0.0.1:")
    assert reply.json["msg"].endswith(": connection refused")


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
        "message": f"upstream {fake_openai.url('').rstrip('/')} did not answer within 0.5 s",
        "type": "api_error",
        "param": None,
        "code": "timeout",
    }


def test_the_key_never_appears_in_an_upstream_message(client, fake_openai: FakeUpstream) -> None:
    # A long error body: the excerpt is cut short, and the upstream's own message is still found in it.
    long_error = {"error": {"message": "Incorrect API key provided: sk-test-secret. See the docs.",
                            "type": "invalid_request_error", "param": None, "code": "invalid_api_key",
                            "padding": "x" * 500}}
    fake_openai.handler = lambda request: json_reply(long_error, 403)
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 502
    assert reply.json["msg"].startswith("upstream rejected OPEN_AI_KEY (HTTP 403); check the key for http://127.0.0.1:")
    assert reply.json["msg"].endswith(": Incorrect API key provided: ****. See the docs.")

    fake_openai.handler = lambda request: Response("you sent sk-test-secret", status=200)
    assert "sk-test-secret" not in client.post("/api/generate", json={"input": "hi"}).get_data(as_text=True)

    def echoes_mid_stream(request: Request) -> Response:
        body = [b'data: {"choices": [{"delta": {"content": "a"}}]}\n\n',
                b'data: {"error": {"message": "bad key sk-test-secret"}}\n\n']
        return Response(body, content_type="text/event-stream")

    fake_openai.handler = echoes_mid_stream
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse_events(reply.get_data().split(b"\n\n"))
    assert json.loads(events[-1])["error"]["message"] == "upstream failed mid-stream: bad key ***"


def test_upstream_429_without_retry_after(client, fake_openai: FakeUpstream) -> None:
    fake_openai.handler = lambda request: openai_error(429, "slow down")
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 429
    assert "Retry-After" not in reply.headers


def test_upstream_404_names_the_settings_to_check(client, fake_openai: FakeUpstream) -> None:
    fake_openai.handler = lambda request: openai_error(404, "The model `fake-model` does not exist")
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 502
    assert reply.json["msg"] == ("upstream HTTP 404 (check OPEN_AI_PROXY_SERVER_URL and PROXYLLM_BACKEND='fake-model'):"
                                 " The model `fake-model` does not exist")


def test_replies_and_events_are_capped(proxy_settings: ServerSettings, fake_openai: FakeUpstream, monkeypatch) -> None:
    from operategpt.llmserver.backends import proxy

    monkeypatch.setattr(proxy, "MAX_REPLY_BYTES", 1000)
    client = create_app(proxy_settings).test_client()
    fake_openai.handler = lambda request: chat_reply("x" * 2000)
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 502
    assert reply.json["msg"] == f"reply from upstream {fake_openai.url('').rstrip('/')} is larger than 1000 bytes"

    unending = [b"data: " + b"x" * 600, b"y" * 600]
    fake_openai.handler = lambda request: Response(unending, content_type="text/event-stream")
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse_events(reply.get_data().split(b"\n\n"))
    assert json.loads(events[-1])["error"]["message"] == "upstream sent more than 1000 bytes without ending an event"


def test_an_upstream_dropping_the_connection_mid_stream_ends_with_an_error_event(
    client, fake_openai: FakeUpstream
) -> None:
    def dropped(request: Request) -> Response:
        def body():
            yield b'data: {"choices": [{"delta": {"content": "par"}}]}\n\n'
            raise RuntimeError("the upstream died")

        return Response(body(), content_type="text/event-stream")

    fake_openai.handler = dropped
    reply = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse_events(reply.get_data().split(b"\n\n"))
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "par"
    error = json.loads(events[-1])["error"]
    assert error["code"] == "upstream_error"
    assert error["message"].startswith(f"could not reach upstream {fake_openai.url('').rstrip('/')}: ")
    assert "[DONE]" not in events


def test_connections_to_the_upstream_are_kept_alive(proxy_settings: ServerSettings) -> None:
    from dataclasses import replace
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ports = []

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # werkzeug's server closes every connection

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            ports.append(self.client_address[1])
            body = chat_reply("hi").get_data()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = replace(proxy_settings, proxy_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
        client = create_app(settings).test_client()
        for _ in range(3):
            assert client.post("/api/generate", json={"input": "hi"}).get_data(as_text=True) == "hi"
    finally:
        server.shutdown()
        server.server_close()
    assert len(ports) == 3
    assert len(set(ports)) == 1
