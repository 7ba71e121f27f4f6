"""The four seed routes through HTTP, against real upstream servers on loopback."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

import pytest
from werkzeug.wrappers import Response

from tests.support.servers import FakeUpstream, json_reply

CHATGLM_REPLY = {
    "code": "200",
    "data": {"items": [{"attributes": {"answer": "I am ChatGLM2-6B ..."}}]},
    "success": True,
    "traceId": "0b46977c16953709036745431ea818",
}


def register(client, **fields):
    payload = {
        "model_name": "chatglm2-6b",
        "body": {"input": "{USER_PROMPT}", "model_name": "{MODEL_NAME}"},
        "owner": "operategpt",
        "response_extract": "",
        **fields,
    }
    return client.post("/api/server/register", json=payload)


def complete(client, **fields):
    return client.post(
        "/api/v1/chat/completions", json={"input": "who are you?", "model_name": "chatglm2-6b", **fields}
    )


@pytest.fixture
def upstream():
    with FakeUpstream(lambda request: json_reply(CHATGLM_REPLY)) as server:
        yield server


def test_register_reply_and_row(client, upstream):
    reply = register(client, req_url_template=upstream.url("/api/generate"), weight=3, priority=1)
    assert reply.status_code == 200
    body = reply.get_json()
    assert body["success"] is True
    assert body["msg"] == "register LLM chatglm2-6b succeed!"
    worker = body["data"]
    assert worker["model_name"] == "chatglm2-6b"
    assert worker["req_url_template"] == upstream.url("/api/generate")
    assert (worker["weight"], worker["priority"], worker["status"]) == (3, 1, "unknown")
    assert worker["body"] == {"input": "{USER_PROMPT}", "model_name": "{MODEL_NAME}"}
    listed = client.get("/api/server/workers").get_json()
    assert listed["success"] is True
    assert [w["id"] for w in listed["data"]] == [worker["id"]]


def test_register_twice_updates_in_place(client, upstream):
    first = register(client, req_url_template=upstream.url("/api/generate")).get_json()["data"]
    second = register(
        client, req_url_template=upstream.url("/api/generate"), weight=7, owner="ops"
    ).get_json()["data"]
    assert second["id"] == first["id"]
    assert (second["weight"], second["owner"]) == (7, "ops")
    assert second["created_at"] == first["created_at"]
    assert len(client.get("/api/server/workers").get_json()["data"]) == 1


def test_list_filters_by_model_and_masks_secrets(client, upstream):
    register(client, req_url_template=upstream.url("/a"), headers={"Authorization": "Bearer sk-secret-123"})
    register(
        client,
        model_name="proxyllm",
        req_url_template=upstream.url("/b"),
        headers={"X-Trace": "{MODEL_NAME}"},
    )
    everything = client.get("/api/server/workers").get_json()["data"]
    assert sorted(w["model_name"] for w in everything) == ["chatglm2-6b", "proxyllm"]
    only = client.get("/api/server/workers?model_name=proxyllm").get_json()["data"]
    assert [w["model_name"] for w in only] == ["proxyllm"]
    assert only[0]["headers"] == {"X-Trace": "{MODEL_NAME}"}
    raw = client.get("/api/server/workers").get_data(as_text=True)
    assert "sk-secret-123" not in raw
    assert "Bearer ****" in raw


def test_listing_is_the_document_ok_would_send(app, client, upstream):
    from operategpt.web.jsonreply import ok

    register(client, req_url_template=upstream.url("/a"), headers={"Authorization": "Bearer sk-secret-123"},
             body={"input": "{USER_PROMPT}", "n\u00e9": [1, 2.5, None, 'quote " and \\']}, timeout_s=1.5)
    register(client, model_name="proxyllm", req_url_template=upstream.url("/b"), api_format="openai", body=None,
             response_extract="", upstream_model="gpt")
    app.extensions["operategpt"].health.run_round()
    for query in ("", "?model_name=proxyllm", "?model_name=nothing"):
        reply = client.get("/api/server/workers" + query)
        with app.test_request_context():
            found = app.extensions["operategpt"].workers.list_workers(query.partition("=")[2] or None)
            expected = ok(f"{len(found)} worker{'s' if len(found) != 1 else ''}", data=found)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == expected.headers["Content-Type"]
        assert reply.get_data() == expected.get_data()


def test_listing_shows_state_that_changed_since_the_last_listing(make_settings):
    from operategpt.web.app import create_app

    app = create_app(make_settings(passive_failure_threshold=5, max_retries=0))
    client = app.test_client()

    def listed():
        return client.get("/api/server/workers").get_json()["data"][0]

    with FakeUpstream(lambda request: Response("down", status=503)) as down:
        register(client, req_url_template=down.url("/g"), weight=2)
        first = listed()
        assert (first["status"], first["passive_failures"], first["last_error"]) == ("unknown", 0, None)
        complete(client)  # observed state, written without moving the registry version
        failed = listed()
        assert failed["passive_failures"] == 1 and "HTTP 503" in failed["last_error"]
        assert failed["last_error_source"] == "request" and failed["last_error_at"] is not None
        app.extensions["operategpt"].health.run_round()
        checked = listed()
        # The probe passed (the port accepts connections), but it does not prove the requests' failure stale.
        assert (checked["status"], checked["state"]) == ("healthy", "healthy")
        assert (checked["last_error"], checked["last_error_source"]) == (failed["last_error"], "request")
        assert checked["last_checked_at"] is not None
        register(client, req_url_template=down.url("/g"), weight=3)
        assert listed()["weight"] == 3


def test_offline_removes_the_worker_and_traffic_stops(client, upstream):
    url = upstream.url("/api/generate")
    register(client, req_url_template=url, response_extract="data.items[].attributes.answer")
    assert complete(client).status_code == 200
    reply = client.post("/api/server/offline", json={"model_name": "chatglm2-6b", "req_url_template": url})
    assert reply.status_code == 200
    assert reply.get_json() == {
        "success": True,
        "msg": f"remove llm worker(model_name=chatglm2-6b, url={url}) succeed!",
    }
    after = complete(client)
    assert after.status_code == 404
    assert after.get_json() == {"success": False, "msg": "no worker registered for model 'chatglm2-6b'"}
    again = client.post("/api/server/offline", json={"model_name": "chatglm2-6b", "req_url_template": url})
    assert again.status_code == 404
    assert again.get_json()["success"] is False


def test_completion_nested_extract_and_what_upstream_receives(client, upstream):
    register(
        client,
        req_url_template=upstream.url("/api/generate"),
        response_extract="data.items[].attributes.answer",
        body={"input": "{USER_PROMPT}", "model_name": "{MODEL_NAME}", "t": "{MODEL_TEMPERATURE}"},
    )
    reply = complete(client, temperature=0.2)
    assert reply.status_code == 200
    assert reply.get_json() == {"success": True, "msg": "execute succeed", "result": "I am ChatGLM2-6B ..."}
    worker_id = client.get("/api/server/workers").get_json()["data"][0]["id"]
    assert reply.headers["X-OperateGPT-Worker"] == str(worker_id)
    seen = upstream.seen[-1]
    assert seen.method == "POST"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.json() == {"input": "who are you?", "model_name": "chatglm2-6b", "t": 0.2}


def test_default_temperature_and_default_model(make_settings, upstream):
    from operategpt.web.app import create_app

    client = create_app(make_settings(llm_name="chatglm2-6b", default_temperature=0.3)).test_client()
    register(
        client, req_url_template=upstream.url("/x"), body={"p": "{USER_PROMPT}", "t": "{MODEL_TEMPERATURE}"}
    )
    reply = client.post("/api/v1/chat/completions", json={"input": "hi"})
    assert reply.status_code == 200
    assert upstream.seen[-1].json() == {"p": "hi", "t": 0.3}


def test_messages_placeholder_on_the_seed_route(client, upstream):
    register(client, req_url_template=upstream.url("/chat"), body={"messages": "{MESSAGES}", "q": "{USER_PROMPT}"},
             response_extract="code")
    assert complete(client).status_code == 200
    assert upstream.seen[-1].json() == {"messages": [{"role": "user", "content": "who are you?"}], "q": "who are you?"}


def test_plain_text_reply_with_empty_extract(client):
    with FakeUpstream(
        lambda request: Response("I am an AI language model.", content_type="text/plain")
    ) as up:
        register(client, model_name="proxyllm", req_url_template=up.url("/generate"))
        reply = client.post(
            "/api/v1/chat/completions", json={"input": "who are you?", "model_name": "proxyllm"}
        )
    assert reply.get_json()["result"] == "I am an AI language model."


def test_json_string_reply_is_unwrapped(client):
    with FakeUpstream(lambda request: json_reply('line one\nline "two"')) as up:
        register(client, req_url_template=up.url("/g"))
        assert complete(client).get_json()["result"] == 'line one\nline "two"'


def test_non_string_leaf_is_compact_json(client):
    with FakeUpstream(lambda request: json_reply({"data": {"scores": [1, 2.5, None], "ok": True}})) as up:
        register(client, req_url_template=up.url("/g"), response_extract="data")
        assert complete(client).get_json()["result"] == '{"scores":[1,2.5,null],"ok":true}'


def test_custom_params_and_missing_placeholder(client, upstream):
    register(
        client,
        req_url_template=upstream.url("/g?top_p={TOP_P}"),
        body={"input": "{USER_PROMPT}", "style": "{STYLE}"},
        response_extract="code",
    )
    missing = complete(client)
    assert missing.status_code == 400
    assert "{STYLE}" in missing.get_json()["msg"] and "{TOP_P}" in missing.get_json()["msg"]
    assert upstream.seen == []
    ok = complete(client, params={"STYLE": {"tone": "dry"}, "TOP_P": "0.9 & more"})
    assert ok.status_code == 200, ok.get_json()
    assert upstream.seen[-1].json() == {"input": "who are you?", "style": {"tone": "dry"}}
    assert upstream.seen[-1].path == "/g"
    assert ok.get_json()["result"] == "200"


def test_get_worker_with_url_encoded_prompt(client, upstream):
    register(
        client,
        req_url_template=upstream.url("/q?prompt={USER_PROMPT}"),
        req_type="GET",
        body=None,
        response_extract="code",
    )
    assert complete(client, input="a&b=c d/é").status_code == 200
    seen = upstream.seen[-1]
    assert seen.method == "GET"
    assert seen.query == "prompt=a%26b%3Dc%20d%2F%C3%A9"
    assert parse_qs(seen.query) == {"prompt": ["a&b=c d/é"]}
    assert seen.body == b""


def test_openai_worker_through_the_seed_route(client):
    def openai(request):
        body = request.get_json()
        text = f"echo:{body['messages'][-1]['content']}:{body['model']}:{body.get('temperature')}"
        return json_reply({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

    with FakeUpstream(openai) as up:
        reply = client.post(
            "/api/server/register",
            json={
                "model_name": "gpt",
                "req_url_template": up.url("/v1/chat/completions"),
                "api_format": "openai",
                "upstream_model": "gpt-4o-mini",
                "headers": {"Authorization": "Bearer sk-x"},
            },
        )
        assert reply.status_code == 200, reply.get_json()
        result = client.post(
            "/api/v1/chat/completions", json={"input": "hi", "model_name": "gpt", "temperature": 0}
        )
        assert result.get_json()["result"] == "echo:hi:gpt-4o-mini:0.0"
        assert up.seen[-1].headers["Authorization"] == "Bearer sk-x"


def test_upstream_error_status_is_502_with_excerpt(client):
    with FakeUpstream(lambda request: Response("<html>model crashed</html>", status=500)) as up:
        register(client, req_url_template=up.url("/g"))
        reply = complete(client)
    assert reply.status_code == 502
    body = reply.get_json()
    assert body["success"] is False
    assert "HTTP 500" in body["msg"] and "model crashed" in body["msg"]


def test_extract_mismatch_is_502_naming_the_segment(client, upstream):
    register(client, req_url_template=upstream.url("/g"), response_extract="data.items[].attributes.missing")
    reply = complete(client)
    assert reply.status_code == 502
    assert "missing" in reply.get_json()["msg"]


def test_upstream_timeout_is_504(client):
    def slow(request):
        time.sleep(1.0)
        return json_reply("late")

    with FakeUpstream(slow) as up:
        register(client, req_url_template=up.url("/g"), timeout_s=0.2)
        reply = complete(client)
    assert reply.status_code == 504
    assert "did not answer within 0.2 s" in reply.get_json()["msg"]


def test_oversized_upstream_reply_is_refused(make_settings):
    from operategpt.web.app import create_app

    client = create_app(make_settings(upstream_max_bytes=1000)).test_client()
    with FakeUpstream(lambda request: Response("x" * 5000, content_type="text/plain")) as up:
        register(client, req_url_template=up.url("/g"))
        reply = complete(client)
    assert reply.status_code == 502
    assert "larger than 1000 bytes" in reply.get_json()["msg"]


def test_redirects_are_not_followed(client, upstream):
    with FakeUpstream(lambda r: Response("", status=302, headers={"Location": upstream.url("/")})) as up:
        register(client, req_url_template=up.url("/g"))
        reply = complete(client)
    assert reply.status_code == 502
    assert "HTTP 302" in reply.get_json()["msg"]
    assert upstream.seen == []


def test_failover_to_another_worker_on_connection_refused(client, upstream):
    with FakeUpstream(lambda request: json_reply("unused")) as dead:
        dead_url = dead.url("/g")
    register(client, req_url_template=dead_url, weight=1000)
    register(client, req_url_template=upstream.url("/g"), weight=1, response_extract="")
    for _ in range(5):
        reply = complete(client)
        assert reply.status_code == 200, reply.get_json()


def test_client_errors_from_upstream_are_not_retried(client):
    with (
        FakeUpstream(lambda r: json_reply({"error": "bad"}, 400)) as bad,
        FakeUpstream(lambda r: json_reply("fine")) as good,
    ):
        register(client, req_url_template=bad.url("/g"), priority=0)
        register(client, req_url_template=good.url("/g"), priority=0, weight=1)
        statuses = {complete(client).status_code for _ in range(20)}
    assert 502 in statuses  # the 400 was returned, not retried on the good worker
    assert len(bad.seen) + len(good.seen) == 20


def test_drained_workers_give_503_with_retry_after(client, upstream):
    register(client, req_url_template=upstream.url("/g"), weight=0)
    reply = complete(client)
    assert reply.status_code == 503
    assert reply.headers["Retry-After"].isdigit()
    assert reply.get_json()["msg"] == (
        "model 'chatglm2-6b' has 1 worker registered but none is routable: 1 drained"
    )


def test_lower_priority_tier_wins(client):
    with (
        FakeUpstream(lambda r: json_reply("primary")) as primary,
        FakeUpstream(lambda r: json_reply("backup")) as backup,
    ):
        register(client, req_url_template=backup.url("/g"), priority=5, weight=100)
        register(client, req_url_template=primary.url("/g"), priority=0, weight=1)
        assert {complete(client).get_json()["result"] for _ in range(20)} == {"primary"}


def test_unknown_route_and_method_are_json(client):
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.get_json() == {"success": False, "msg": "no route for GET /nope"}
    wrong = client.get("/api/server/register")
    assert wrong.status_code == 405
    assert wrong.get_json()["success"] is False
    assert "POST" in wrong.get_json()["msg"]


def test_reply_is_json_never_html_for_crashes(app, client, monkeypatch, upstream):
    register(client, req_url_template=upstream.url("/g"))

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.extensions["operategpt"].upstream, "send", boom)
    reply = complete(client)
    assert reply.status_code == 500
    assert reply.get_json() == {"success": False, "msg": "internal error; see the manager's log"}
    assert "secret internal detail" not in json.dumps(reply.get_json())
