"""Two manager instances (separate gunicorn masters, two processes each) on one registry act as one gateway.

Runs on the run's database: SQLite, or PostgreSQL when OPERATEGPT_TEST_POSTGRES_URL is set.
Measured delays are printed (pytest -s shows them).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests
from werkzeug.wrappers import Response

from tests.support.db import query
from tests.support.servers import FakeUpstream, ManagerProcess, json_reply, wait_until

INTERVAL, TIMEOUT, TTL = 0.5, 0.4, 1.5
ENV = {"HEALTH_CHECK_INTERVAL": str(INTERVAL), "HEALTH_CHECK_TIMEOUT": str(TIMEOUT), "HEALTH_LEASE_TTL": str(TTL)}


@pytest.fixture
def cluster(database_url):
    a = ManagerProcess(database_url, workers=2, env=ENV).start()
    try:
        b = ManagerProcess(database_url, workers=2, env=ENV).start()
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def register(manager, upstream, path, model="m", **fields):
    reply = requests.post(manager.url + "/api/server/register", json={
        "model_name": model, "req_url_template": upstream.url(path), "body": {"p": "{USER_PROMPT}"},
        "response_extract": "who", **fields}, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()["data"]["id"]


def ask(session, manager, model="m"):
    # The prompt carries the send time: the routing decision is made after it, the upstream sees it later.
    return session.post(manager.url + "/api/v1/chat/completions",
                        json={"input": repr(time.monotonic()), "model_name": model}, timeout=10)


def test_registration_on_a_is_routable_on_b(cluster):
    a, b = cluster
    with FakeUpstream(lambda r: json_reply({"who": "old"})) as old, \
            FakeUpstream(lambda r: json_reply({"who": "new"})) as new, requests.Session() as session:
        # A model B has never seen: routable at once.
        register(a, old, "/g", model="fresh")
        assert ask(session, b, "fresh").json()["result"] == "old"

        register(a, old, "/g")
        assert wait_until(lambda: ask(session, b).status_code == 200, timeout=5)
        new_id = register(a, new, "/g", weight=1_000_000)
        registered = time.monotonic()
        while True:
            sent = time.monotonic()  # the routing decision is made after this
            if ask(session, b).headers.get("X-OperateGPT-Worker") == str(new_id):
                break
            assert sent - registered < 1.0, "B did not route to a worker registered on A within 1 s"
        delay = sent - registered
    print(f"\nregister on A -> routed by B after {delay * 1000:.0f} ms")


def test_offline_on_a_stops_traffic_from_b(cluster):
    a, b = cluster
    served_by_gone: list[float] = []

    def gone_handler(request):
        served_by_gone.append(float(request.get_json()["p"]))  # when the client sent it
        return json_reply({"who": "gone"})

    with FakeUpstream(gone_handler) as gone, FakeUpstream(lambda r: json_reply({"who": "kept"})) as kept:
        register(a, gone, "/g", weight=10)
        register(a, kept, "/g")
        stop = threading.Event()

        def client():
            with requests.Session() as session:
                while not stop.is_set():
                    assert ask(session, b).status_code == 200

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: len(served_by_gone) > 5, timeout=5)
        assert requests.post(a.url + "/api/server/offline", json={
            "model_name": "m", "req_url_template": gone.url("/g")}, timeout=10).status_code == 200
        offline_at = time.monotonic()
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join()
    last = max(served_by_gone) - offline_at
    print(f"\noffline on A -> last request from B to reach the removed worker was sent {last * 1000:.0f} ms later")
    assert last < 1.0


def test_one_health_checker_across_instances_and_takeover_after_sigkill(cluster, database_url):
    a, b = cluster
    probes: list[float] = []

    def upstream(request):
        if request.path == "/health":
            probes.append(time.monotonic())
        return json_reply({"who": "x"})

    with FakeUpstream(upstream) as up:
        register(a, up, "/g", health_url=up.url("/health"))
        assert wait_until(lambda: len(probes) >= 2, timeout=10)
        start = time.monotonic()
        time.sleep(3.0)
        seen = len([t for t in probes if t >= start])
        assert 3.0 / INTERVAL - 2 <= seen <= 3.0 / INTERVAL + 1, seen  # four processes, one prober

        holder_pid = int(query(database_url, "select holder from leases")[0][0].split(":")[1])
        holder, survivor = (a, b) if _in_group(a, holder_pid) else (b, a)
        assert _in_group(holder, holder_pid)
        os.killpg(holder.proc.pid, signal.SIGKILL)  # the whole instance: master and workers
        holder.proc.wait()
        holder.proc = None
        killed = time.monotonic()
        assert wait_until(lambda: any(t > killed + 0.05 for t in probes), timeout=3 * TTL)
        takeover = min(t for t in probes if t > killed + 0.05) - killed
        survivor_pids = _group_pids(survivor)
        new_holder = int(query(database_url, "select holder from leases")[0][0].split(":")[1])
    print(f"\nlease holder instance SIGKILLed -> probing resumed after {takeover * 1000:.0f} ms (TTL {TTL} s)")
    assert takeover <= 2 * TTL
    assert new_holder in survivor_pids


def _group_pids(manager) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == manager.proc.pid:
                    pids.add(int(entry))
            except ProcessLookupError:
                pass
    return pids


def _in_group(manager, pid: int) -> bool:
    return pid in _group_pids(manager)


def test_passive_cooldown_seen_on_a_is_honoured_by_b(database_url):
    env = {**ENV, "PASSIVE_FAILURE_THRESHOLD": "2", "COOLDOWN_SECONDS": "60", "MAX_RETRIES": "0",
           "HEALTH_CHECKS": "false"}
    with FakeUpstream(lambda r: Response("overloaded", status=503)) as sick, \
            FakeUpstream(lambda r: json_reply({"who": "good"})) as good, \
            ManagerProcess(database_url, workers=1, env=env) as a, \
            ManagerProcess(database_url, workers=1, env=env) as b, requests.Session() as session:
        sick_id = register(a, sick, "/g", weight=1_000_000)
        register(a, good, "/g")
        assert ask(session, b).status_code in (200, 502)  # B has loaded the model
        while len(sick.seen) < 2:
            ask(session, a)
        cooled = time.monotonic()
        assert query(database_url, "select cooldown_until is not null from workers where id = :id", id=sick_id) == [
            (True,)]
        hits = len(sick.seen)
        time.sleep(1.1)
        replies = [ask(session, b) for _ in range(30)]
        assert [r.status_code for r in replies] == [200] * 30
        assert len(sick.seen) == hits
    print(f"\ncooldown started on A -> honoured by B ({time.monotonic() - cooled:.1f} s window checked)")


def test_concurrent_registration_of_the_same_workers_on_both_instances(cluster, database_url):
    a, b = cluster
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def client(n):
        manager = a if n % 2 else b
        barrier.wait()
        with requests.Session() as session:
            for i in range(100):
                reply = session.post(manager.url + "/api/server/register", json={
                    "model_name": f"m{i % 7}", "req_url_template": f"http://127.0.0.1:9/w{i}",
                    "body": {"p": "{USER_PROMPT}"}, "weight": n + 1}, timeout=30)
                if reply.status_code != 200:
                    errors.append(reply.text)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert query(database_url, "select count(*) from workers") == [(100,)]
    assert query(database_url, "select count(distinct req_url_template) from workers") == [(100,)]
