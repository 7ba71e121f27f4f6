"""Admin token, loopback-only admin without one, and API keys on completion routes."""

from __future__ import annotations

import logging

import pytest

from operategpt.settings import ConfigError, Settings
from operategpt.web.app import create_app
from tests.support.servers import FakeUpstream, json_reply

WORKER = {"model_name": "m", "req_url_template": "http://127.0.0.1:9/g", "body": {"p": "{USER_PROMPT}"}}
REMOTE = {"REMOTE_ADDR": "203.0.113.7"}


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def test_without_admin_token_admin_routes_answer_loopback_only(make_settings, caplog):
    with caplog.at_level(logging.WARNING):
        client = create_app(make_settings()).test_client()
    assert "MANAGER_ADMIN_TOKEN is not set" in caplog.text
    assert client.post("/api/server/register", json=WORKER).status_code == 200
    for method, path, body in [("POST", "/api/server/register", WORKER), ("GET", "/api/server/workers", None),
                               ("POST", "/api/server/offline", WORKER)]:
        reply = client.open(path, method=method, json=body, environ_base=REMOTE)
        assert reply.status_code == 403
        assert reply.get_json() == {"success": False, "msg": "admin routes answer only loopback clients while "
                                                             "MANAGER_ADMIN_TOKEN is unset"}
    assert len(client.get("/api/server/workers").get_json()["data"]) == 1


def test_admin_token_is_required_and_checked(make_settings, caplog):
    client = create_app(make_settings(admin_token="s3cret-admin")).test_client()
    with caplog.at_level(logging.DEBUG):
        missing = client.post("/api/server/register", json=WORKER)
        wrong = client.post("/api/server/register", json=WORKER, headers=bearer("nope"))
        basic = client.post("/api/server/register", json=WORKER, headers={"Authorization": "Basic abc"})
        right = client.post("/api/server/register", json=WORKER, headers=bearer("s3cret-admin"), environ_base=REMOTE)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.get_json()["success"] is False
    assert (wrong.status_code, wrong.get_json()["msg"]) == (403, "the admin token is not valid")
    assert basic.status_code == 401
    assert right.status_code == 200
    assert client.get("/api/server/workers").status_code == 401
    assert client.get("/api/server/workers", headers=bearer("s3cret-admin")).status_code == 200
    assert "s3cret-admin" not in caplog.text
    # The admin token is not a client key, and completions need none while MANAGER_API_KEYS is unset.
    assert client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"}).status_code == 502


def test_api_keys_guard_completions(make_settings, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# one key a line\nsk-from-file\n\n")
    settings = Settings.from_env({"MANAGER_API_KEYS": "sk-one, sk-two", "MANAGER_API_KEYS_FILE": str(keys_file)},
                                 database_url=make_settings().database_url, health_checks=False)
    assert settings.api_keys == ("sk-one", "sk-two", "sk-from-file")
    client = create_app(settings).test_client()
    with FakeUpstream(lambda r: json_reply("hi")) as up:
        assert client.post("/api/server/register", json={**WORKER, "req_url_template": up.url("/g")}).status_code == 200
        ask = {"input": "x", "model_name": "m"}
        assert client.post("/api/v1/chat/completions", json=ask).status_code == 401
        assert client.post("/api/v1/chat/completions", json=ask, headers=bearer("sk-three")).status_code == 403
        for key in ("sk-one", "sk-two", "sk-from-file"):
            reply = client.post("/api/v1/chat/completions", json=ask, headers=bearer(key))
            assert reply.get_json() == {"success": True, "msg": "execute succeed", "result": "hi"}


def test_unreadable_keys_file_is_a_start_up_error(tmp_path):
    with pytest.raises(ConfigError, match="MANAGER_API_KEYS_FILE cannot be read"):
        Settings.from_env({"MANAGER_API_KEYS_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize("proxy_header", [
    {"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}, {"Via": "1.1 nginx"},
    {"X-Real-IP": "203.0.113.7"},
])
def test_a_request_through_a_proxy_is_never_a_loopback_admin(make_settings, proxy_header):
    client = create_app(make_settings()).test_client()
    for method, path, body in [("POST", "/api/server/register", WORKER), ("GET", "/api/server/workers", None),
                               ("POST", "/api/server/offline", WORKER), ("GET", "/", None)]:
        reply = client.open(path, method=method, json=body, headers=proxy_header)  # from 127.0.0.1
        assert reply.status_code == 403, (path, proxy_header)
    assert client.get("/api/server/workers").status_code == 200  # the same client without the header


@pytest.mark.parametrize(("address", "admin"), [
    ("::ffff:127.0.0.1", True), ("::1", True), ("127.0.0.5", True), ("::ffff:203.0.113.7", False),
    ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False),
])
def test_ipv4_mapped_loopback_is_loopback(make_settings, address, admin):
    client = create_app(make_settings()).test_client()
    reply = client.get("/api/server/workers", environ_base={"REMOTE_ADDR": address})
    assert reply.status_code == (200 if admin else 403)


def test_a_request_with_the_managers_own_via_is_a_loop(make_settings):
    from operategpt.http.ownaddress import via_mark

    settings = make_settings()
    client = create_app(settings).test_client()
    own = via_mark(settings.instance_id)
    for path in ("/api/server/workers", "/api/v1/chat/completions", "/v1/chat/completions", "/health", "/nowhere"):
        for via in (own, f"1.0 fred, {own}", own.upper()):
            reply = client.post(path, json={}, headers={"Via": via})
            assert reply.status_code == 508, (path, via)
            assert reply.content_type == "application/json"
            body = reply.get_json()
            message = body["error"]["message"] if path.startswith("/v1") else body["msg"]
            assert "loop detected" in message
    other = via_mark("0123456789abcdef")
    assert client.get("/health", headers={"Via": other}).status_code == 200  # another instance's mark


def test_every_upstream_call_carries_the_via_mark(make_settings):
    from operategpt.http.ownaddress import via_mark

    settings = make_settings()
    client = create_app(settings).test_client()
    with FakeUpstream(lambda r: json_reply("ok")) as up:
        client.post("/api/server/register", json={**WORKER, "req_url_template": up.url("/g"),
                                                  "headers": {"Via": "1.1 corp-proxy"}})
        assert client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"}).status_code == 200
    assert up.seen[0].headers["Via"] == f"1.1 corp-proxy, {via_mark(settings.instance_id)}"
