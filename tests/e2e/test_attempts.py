"""Acceptance tests of what one call to a worker ("an attempt") must do, on every route, seen from outside.

- Every call to a worker carries the request's X-Request-ID (README, "Metrics and logs"), whichever route
  asked: the seed completion, /v1/chat/completions whole or streamed, /v1/embeddings.
- A stream that breaks after its first byte is a failed attempt like any other: it counts for passive
  health (cooldown), in /metrics, and the access-log line is written when the stream ends, so its
  total_ms covers the whole stream.
- A read timeout after the request was fully sent is not retried (the worker may still be doing the
  work), unless the worker was registered with `retry_on_timeout: true`; a connection refused is
  always retried.

The manager runs in-process (the `client` fixture); every worker is a real loopback server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.wrappers import Response

from operategpt.web.app import create_app
from tests.support.servers import FakeUpstream, free_port, json_reply

USER = [{"role": "user", "content": "hi"}]
REQUEST_ID = "X-Request-ID"


# -- helpers: registration, calls, what the upstream saw ----------------------------------------------


def register(client, model, url, **fields):
    reply = client.post("/api/server/register", json={"model_name": model, "req_url_template": url, **fields})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["data"]


def register_template(client, model, url, **fields):
    fields.setdefault("body", {"p": "{USER_PROMPT}"})
    fields.setdefault("response_extract", "answer")
    return register(client, model, url, **fields)


def register_openai(client, model, url, **fields):
    return register(client, model, url, api_format="openai", **fields)


def finished(reply):
    """Read a reply to its end and close it, as a WSGI server does: the manager's work on it is done then."""
    reply.get_data()
    reply.close()
    return reply


def sse(*payloads) -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n" for p in payloads)


def chunk(content=None, finish=None):
    delta = {} if content is None else {"content": content}
    return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "upstream",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def events_of(body: bytes) -> list:
    return [b if b == b"[DONE]" else json.loads(b) for b in
            (part.removeprefix(b"data: ") for part in body.split(b"\n\n") if part)]


def completion(content):
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "upstream",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def request_id_seen(seen) -> str | None:
    return {name.lower(): value for name, value in seen.headers.items()}.get("x-request-id")


def new_request_id() -> str:
    return f"rid-{uuid.uuid4().hex}"


def unique_model(prefix: str) -> str:
    # The metrics registry lives as long as the test process, and worker ids restart in every fresh registry:
    # a model name of its own keeps one test's samples apart from another's.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def attempts(client, model) -> dict[tuple[str, str], float]:
    """operategpt_upstream_attempts_total for `model` from GET /metrics, by (worker, outcome)."""
    reply = client.get("/metrics")
    assert reply.status_code == 200
    counts = {}
    for family in text_string_to_metric_families(reply.get_data(as_text=True)):
        for sample in family.samples:
            if sample.name == "operategpt_upstream_attempts_total" and sample.labels.get("model") == model:
                counts[(sample.labels["worker"], sample.labels["outcome"])] = sample.value
    return counts


def access_line(caplog, request_id) -> dict:
    lines = [record.fields for record in caplog.records
             if record.name == "operategpt.access" and record.fields["request_id"] == request_id]
    assert len(lines) == 1, f"expected one access-log line for {request_id}, got {lines}"
    return lines[0]


# -- 1. X-Request-ID reaches the worker on every route -----------------------------------------------


def any_api(request):
    """One upstream that speaks every shape the cases below call: OpenAI chat (whole or SSE), OpenAI
    embeddings, a template completion and a template embedding."""
    body = request.get_json()
    if request.path == "/v1/chat/completions":
        if body.get("stream"):
            return Response(sse(chunk("hello"), chunk(finish="stop"), b"[DONE]"), mimetype="text/event-stream")
        return json_reply(completion("hello"))
    if request.path == "/v1/embeddings":
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return json_reply({"object": "list", "model": "upstream",
                           "data": [{"object": "embedding", "index": i, "embedding": [0.5, 1.0]}
                                    for i in range(len(inputs))],
                           "usage": {"prompt_tokens": 1, "total_tokens": 1}})
    if request.path == "/embed":
        return json_reply({"vec": [0.5, 1.0]})
    return json_reply({"answer": "hello"})


def seed_completion(client, headers):
    return client.post("/api/v1/chat/completions", json={"input": "hi", "model_name": "m"}, headers=headers)


def chat_completion(client, headers):
    return client.post("/v1/chat/completions", json={"model": "m", "messages": USER}, headers=headers)


def streamed_chat_completion(client, headers):
    return client.post("/v1/chat/completions", json={"model": "m", "messages": USER, "stream": True},
                       headers=headers, buffered=False)


