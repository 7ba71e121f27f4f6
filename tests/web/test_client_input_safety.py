"""Client input stays where the template put it, and its problems are the client's, through the in-process app
and real loopback workers: dot segments, header values HTTP cannot carry, URLs whose parsers disagree."""

from __future__ import annotations

import pytest

from operategpt.web.app import create_app
from tests.support.db import query
from tests.support.servers import FakeUpstream, json_reply

CHAT = "/api/v1/chat/completions"


@pytest.mark.parametrize("tenant", ["..", ".", "a/b", "../.."])
def test_dot_and_slash_values_reach_the_worker_encoded(client, tenant):
    with FakeUpstream(lambda r: json_reply({"response": "ok"})) as up:
        assert client.post("/api/server/register", json={
            "model_name": "m", "req_url_template": up.url("/tenant/{TENANT}/generate"),
            "body": {"input": "{USER_PROMPT}"}, "response_extract": "response",
        }).status_code == 200
        reply = client.post(CHAT, json={"input": "hi", "model_name": "m", "params": {"TENANT": tenant}})
        assert reply.status_code == 200, reply.get_json()
    (seen,) = up.seen
    # The worker's server decodes the path: the value comes back as one segment between the template's own.
    assert seen.path == f"/tenant/{tenant}/generate"
    assert seen.path.startswith("/tenant/") and seen.path.endswith("/generate")


@pytest.mark.parametrize("prompt", ["caf\u00e9 \u65e5\u672c", "a\x00b", " leading", "a\r\nX-Injected: 1"])
def test_header_values_from_a_prompt_that_http_cannot_carry_are_400_and_not_the_workers_fault(
    client, database_url, prompt
):
    with FakeUpstream(lambda r: json_reply({"response": "ok"})) as up:
        assert client.post("/api/server/register", json={
            "model_name": "m", "req_url_template": up.url("/generate"), "body": {"input": "x"},
            "headers": {"X-Prompt": "{USER_PROMPT}"}, "response_extract": "response",
        }).status_code == 200
        reply = client.post(CHAT, json={"input": prompt, "model_name": "m"})
    assert reply.status_code == 400
    assert "{USER_PROMPT}" in reply.get_json()["msg"]
    assert up.seen == []
    assert query(database_url, "select passive_failures from workers") == [(0,)]


def test_url_whose_parsers_disagree_is_refused_at_registration_naming_the_host_it_would_reach(make_settings):
    client = create_app(make_settings(upstream_allowed_hosts=("api.openai.com",))).test_client()
    reply = client.post("/api/server/register", json={
        "model_name": "m", "req_url_template": "http://127.0.0.1:8011\\@api.openai.com/ok",
        "body": {"input": "{USER_PROMPT}"},
    })
    assert reply.status_code == 400
    assert "127.0.0.1" in reply.get_json()["msg"]
    assert client.get("/api/server/workers").get_json()["data"] == []
