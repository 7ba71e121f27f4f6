"""Every exchange is bounded, through a live gunicorn manager: a worker dripping its reply ends in 504 within
the deadline with its connection closed; a chunked request body over MAX_CONTENT_LENGTH is a 413."""

from __future__ import annotations

import socket
import threading
import time

import requests

from tests.support.servers import ManagerProcess


class DripServer:
    """A raw socket server that answers `Content-Length: 1000` and then sends one byte a second; it records
    when each connection was closed by the other side."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.closed_at: list[float] = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
            try:
                for _ in range(1000):
                    conn.sendall(b" ")
                    time.sleep(1)
            except OSError:
                self.closed_at.append(time.monotonic())
                return

    def close(self) -> None:
        self.stopping = True
        self.sock.close()


def test_dripping_worker_ends_in_504_within_the_deadline_and_its_connection_is_closed(database_url):
    drip = DripServer()
    env = {"UPSTREAM_TIMEOUT": "3", "REQUEST_DEADLINE": "6", "GUNICORN_TIMEOUT": "120"}
    try:
        with ManagerProcess(database_url, workers=1, env=env) as manager:
            reply = requests.post(manager.url + "/api/server/register", json={
                "model_name": "drip", "req_url_template": f"http://127.0.0.1:{drip.port}/generate",
                "body": {"input": "{USER_PROMPT}"},
            }, timeout=10)
            assert reply.status_code == 200, reply.text
            started = time.monotonic()
            reply = requests.post(manager.url + "/api/v1/chat/completions",
                                  json={"input": "hi", "model_name": "drip"}, timeout=60)
            took = time.monotonic() - started
            print(f"drip: {reply.status_code} after {took:.2f} s")
            assert reply.status_code == 504, reply.text
            assert took <= 6 + 1
            # The manager closed its connection: the drip's next write fails within a couple of bytes.
            deadline = time.monotonic() + 4
            while not drip.closed_at and time.monotonic() < deadline:
                time.sleep(0.1)
            assert drip.closed_at, "the manager's upstream connection is still open"
            print(f"drip: upstream saw the close {drip.closed_at[0] - started:.2f} s after the request")
    finally:
        drip.close()


def test_chunked_body_over_the_cap_is_413_json(database_url):
    with ManagerProcess(database_url, workers=1, env={"MAX_CONTENT_LENGTH": "1000"}) as manager:
        def chunks():
            for _ in range(10):
                yield b"x" * 500

        reply = requests.post(manager.url + "/api/server/register", data=chunks(),
                              headers={"Content-Type": "application/json"}, timeout=10)
        assert reply.status_code == 413, reply.text
        assert reply.headers["Content-Type"].startswith("application/json")
        assert "larger than the limit" in reply.json()["msg"]
