"""The registry survives SIGTERM and SIGKILL, and (on SQLite) reads naturally in sqlite3."""

from __future__ import annotations

import signal
import subprocess

import pytest
import requests
from sqlalchemy.engine import make_url

from tests.support.db import is_sqlite, query
from tests.support.servers import FakeUpstream, ManagerProcess, json_reply


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_workers_survive_a_restart(database_url, sig):
    url = database_url
    with FakeUpstream(lambda request: json_reply({"answer": request.get_json()["q"]})) as upstream:
        manager = ManagerProcess(url, workers=2).start()
        try:
            for i in range(3):
                reply = requests.post(manager.url + "/api/server/register", json={
                    "model_name": f"m{i}", "req_url_template": upstream.url(f"/w{i}"),
                    "body": {"q": "{USER_PROMPT}"}, "response_extract": "answer", "weight": i + 1}, timeout=10)
                assert reply.status_code == 200
        finally:
            manager.stop(sig)

        with ManagerProcess(url, workers=2) as again:
            listed = requests.get(again.url + "/api/server/workers", timeout=10).json()["data"]
            assert sorted(w["model_name"] for w in listed) == ["m0", "m1", "m2"]
            for i in range(3):
                reply = requests.post(again.url + "/api/v1/chat/completions",
                                      json={"input": f"hello {i}", "model_name": f"m{i}"}, timeout=10)
                assert reply.json() == {"success": True, "msg": "execute succeed", "result": f"hello {i}"}

    expected = [(f"m{i}", upstream.url(f"/w{i}"), i + 1) for i in range(3)]
    assert query(url, "select model_name, req_url_template, weight from workers order by id") == expected
    if is_sqlite(url):
        rows = subprocess.run(
            ["sqlite3", make_url(url).database, "select model_name, req_url_template, weight from workers order by id"],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()
        assert rows == [f"m{i}|{upstream.url(f'/w{i}')}|{i + 1}" for i in range(3)]
