"""Acknowledged means in effect: once register or offline answers, no process of the manager routes on the state
before it (the host's generation), and on PostgreSQL other instances hear of it as it commits (NOTIFY).

REGISTRY_SYNC_INTERVAL is 30 s throughout, so polling cannot be what makes these pass.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy.engine import make_url

from tests.support.servers import FakeUpstream, ManagerProcess, json_reply

SLOW_SYNC = {"REGISTRY_SYNC_INTERVAL": "30"}


def worker(model: str, url: str) -> dict:
    return {"model_name": model, "req_url_template": url, "body": {"p": "{USER_PROMPT}"}, "response_extract": "who"}


def admin(manager: ManagerProcess, path: str, body: dict) -> None:
    reply = requests.post(manager.url + path, json=body, timeout=10)
    assert reply.status_code == 200, reply.text


def served_by(manager: ManagerProcess, count: int, model: str = "m") -> list[str]:
    """`count` completions at once, each on a new connection (so gunicorn spreads them over its processes)."""
    def one(_: int) -> str:
        reply = requests.post(manager.url + "/api/v1/chat/completions", json={"input": "x", "model_name": model},
                              headers={"Connection": "close"}, timeout=10)
        return reply.json()["result"] if reply.status_code == 200 else f"HTTP {reply.status_code}"

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_offline_and_register_are_in_effect_in_every_process_when_acknowledged(database_url):
    answer = lambda name: lambda request: json_reply({"who": name})  # noqa: E731
    with FakeUpstream(answer("a")) as a, FakeUpstream(answer("b")) as b, FakeUpstream(answer("c")) as c, \
            ManagerProcess(database_url, workers=4, env=SLOW_SYNC) as manager:
        for up in (a, b):
            admin(manager, "/api/server/register", worker("m", up.url("/g")))
        for _ in range(5):
            # Rounds of two workers: every process has its table, and it holds both.
            assert set(served_by(manager, 20)) <= {"a", "b"}
        admin(manager, "/api/server/offline", {"model_name": "m", "req_url_template": a.url("/g")})
        rounds = [served_by(manager, 20) for _ in range(5)]
        assert [r.count("a") for r in rounds] == [0] * 5, rounds
        assert all(set(r) == {"b"} for r in rounds), rounds

        admin(manager, "/api/server/register", worker("m", c.url("/g")))
        a.stop()
        b.stop()
        # Every process fails over to the worker registered after it built its table.
        for _ in range(3):
            assert set(served_by(manager, 20)) == {"c"}


def other_spelling(url: str) -> str:
    """The same database under another host name: a second instance that shares no generation file with the first
    (as one on another host would not), so only the database can tell it of changes."""
    parsed = make_url(url)
    return parsed.set(host="localhost" if parsed.host == "127.0.0.1" else "127.0.0.1").render_as_string(
        hide_password=False)


def test_another_instance_routes_on_a_change_as_it_commits(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite instances share one host and its generation")
    answer = lambda name: lambda request: json_reply({"who": name})  # noqa: E731
    with FakeUpstream(answer("a")) as a, FakeUpstream(answer("b")) as b, \
            ManagerProcess(database_url, workers=2, env=SLOW_SYNC) as first, \
            ManagerProcess(other_spelling(database_url), workers=2, env=SLOW_SYNC) as second:
        admin(first, "/api/server/register", worker("m", a.url("/g")))
        assert set(served_by(second, 8)) == {"a"}  # both of its processes hold the model now
        delays = []
        for upstream, expected in ((b, {"a", "b"}), (a, {"b"})):
            if expected == {"a", "b"}:
                admin(first, "/api/server/register", {**worker("m", upstream.url("/g")), "weight": 1000})
            else:
                admin(first, "/api/server/offline", {"model_name": "m", "req_url_template": upstream.url("/g")})
            acknowledged = time.monotonic()
            while "b" not in served_by(second, 4) or ("a" not in expected and "a" in served_by(second, 8)):
                assert time.monotonic() - acknowledged < 5, "the other instance did not hear of the change"
            delays.append(time.monotonic() - acknowledged)
        assert max(delays) < 5
