"""The OpenAI-compatible routes (/v1) through the Flask test client, against real upstream servers on loopback."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time

import pytest
from werkzeug.wrappers import Response

from operategpt.http.sse import EventSplitter
from operategpt.web.app import create_app
from tests.support.servers import FakeUpstream, json_reply, wait_until

USER = [{"role": "user", "content": "hi"}]


def register(client, **fields):
    reply = client.post("/api/server/register", json=fields)
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["data"]


def register_openai(client, model_name, url, **fields):
    return register(client, model_name=model_name, req_url_template=url, api_format="openai", **fields)


def register_template(client, model_name, url, **fields):
    fields.setdefault("body", {"p": "{USER_PROMPT}"})
    fields.setdefault("response_extract", "answer")
    return register(client, model_name=model_name, req_url_template=url, **fields)


def chat(client, **fields):
    return client.post("/v1/chat/completions", json={"model": "m", "messages": USER, **fields})


def completion(content, model="upstream-model"):
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def openai_echo(request):
    """An OpenAI-compatible chat upstream answering with the last message's content."""
    return json_reply(completion("echo:" + request.get_json()["messages"][-1]["content"]))


def template_echo(request):
    return json_reply({"answer": "echo:" + request.get_json()["p"]})


def sse(*payloads) -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n" for p in payloads)


def chunk(content=None, finish=None, **extra):
    delta = {} if content is None else {"content": content}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra}


