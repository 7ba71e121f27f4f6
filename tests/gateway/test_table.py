"""The routing table: a reload of the registry never holds up requests for models it knows, a model it does not
know is read at once, and rows read on their own are not overwritten by an older reload.

Two apps on one database stand for two processes.
"""

from __future__ import annotations

import threading
import time

import pytest

from operategpt.gateway.registry import store as registry
from operategpt.web.app import create_app
from tests.support.servers import FakeUpstream, json_reply, wait_until


def register(client, url, model="m", **fields):
    reply = client.post("/api/server/register", json={
        "model_name": model, "req_url_template": url, "body": {"p": "{USER_PROMPT}"}, "response_extract": "who",
        **fields})
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["data"]["id"]


def complete(client, model="m"):
    return client.post("/api/v1/chat/completions", json={"input": "x", "model_name": model})


@pytest.fixture
def upstream():
    with FakeUpstream(lambda request: json_reply({"who": request.path})) as server:
        yield server


class HeldReload:
    """A reload of the whole registry, held after it read the registry version until `release()`."""

    def __init__(self, monkeypatch):
        self.entered, self.released = threading.Event(), threading.Event()
        self.thread: threading.Thread | None = None
        read = registry.route_rows

        def route_rows(session, models=None):
            if models is None and threading.current_thread() is self.thread:
                self.entered.set()
                assert self.released.wait(10)
            return read(session, models)

        monkeypatch.setattr(registry, "route_rows", route_rows)

    def start(self, routing) -> None:
        self.thread = threading.Thread(target=routing.sync, daemon=True)
        self.thread.start()
        assert self.entered.wait(5)

    def release(self) -> None:
        self.released.set()
        assert self.thread is not None
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def held_reload(monkeypatch):
    held = HeldReload(monkeypatch)
    yield held
    held.released.set()


def test_a_reload_in_progress_does_not_hold_up_a_known_model(make_settings, upstream, held_reload):
    settings = make_settings(registry_sync_interval=30)
    a, b = create_app(settings), create_app(settings)
    client = a.test_client()
    register(client, upstream.url("/one"))
    assert complete(client).status_code == 200
    register(b.test_client(), upstream.url("/elsewhere"), model="other")  # moves the version: a reload is due

    held_reload.start(a.extensions["operategpt"].table)
    started = time.monotonic()
    reply = complete(client)
    assert reply.status_code == 200, reply.get_json()
    assert time.monotonic() - started < 2, "the request waited for the reload"
    held_reload.release()


def test_a_new_model_routes_at_once_while_a_reload_is_in_progress(make_settings, upstream, held_reload):
    settings = make_settings(registry_sync_interval=30)
    a, b = create_app(settings), create_app(settings)
    register(a.test_client(), upstream.url("/one"))
    assert complete(a.test_client()).status_code == 200
    register(b.test_client(), upstream.url("/elsewhere"), model="other")  # moves the version: a reload is due

    held_reload.start(a.extensions["operategpt"].table)
    register(b.test_client(), upstream.url("/fresh"), model="fresh")  # acknowledged by another process
    reply = complete(a.test_client(), "fresh")
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["result"] == "/fresh"
    held_reload.release()
    assert complete(a.test_client(), "fresh").get_json()["result"] == "/fresh"


def test_a_reload_of_an_older_version_keeps_what_this_process_registered_since(make_settings, upstream, held_reload):
    settings = make_settings(registry_sync_interval=30)
    app = create_app(settings)
    routing, client = app.extensions["operategpt"].table, app.test_client()
    register(client, upstream.url("/one"), weight=1)
    assert complete(client).status_code == 200
    # Through another process: the table is now older than the registry.
    register(create_app(settings).test_client(), upstream.url("/elsewhere"), model="other")

    held_reload.start(routing)  # it has read the version; its rows will be as of that version
    register(client, upstream.url("/one"), weight=7)
    assert [route.weight for route in routing.routes("m")] == [7]
    held_reload.release()
    assert [route.weight for route in routing.routes("m")] == [7]


def test_an_expired_table_is_checked_before_routing(make_settings, upstream):
    settings = make_settings(registry_sync_interval=0.2)
    a, b = create_app(settings).test_client(), create_app(settings).test_client()
    register(a, upstream.url("/one"), weight=1)
    assert complete(b).get_json()["result"] == "/one"  # b knows the model
    register(a, upstream.url("/two"), weight=1_000_000)
    time.sleep(0.3)
    assert complete(b).get_json()["result"] == "/two"


def test_the_refresher_keeps_a_table_in_use_current_without_requests_reading_the_database_performance_contract(
    make_settings, upstream, monkeypatch
):
    settings = make_settings(registry_sync_interval=0.2)
    a, b = create_app(settings), create_app(settings)
    routing = b.extensions["operategpt"].table
    routing.start()
    try:
        register(a.test_client(), upstream.url("/one"))
        time.sleep(0.5)
        assert routing._snapshot.by_model == {}, "a table not in use yet was loaded"
        assert complete(b.test_client()).get_json()["result"] == "/one"  # its first use loads it
        register(a.test_client(), upstream.url("/two"), weight=1_000_000)
        assert wait_until(lambda: len(routing._snapshot.by_model["m"]) == 2, timeout=5)

        db = b.extensions["operategpt"].db
        read = db.read

        def refresher_only():
            assert threading.current_thread().name == "operategpt-routing", "a request read the registry"
            return read()

        monkeypatch.setattr(db, "read", refresher_only)
        for _ in range(5):
            assert complete(b.test_client()).get_json()["result"] == "/two"
            time.sleep(0.1)  # past the interval: the refresher, not a request, checks
    finally:
        routing.stop()


def test_a_registration_through_this_process_reads_only_its_model(make_settings, upstream, monkeypatch):
    app = create_app(make_settings(registry_sync_interval=30))
    client = app.test_client()
    register(client, upstream.url("/one"))
    assert complete(client).status_code == 200
    read, models_read = registry.route_rows, []

    def route_rows(session, models=None):
        models_read.append(None if models is None else sorted(models))
        return read(session, models)

    monkeypatch.setattr(registry, "route_rows", route_rows)
    register(client, upstream.url("/two"), model="other")
    register(client, upstream.url("/three"), weight=5)
    assert complete(client, "other").get_json()["result"] == "/two"
    assert sorted((route.weight, route.model_name) for route in app.extensions["operategpt"].table.routes("m")) == [
        (1, "m"), (5, "m")]
    assert models_read == [["other"], ["m"]]  # read back with each registration; no reload of the registry
