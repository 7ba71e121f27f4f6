"""Crash and concurrency safety: acknowledged registrations survive SIGKILL; mixed load never errors or loses one."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest
import requests

from tests.support.db import query
from tests.support.servers import FakeUpstream, ManagerProcess, json_reply


def test_sigkill_while_registering_loses_no_acknowledged_registration(database_url):
    acknowledged: list[str] = []
    manager = ManagerProcess(database_url, workers=2).start()
    stop = threading.Event()

    def register_fast(n: int) -> None:
        with requests.Session() as session:
            for i in range(100_000):
                if stop.is_set():
                    return
                url = f"http://127.0.0.1:9/c{n}/{i}"
                try:
                    reply = session.post(manager.url + "/api/server/register", json={
                        "model_name": "crash", "req_url_template": url, "body": {"p": "{USER_PROMPT}"}}, timeout=5)
                except requests.RequestException:
                    return  # the manager is gone
                if reply.status_code == 200:
                    acknowledged.append(url)

    threads = [threading.Thread(target=register_fast, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(3.0)
    manager.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join()

    with ManagerProcess(database_url, workers=2) as again:
        listed = requests.get(again.url + "/api/server/workers?model_name=crash", timeout=30).json()["data"]
    found = {worker["req_url_template"] for worker in listed}
    missing = set(acknowledged) - found
    print(f"\nSIGKILL while registering: {len(acknowledged)} acknowledged, {len(found)} found, "
          f"{len(missing)} acknowledged but missing")
    assert len(acknowledged) > 50
    assert missing == set()


@pytest.mark.slow
def test_thirty_seconds_of_mixed_load_on_four_processes(database_url):
    errors: list[str] = []
    expected: dict[int, set[str]] = {}
    counts = {"register": 0, "offline": 0, "list": 0, "complete": 0}
    lock = threading.Lock()
    with FakeUpstream(lambda r: json_reply({"a": r.get_json()["p"]})) as up, \
            ManagerProcess(database_url, workers=4) as manager:
        deadline = time.monotonic() + 30

        def worker(n: int) -> None:
            rng = random.Random(n)
            mine: set[str] = set()
            with requests.Session() as session:
                while time.monotonic() < deadline:
                    action = rng.choice(["register", "register", "offline", "list", "complete", "complete"])
                    if action == "offline" and not mine:
                        continue
                    if action == "register":
                        url = up.url(f"/t{n}/{rng.randrange(40)}")
                        reply = session.post(manager.url + "/api/server/register", json={
                            "model_name": f"load{n % 4}", "req_url_template": url, "body": {"p": "{USER_PROMPT}"},
                            "response_extract": "a", "weight": rng.randrange(1, 5)}, timeout=30)
                        if reply.status_code == 200:
                            mine.add(url)
                    elif action == "offline":
                        url = rng.choice(sorted(mine))
                        reply = session.post(manager.url + "/api/server/offline", json={
                            "model_name": f"load{n % 4}", "req_url_template": url}, timeout=30)
                        if reply.status_code == 200:
                            mine.discard(url)
                    elif action == "list":
                        reply = session.get(manager.url + "/api/server/workers", timeout=30)
                    else:
                        reply = session.post(manager.url + "/api/v1/chat/completions",
                                             json={"input": f"q{n}", "model_name": f"load{n % 4}"}, timeout=30)
                        if reply.status_code == 200 and reply.json()["result"] != f"q{n}":
                            errors.append(f"wrong answer {reply.text}")
                    if reply.status_code >= 500 or "locked" in reply.text:
                        errors.append(f"{action}: {reply.status_code} {reply.text[:200]}")
                    with lock:
                        counts[action] += 1
            expected[n] = mine

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        listed = requests.get(manager.url + "/api/server/workers", timeout=30).json()["data"]
    print(f"\n30 s mixed load, 16 threads, gunicorn -w 4: {counts}, {len(errors)} errors")
    assert errors == []
    assert {w["req_url_template"] for w in listed} == set().union(*expected.values())
    assert len(query(database_url, "select id from workers")) == len(listed)