UPSTREAM_EVENTS = sse(
    chunk("Hel"), chunk("lo"), chunk(finish="stop"),
    {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
    b"[DONE]",
)


def events_of(body: bytes) -> list:
    return [b if b == b"[DONE]" else json.loads(b) for b in
            (part.removeprefix(b"data: ") for part in body.split(b"\n\n") if part)]


def error_of(reply):
    assert reply.is_json, reply.get_data()
    body = reply.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# -- the four combinations: worker format x route ----------------------------------------------------


@pytest.mark.parametrize("api_format", ["template", "openai"])
@pytest.mark.parametrize("route", ["seed", "openai"])
def test_both_worker_formats_through_both_apis(client, api_format, route):
    with FakeUpstream(openai_echo if api_format == "openai" else template_echo) as up:
        if api_format == "openai":
            worker = register_openai(client, "m", up.url("/v1/chat/completions"))
        else:
            worker = register_template(client, "m", up.url("/generate"))
        if route == "seed":
            reply = client.post("/api/v1/chat/completions", json={"input": "who are you?", "model_name": "m"})
            assert reply.get_json() == {"success": True, "msg": "execute succeed", "result": "echo:who are you?"}
        else:
            reply = chat(client, messages=[{"role": "user", "content": "who are you?"}])
            assert reply.status_code == 200
            assert reply.get_json()["choices"][0]["message"] == {"role": "assistant", "content": "echo:who are you?"}
        assert reply.headers["X-OperateGPT-Worker"] == str(worker["id"])


# -- openai-format workers --------------------------------------------------------------------------


def test_openai_worker_gets_the_body_as_is_with_the_model_renamed(client):
    with FakeUpstream(openai_echo) as up:
        register_openai(client, "gpt", up.url("/v1/chat/completions"), upstream_model="gpt-4o-mini",
                        headers={"Authorization": "Bearer sk-upstream", "X-Model": "{MODEL_NAME}"})
        sent = {
            "model": "gpt",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi", "name": "ann"}],
            "temperature": 0.5,
            "max_tokens": 7,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "metadata": {"any": ["thing"]},
        }
        reply = client.post("/v1/chat/completions", json=sent, headers={"Authorization": "Bearer sk-client"})
        assert reply.status_code == 200
        # The worker's reply is passed on unchanged, usage and its own model name included.
        assert reply.get_json() == completion("echo:hi")
        seen = up.seen[-1]
        assert seen.json() == {**sent, "model": "gpt-4o-mini"}
        assert seen.headers["Authorization"] == "Bearer sk-upstream"
        assert seen.headers["X-Model"] == "gpt"


def test_upstream_model_defaults_to_the_registered_name(client):
    with FakeUpstream(openai_echo) as up:
        register_openai(client, "m", up.url("/v1/chat/completions"))
        assert chat(client).status_code == 200
        assert up.seen[-1].json()["model"] == "m"


def test_openai_worker_answering_html_is_502(client):
    with FakeUpstream(lambda r: Response("<html>hi</html>", content_type="text/html")) as up:
        register_openai(client, "m", up.url("/v1/chat/completions"))
        reply = chat(client)
    assert reply.status_code == 502
    assert "not JSON" in error_of(reply)["message"]


# -- template workers -------------------------------------------------------------------------------


def test_template_worker_values_and_completion_shape(client):
    with FakeUpstream(lambda r: json_reply({"answer": "fine"})) as up:
        register_template(client, "m", up.url("/g"), body={
            "p": "{USER_PROMPT}", "all": "{MESSAGES}", "name": "{MODEL_NAME}", "t": "{MODEL_TEMPERATURE}"})
        messages = [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "user", "content": [
                {"type": "text", "text": "look at"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
                {"type": "text", "text": "this"},
            ]},
        ]
        reply = chat(client, messages=messages)
        assert reply.status_code == 200, reply.get_json()
        assert up.seen[-1].json() == {"p": "look at\nthis", "all": messages, "name": "m", "t": 0.7}
        body = reply.get_json()
        assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
        assert isinstance(body["created"], int)
        assert {k: v for k, v in body.items() if k not in ("id", "created")} == {
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        }
        chat(client, temperature=0.2)
        assert up.seen[-1].json()["t"] == 0.2


def test_template_worker_missing_placeholder_and_missing_user_message_are_400(client):
    with FakeUpstream(template_echo) as up:
        register_template(client, "m", up.url("/g"), body={"p": "{USER_PROMPT}", "s": "{STYLE}"})
        missing = chat(client)
        assert missing.status_code == 400
        assert "{STYLE}" in error_of(missing)["message"]
        register_template(client, "n", up.url("/n"))
        no_user = chat(client, model="n", messages=[{"role": "system", "content": "only"}])
        assert no_user.status_code == 400
        assert "'user'" in error_of(no_user)["message"]
    assert up.seen == []


def test_template_worker_stream_is_one_chunk(client):
    with FakeUpstream(template_echo) as up:
        worker = register_template(client, "m", up.url("/g"))
        reply = chat(client, stream=True)
    assert reply.status_code == 200
    assert reply.mimetype == "text/event-stream"
    assert reply.headers["Cache-Control"] == "no-cache"
    assert reply.headers["X-Accel-Buffering"] == "no"
    assert reply.headers["X-OperateGPT-Worker"] == str(worker["id"])
    first, last, done = events_of(reply.get_data())
    assert done == b"[DONE]"
    assert first["object"] == last["object"] == "chat.completion.chunk"
    assert first["id"] == last["id"] and first["model"] == "m"
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "echo:hi"},
                                 "finish_reason": None}]
    assert last["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]


# -- streaming from openai-format workers ----------------------------------------------------------


def sse_upstream(events: bytes = UPSTREAM_EVENTS, status: int = 200):
    def handler(request):
        if not request.get_json().get("stream"):
            return json_reply(completion("whole"))
        return Response(events, status=status, mimetype="text/event-stream")

    return handler


def test_stream_is_relayed_unchanged_usage_and_done_included(client):
    with FakeUpstream(sse_upstream()) as up:
        register_openai(client, "m", up.url("/v1/chat/completions"))
        reply = chat(client, stream=True, stream_options={"include_usage": True})
        assert reply.status_code == 200
        assert reply.mimetype == "text/event-stream"
        assert reply.get_data() == UPSTREAM_EVENTS
        assert up.seen[-1].headers["Accept"] == "text/event-stream"
        assert up.seen[-1].json()["stream_options"] == {"include_usage": True}


def test_stream_reply_without_event_stream_becomes_one_chunk(client):
    with FakeUpstream(lambda r: json_reply(completion("all at once"))) as up:
        register_openai(client, "m", up.url("/v1/chat/completions"))
        reply = chat(client, stream=True)
    first, _, done = events_of(reply.get_data())
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "all at once"}
    assert done == b"[DONE]"


def _dead_url():
    with FakeUpstream(lambda r: json_reply("unused")) as dead:
        return dead.url("/v1/chat/completions")


