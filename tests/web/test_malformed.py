"""Bad input: every malformed request gets a 4xx JSON error naming the problem, and changes nothing."""

from __future__ import annotations

import json

import pytest

from tests.support.db import dump_registry

GOOD = {
    "model_name": "chatglm2-6b",
    "req_url_template": "http://127.0.0.1:9/api/generate",
    "body": {"input": "{USER_PROMPT}"},
}


def with_(**changes):
    payload = {**GOOD, **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ...})


REG, LIST, OFF, CHAT = "/api/server/register", "/api/server/workers", "/api/server/offline", "/api/v1/chat/completions"
V1_CHAT, V1_EMB = "/v1/chat/completions", "/v1/embeddings"
BIG = 17 * 1024 * 1024

# (method, path, raw body, expected status, a fragment the msg must contain)
CASES = [
    ("POST", REG, "not json", 400, "not valid JSON"),
    ("POST", REG, "", 400, "not valid JSON"),
    ("POST", REG, "[1, 2]", 400, "must be a JSON object"),
    ("POST", REG, '"text"', 400, "must be a JSON object"),
    ("POST", REG, "{}", 400, "missing required field 'model_name'"),
    ("POST", REG, with_(req_url_template=...), 400, "missing required field 'req_url_template'"),
    ("POST", REG, with_(model_name=...), 400, "missing required field 'model_name'"),
    ("POST", REG, with_(model_name=""), 400, "model_name"),
    ("POST", REG, with_(model_name="x" * 129), 400, "model_name"),
    ("POST", REG, with_(model_name=7), 400, "model_name"),
    ("POST", REG, with_(colour="blue"), 400, "unknown field: colour"),
    ("POST", REG, with_(colour=1, size=2), 400, "unknown fields: colour, size"),
    ("POST", REG, with_(req_url_template="ftp://127.0.0.1/x"), 400, "req_url_template"),
    ("POST", REG, with_(req_url_template="file:///etc/passwd"), 400, "req_url_template"),
    ("POST", REG, with_(req_url_template="/relative/path"), 400, "req_url_template"),
    ("POST", REG, with_(req_url_template="gopher://h/x"), 400, "http"),
    ("POST", REG, with_(req_url_template="http://\U0010fee4/x"), 400, "invalid IDNA"),
    ("POST", REG, with_(req_url_template="http://127.0.0.1:99999/x"), 400, "Port out of range"),
    ("POST", REG, with_(body={"input": "no placeholder"}), 400, "{USER_PROMPT}"),
    ("POST", REG, with_(body="{USER_PROMPT}"), 400, "body"),
    ("POST", REG, with_(weight=-1), 400, "weight"),
    ("POST", REG, with_(weight=1.5), 400, "weight"),
    ("POST", REG, with_(weight="3"), 400, "weight"),
    ("POST", REG, with_(weight=True), 400, "weight"),
    ("POST", REG, with_(priority="high"), 400, "priority"),
    ("POST", REG, with_(headers=["Authorization"]), 400, "headers"),
    ("POST", REG, with_(headers={"X-Num": 5}), 400, "headers.X-Num"),
    ("POST", REG, with_(req_type="DELETE"), 400, "req_type"),
    ("POST", REG, with_(response_extract="data..x"), 400, "response_extract"),
    ("POST", REG, with_(response_extract="data[abc]"), 400, "response_extract"),
    ("POST", REG, with_(response_extract='["unterminated'), 400, "response_extract"),
    ("POST", REG, with_(response_extract=5), 400, "response_extract"),
    ("POST", REG, with_(timeout_s=0), 400, "timeout_s"),
    ("POST", REG, with_(health_url="not a url"), 400, "health_url"),
    ("POST", REG, with_(api_format="grpc"), 400, "api_format"),
    ("POST", REG, with_(api_format="openai"), 400, "openai-format worker takes no body"),
    ("POST", REG, with_(upstream_model="gpt-4o"), 400, "upstream_model"),
    ("POST", REG, with_(req_type="GET"), 400, "GET worker takes no body"),
    ("POST", REG, with_(model_type="Chat Model!"), 400, "model_type"),
    ("POST", REG, with_(headers={"X-Evil": "a\r\nInjected: 1 {USER_PROMPT}"}), 400, "header"),
    ("POST", REG, "x" * BIG, 413, "larger than the limit"),
    # Model names: letters, digits and ._:/@+- only (a newline would split a log line, `k=v` forge a field).
    ("POST", REG, with_(model_name="evil\nx"), 400, "field 'model_name'"),
    ("POST", REG, with_(model_name="evil x=1 status=200"), 400, "field 'model_name'"),
    ("POST", REG, with_(model_name="a=b"), 400, "field 'model_name'"),
    # Header names are RFC 9110 tokens.
    ("POST", REG, with_(headers={"X-A\r\nX-Injected": "1"}), 400, "headers"),
    ("POST", REG, with_(headers={"X-A: b": "1"}), 400, "headers"),
    ("POST", REG, with_(headers={"X A": "1"}), 400, "headers"),
    ("POST", REG, with_(headers={"X-Nul": "a\u0000{USER_PROMPT}"}), 400, "header"),
    ("POST", REG, with_(headers={"X-Lead": " {USER_PROMPT}"}), 400, "header"),
    ("POST", OFF, json.dumps({"model_name": "evil\nx", "req_url_template": "http://x/"}), 400, "model_name"),
    ("POST", CHAT, json.dumps({"input": "hi", "model_name": "evil x=1"}), 400, "field 'model_name'"),
    ("POST", V1_CHAT, json.dumps({"model": "evil\nx", "messages": [{"role": "user", "content": "x"}]}), 400,
     "field 'model'"),
    ("POST", V1_EMB, json.dumps({"model": "a b=c", "input": "x"}), 400, "field 'model'"),
    ("POST", OFF, "{bad", 400, "not valid JSON"),
    # PostgreSQL cannot store a NUL: refused on every database (found by schemathesis on PostgreSQL).
    ("POST", OFF, json.dumps({"model_name": "m", "req_url_template": "\u0000x"}), 400,
     "field 'req_url_template' contains a NUL character"),
    ("POST", REG, json.dumps({"model_name": "m", "req_url_template": "http://x/",
                              "body": {"p": "{USER_PROMPT}\u0000"}}), 400, "field 'body' contains a NUL character"),
    ("POST", REG, json.dumps({"model_name": "m", "req_url_template": "http://x/", "body": {"p": "{USER_PROMPT}"},
                              "owner": "a\u0000"}), 400, "field 'owner' contains a NUL character"),
    ("POST", OFF, json.dumps({"model_name": "chatglm2-6b"}), 400, "missing required field 'req_url_template'"),
    ("POST", OFF, json.dumps({"req_url_template": "http://x/"}), 400, "missing required field 'model_name'"),
    ("POST", OFF, json.dumps({**GOOD, "extra": 1}), 400, "unknown field"),
    ("POST", OFF, json.dumps({"model_name": "chatglm2-6b", "req_url_template": "http://127.0.0.1:9/other"}), 404,
     "no worker registered"),
    ("POST", OFF, json.dumps({"model_name": ["a"], "req_url_template": "http://x/"}), 400, "model_name"),
    ("POST", CHAT, "nope", 400, "not valid JSON"),
    ("POST", CHAT, "{}", 400, "missing required field 'input'"),
    ("POST", CHAT, json.dumps({"input": 42}), 400, "field 'input'"),
    ("POST", CHAT, json.dumps({"input": None}), 400, "field 'input'"),
    ("POST", CHAT, json.dumps({"input": "hi", "temperature": "hot"}), 400, "temperature"),
    ("POST", CHAT, json.dumps({"input": "hi", "temperature": 9}), 400, "temperature"),
    ("POST", CHAT, json.dumps({"input": "hi", "params": []}), 400, "params"),
    ("POST", CHAT, json.dumps({"input": "hi", "params": {"lower": 1}}), 400, "UPPER_SNAKE"),
    ("POST", CHAT, json.dumps({"input": "hi", "params": {"USER_PROMPT": "x"}}), 400, "built-in"),
    ("POST", CHAT, json.dumps({"input": "hi", "model_name": "unknown-model"}), 404, "unknown-model"),
    ("POST", CHAT, json.dumps({"input": "hi", "stream": True}), 400, "unknown field: stream"),
    ("POST", CHAT, "x" * BIG, 413, "larger than the limit"),
    ("GET", REG, None, 405, "not allowed"),
    ("PUT", OFF, "{}", 405, "not allowed"),
    ("DELETE", CHAT, None, 405, "not allowed"),
    ("POST", LIST, "{}", 405, "not allowed"),
    ("GET", "/api/server/unknown", None, 404, "no route"),
    ("POST", "/api/v2/chat/completions", "{}", 404, "no route"),
    ("POST", V1_CHAT, "nope", 400, "not valid JSON"),
    ("POST", V1_CHAT, "[]", 400, "must be a JSON object"),
    ("POST", V1_CHAT, "{}", 400, "missing required field 'model'"),
    ("POST", V1_CHAT, json.dumps({"model": "m"}), 400, "missing required field 'messages'"),
    ("POST", V1_CHAT, json.dumps({"model": "m", "messages": []}), 400, "messages"),
    ("POST", V1_CHAT, json.dumps({"model": "m", "messages": "hi"}), 400, "messages"),
    ("POST", V1_CHAT, json.dumps({"model": "m", "messages": [{"content": "hi"}]}), 400, "role"),
    ("POST", V1_CHAT, json.dumps({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}), 400, "role"),
    ("POST", V1_CHAT, json.dumps({"model": "m", "messages": [{"role": "user", "content": 5}]}), 400, "content"),
    ("POST", V1_CHAT, json.dumps({"model": 5, "messages": [{"role": "user", "content": "x"}]}), 400, "model"),
    ("POST", V1_CHAT, json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                  "temperature": "hot"}), 400, "temperature"),
    ("POST", V1_CHAT, json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                  "stream": "yes"}), 400, "stream"),
    ("POST", V1_CHAT, json.dumps({"model": "nobody", "messages": [{"role": "user", "content": "x"}]}), 404,
     "nobody"),
    ("POST", V1_CHAT, "x" * BIG, 413, "larger than the limit"),
    ("POST", V1_EMB, "{}", 400, "missing required field 'model'"),
    ("POST", V1_EMB, json.dumps({"model": "m"}), 400, "missing required field 'input'"),
    ("POST", V1_EMB, json.dumps({"model": "m", "input": 5}), 400, "input"),
    ("POST", V1_EMB, json.dumps({"model": "m", "input": []}), 400, "input"),
    ("POST", V1_EMB, json.dumps({"model": "m", "input": "x", "encoding_format": "hex"}), 400, "encoding_format"),
    ("GET", "/v1/models/nobody", None, 404, "nobody"),
    ("DELETE", "/v1/models", None, 405, "not allowed"),
    ("GET", V1_CHAT, None, 405, "not allowed"),
    ("POST", "/v1/completions/legacy", "{}", 404, "unknown request URL"),
    # Worker URLs that are the manager itself (it listens on 127.0.0.1:8007 here): loops, or loopback admins.
    ("POST", REG, with_(req_url_template="http://127.0.0.1:8007/api/server/register"), 400, "own listening address"),
    ("POST", REG, with_(req_url_template="http://localhost:8007/api/server/workers?q={USER_PROMPT}", req_type="GET",
                          body=...), 400,
     "own listening address"),
    ("POST", REG, with_(req_url_template="http://127.0.0.1:8007/v1/chat/completions"), 400, "req_url_template"),
    ("POST", REG, with_(req_url_template="http://u:p@127.0.0.1:8007/x?key=k"), 400, "own listening address"),
    ("POST", REG, with_(health_url="http://127.0.0.1:8007/api/server/workers"), 400, "health_url"),
]

