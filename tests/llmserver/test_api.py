"""The HTTP contract of the inference server, over a scripted backend: shapes, validation, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from operategpt.errors import UpstreamError
from operategpt.llmserver.app import create_app
from operategpt.llmserver.backends.base import ChatRequest, Completion, Delta, ModelBusy, TextStream, Usage
from operategpt.llmserver.config import ServerSettings
from tests.llmserver.conftest import sse_events


class ScriptedBackend:
    """Answers with fixed text and records what it was asked."""

    name = "scripted"

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []
        self.fail: Exception | None = None
        self.fail_mid_stream: Exception | None = None
        self.closed = 0

    def generate(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        if self.fail:
            raise self.fail
        return Completion("Hello, I am a model.", "stop", Usage(4, 6))

    def stream(self, request: ChatRequest) -> TextStream:
        self.requests.append(request)
        if self.fail:
            raise self.fail

        def deltas() -> Iterator[Delta]:
            yield Delta("Hello")
            if self.fail_mid_stream:
                raise self.fail_mid_stream
            yield Delta(", world")
            yield Delta(finish_reason="stop")

        def on_close() -> None:
            self.closed += 1

        return TextStream(deltas(), on_close=on_close)

    def stats(self) -> dict[str, object]:
        return {"backend": self.name}


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def client(backend: ScriptedBackend) -> FlaskClient:
    settings = ServerSettings(llm_name="test-model", default_temperature=0.7, max_tokens=64, max_content_length=4096)
    return create_app(settings, backend=backend).test_client()


def test_generate_answers_plain_text(client: FlaskClient, backend: ScriptedBackend) -> None:
    reply = client.post("/api/generate", json={"input": "who are you?", "temperature": 0, "max_tokens": 9})
    assert reply.status_code == 200
    assert reply.mimetype == "text/plain"
    assert reply.get_data(as_text=True) == "Hello, I am a model."
    assert backend.requests == [ChatRequest([{"role": "user", "content": "who are you?"}], 0.0, 9)]


def test_generate_defaults_and_the_seed_body(client: FlaskClient, backend: ScriptedBackend) -> None:
    # The seed's registration example sends model_name in the body; it is accepted and ignored.
    reply = client.post("/api/generate", json={"input": "hi", "model_name": "chatglm2-6b"})
    assert reply.status_code == 200
    assert backend.requests[0].temperature == 0.7
    assert backend.requests[0].max_tokens == 64


def test_generate_takes_json_without_a_content_type(client: FlaskClient) -> None:
    reply = client.post("/api/generate", data=json.dumps({"input": "hi"}), content_type="text/plain")
    assert reply.status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'input' is required"),
        ({"input": 5}, "'input' is required and must be a string"),
        ({"input": ""}, "'input' must not be empty"),
        ({"input": "hi", "temperature": "hot"}, "'temperature' must be a number"),
        ({"input": "hi", "temperature": True}, "'temperature' must be a number"),
        ({"input": "hi", "temperature": 2.5}, "'temperature' must be between 0 and 2"),
        ({"input": "hi", "temperature": -0.1}, "'temperature' must be between 0 and 2"),
        ({"input": "hi", "max_tokens": 0}, "'max_tokens' must be at least 1"),
        ({"input": "hi", "max_tokens": 1.5}, "'max_tokens' must be an integer"),
        ({"input": "hi", "prompt": "x", "top_k": 3}, "unknown fields: prompt, top_k"),
        (["input"], "the request body must be a JSON object"),
    ],
)
def test_generate_rejects_bad_input(client: FlaskClient, backend: ScriptedBackend, body: object, message: str) -> None:
    reply = client.post("/api/generate", json=body)
    assert reply.status_code == 400
    assert reply.json is not None
    assert reply.json["success"] is False
    assert message in reply.json["msg"]
    assert backend.requests == []


def test_generate_rejects_text_that_is_not_json(client: FlaskClient) -> None:
    reply = client.post("/api/generate", data="who are you?", content_type="application/json")
    assert reply.status_code == 400
    assert reply.json == {"success": False, "msg": "the request body must be valid JSON"}


def test_oversized_body_is_413_json(client: FlaskClient) -> None:
    reply = client.post("/api/generate", json={"input": "x" * 10_000})
    assert reply.status_code == 413
    assert reply.json is not None
    assert reply.json == {"success": False, "msg": "request body larger than MAX_CONTENT_LENGTH (4096 bytes)"}
    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 10_000}]})
    assert reply.status_code == 413
    assert reply.json == {"error": {"message": "request body larger than MAX_CONTENT_LENGTH (4096 bytes)",
                                    "type": "invalid_request_error", "param": None, "code": "request_too_large"}}


def test_unknown_route_and_wrong_method_are_json(client: FlaskClient) -> None:
    assert client.get("/nowhere").json == {"success": False, "msg": "no route for GET /nowhere"}
    assert client.get("/v1/nowhere").json["error"]["code"] == "unknown_url"
    reply = client.get("/api/generate")
    assert reply.status_code == 405
    assert reply.json is not None
    assert reply.json["success"] is False
    assert "POST" in reply.headers["Allow"]


def test_backend_errors_keep_their_status(client: FlaskClient, backend: ScriptedBackend) -> None:
    backend.fail = ModelBusy("the model is busy", retry_after=1)
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "1"
    assert reply.json == {"success": False, "msg": "the model is busy"}

    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "1"
    assert reply.json == {"error": {"message": "the model is busy", "type": "rate_limit_error", "param": None,
                                    "code": None}}


def test_unexpected_errors_are_500_json_without_details(client: FlaskClient, backend: ScriptedBackend) -> None:
    backend.fail = RuntimeError("secret internals <object at 0x1>")
    reply = client.post("/api/generate", json={"input": "hi"})
    assert reply.status_code == 500
    assert reply.json == {"success": False, "msg": "internal error in the inference server"}


def test_chat_completion_is_openai_shaped(client: FlaskClient, backend: ScriptedBackend) -> None:
    reply = client.post(
        "/v1/chat/completions",
        json={
            "model": "whatever",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "who "}, {"type": "text", "text": "are you?"}]},
            ],
            "temperature": 0.2,
            "max_tokens": 12,
            "top_p": 0.9,
            "stop": "\n",
            "seed": 7,
        },
    )
    assert reply.status_code == 200
    body = reply.json
    assert body is not None
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "test-model"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello, I am a model."}, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert backend.requests == [
        ChatRequest(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "who are you?"}],
            0.2,
            12,
            top_p=0.9,
            stop=["\n"],
            seed=7,
        )
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'messages' is required"),
        ({"messages": []}, "'messages' is required"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "'messages[0].role' must be one of"),
        ({"messages": [{"role": "user", "content": 3}]}, "'messages[0].content' must be a string"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text is supported"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "'n' must be 1"),
        ({"messages": [{"role": "user", "content": "hi"}], "seed": -5}, "'seed' must be at least 0"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "'top_p' must be greater than 0"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "'stream' must be true or false"),
        ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {}}, "unknown fields: logit_bias"),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "max_completion_tokens": 1}, "not both"),
    ],
)
def test_chat_rejects_bad_input_with_openai_errors(client: FlaskClient, body: object, message: str) -> None:
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400
    assert reply.json is not None
    error = reply.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


def test_chat_stream_is_server_sent_events(client: FlaskClient, backend: ScriptedBackend) -> None:
    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert reply.status_code == 200
    assert reply.mimetype == "text/event-stream"
    events = sse_events(reply.get_data().split(b"\n\n"))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text == "Hello, world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    reply.close()
    assert backend.closed == 1


def test_a_failure_mid_stream_becomes_an_error_event(client: FlaskClient, backend: ScriptedBackend) -> None:
    backend.fail_mid_stream = UpstreamError("upstream broke off its stream")
    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "stream": True})
    events = sse_events(reply.get_data().split(b"\n\n"))
    assert "[DONE]" not in events
    assert json.loads(events[-1]) == {
        "error": {"message": "upstream broke off its stream", "type": "api_error", "param": None,
                  "code": "upstream_error"}
    }
    reply.close()
    assert backend.closed == 1


def test_a_stream_closed_before_it_starts_still_releases(client: FlaskClient, backend: ScriptedBackend) -> None:
    reply = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        buffered=False,
    )
    reply.close()
    assert backend.closed == 1


def test_health_and_models(client: FlaskClient) -> None:
    client.post("/api/generate", json={"input": "hi"})
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json == {"success": True, "msg": "ok", "model": "test-model", "served": 1, "backend": "scripted"}
    models = client.get("/v1/models").json
    assert models is not None
    assert [model["id"] for model in models["data"]] == ["test-model"]
