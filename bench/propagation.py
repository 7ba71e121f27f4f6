"""How soon a registry change is in effect: on this host across processes, and across instances on PostgreSQL.

    .venv/bin/python bench/propagation.py [--changes 50] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

1. The cost on the hot path: a routing lookup of a known model with the host's generation compared (the shared
   counter read) against the same lookup without it.
2. Propagation: instance A (gunicorn, 2 processes) takes `--changes` alternating changes — register a second worker
   of a model, take it offline — while a poller asks instance B (2 processes, another spelling of the database URL,
   so the two share no generation file, as two hosts would not) which worker serves the model. The delay is from
   A's acknowledgment to the first of B's replies that shows the change. REGISTRY_SYNC_INTERVAL is 30 s, so only
   LISTEN/NOTIFY can make it short.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import timeit
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from operategpt.gateway.registry.db import upgrade
from operategpt.gateway.registry.generation import Generation
from operategpt.settings import Settings
from operategpt.web.app import create_app
from tests.support.servers import FakeUpstream, ManagerProcess, json_reply


def hot_path_cost() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream(lambda r: json_reply({"who": "a"})) as up:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        app = create_app(Settings.from_env({"DATABASE_URL": url, "HEALTH_CHECKS": "false",
                                            "REGISTRY_SYNC_INTERVAL": "3600"}))
        client = app.test_client()
        assert client.post("/api/server/register", json={
            "model_name": "m", "req_url_template": up.url("/g"), "body": {"p": "{USER_PROMPT}"},
            "response_extract": "who"}).status_code == 200
        table = app.extensions["operategpt"].table
        table.routes("m")
        shared = table._generation  # the counter as the table reads it (a file-backed one here)
        n = 1_000_000
        counter = min(timeit.repeat(shared.current, number=n, repeat=5)) / n * 1e9
        with_generation = min(timeit.repeat(lambda: table.routes("m"), number=n, repeat=5)) / n * 1e9
        table._generation = Generation(None)  # a process-local counter that never moves: the lookup as before
        table.routes("m")
        without = min(timeit.repeat(lambda: table.routes("m"), number=n, repeat=5)) / n * 1e9
        print(f"generation read: {counter:.0f} ns; lookup of a known model: {with_generation:.0f} ns with the "
              f"generation compared, {without:.0f} ns with a local counter "
              f"(difference {with_generation - without:.0f} ns)")


def other_spelling(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(host="localhost" if parsed.host == "127.0.0.1" else "127.0.0.1").render_as_string(
        hide_password=False)


def watch(served, session, adding: bool, acknowledged: float, seen: list[float], index: int) -> None:
    """Ask until this session's process shows the change; when it first did goes in seen[index]."""
    while (served(session) == "b") != adding:
        if time.perf_counter() - acknowledged > 10:
            return
    seen[index] = time.perf_counter()


def propagation(admin_url: str, changes: int) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"operategpt_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        env = {"REGISTRY_SYNC_INTERVAL": "30"}
        body = {"body": {"p": "{USER_PROMPT}"}, "response_extract": "who"}
        with FakeUpstream(lambda r: json_reply({"who": "a"})) as a, \
                FakeUpstream(lambda r: json_reply({"who": "b"})) as b, \
                ManagerProcess(url, workers=2, env=env) as first, \
                ManagerProcess(other_spelling(url), workers=2, env=env) as second:
            def post(manager, path, payload):
                reply = requests.post(manager.url + path, json=payload, timeout=10)
                assert reply.status_code == 200, reply.text

            def served(session) -> str:
                return session.post(second.url + "/api/v1/chat/completions",
                                    json={"input": "x", "model_name": "m"}, timeout=10).json()["result"]

            post(first, "/api/server/register", {"model_name": "m", "req_url_template": a.url("/g"), **body})
            delays = []
            # Keep-alive pins each session to one of B's processes: every one must see the change.
            sessions = [requests.Session() for _ in range(2)]
            for session in sessions:
                served(session)
            started = time.perf_counter()
            for _ in range(50):
                served(sessions[0])
            print(f"one completion through instance B: {(time.perf_counter() - started) * 1000 / 50:.1f} ms")
            for i in range(changes):
                adding = i % 2 == 0
                if adding:
                    post(first, "/api/server/register",
                         {"model_name": "m", "req_url_template": b.url("/g"), "weight": 1_000_000, **body})
                else:
                    post(first, "/api/server/offline", {"model_name": "m", "req_url_template": b.url("/g")})
                acknowledged = time.perf_counter()
                seen = [0.0] * len(sessions)
                watchers = [threading.Thread(target=watch, args=(served, session, adding, acknowledged, seen, index))
                            for index, session in enumerate(sessions)]
                for watcher in watchers:
                    watcher.start()
                for watcher in watchers:
                    watcher.join()
                if not all(seen):
                    raise SystemExit("instance B did not see the change in 10 s")
                delays.append((max(seen) - acknowledged) * 1000)
            delays.sort()
            p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
            print(f"propagation over {changes} changes: median {statistics.median(delays):.1f} ms, "
                  f"p99 {p99:.1f} ms, max {delays[-1]:.1f} ms")
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    hot_path_cost()
    propagation(args.postgres, args.changes)


if __name__ == "__main__":
    main()