# (headers, path, expected status, a fragment the msg must contain): hostile headers from a loopback client.
OWN_VIA = object()  # replaced by this instance's own Via mark
HEADER_CASES = [
    ({"Via": OWN_VIA}, CHAT, 508, "loop detected"),
    ({"Via": OWN_VIA}, V1_CHAT, 508, "loop detected"),
    ({"Via": OWN_VIA}, REG, 508, "loop detected"),
    ({"Via": OWN_VIA}, LIST, 508, "loop detected"),
    ({"Via": "1.1 nginx"}, LIST, 403, "loopback"),
    ({"X-Forwarded-For": "127.0.0.1"}, LIST, 403, "loopback"),
    ({"Forwarded": "for=127.0.0.1"}, REG, 403, "loopback"),
    ({"X-Real-IP": "127.0.0.1"}, OFF, 403, "loopback"),
]


@pytest.fixture
def seeded(client, database_url):
    reply = client.post(REG, json=GOOD)
    assert reply.status_code == 200
    return dump_registry(database_url)


def test_battery_is_large_enough():
    assert len(CASES) >= 60
    assert {case[1] for case in CASES} >= {REG, LIST, OFF, CHAT, V1_CHAT, V1_EMB, "/v1/models"}


@pytest.mark.parametrize(("method", "path", "raw", "status", "fragment"), CASES,
                         ids=[f"{i:02d}-{c[0]}-{c[1].rsplit('/', 1)[-1]}" for i, c in enumerate(CASES)])