@pytest.mark.parametrize("failure", ["http 503", "stream ends before an event", "connection refused", "timeout"])
def test_stream_fails_over_before_the_first_byte(client, failure):
    def broken(request):
        if failure == "http 503":
            return json_reply({"error": {"message": "overloaded"}}, 503)
        if failure == "timeout":
            time.sleep(1.0)
        return Response(b"", mimetype="text/event-stream")

    with FakeUpstream(broken) as bad, FakeUpstream(sse_upstream()) as good:
        url = _dead_url() if failure == "connection refused" else bad.url("/v1/chat/completions")
        # A timeout after the request was sent fails over only for a worker that opted in.
        register_openai(client, "m", url, priority=0, timeout_s=0.3, retry_on_timeout=failure == "timeout")
        backup = register_openai(client, "m", good.url("/v1/chat/completions"), priority=1)
        reply = chat(client, stream=True)
        assert reply.status_code == 200
        assert reply.headers["X-OperateGPT-Worker"] == str(backup["id"])
        assert reply.get_data() == UPSTREAM_EVENTS


def test_failure_after_the_first_byte_ends_with_an_error_event_and_no_failover(client):
    def stalls(request):
        def events():
            yield sse(chunk("partial"))
            time.sleep(1.0)
            yield sse(chunk("late"), b"[DONE]")

        return Response(events(), mimetype="text/event-stream")

    with FakeUpstream(stalls) as bad, FakeUpstream(sse_upstream()) as good:
        register_openai(client, "m", bad.url("/v1/chat/completions"), priority=0, timeout_s=0.3)
        register_openai(client, "m", good.url("/v1/chat/completions"), priority=1)
        reply = chat(client, stream=True)
        assert reply.status_code == 200
        relayed, failed = events_of(reply.get_data())
        assert relayed == chunk("partial")
        assert failed["error"]["type"] == "api_error"
        assert failed["error"]["code"] == "timeout"
        assert "did not answer within 0.3 s" in failed["error"]["message"]
        assert good.seen == []


def test_stream_counts_in_flight_until_closed_and_closing_closes_the_upstream(app, client):
    upstream_closed = threading.Event()

    def endless(request):
        def events():
            try:
                while True:
                    yield sse(chunk("tick"))
                    time.sleep(0.05)
            except GeneratorExit:
                upstream_closed.set()
                raise

        return Response(events(), mimetype="text/event-stream")

    inflight = app.extensions["operategpt"].router.inflight
    with FakeUpstream(endless) as up:
        worker = register_openai(client, "m", up.url("/v1/chat/completions"))
        reply = client.post("/v1/chat/completions", json={"model": "m", "messages": USER, "stream": True},
                            buffered=False)
        events = iter(reply.response)
        assert next(events) == sse(chunk("tick"))
        assert next(events) == sse(chunk("tick"))
        assert inflight.get(worker["id"]) == 1
        reply.close()
        assert inflight.get(worker["id"]) == 0
        assert wait_until(upstream_closed.is_set, timeout=5)


# -- embeddings -------------------------------------------------------------------------------------


def test_openai_embedding_worker_passes_through(client):
    listing = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}],
               "model": "text-embedding-3-small", "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    with FakeUpstream(lambda r: json_reply(listing)) as up:
        register_openai(client, "emb", up.url("/v1/embeddings"), model_type="embedding",
                        upstream_model="text-embedding-3-small")
        sent = {"model": "emb", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8}
        reply = client.post("/v1/embeddings", json=sent)
        assert reply.status_code == 200
        assert reply.get_json() == listing
        assert up.seen[-1].json() == {**sent, "model": "text-embedding-3-small"}


