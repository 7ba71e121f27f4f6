"""The official openai client against a live manager (gunicorn, two processes) and loopback upstreams."""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest
import requests
from werkzeug.wrappers import Response

from tests.conftest import new_registry_url
from tests.support.servers import FakeUpstream, ManagerProcess, json_reply, wait_until

CHUNKS = ["The ", "answer ", "comes ", "in ", "pieces."]
GAP_S = 0.3


class SlowStreams:
    """An OpenAI-compatible upstream streaming CHUNKS GAP_S apart; it records when it sent each one and
    whether a stream was closed by the other side before it finished."""

    def __init__(self) -> None:
        self.sent: list[list[float]] = []
        self.closed_early = threading.Event()

    def __call__(self, request):
        body = request.get_json()
        if not body.get("stream"):
            return json_reply(completion("openai:" + body["messages"][-1]["content"]))
        sent: list[float] = []
        self.sent.append(sent)
        chunks = CHUNKS * (20 if body.get("user") == "endless" else 1)

        def events():
            try:
                for index, text in enumerate(chunks):
                    if index:
                        time.sleep(GAP_S)
                    sent.append(time.time())
                    yield event({"object": "chat.completion.chunk", "model": body["model"],
                                 "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
                yield event({"object": "chat.completion.chunk", "model": body["model"], "choices": [],
                             "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}})
                yield b"data: [DONE]\n\n"
            except GeneratorExit:
                self.closed_early.set()
                raise

        return Response(events(), mimetype="text/event-stream")


def event(payload) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def completion(content):
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "up",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


def embeddings_reply(request):
    count = len(request.get_json()["input"])
    data = [{"object": "embedding", "index": i, "embedding": [0.25, i]} for i in range(count)]
    return json_reply({"object": "list", "model": "up", "usage": {"prompt_tokens": 1, "total_tokens": 1}, "data": data})


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_database):
    """One manager and its upstreams for the whole module: starting gunicorn per test would dominate the run."""
    registry = new_registry_url(tmp_path_factory.mktemp("sdk"), postgres_database)
    slow = SlowStreams()
    with FakeUpstream(slow) as oai, \
            FakeUpstream(lambda r: json_reply({"answer": "template:" + r.get_json()["p"]})) as tmpl, \
            FakeUpstream(embeddings_reply) as oai_emb, \
            FakeUpstream(lambda r: json_reply({"vec": [0.5, len(r.get_json()["text"])]})) as tmpl_emb, \
            FakeUpstream(lambda r: json_reply({"error": "down"}, 500)) as broken, \
            ManagerProcess(registry) as manager:
        workers = [
            {"model_name": "gpt", "req_url_template": oai.url("/v1/chat/completions"), "api_format": "openai",
             "upstream_model": "up-model", "headers": {"Authorization": "Bearer sk-upstream"}},
            {"model_name": "glm", "req_url_template": tmpl.url("/generate"), "body": {"p": "{USER_PROMPT}"},
             "response_extract": "answer"},
            {"model_name": "oai-emb", "req_url_template": oai_emb.url("/v1/embeddings"), "api_format": "openai",
             "model_type": "embedding"},
            {"model_name": "tmpl-emb", "req_url_template": tmpl_emb.url("/embed"), "body": {"text": "{USER_PROMPT}"},
             "response_extract": "vec", "model_type": "embedding"},
            {"model_name": "broken", "req_url_template": broken.url("/v1/chat/completions"), "api_format": "openai"},
        ]
        for worker in workers:
            assert requests.post(manager.url + "/api/server/register", json=worker, timeout=10).status_code == 200
        client = openai.OpenAI(base_url=manager.url + "/v1", api_key="sk-test", max_retries=0, timeout=20)
        yield client, slow, manager


def test_model_list(stack):
    client, _, _ = stack
    models = {model.id: model for model in client.models.list()}
    assert set(models) == {"gpt", "glm", "oai-emb", "tmpl-emb", "broken"}
    assert models["tmpl-emb"].model_extra["model_type"] == "embedding"
    assert models["gpt"].model_extra["model_type"] == "chat"
    assert client.models.retrieve("glm").id == "glm"


@pytest.mark.parametrize(("model", "expected"), [("gpt", "openai:who are you?"), ("glm", "template:who are you?")])
def test_chat(stack, model, expected):
    client, _, _ = stack
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "who are you?"}])
    assert reply.choices[0].message.content == expected


def test_seed_route_serves_both_formats(stack):
    _, _, manager = stack
    for model, expected in (("gpt", "openai:hi"), ("glm", "template:hi")):
        reply = requests.post(manager.url + "/api/v1/chat/completions", json={"input": "hi", "model_name": model},
                              timeout=10)
        assert reply.json()["result"] == expected


def test_streamed_chat_arrives_chunk_by_chunk_as_the_upstream_sends(stack):
    client, slow, _ = stack
    arrived: list[float] = []
    texts: list[str] = []
    usage = None
    stream = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "go"}], stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices:
            arrived.append(time.time())
            texts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    sent = slow.sent[-1]
    assert "".join(texts) == "".join(CHUNKS)
    assert usage is not None and usage.total_tokens == 9
    # Each chunk reached the client before the upstream sent the next one (GAP_S later): nothing is buffered.
    for index in range(len(CHUNKS) - 1):
        assert arrived[index] < sent[index + 1], (index, arrived, sent)
    assert arrived[0] - sent[0] < GAP_S / 2


def test_streamed_chat_from_a_template_worker(stack):
    client, _, _ = stack
    stream = client.chat.completions.create(model="glm", messages=[{"role": "user", "content": "go"}], stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "template:go"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ["oai-emb", "tmpl-emb"])
def test_embeddings(stack, model):
    client, _, _ = stack
    reply = client.embeddings.create(model=model, input=["a", "bcd"])
    vectors = [item.embedding for item in reply.data]
    assert vectors == ([[0.25, 0], [0.25, 1]] if model == "oai-emb" else [[0.5, 1], [0.5, 3]])


def test_errors_raise_the_matching_sdk_exceptions(stack):
    client, _, _ = stack
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt", messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}], temperature=5)
    with pytest.raises(openai.BadRequestError) as wrong_type:
        client.embeddings.create(model="gpt", input="x")
    assert "model_type 'chat'" in wrong_type.value.message
    with pytest.raises(openai.InternalServerError) as broken:
        client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
    assert broken.value.status_code == 502
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_client_disconnect_closes_the_upstream_request(stack):
    client, slow, _ = stack
    slow.closed_early.clear()
    started = time.monotonic()
    stream = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}], stream=True,
                                            user="endless")
    next(iter(stream))
    stream.close()
    # The manager notices on its next write (one GAP_S later at most twice) and closes its upstream request.
    assert wait_until(slow.closed_early.is_set, timeout=5)
    assert time.monotonic() - started < 3
    assert len(slow.sent[-1]) < len(CHUNKS) * 20