def embeddings_of_two(client, headers):
    return client.post("/v1/embeddings", json={"model": "m", "input": ["first", "second"]}, headers=headers)


def openai_chat_worker(client, up):
    register_openai(client, "m", up.url("/v1/chat/completions"))


def template_chat_worker(client, up):
    register_template(client, "m", up.url("/generate"))


def openai_embedding_worker(client, up):
    register_openai(client, "m", up.url("/v1/embeddings"), model_type="embedding")


def template_embedding_worker(client, up):
    register_template(client, "m", up.url("/embed"), model_type="embedding",
                      body={"text": "{USER_PROMPT}"}, response_extract="vec")


# (worker, call, upstream calls per request)
ROUTES = {
    "seed/template": (template_chat_worker, seed_completion, 1),
    "seed/openai": (openai_chat_worker, seed_completion, 1),
    "v1-chat/openai": (openai_chat_worker, chat_completion, 1),
    "v1-chat/template": (template_chat_worker, chat_completion, 1),
    "v1-chat-stream/openai": (openai_chat_worker, streamed_chat_completion, 1),
    "v1-chat-stream/template": (template_chat_worker, streamed_chat_completion, 1),
    "v1-embeddings/openai": (openai_embedding_worker, embeddings_of_two, 1),
    "v1-embeddings/template": (template_embedding_worker, embeddings_of_two, 2),
}


@pytest.fixture(scope="module")
def any_upstream():
    # One server for all the cases (stopping one takes up to half a second); each case reads what it was sent.
    with FakeUpstream(any_api) as up:
        yield up


def sent_during(up, action):
    """Run `action`; the requests `up` received meanwhile, and what `action` returned."""
    before = len(up.seen)
    result = action()
    return up.seen[before:], result


@pytest.mark.parametrize("case", list(ROUTES))
def test_every_upstream_call_carries_the_request_id(client, any_upstream, case):
    add_worker, call, calls_per_request = ROUTES[case]
    add_worker(client, any_upstream)

    given = new_request_id()
    seen, reply = sent_during(any_upstream, lambda: finished(call(client, {REQUEST_ID: given})))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.headers[REQUEST_ID] == given
    assert len(seen) == calls_per_request
    assert [request_id_seen(s) for s in seen] == [given] * calls_per_request, \
        f"{case}: the worker was not sent the client's X-Request-ID"

    seen, reply = sent_during(any_upstream, lambda: finished(call(client, {})))
    assert reply.status_code == 200, reply.get_data(as_text=True)
    made = reply.headers[REQUEST_ID]
    assert [request_id_seen(s) for s in seen] == [made] * calls_per_request, \
        f"{case}: the worker was not sent the X-Request-ID the manager made and returned"


# -- 2. a stream broken after its first byte is a failed attempt ---------------------------------------

BREAK_AFTER_S = 0.5


def breaks_after_one_event(request):
    """An OpenAI worker that streams one valid event, then drops the connection mid-body (werkzeug closes
    the socket without the chunked body's terminator: the manager's read fails with an incomplete read)."""

    def events():
        yield sse(chunk("partial"))
        time.sleep(BREAK_AFTER_S)
        raise ConnectionAbortedError("the worker died mid-stream")

    return Response(events(), mimetype="text/event-stream")


def in_the_future(moment: str | None) -> bool:
    return moment is not None and datetime.fromisoformat(moment) > datetime.now(timezone.utc)


@pytest.fixture
def strict_client(make_settings):
    """A manager that cools a worker down after one failed request."""
    app = create_app(make_settings(passive_failure_threshold=1, cooldown_seconds=30))
    yield app.test_client()
    app.extensions["operategpt"].db.dispose()


def test_stream_broken_after_the_first_event_is_a_failed_attempt(strict_client, caplog):
    client = strict_client
    model = unique_model("broken")
    rid = new_request_id()
    with FakeUpstream(breaks_after_one_event) as up:
        worker = register_openai(client, model, up.url("/v1/chat/completions"))
        with caplog.at_level(logging.INFO, logger="operategpt.access"):
            reply = client.post("/v1/chat/completions", json={"model": model, "messages": USER, "stream": True},
                                headers={REQUEST_ID: rid}, buffered=False)
            assert reply.status_code == 200
            body = reply.get_data()
            reply.close()

        # Read before any other request can reach the worker: what /metrics says of the stream alone.
        counted = attempts(client, model)

        relayed, failed = events_of(body)
        assert relayed == chunk("partial")
        assert set(failed) == {"error"} and {"message", "type"} <= set(failed["error"]), failed

        listed = client.get("/api/server/workers", query_string={"model_name": model}).get_json()["data"]
        assert [w["id"] for w in listed] == [worker["id"]]
        assert in_the_future(listed[0]["cooldown_until"]), \
            f"one broken stream with PASSIVE_FAILURE_THRESHOLD=1 must start a cooldown: {listed[0]}"

        again = client.post("/v1/chat/completions", json={"model": model, "messages": USER})
        assert again.status_code == 503, again.get_json()
        assert len(up.seen) == 1, "a cooling-down worker must get no traffic"

    failures = {outcome: n for (w, outcome), n in counted.items() if w == str(worker["id"]) and outcome != "ok"}
    assert failures, f"the broken stream is not a failed attempt in /metrics: {counted}"

    line = access_line(caplog, rid)
    assert line["total_ms"] >= BREAK_AFTER_S * 1000, \
        f"the access log must be written when the stream ends, ~{BREAK_AFTER_S * 1000:.0f} ms in: {line}"


