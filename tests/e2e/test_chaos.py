"""Chaos: workers are killed and restarted one at a time under load; no client request fails."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.servers import ROOT, ManagerProcess, free_port, wait_until


class UpstreamProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "examples/fake_upstream.py", "--port", str(self.port)],
                                     cwd=ROOT, stdout=subprocess.DEVNULL)
        assert wait_until(self._up, timeout=10)

    def _up(self) -> bool:
        try:
            return requests.get(self.url("/health"), timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.mark.slow
def test_no_client_request_fails_while_workers_die_and_return(database_url):
    env = {"HEALTH_CHECK_INTERVAL": "0.5", "HEALTH_CHECK_TIMEOUT": "0.4", "HEALTH_LEASE_TTL": "2",
           "HEALTH_UNHEALTHY_THRESHOLD": "2", "PASSIVE_FAILURE_THRESHOLD": "2", "COOLDOWN_SECONDS": "1",
           "REGISTRY_SYNC_INTERVAL": "0.5", "UPSTREAM_CONNECT_TIMEOUT": "1"}
    upstreams = [UpstreamProcess() for _ in range(3)]
    for upstream in upstreams:
        upstream.start()
    down: dict[int, list[tuple[float, float]]] = {}
    results: list[tuple[float, int, str | None]] = []
    done = threading.Event()
    try:
        with ManagerProcess(database_url, workers=2, env=env) as manager:
            ids = []
            for upstream in upstreams:
                reply = requests.post(manager.url + "/api/server/register", json={
                    "model_name": "chaos", "req_url_template": upstream.url("/generate"),
                    "body": {"input": "{USER_PROMPT}"}}, timeout=10)
                ids.append(reply.json()["data"]["id"])

            def chaos() -> None:
                while not done.is_set():
                    for worker_id, upstream in zip(ids, upstreams, strict=True):
                        if done.is_set():
                            return
                        upstream.kill()
                        killed = time.monotonic()
                        done.wait(1.5)
                        restarted = time.monotonic()
                        upstream.start()
                        down.setdefault(worker_id, []).append((killed, restarted))
                        done.wait(1.0)

            local = threading.local()

            def ask(i: int) -> None:
                if not hasattr(local, "session"):
                    local.session = requests.Session()
                sent = time.monotonic()  # a reply sent before a kill may arrive after it
                reply = local.session.post(manager.url + "/api/v1/chat/completions",
                                           json={"input": f"q{i}", "model_name": "chaos"}, timeout=30)
                results.append((sent, reply.status_code, reply.headers.get("X-OperateGPT-Worker")))

            chaos_thread = threading.Thread(target=chaos)
            chaos_thread.start()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(ask, range(2000)))
            done.set()
            chaos_thread.join()
    finally:
        done.set()
        for upstream in upstreams:
            if upstream.proc and upstream.proc.poll() is None:
                upstream.kill()

    failed = [r for r in results if r[1] != 200]
    assert len(results) == 2000
    assert failed == []
    assert sum(len(spans) for spans in down.values()) >= 2, "the run was too short to kill anything"
    for worker_id, spans in down.items():
        for killed, restarted in spans:
            served_while_down = [r for r in results if r[2] == str(worker_id) and killed + 0.05 < r[0] < restarted]
            assert served_while_down == []
