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