def test_malformed_request(client, database_url, seeded, method, path, raw, status, fragment):
    reply = client.open(path, method=method, data=raw, content_type="application/json")
    assert reply.status_code == status
    assert reply.content_type == "application/json"
    body = reply.get_json()
    if path.startswith("/v1/"):  # OpenAI error objects
        message = body["error"]["message"]
        assert set(body["error"]) >= {"message", "type", "code"}
    else:
        assert body["success"] is False
        message = body["msg"]
    assert fragment in message
    assert "Traceback" not in message
    assert dump_registry(database_url) == seeded


@pytest.mark.parametrize(("headers", "path", "status", "fragment"), HEADER_CASES,
                         ids=[f"{i:02d}-{next(iter(c[0]))}-{c[1].rsplit('/', 1)[-1]}"
                              for i, c in enumerate(HEADER_CASES)])
def test_hostile_headers(client, database_url, seeded, headers, path, status, fragment):
    from operategpt.http.ownaddress import via_mark

    own = via_mark(client.application.extensions["operategpt"].settings.instance_id)
    headers = {name: own if value is OWN_VIA else value for name, value in headers.items()}
    method, data = ("GET", None) if path == LIST else ("POST", with_())
    reply = client.open(path, method=method, data=data, content_type="application/json", headers=headers)
    assert reply.status_code == status
    assert reply.content_type == "application/json"
    body = reply.get_json()
    message = body["error"]["message"] if path.startswith("/v1/") else body["msg"]
    assert fragment in message
    assert dump_registry(database_url) == seeded