def test_template_embedding_worker_one_call_per_input(client):
    with FakeUpstream(lambda r: json_reply({"vec": [len(r.get_json()["text"]), 0.5, -1]})) as up:
        register_template(client, "emb", up.url("/embed"), model_type="embedding",
                          body={"text": "{USER_PROMPT}"}, response_extract="vec")
        one = client.post("/v1/embeddings", json={"model": "emb", "input": "abc"})
        assert one.status_code == 200, one.get_json()
        assert one.get_json() == {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [3, 0.5, -1]}],
            "model": "emb",
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
        many = client.post("/v1/embeddings", json={"model": "emb", "input": ["a", "bb"], "encoding_format": "base64"})
        data = many.get_json()["data"]
        assert [d["index"] for d in data] == [0, 1]
        decoded = [list(struct.unpack("<3f", base64.b64decode(d["embedding"]))) for d in data]
        assert decoded == [[1, 0.5, -1], [2, 0.5, -1]]
        assert [s.json() for s in up.seen] == [{"text": "abc"}, {"text": "a"}, {"text": "bb"}]
        tokens = client.post("/v1/embeddings", json={"model": "emb", "input": [1, 2, 3]})
        assert tokens.status_code == 400
        assert "token" in error_of(tokens)["message"]


def test_template_embedding_reply_that_is_not_a_vector_is_502(client):
    with FakeUpstream(lambda r: json_reply({"vec": "nope"})) as up:
        register_template(client, "emb", up.url("/embed"), model_type="embedding", response_extract="vec")
        reply = client.post("/v1/embeddings", json={"model": "emb", "input": "x"})
    assert reply.status_code == 502
    assert "array of numbers" in error_of(reply)["message"]


def test_model_type_separates_chat_from_embeddings(client):
    with FakeUpstream(template_echo) as up:
        register_template(client, "emb", up.url("/e"), model_type="embedding")
        register_template(client, "m", up.url("/c"))
        on_chat = chat(client, model="emb")
        on_embeddings = client.post("/v1/embeddings", json={"model": "m", "input": "x"})
    assert on_chat.status_code == on_embeddings.status_code == 400
    assert error_of(on_chat)["code"] == error_of(on_embeddings)["code"] == "wrong_model_type"
    assert "model_type 'embedding'" in error_of(on_chat)["message"]
    assert "model_type 'chat'" in error_of(on_embeddings)["message"]
    assert up.seen == []


# -- models -----------------------------------------------------------------------------------------


def test_models_lists_routable_models_with_their_type(client):
    register_template(client, "chatglm2-6b", "http://127.0.0.1:9/g", owner="operategpt")
    register_openai(client, "emb", "http://127.0.0.1:9/v1/embeddings", model_type="embedding", owner="acme")
    register_template(client, "drained", "http://127.0.0.1:9/d", weight=0)
    reply = client.get("/v1/models", headers={"Authorization": "Bearer sk-any"})
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"], m["model_type"]) for m in body["data"]] == [
        ("chatglm2-6b", "model", "operategpt", "chat"),
        ("emb", "model", "acme", "embedding"),
    ]
    assert all(isinstance(m["created"], int) and m["created"] > 0 for m in body["data"])
    assert client.get("/v1/models/emb").get_json() == body["data"][1]
    for name in ("drained", "nope"):
        missing = client.get(f"/v1/models/{name}")
        assert missing.status_code == 404
        assert error_of(missing)["code"] == "model_not_found"


# -- errors -----------------------------------------------------------------------------------------

CHAT, EMB = "/v1/chat/completions", "/v1/embeddings"
GOOD = {"model": "m", "messages": USER}


def with_(**changes):
    return json.dumps({k: v for k, v in {**GOOD, **changes}.items() if v is not ...})


BAD_INPUT = [
    (CHAT, "not json", "not valid JSON"),
    (CHAT, "", "not valid JSON"),
    (CHAT, "[1]", "must be a JSON object"),
    (CHAT, with_(model=...), "missing required field 'model'"),
    (CHAT, with_(model=""), "'model'"),
    (CHAT, with_(messages=...), "missing required field 'messages'"),
    (CHAT, with_(messages=[]), "'messages'"),
    (CHAT, with_(messages="hi"), "'messages'"),
    (CHAT, with_(messages=[{"content": "hi"}]), "missing required field 'messages.0.role'"),
    (CHAT, with_(messages=[{"role": "robot", "content": "hi"}]), "'messages.0.role'"),
    (CHAT, with_(messages=[{"role": "user", "content": 5}]), "'messages.0.content'"),
    (CHAT, with_(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "'messages.0.content'"),
    (CHAT, with_(temperature="hot"), "'temperature'"),
    (CHAT, with_(temperature=3), "'temperature'"),
    (CHAT, with_(stream="yes"), "'stream'"),
    (CHAT, with_(stream=1), "'stream'"),
    (EMB, json.dumps({"model": "m"}), "missing required field 'input'"),
    (EMB, json.dumps({"model": "m", "input": []}), "'input'"),
    (EMB, json.dumps({"model": "m", "input": [1.5]}), "'input'"),
    (EMB, json.dumps({"model": "m", "input": ["x"] * 2049}), "at most 2048 inputs"),
    (EMB, json.dumps({"model": "m", "input": "x", "encoding_format": "hex"}), "'encoding_format'"),
]


@pytest.mark.parametrize(("path", "raw", "fragment"), BAD_INPUT)
def test_bad_input_is_400_openai_error(client, path, raw, fragment):
    reply = client.post(path, data=raw, content_type="application/json")
    assert reply.status_code == 400
    error = error_of(reply)
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]


