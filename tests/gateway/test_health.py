"""Active probes, the checker lease, passive failures and cooldowns, with real servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update
from werkzeug.wrappers import Response

from operategpt.gateway.health import LEASE_NAME, HealthMonitor
from operategpt.gateway.registry import Registry
from operategpt.gateway.registry import store as registry
from operategpt.gateway.registry.models import Lease, Worker, utcnow
from operategpt.web.app import create_app
from tests.support.servers import FakeUpstream, json_reply, wait_until


def register(client, url, **fields):
    reply = client.post("/api/server/register", json={
        "model_name": "m", "req_url_template": url, "body": {"p": "{USER_PROMPT}"}, **fields})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["data"]["id"]


def worker(client, worker_id):
    return next(w for w in client.get("/api/server/workers").get_json()["data"] if w["id"] == worker_id)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gateway(app):
    return app.extensions["operategpt"]


def test_round_marks_healthy_and_unhealthy_after_threshold(make_settings):
    app = create_app(make_settings(health_unhealthy_threshold=2))
    client, health = app.test_client(), app.extensions["operategpt"].health
    with FakeUpstream(lambda r: Response("ok")) as up, FakeUpstream(lambda r: Response("no", status=503)) as sick:
        up_id = register(client, up.url("/g"))
        checked_id = register(client, up.url("/g2"), health_url=up.url("/health"))
        sick_id = register(client, sick.url("/g"), health_url=sick.url("/health"))
        dead_id = register(client, f"http://127.0.0.1:{closed_port()}/g")

        health.run_round()
        assert worker(client, up_id)["status"] == "healthy"
        assert worker(client, checked_id)["status"] == "healthy"
        assert worker(client, checked_id)["last_latency_ms"] > 0
        assert up.seen[-1].path == "/health"
        first = worker(client, sick_id)
        assert (first["status"], first["consecutive_failures"]) == ("unknown", 1)
        assert first["last_error"] == "health URL answered HTTP 503"
        assert first["last_checked_at"] is not None

        report = health.run_round()
        assert worker(client, sick_id)["status"] == "unhealthy"
        dead = worker(client, dead_id)
        assert (dead["status"], dead["consecutive_failures"], dead["last_error"]) == (
            "unhealthy", 2, "connection refused")
        assert (report.probed, report.healthy, report.unhealthy) == (4, 2, 2)


def test_one_success_makes_an_unhealthy_worker_healthy(make_settings):
    app = create_app(make_settings(health_unhealthy_threshold=1))
    client, health = app.test_client(), app.extensions["operategpt"].health
    up = FakeUpstream(lambda r: Response("ok"))
    worker_id = register(client, up.url("/g"))
    health.run_round()
    assert worker(client, worker_id)["status"] == "unhealthy"
    reply = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
    assert reply.status_code == 503
    assert "1 unhealthy" in reply.get_json()["msg"]
    with up:
        health.run_round()
        assert worker(client, worker_id)["status"] == "healthy"
        assert client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"}).status_code == 200


def test_workers_sharing_a_probe_target_are_probed_once_per_round(make_settings):
    app = create_app(make_settings())
    client, health = app.test_client(), app.extensions["operategpt"].health
    listener = socket.create_server(("127.0.0.1", 0))
    connections = []

    def accept():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connections.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        with FakeUpstream(lambda r: Response("ok")) as up:
            for path in ("/a", "/b?x=1", "/c"):
                register(client, f"http://127.0.0.1:{port}{path}")  # no health URL: a TCP probe of the port
                register(client, up.url(path), health_url=up.url("/health"))
            report = health.run_round()
            assert (report.probed, report.healthy) == (6, 6)
            assert [seen.path for seen in up.seen] == ["/health"]
            assert wait_until(lambda: connections, timeout=5)
            time.sleep(0.2)
            assert len(connections) == 1
    finally:
        listener.close()
        for connection in connections:
            connection.close()


def test_workers_sharing_a_target_keep_their_own_failure_counts(make_settings):
    app = create_app(make_settings(health_unhealthy_threshold=2))
    client, gateway = app.test_client(), app.extensions["operategpt"]
    port = closed_port()
    ids = [register(client, f"http://127.0.0.1:{port}/w{i}") for i in range(3)]
    with gateway.db.write() as session:  # one of them failed once already
        session.execute(update(Worker).where(Worker.id == ids[0]).values(consecutive_failures=1))
    report = gateway.health.run_round()
    seen = {i: worker(client, i) for i in ids}
    assert [(seen[i]["status"], seen[i]["consecutive_failures"]) for i in ids] == [
        ("unhealthy", 2), ("unknown", 1), ("unknown", 1)]
    assert {seen[i]["last_error"] for i in ids} == {"connection refused"}
    assert (report.changed, report.unhealthy) == (1, 1)


def test_probe_results_for_thousands_of_workers_are_all_written(gateway):
    now = utcnow()
    with gateway.db.write() as session:
        session.execute(insert(Worker), [
            {"model_name": f"m{i % 7}", "req_url_template": f"http://127.0.0.1:9/w{i}", "owner": "", "req_type": "POST",
             "api_format": "template", "model_type": "chat", "weight": 1, "priority": 0, "response_extract": "",
             "created_at": now, "updated_at": now, "status": "unknown", "consecutive_failures": 0,
             "passive_failures": 0} for i in range(2500)])
        ids = [row.id for row in registry.probe_rows(session)]
    # Most share their values, as workers behind one target do; every 100th differs.
    updates = [{"worker_id": worker_id, "status": "healthy", "consecutive_failures": 0, "last_latency_ms": 1.5,
                "last_error": None, "last_checked_at": now} for worker_id in ids]
    for values in updates[::100]:
        values.update(status="unhealthy", consecutive_failures=3, last_error="timed out")
    with gateway.db.write() as session:
        registry.save_probe_results(session, updates)
    with gateway.db.read() as session:
        stored = {row.id: (row.status, row.consecutive_failures, row.last_error, row.last_latency_ms)
                  for row in session.scalars(select(Worker))}
    assert stored == {values["worker_id"]: (values["status"], values["consecutive_failures"], values["last_error"],
                                            values["last_latency_ms"]) for values in updates}


def test_round_over_a_thousand_workers_half_black_holes_is_bounded(make_settings, gateway):
    timeout = 2.0
    silent = socket.create_server(("127.0.0.1", 0), backlog=2048)  # accepts, never answers
    full = socket.create_server(("127.0.0.1", 0), backlog=0)  # backlog full: SYNs are dropped
    fillers = [socket.socket() for _ in range(4)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(full.getsockname())
    try:
        with FakeUpstream(lambda r: Response("ok")) as up:
            now = utcnow()
            rows = []
            for i in range(1000):
                if i % 4 == 0:
                    url, health_url = f"http://127.0.0.1:{silent.getsockname()[1]}/w{i}", \
                        f"http://127.0.0.1:{silent.getsockname()[1]}/health"
                elif i % 4 == 1:
                    url, health_url = f"http://127.0.0.1:{full.getsockname()[1]}/w{i}", None
                else:
                    url, health_url = up.url(f"/w{i}"), (up.url("/health") if i % 2 else None)
                rows.append({"model_name": f"m{i % 10}", "req_url_template": url, "health_url": health_url,
                             "owner": "", "req_type": "POST", "body": {"p": "{USER_PROMPT}"}, "headers": {},
                             "response_extract": "", "api_format": "template", "model_type": "chat", "weight": 1,
                             "priority": 0, "created_at": now, "updated_at": now, "status": "unknown",
                             "consecutive_failures": 0, "passive_failures": 0})
            with gateway.db.write() as session:
                session.execute(insert(Worker), rows)
            app = create_app(make_settings(health_check_timeout=timeout, health_unhealthy_threshold=1))
            report = app.extensions["operategpt"].health.run_round()
    finally:
        for sock in (silent, full, *fillers):
            sock.close()
    assert report.probed == 1000
    assert (report.healthy, report.unhealthy) == (500, 500)
    # Probes run at once, each bounded: one after another, the 500 black holes would take 500 s.
    # (The speed figure itself, about 1.05 x timeout, is measured by bench/health_round.py.)
    assert report.seconds < 5 * timeout, report.seconds


def test_only_one_monitor_holds_the_lease_and_another_takes_over(make_settings, gateway):
    settings = make_settings(health_check_interval=0.2, health_check_timeout=0.1, health_lease_ttl=0.5)
    first = HealthMonitor(settings, Registry(gateway.db), gateway.table)
    second = HealthMonitor(settings, Registry(gateway.db), gateway.table)
    assert first.hold_lease() is True
    assert second.hold_lease() is False
    assert first.hold_lease() is True  # renew
    time.sleep(0.6)
    assert second.hold_lease() is True  # the first stopped renewing: expired, taken over
    assert first.hold_lease() is False


def test_stopping_a_checker_hands_the_lease_back(make_settings, gateway):
    settings = make_settings(health_check_interval=0.2, health_check_timeout=0.1, health_lease_ttl=5)
    monitor = HealthMonitor(settings, Registry(gateway.db), gateway.table)
    monitor.start()
    try:
        assert wait_until(lambda: _lease_holder(gateway) == monitor.holder, timeout=5)
    finally:
        monitor.stop()
    assert _lease_holder(gateway) is None


def _lease_holder(gateway):
    with gateway.db.read() as session:
        lease = session.get(Lease, LEASE_NAME)
        return lease.holder if lease else None


def test_lease_is_atomic_under_contention(gateway):
    import threading

    winners = []
    barrier = threading.Barrier(8)

    def contend(i):
        barrier.wait()
        with gateway.db.write() as session:
            if registry.take_lease(session, "x", f"h{i}", utcnow(), timedelta(seconds=30)):
                winners.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_passive_failures_cool_a_worker_down_then_readmit_it(make_settings):
    app = create_app(make_settings(passive_failure_threshold=2, cooldown_seconds=1.0, max_retries=0))
    client = app.test_client()
    failing = {"on": True}

    def flaky(request):
        return Response("overloaded", status=500) if failing["on"] else json_reply("fine")

    with FakeUpstream(flaky) as up:
        worker_id = register(client, up.url("/g"))
        assert client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"}).status_code == 502
        counted = worker(client, worker_id)
        assert (counted["passive_failures"], counted["cooldown_until"]) == (1, None)
        assert "HTTP 500" in counted["last_error"]
        assert client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"}).status_code == 502
        cooled = worker(client, worker_id)
        assert cooled["cooldown_until"] is not None
        assert cooled["passive_failures"] == 0  # the count starts again after a cooldown
        blocked = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
        assert blocked.status_code == 503
        assert "1 cooling down" in blocked.get_json()["msg"]
        assert 1 <= int(blocked.headers["Retry-After"]) <= 1
        assert len(up.seen) == 2  # no traffic while cooling down
        failing["on"] = False
        time.sleep(1.1)
        again = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
        assert again.status_code == 200, again.get_json()


def test_cooldown_is_seen_by_another_process(make_settings):
    """Two apps on one database stand for two processes: a cooldown started by one routes the other."""
    settings = make_settings(passive_failure_threshold=1, cooldown_seconds=30, max_retries=0,
                             registry_sync_interval=0.2)
    a, b = create_app(settings).test_client(), create_app(settings).test_client()
    with FakeUpstream(lambda r: Response("busy", status=429)) as sick, \
            FakeUpstream(lambda r: json_reply("fine")) as good:
        register(a, sick.url("/g"), weight=1000)
        register(a, good.url("/g"), weight=1)
        # b learns both workers before the cooldown exists.
        assert b.get("/api/server/workers").status_code == 200
        b.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
        while not sick.seen:
            a.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
        time.sleep(0.3)
        hits = len(sick.seen)
        replies = [b.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"}) for _ in range(20)]
    assert {reply.status_code for reply in replies} == {200}
    assert len(sick.seen) == hits


def test_failover_never_tries_a_worker_twice_and_reports_the_last_failure(make_settings):
    app = create_app(make_settings(max_retries=5))
    client = app.test_client()
    with FakeUpstream(lambda r: Response("down", status=503)) as one, \
            FakeUpstream(lambda r: Response("down", status=502)) as two:
        register(client, one.url("/g"))
        register(client, two.url("/g"))
        reply = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
    assert reply.status_code == 502
    assert (len(one.seen), len(two.seen)) == (1, 1)
    assert reply.headers["X-OperateGPT-Worker"].isdigit()


def test_failover_stops_at_the_request_deadline(make_settings):
    app = create_app(make_settings(max_retries=5, request_deadline=0.5))
    client = app.test_client()

    def slow(request):
        time.sleep(2)
        return json_reply("late")

    with FakeUpstream(slow) as one, FakeUpstream(slow) as two:
        register(client, one.url("/g"))
        register(client, two.url("/g"))
        started = time.monotonic()
        reply = client.post("/api/v1/chat/completions", json={"input": "x", "model_name": "m"})
        elapsed = time.monotonic() - started
    assert reply.status_code == 504
    assert elapsed < 1.0
