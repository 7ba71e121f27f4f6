"""Under `gunicorn -w 4` every process routes on registry changes made through any other process."""

from __future__ import annotations

import json
import threading
import time

import requests

from tests.support.servers import FakeUpstream, ManagerProcess, json_reply


def test_register_then_complete_on_fresh_models(database_url):
    with FakeUpstream(lambda request: json_reply({"echo": request.get_json()["p"]})) as upstream, \
            ManagerProcess(database_url, workers=4) as manager:
        failures = []
        for i in range(200):
            # New connections each time, so gunicorn spreads the two calls over its processes.
            reply = requests.post(manager.url + "/api/server/register", json={
                "model_name": f"fresh-{i}", "req_url_template": upstream.url(f"/m{i}"),
                "body": {"p": "{USER_PROMPT}"}, "response_extract": "echo"}, timeout=10)
            assert reply.status_code == 200
            done = requests.post(manager.url + "/api/v1/chat/completions",
                                 json={"input": f"prompt {i}", "model_name": f"fresh-{i}"}, timeout=10)
            if done.status_code != 200 or done.json()["result"] != f"prompt {i}":
                failures.append((i, done.status_code, done.text))
        assert failures == []


def test_offline_stops_traffic_on_every_process_within_one_second(database_url):
    hits_after: list[float] = []
    offline_done = threading.Event()
    offline_at = [0.0]

    def removed(request):
        if offline_done.is_set():
            # Judged by when the client sent it: routing happens after that, the upstream sees it later.
            hits_after.append(float(request.get_json()["p"]) - offline_at[0])
        return json_reply({"who": "removed"})

    with FakeUpstream(removed) as gone, FakeUpstream(lambda r: json_reply({"who": "kept"})) as kept, \
            ManagerProcess(database_url, workers=4) as manager:
        for up in (gone, kept):
            assert requests.post(manager.url + "/api/server/register", json={
                "model_name": "m", "req_url_template": up.url("/g"), "body": {"p": "{USER_PROMPT}"},
                "response_extract": "who"}, timeout=10).status_code == 200

        stop = threading.Event()
        results: list[tuple[float, int, str]] = []

        def client() -> None:
            with requests.Session() as session:  # keep-alive: each thread sticks to one gunicorn process
                while not stop.is_set():
                    sent = time.monotonic()  # routing happens after this; the reply may come much later
                    reply = session.post(manager.url + "/api/v1/chat/completions",
                                         json={"input": repr(sent), "model_name": "m"}, timeout=10)
                    results.append((sent, reply.status_code, reply.text))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        reply = requests.post(manager.url + "/api/server/offline",
                              json={"model_name": "m", "req_url_template": gone.url("/g")}, timeout=10)
        offline_at[0] = time.monotonic()
        offline_done.set()
        assert reply.status_code == 200
        time.sleep(2.5)
        stop.set()
        for thread in threads:
            thread.join()

    late = [t for t in hits_after if t > 1.0]
    assert late == [], f"removed worker got {len(late)} requests more than 1 s after the offline"
    assert all(status == 200 for _, status, _ in results)
    after = [json.loads(text)["result"] for t, _, text in results if t > offline_at[0] + 1.0]
    assert after and set(after) == {"kept"}


def test_thousand_sequential_completions_carry_their_own_prompt(database_url):
    with FakeUpstream(lambda request: json_reply({"ok": True})) as upstream, \
            ManagerProcess(database_url, workers=2) as manager:
        assert requests.post(manager.url + "/api/server/register", json={
            "model_name": "m", "req_url_template": upstream.url("/g"),
            "body": {"prompt": "{USER_PROMPT}", "temperature": "{MODEL_TEMPERATURE}", "model": "{MODEL_NAME}"},
            "response_extract": "ok"}, timeout=10).status_code == 200
        with requests.Session() as session:
            for i in range(1000):
                prompt = f'prompt #{i}: "quoted" \\ back\nnew line é {{USER_PROMPT}}'
                reply = session.post(manager.url + "/api/v1/chat/completions",
                                     json={"input": prompt, "model_name": "m", "temperature": i % 3 / 2}, timeout=10)
                assert reply.status_code == 200
    assert len(upstream.seen) == 1000
    for i, seen in enumerate(upstream.seen):
        assert seen.headers["Content-Type"] == "application/json"
        body = seen.json()
        assert body == {"prompt": f'prompt #{i}: "quoted" \\ back\nnew line é {{USER_PROMPT}}',
                        "temperature": i % 3 / 2, "model": "m"}
        assert isinstance(body["temperature"], float)
