"""The manager calling itself, through a live gunicorn manager: refused at registration, refused as a loop
(508) when a same-host proxy leads back to it, and never taken for a loopback admin. IPv6 binds."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests

from tests.support.servers import ManagerProcess, TcpRelay

REG, LIST, CHAT = "/api/server/register", "/api/server/workers", "/api/v1/chat/completions"


def worker(url, model="m", **fields):
    return {"model_name": model, "req_url_template": url, "body": {"p": "{USER_PROMPT}"}, **fields}


@pytest.fixture
def manager(database_url):
    with ManagerProcess(database_url, workers=1, env={"HEALTH_CHECKS": "false"}) as running:
        yield running


def test_a_worker_url_that_is_the_manager_is_refused_at_registration(manager):
    for path in (REG, LIST, CHAT):
        for host in ("127.0.0.1", "localhost", "0.0.0.0"):
            url = f"http://{host}:{manager.port}{path}"
            reply = requests.post(manager.url + REG, json=worker(url), timeout=10)
            assert reply.status_code == 400, (url, reply.text)
            message = reply.json()["msg"]
            assert message.startswith("req_url_template: ") and "own listening address" in message
    health = requests.post(manager.url + REG, timeout=10, json=worker(
        "http://127.0.0.1:9/g", health_url=f"http://127.0.0.1:{manager.port}{LIST}"))
    assert health.status_code == 400 and health.json()["msg"].startswith("health_url: ")
    assert requests.get(manager.url + LIST, timeout=10).json()["data"] == []


def test_self_registration_through_a_same_host_proxy_is_a_loop_not_an_admin(manager):
    with TcpRelay(manager.port) as proxy:
        # Registering through the proxy's port is allowed (it is not the manager's address) ...
        sneaky = worker(proxy.url(REG), model="sneaky")
        sneaky["body"] = {"model_name": "evil", "req_url_template": "http://203.0.113.9/x",
                          "body": {"p": "{USER_PROMPT}"}}
        assert requests.post(manager.url + REG, json=sneaky, timeout=10).status_code == 200
        # ... but an anonymous completion client cannot make the manager register a worker through it.
        reply = requests.post(manager.url + CHAT, json={"input": "x", "model_name": "sneaky"}, timeout=10)
        assert reply.status_code == 502
        assert "HTTP 508" in reply.json()["msg"] and "loop detected" in reply.json()["msg"]
        names = {w["model_name"] for w in requests.get(manager.url + LIST, timeout=10).json()["data"]}
        assert names == {"sneaky"}


def test_the_admin_listing_through_a_get_worker_is_refused(manager):
    with TcpRelay(manager.port) as proxy:
        lister = {"model_name": "lister", "req_url_template": proxy.url(LIST), "req_type": "GET",
                  "headers": {"X-Note": "{USER_PROMPT}"}}
        assert requests.post(manager.url + REG, json=lister, timeout=10).status_code == 200
        reply = requests.post(manager.url + CHAT, json={"input": "x", "model_name": "lister"}, timeout=10)
    assert reply.status_code == 502
    assert "HTTP 508" in reply.json()["msg"]
    assert proxy.url(LIST) not in reply.text and "req_url_template" not in reply.text


def test_a_request_carrying_the_managers_own_via_is_508_json(manager):
    with TcpRelay(manager.port) as proxy:
        echo = worker(proxy.url(CHAT), model="loop")
        echo["body"] = {"input": "{USER_PROMPT}", "model_name": "loop"}
        assert requests.post(manager.url + REG, json=echo, timeout=10).status_code == 200
        started = time.perf_counter()
        reply = requests.post(manager.url + CHAT, json={"input": "x", "model_name": "loop"}, timeout=10)
        elapsed = time.perf_counter() - started
    assert reply.status_code == 502 and "HTTP 508" in reply.json()["msg"]
    assert elapsed < 2


def test_a_self_loop_cannot_take_every_thread(database_url, capsys):
    env = {"GUNICORN_THREADS": "16", "HEALTH_CHECKS": "false", "MAX_RETRIES": "0", "PASSIVE_FAILURE_THRESHOLD": "1000"}
    with ManagerProcess(database_url, workers=1, env=env) as manager, TcpRelay(manager.port) as proxy:
        loop = worker(proxy.url(CHAT), model="loop")
        loop["body"] = {"input": "{USER_PROMPT}", "model_name": "loop"}
        assert requests.post(manager.url + REG, json=loop, timeout=10).status_code == 200

        def looping(_):
            started = time.perf_counter()
            reply = requests.post(manager.url + CHAT, json={"input": "x", "model_name": "loop"}, timeout=30)
            return reply.status_code, reply.json()["msg"], time.perf_counter() - started

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            pending = [pool.submit(looping, i) for i in range(64)]
            health = []
            while not all(f.done() for f in pending):
                started = time.perf_counter()
                assert requests.get(manager.url + "/health", timeout=5).status_code == 200
                health.append((time.perf_counter() - started) * 1000)
            results = [f.result() for f in pending]
        # The inner call is refused as a loop at once; the client's request ends with that, not after a timeout.
        assert all(status == 502 and "HTTP 508" in msg for status, msg, _ in results), results[:3]
        with capsys.disabled():
            print(f"\n/health during the loop: {len(health)} probes, max {max(health):.1f} ms; looping requests "
                  f"max {max(r[2] for r in results) * 1000:.0f} ms")
        assert max(health) < 100
        assert max(r[2] for r in results) < 1.0
        direct = requests.post(manager.url + CHAT, json={"input": "x", "model_name": "loop"}, timeout=5,
                               headers={"Via": "1.1 elsewhere, " + _own_via(manager)})
        assert direct.status_code == 508 and direct.headers["Content-Type"].startswith("application/json")
        assert direct.json()["success"] is False and "loop detected" in direct.json()["msg"]


def _own_via(manager) -> str:
    from operategpt.http.ownaddress import via_mark
    from operategpt.settings import Settings

    settings = Settings.from_env({"DATABASE_URL": manager.database_url, "LLM_MANAGE_SERVER_HOST": "127.0.0.1",
                                  "LLM_MANAGE_SERVER_PORT": str(manager.port)})
    return via_mark(settings.instance_id)


@pytest.mark.parametrize("host", ["::1", "::"])
def test_ipv6_binds_serve_and_ipv4_mapped_loopback_is_admin(database_url, host):
    manager = ManagerProcess(database_url, workers=1, env={"LLM_MANAGE_SERVER_HOST": host, "HEALTH_CHECKS": "false"})
    manager.url = f"http://[::1]:{manager.port}"
    with manager:
        assert requests.get(manager.url + "/health", timeout=5).status_code == 200
        assert requests.get(manager.url + LIST, timeout=5).status_code == 200
        if host == "::":
            # Dual-stack: an IPv4 client on 127.0.0.1 arrives as ::ffff:127.0.0.1, and is loopback.
            v4 = f"http://127.0.0.1:{manager.port}"
            assert requests.get(v4 + "/health", timeout=5).status_code == 200
            assert requests.get(v4 + LIST, timeout=5).status_code == 200
            # Every local address is the manager's own with a wildcard bind.
            refused = requests.post(v4 + REG, json=worker(f"http://[::1]:{manager.port}/x"), timeout=5)
            assert refused.status_code == 400 and "own listening address" in refused.json()["msg"]
