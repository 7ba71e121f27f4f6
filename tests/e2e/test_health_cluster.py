"""Health checking across real gunicorn processes: one prober, takeover, and routing on what it sees."""

from __future__ import annotations

import os
import signal
import threading
import time

import requests

from tests.support.db import query
from tests.support.servers import FakeUpstream, ManagerProcess, json_reply, wait_until

INTERVAL, TIMEOUT, TTL, THRESHOLD = 0.5, 0.4, 1.5, 2
HEALTH_ENV = {
    "HEALTH_CHECK_INTERVAL": str(INTERVAL),
    "HEALTH_CHECK_TIMEOUT": str(TIMEOUT),
    "HEALTH_LEASE_TTL": str(TTL),
    "HEALTH_UNHEALTHY_THRESHOLD": str(THRESHOLD),
    "REGISTRY_SYNC_INTERVAL": "0.5",
}


def lease_holder_pid(database_url: str) -> int | None:
    rows = query(database_url, "select holder from leases where name = 'health-checker'")
    return int(rows[0][0].split(":")[1]) if rows else None


def test_exactly_one_process_probes_and_another_takes_over(database_url):
    url = database_url
    probes: list[float] = []

    def upstream(request):
        if request.path == "/health":
            probes.append(time.monotonic())
        return json_reply("ok")

    with FakeUpstream(upstream) as up, ManagerProcess(url, workers=3, env=HEALTH_ENV) as manager:
        assert requests.post(manager.url + "/api/server/register", json={
            "model_name": "m", "req_url_template": up.url("/g"), "body": {"p": "{USER_PROMPT}"},
            "health_url": up.url("/health")}, timeout=10).status_code == 200
        assert wait_until(lambda: len(probes) >= 2, timeout=10)
        window_start = time.monotonic()
        time.sleep(4.0)
        in_window = [t for t in probes if t >= window_start]
        # One prober: one probe per interval (a second or third prober would double or triple it).
        assert 4.0 / INTERVAL - 2 <= len(in_window) <= 4.0 / INTERVAL + 1, len(in_window)

        holder = lease_holder_pid(url)
        assert holder is not None and holder != manager.proc.pid
        os.kill(holder, signal.SIGKILL)
        killed_at = time.monotonic()
        assert wait_until(lambda: any(t > killed_at + 0.05 for t in probes), timeout=3 * TTL)
        takeover = min(t for t in probes if t > killed_at + 0.05) - killed_at
        assert takeover <= 2 * TTL, takeover
        assert wait_until(lambda: lease_holder_pid(url) not in (None, holder), timeout=2 * TTL)


def test_killed_worker_turns_unhealthy_gets_no_traffic_and_comes_back(database_url):
    url = database_url
    env = {**HEALTH_ENV, "PASSIVE_FAILURE_THRESHOLD": "1000"}  # let the active checker do the work here
    with FakeUpstream(lambda r: json_reply("a")) as a, ManagerProcess(url, workers=2, env=env) as manager:
        b = FakeUpstream(lambda r: json_reply("b")).start()
        for up in (a, b):
            assert requests.post(manager.url + "/api/server/register", json={
                "model_name": "m", "req_url_template": up.url("/g"), "body": {"p": "{USER_PROMPT}"}},
                timeout=10).status_code == 200

        def statuses():
            data = requests.get(manager.url + "/api/server/workers", timeout=5).json()["data"]
            return {w["req_url_template"]: w["status"] for w in data}

        assert wait_until(lambda: set(statuses().values()) == {"healthy"}, timeout=10)
        b.stop()
        stopped_at = time.monotonic()
        assert wait_until(lambda: statuses()[b.url("/g")] == "unhealthy", timeout=10)
        assert time.monotonic() - stopped_at <= INTERVAL * THRESHOLD + INTERVAL + TIMEOUT + 1.0
        time.sleep(0.6)  # every process has re-read the registry
        results = [requests.post(manager.url + "/api/v1/chat/completions", json={"input": "x", "model_name": "m"},
                                 timeout=10) for _ in range(40)]
        assert [r.status_code for r in results] == [200] * 40
        assert {r.json()["result"] for r in results} == {"a"}

        b.start()
        assert wait_until(lambda: statuses()[b.url("/g")] == "healthy", timeout=10)
        time.sleep(0.6)
        served = [requests.post(manager.url + "/api/v1/chat/completions", json={"input": "x", "model_name": "m"},
                                timeout=10).json()["result"] for _ in range(200)]
        b.stop()
    assert 60 <= served.count("b") <= 140, served.count("b")


def test_many_gunicorn_processes_do_not_lock_each_other_out(database_url):
    """Rounds, registrations and lease renewals all write: nobody sees 'database is locked'."""
    url = database_url
    errors = []
    with FakeUpstream(lambda r: json_reply("ok")) as up, ManagerProcess(url, workers=4, env=HEALTH_ENV) as manager:
        def hammer(n):
            with requests.Session() as session:
                for i in range(50):
                    reply = session.post(manager.url + "/api/server/register", json={
                        "model_name": f"m{n}", "req_url_template": up.url(f"/{n}/{i}"),
                        "body": {"p": "{USER_PROMPT}"}}, timeout=30)
                    if reply.status_code != 200:
                        errors.append(reply.text)

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        listed = requests.get(manager.url + "/api/server/workers", timeout=10).json()["data"]
    assert errors == []
    assert len(listed) == 400
