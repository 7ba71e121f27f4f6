"""Secrets in worker URLs and headers never leave the process: not in replies (seed and /v1), logs, last_error,
metrics, the listing or the status page — only `workers export` holds them, deliberately."""

from __future__ import annotations

import base64
import json
import logging

from click.testing import CliRunner
from werkzeug.wrappers import Response

from operategpt import cli
from operategpt.web.app import create_app
from tests.support.servers import FakeUpstream

PASSWORD, QUERY_KEY, QUERY_API_KEY, HEADER_SECRET = "pw-Zq81xx", "sk-query-4242", "ak-query-7777", "hs-header-9999"
BASIC = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, QUERY_KEY, QUERY_API_KEY, HEADER_SECRET, BASIC)


def echo(request):
    """An error page that echoes the whole request: its URL, every header, the body."""
    headers = " ".join(f"{name}: {value}" for name, value in request.headers.items())
    text = f"denied {request.url} {headers} {request.get_data(as_text=True)}"
    return Response(text, status=500)


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} in {where}: {text[:2000]}"


def test_no_secret_of_any_kind_leaves_the_process(make_settings, database_url, caplog):
    app = create_app(make_settings(passive_failure_threshold=1, cooldown_seconds=0, max_retries=0))
    client = app.test_client()
    with FakeUpstream(echo) as up, caplog.at_level(logging.DEBUG):
        url = f"http://alice:{PASSWORD}@127.0.0.1:{up.port}/g?key={QUERY_KEY}&api_key={QUERY_API_KEY}&v=1"
        registered = client.post("/api/server/register", json={
            "model_name": "m", "req_url_template": url, "body": {"p": "{USER_PROMPT}"},
            "headers": {"X-Secret-Token": HEADER_SECRET}, "health_url": url,
        })
        assert registered.status_code == 200
        seed = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
        app.extensions["operategpt"].table.refresh({"m"})
        v1 = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        # What the worker was sent did hold them (the echo is the leak being tested).
        assert up.seen and up.seen[0].headers["Authorization"] == f"Basic {BASIC}"
        assert up.seen[0].headers["X-Secret-Token"] == HEADER_SECRET
        listing = client.get("/api/server/workers")
        app.extensions["operategpt"].health.run_round()  # a probe of the same URL: its last_error too
        probed = client.get("/api/server/workers")
    assert seed.status_code == 502 and "answered HTTP 500" in seed.get_json()["msg"]
    assert "denied" in seed.get_json()["msg"] and "****" in seed.get_json()["msg"]
    assert_clean(registered.get_data(as_text=True), "the registration reply")
    assert_clean(seed.get_data(as_text=True), "the seed reply")
    assert v1.status_code == 502 and "denied" in v1.get_json()["error"]["message"]
    assert_clean(v1.get_data(as_text=True), "the /v1 reply")
    assert_clean(caplog.text, "the log")
    assert "cools down" in caplog.text  # the WARNING line carrying the worker's error was written, masked
    assert_clean(probed.get_data(as_text=True), "the listing after a probe")
    worker = listing.get_json()["data"][0]
    assert worker["last_error"] and "answered HTTP 500" in worker["last_error"]
    assert_clean(listing.get_data(as_text=True), "the listing")
    assert worker["req_url_template"] == (f"http://alice:****@127.0.0.1:{up.port}/g?key=****&api_key=****&v=1")
    assert_clean(client.get("/").get_data(as_text=True), "the status page")
    assert_clean(client.get("/metrics").get_data(as_text=True), "the metrics")
    listed = CliRunner().invoke(cli.main, ["workers", "list", "--json"], env={"DATABASE_URL": database_url})
    assert_clean(listed.output, "workers list")
    # The one deliberate exception: a backup restores the workers as they were registered.
    exported = CliRunner().invoke(cli.main, ["workers", "export", "-"], env={"DATABASE_URL": database_url})
    assert exported.exit_code == 0, exported.output
    dumped = json.dumps(json.loads(exported.stdout))
    for secret in (PASSWORD, QUERY_KEY, QUERY_API_KEY, HEADER_SECRET):
        assert secret in dumped


def test_redact_masks_what_looks_like_a_credential():
    from operategpt.http.redact import redact, redact_url

    text = ('GET https://bob:hunter2@x.test/p?api_key=abc123&q=cats Authorization: Basic Ym9iOmh1bnRlcjI= '
            '{"access_token": "tok-55"} X-Api-Key: zzz-1')
    masked = redact(text)
    for secret in ("hunter2", "abc123", "Ym9iOmh1bnRlcjI=", "tok-55", "zzz-1"):
        assert secret not in masked
    assert "q=cats" in masked and "https://bob:****@x.test/p" in masked and "Basic ****" in masked
    assert redact("worker at http://h:1 answered HTTP 500: max_tokens must be < 10") == \
        "worker at http://h:1 answered HTTP 500: max_tokens must be < 10"
    assert redact_url("http://h/p?") == "http://h/p?"  # untouched when nothing is secret
    assert redact_url("http://u:p@h/p?token=t&x=1") == "http://u:****@h/p?token=****&x=1"