def test_unknown_model_is_404_model_not_found(client):
    for path, body in ((CHAT, GOOD), (EMB, {"model": "m", "input": "x"})):
        reply = client.post(path, json=body)
        assert reply.status_code == 404
        assert error_of(reply) == {"message": "model 'm' does not exist: no worker is registered for it",
                                   "type": "not_found_error", "param": "model", "code": "model_not_found"}


def test_unknown_paths_and_methods_are_openai_errors_and_seed_routes_keep_their_shape(client):
    unknown = client.get("/v1/nope")
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "unknown_url"
    wrong = client.get(CHAT)
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"
    assert error_of(wrong)["type"] == "invalid_request_error"
    assert client.post("/v1/models").headers["Allow"] == "GET"
    assert client.get("/api/nope").get_json() == {"success": False, "msg": "no route for GET /api/nope"}
    seed_missing = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
    assert seed_missing.get_json() == {"success": False, "msg": "no worker registered for model 'm'"}


def test_too_large_is_413(make_settings):
    client = create_app(make_settings(max_content_length=1000)).test_client()
    reply = client.post(CHAT, data=with_(messages=[{"role": "user", "content": "x" * 2000}]),
                        content_type="application/json")
    assert reply.status_code == 413
    assert error_of(reply)["code"] == "request_too_large"


@pytest.mark.parametrize("upstream_status", [500, 400])
def test_worker_failure_is_502_api_error(client, upstream_status):
    with FakeUpstream(lambda r: json_reply({"error": "boom"}, upstream_status)) as up:
        worker = register_openai(client, "m", up.url("/v1/chat/completions"))
        for stream in (False, True):
            reply = chat(client, stream=stream)
            assert reply.status_code == 502
            assert error_of(reply)["type"] == "api_error"
            assert error_of(reply)["code"] == "upstream_error"
            assert f"HTTP {upstream_status}" in error_of(reply)["message"]
            assert reply.headers["X-OperateGPT-Worker"] == str(worker["id"])


def test_no_routable_worker_is_503_with_retry_after(client):
    register_template(client, "m", "http://127.0.0.1:9/g", weight=0)
    reply = chat(client)
    assert reply.status_code == 503
    assert reply.headers["Retry-After"].isdigit()
    assert error_of(reply)["code"] == "service_unavailable"


def test_crash_is_500_without_details(app, client, monkeypatch):
    register_template(client, "m", "http://127.0.0.1:9/g")

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.extensions["operategpt"].upstream, "send", boom)
    reply = chat(client)
    assert reply.status_code == 500
    assert error_of(reply) == {"message": "internal error; see the manager's log", "type": "api_error",
                               "param": None, "code": "internal_error"}


# -- event framing ----------------------------------------------------------------------------------


def test_event_splitter_cuts_after_complete_events_only():
    splitter = EventSplitter(max_event_bytes=64)
    assert splitter.feed(b"data: a\n") == b""
    assert splitter.feed(b"\ndata: b") == b"data: a\n\n"
    assert splitter.feed(b"\r\n\r\ndata: c\n\ndata: d") == b"data: b\r\n\r\ndata: c\n\n"
    assert splitter.rest() == b"data: d"
    assert splitter.feed(b"data: e\r") == b""
    assert splitter.feed(b"\rx") == b"data: e\r\r"
    with pytest.raises(Exception, match="without ending an event"):
        splitter.feed(b"y" * 100)
