"""Liveness, readiness, metrics, request ids and the per-request log line."""

from __future__ import annotations

import json
import logging
import os

from werkzeug.wrappers import Response

from operategpt.deploy.logformat import JsonFormatter
from operategpt.settings import Settings
from operategpt.web.app import create_app
from operategpt.web.requestlog import _RequestIds
from tests.support.servers import FakeUpstream, json_reply


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"success": True, "msg": "alive"}
    assert client.get("/ready").get_json() == {"success": True, "msg": "ready"}


def test_not_ready_without_migrations(tmp_path):
    app = create_app(Settings.from_env({}, database_url=f"sqlite:///{tmp_path}/empty.db", health_checks=False))
    reply = app.test_client().get("/ready")
    assert reply.status_code == 503
    assert reply.get_json()["msg"].startswith("not ready: database schema is at no revision")


def test_request_id_is_accepted_returned_and_forwarded(client):
    with FakeUpstream(lambda r: json_reply("ok")) as up:
        client.post("/api/server/register", json={"model_name": "m", "req_url_template": up.url("/g"),
                                                  "body": {"p": "{USER_PROMPT}"}})
        given = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"},
                            headers={"X-Request-ID": "abc-123"})
        made = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"},
                           headers={"X-Request-ID": "bad id with spaces"})
    assert given.headers["X-Request-ID"] == "abc-123"
    assert up.seen[0].headers["X-Request-Id"] == "abc-123"
    assert len(made.headers["X-Request-ID"]) == 32
    assert up.seen[1].headers["X-Request-Id"] == made.headers["X-Request-ID"]


def test_made_request_ids_differ_per_request_and_per_forked_process():
    ids = _RequestIds()
    first, second = ids(), ids()
    assert first != second
    assert len(first) == 32 and int(first, 16) >= 0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a gunicorn worker forked from a master that had already imported the app
        os.write(write, ids().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert len(child) == 32
    assert child[:16] != first[:16], "a forked process must not repeat its parent's ids"


def test_metrics_count_requests_attempts_and_failovers(client):
    with FakeUpstream(lambda r: Response("down", status=503)) as bad, FakeUpstream(lambda r: json_reply("ok")) as good:
        bad_id = client.post("/api/server/register", json={
            "model_name": "metered", "req_url_template": bad.url("/g"), "body": {"p": "{USER_PROMPT}"},
            "weight": 1000}).get_json()["data"]["id"]
        good_id = client.post("/api/server/register", json={
            "model_name": "metered", "req_url_template": good.url("/g"),
            "body": {"p": "{USER_PROMPT}"}}).get_json()["data"]["id"]
        for _ in range(3):
            assert client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "metered"}).status_code \
                == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert f'operategpt_upstream_attempts_total{{model="metered",outcome="http_503",worker="{bad_id}"}}' in text
    assert f'operategpt_upstream_attempts_total{{model="metered",outcome="ok",worker="{good_id}"}}' in text
    assert 'operategpt_failovers_total{model="metered"}' in text
    assert (f'operategpt_requests_total{{model="metered",outcome="ok",route="/api/v1/chat/completions",'
            f'worker="{good_id}"}}') in text
    assert f'operategpt_worker_up{{model="metered",status="unknown",worker="{good_id}"}} 1.0' in text
    assert "operategpt_upstream_seconds_bucket" in text
    assert "operategpt_in_flight_requests" in text


def test_one_log_line_per_request_without_prompt_or_secret(client, caplog):
    with FakeUpstream(lambda r: json_reply("ok")) as up:
        client.post("/api/server/register", json={"model_name": "m", "req_url_template": up.url("/g"),
                                                  "body": {"p": "{USER_PROMPT}"},
                                                  "headers": {"Authorization": "Bearer sk-do-not-log"}})
        with caplog.at_level(logging.INFO, logger="operategpt.access"):
            client.post("/api/v1/chat/completions", json={"input": "my secret prompt", "model_name": "m"},
                        headers={"X-Request-ID": "r1", "Authorization": "Bearer client-key"})
    # Only this request's: a stream another test left open may end (and log) meanwhile.
    records = [r for r in caplog.records if r.name == "operategpt.access" and r.fields["request_id"] == "r1"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "r1"
    assert line["route"] == "/api/v1/chat/completions"
    assert (line["status"], line["model"], line["retries"]) == (200, "m", 0)
    assert isinstance(line["worker"], int)
    assert line["upstream_ms"] > 0 and line["total_ms"] >= line["upstream_ms"]
    rendered = JsonFormatter().format(records[0]) + caplog.text
    for secret in ("my secret prompt", "sk-do-not-log", "client-key"):
        assert secret not in rendered
