"""Upstream safety at registration: schemes, placeholder hosts, and the host allowlist."""

from __future__ import annotations

import pytest

from operategpt.settings import ConfigError
from operategpt.web.app import create_app


def register(client, url, **fields):
    return client.post("/api/server/register", json={
        "model_name": "m", "req_url_template": url, "body": {"p": "{USER_PROMPT}"}, **fields})


def test_placeholders_cannot_choose_the_host(client):
    reply = register(client, "http://{HOST}.example.com/g")
    assert reply.status_code == 400
    assert "host and port cannot be placeholders" in reply.get_json()["msg"]
    assert register(client, "http://127.0.0.1:{PORT}/g").status_code == 400
    assert register(client, "http://127.0.0.1:9/{MODEL_NAME}/g?q={USER_PROMPT}").status_code == 200


def test_allowlist_checked_at_registration(make_settings):
    client = create_app(make_settings(upstream_allowed_hosts=("127.0.0.0/8", "api.example.com"))).test_client()
    assert register(client, "http://127.0.0.1:9/g").status_code == 200
    assert register(client, "http://localhost:9/g").status_code == 200  # resolves inside 127.0.0.0/8
    assert register(client, "https://api.example.com/v1/chat").status_code == 200
    refused = register(client, "http://169.254.169.254/latest/meta-data")
    assert refused.status_code == 400
    assert refused.get_json()["msg"] == "req_url_template: host 169.254.169.254 is not in UPSTREAM_ALLOWED_HOSTS"
    bad_health = register(client, "http://127.0.0.1:9/h", health_url="http://192.168.0.1/health")
    assert bad_health.status_code == 400
    assert "health_url" in bad_health.get_json()["msg"]
    listed = client.get("/api/server/workers").get_json()["data"]
    assert len(listed) == 3


def test_bad_allowlist_entry_is_a_start_up_error(make_settings):
    with pytest.raises(ConfigError, match="UPSTREAM_ALLOWED_HOSTS"):
        create_app(make_settings(upstream_allowed_hosts=("not a host/",)))


def test_allowlist_checked_again_after_dns_resolution_at_request_time(make_settings, monkeypatch):
    """A name that passed at registration but later resolves outside the allowlist is not called."""
    import socket

    from tests.support.servers import FakeUpstream, json_reply

    real_getaddrinfo = socket.getaddrinfo
    answers = {"worker.test": "127.0.0.1"}

    def fake_getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return real_getaddrinfo(answers[host], port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    client = create_app(make_settings(upstream_allowed_hosts=("127.0.0.0/8",))).test_client()
    with FakeUpstream(lambda r: json_reply("answered")) as up:
        assert register(client, f"http://worker.test:{up.port}/g").status_code == 200
        ask = {"input": "x", "model_name": "m"}
        assert client.post("/api/v1/chat/completions", json=ask).get_json()["result"] == "answered"
        answers["worker.test"] = "0.0.0.0"  # rebinding: now outside the allowlist
        client.application.extensions["operategpt"].upstream.close()  # no pooled connection to reuse
        refused = client.post("/api/v1/chat/completions", json=ask)
    assert refused.status_code == 502
    assert refused.get_json()["msg"] == (f"refused to call worker at http://worker.test:{up.port}: worker.test "
                                         "resolves to 0.0.0.0, outside UPSTREAM_ALLOWED_HOSTS")
    assert len(up.seen) == 1


def test_a_worker_echoing_its_credentials_does_not_leak_them(client):
    from werkzeug.wrappers import Response

    from tests.support.servers import FakeUpstream

    def echo(request):
        return Response(f"bad key: {request.headers['Authorization']} / {request.headers['X-Api-Key']}", status=401)

    with FakeUpstream(echo) as up:
        register(client, up.url("/g"), headers={"Authorization": "Bearer sk-live-123456", "X-Api-Key": "k-987654"})
        reply = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
    assert reply.status_code == 502
    msg = reply.get_json()["msg"]
    assert "sk-live-123456" not in msg and "k-987654" not in msg
    assert "bad key: Bearer **** / ****" in msg


def test_a_worker_that_is_the_manager_is_refused_at_connect_time(make_settings, monkeypatch):
    """A name that resolved elsewhere at registration but later resolves to the manager's own address and port
    is not called: the check is made on the address connected to."""
    import socket

    from tests.support.servers import FakeUpstream, json_reply

    real_getaddrinfo = socket.getaddrinfo
    answers = {"worker.test": "192.0.2.1"}

    def fake_getaddrinfo(host, port, *args, **kwargs):
        return real_getaddrinfo(answers.get(host, host), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with FakeUpstream(lambda r: json_reply("answered")) as up:  # stands in for the manager's own listener
        client = create_app(make_settings(server_host="127.0.0.1", server_port=up.port)).test_client()
        assert register(client, f"http://worker.test:{up.port}/g").status_code == 200
        assert register(client, up.url("/g")).get_json()["msg"] == (
            f"req_url_template: 127.0.0.1:{up.port} is this manager's own listening address; a worker cannot be "
            "the manager itself")
        answers["worker.test"] = "127.0.0.1"
        refused = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
    assert refused.status_code == 502
    assert refused.get_json()["msg"] == (f"refused to call worker at http://worker.test:{up.port}: worker.test port "
                                         f"{up.port} is this manager's own listening address (a worker cannot be "
                                         "the manager itself)")
    assert up.seen == []


def test_with_a_wildcard_bind_every_local_address_is_the_managers(make_settings):
    from operategpt.http.ownaddress import OwnAddresses

    own = OwnAddresses("0.0.0.0", 8007)
    assert own.reaches("127.0.0.1", 8007) and own.reaches("localhost", 8007) and own.reaches("0.0.0.0", 8007)
    assert own.is_own("::ffff:127.0.0.1", 8007) and own.is_own("::1", 8007)
    assert not own.reaches("127.0.0.1", 8008) and not own.is_own("192.0.2.1", 8007)
    assert OwnAddresses("::1", 8007).is_own("::1", 8007) and not OwnAddresses("::1", 8007).is_own("127.0.0.1", 8007)
    specific = make_settings(server_host="127.0.0.1", server_port=8007)
    client = create_app(specific).test_client()
    assert register(client, "http://127.0.0.2:8007/g").status_code == 200  # not where the manager listens