EVENT_GAP_S = 0.2


def three_events_apart(request):
    def events():
        yield sse(chunk("one"))
        time.sleep(EVENT_GAP_S)
        yield sse(chunk("two"))
        time.sleep(EVENT_GAP_S)
        yield sse(chunk(finish="stop"), b"[DONE]")

    return Response(events(), mimetype="text/event-stream")


def test_stream_that_completes_is_an_ok_attempt_logged_at_its_end(strict_client, caplog):
    client = strict_client
    model = unique_model("whole")
    rid = new_request_id()
    with FakeUpstream(three_events_apart) as up:
        worker = register_openai(client, model, up.url("/v1/chat/completions"))
        with caplog.at_level(logging.INFO, logger="operategpt.access"):
            reply = client.post("/v1/chat/completions", json={"model": model, "messages": USER, "stream": True},
                                headers={REQUEST_ID: rid}, buffered=False)
            assert reply.status_code == 200
            body = reply.get_data()
            reply.close()

    assert events_of(body) == [chunk("one"), chunk("two"), chunk(finish="stop"), b"[DONE]"]
    assert attempts(client, model) == {(str(worker["id"]), "ok"): 1.0}
    listed = client.get("/api/server/workers", query_string={"model_name": model}).get_json()["data"]
    assert not in_the_future(listed[0]["cooldown_until"])

    line = access_line(caplog, rid)
    assert (line["status"], line["worker"]) == (200, worker["id"])
    assert line["total_ms"] >= 2 * EVENT_GAP_S * 1000, \
        f"total_ms must cover the whole stream ({2 * EVENT_GAP_S * 1000:.0f} ms of gaps): {line}"


# -- 3. retry policy: a timeout after the request was sent is not retried unless the worker opts in ----

SLOW_ANSWER_S = 2.0


@pytest.fixture
def slow_and_fast():
    """A answers after SLOW_ANSWER_S (released early when the test ends, so stopping it does not wait);
    B answers at once."""
    release = threading.Event()

    def slow(request):
        release.wait(SLOW_ANSWER_S)
        return json_reply({"answer": "from A"})

    with FakeUpstream(slow) as a, FakeUpstream(lambda r: json_reply({"answer": "from B"})) as b:
        try:
            yield a, b
        finally:
            release.set()


def ask(client):
    return client.post("/api/v1/chat/completions", json={"input": "hi", "model_name": "m"})


def test_read_timeout_is_not_retried_by_default(client, slow_and_fast):
    a, b = slow_and_fast
    register_template(client, "m", a.url("/generate"), priority=0, timeout_s=0.5)
    register_template(client, "m", b.url("/generate"), priority=1)

    reply = ask(client)
    assert reply.status_code == 504, reply.get_json()
    assert reply.get_json()["success"] is False
    assert len(a.seen) == 1
    assert b.seen == [], "a request the worker may still be working on must not be sent to another"


def test_read_timeout_is_retried_for_a_worker_that_opted_in(client, slow_and_fast):
    a, b = slow_and_fast
    register_template(client, "m", a.url("/generate"), priority=0, timeout_s=0.5, retry_on_timeout=True)
    fast = register_template(client, "m", b.url("/generate"), priority=1)

    reply = ask(client)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["result"] == "from B"
    assert reply.headers["X-OperateGPT-Worker"] == str(fast["id"])
    assert len(a.seen) == 1 and len(b.seen) == 1


def test_connection_refused_fails_over_by_default(client):
    with FakeUpstream(lambda r: json_reply({"answer": "from B"})) as b:
        register_template(client, "m", f"http://127.0.0.1:{free_port()}/generate", priority=0)
        fast = register_template(client, "m", b.url("/generate"), priority=1)

        reply = ask(client)
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["result"] == "from B"
    assert reply.headers["X-OperateGPT-Worker"] == str(fast["id"])
