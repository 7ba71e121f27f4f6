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


class SSEServer:
    """A raw socket worker answering a chat stream: `events` events `interval` s apart, then silence. Records
    when the manager closed each connection (a read returns nothing, or a write fails)."""

    def __init__(self, events: int, interval: float) -> None:
        self.events, self.interval = events, interval
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.closed_at: list[float] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        event = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                for _ in range(self.events):
                    conn.sendall(event)
                    time.sleep(self.interval)
                conn.settimeout(60)
                conn.recv(1)  # silence: wait for the manager to hang up
            except OSError:
                pass
            self.closed_at.append(time.monotonic())

    def close(self) -> None:
        self.sock.close()


def _register_stream_worker(manager: ManagerProcess, port: int) -> None:
    reply = requests.post(manager.url + "/api/server/register", json={
        "model_name": "s", "api_format": "openai",
        "req_url_template": f"http://127.0.0.1:{port}/v1/chat/completions",
    }, timeout=10)
    assert reply.status_code == 200, reply.text


STREAM = {"model": "s", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def test_an_idle_stream_ends_with_an_error_event_within_the_idle_bound(database_url):
    worker = SSEServer(events=1, interval=0)
    try:
        with ManagerProcess(database_url, workers=1, env={"UPSTREAM_TIMEOUT": "2", "REQUEST_DEADLINE": "6"}) as manager:
            _register_stream_worker(manager, worker.port)
            started = time.monotonic()
            reply = requests.post(manager.url + "/v1/chat/completions", json=STREAM, timeout=30)
            took = time.monotonic() - started
            print(f"idle stream: ended after {took:.2f} s")
            assert reply.status_code == 200
            assert '"content":"x"' in reply.text
            assert '"error"' in reply.text
            assert took <= 2 + 1
            deadline = time.monotonic() + 2
            while not worker.closed_at and time.monotonic() < deadline:
                time.sleep(0.05)
            assert worker.closed_at
    finally:
        worker.close()


def test_a_client_leaving_mid_stream_closes_the_upstream_call_within_a_second(database_url):
    worker = SSEServer(events=100000, interval=0.05)
    try:
        with ManagerProcess(database_url, workers=1, env={"UPSTREAM_TIMEOUT": "60"}) as manager:
            _register_stream_worker(manager, worker.port)
            reply = requests.post(manager.url + "/v1/chat/completions", json=STREAM, timeout=30, stream=True)
            assert reply.status_code == 200
            lines = reply.iter_lines()
            assert b"content" in next(line for line in lines if line)
            reply.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)  # the client goes away
            reply.close()
            left = time.monotonic()
            deadline = left + 5
            while not worker.closed_at and time.monotonic() < deadline:
                time.sleep(0.02)
            assert worker.closed_at, "the manager kept the worker's stream open"
            took = worker.closed_at[0] - left
            print(f"client left: upstream closed {took:.2f} s later")
            assert took <= 1
    finally:
        worker.close()


def test_a_stream_that_never_ends_is_cut_at_the_request_deadline_with_an_error_event(database_url):
    # UPSTREAM_TIMEOUT bounds the gaps between events; a stream as a whole may last what is left of the
    # request's deadline (a long generation streams for minutes).
    worker = SSEServer(events=100000, interval=0.5)  # never idle long enough for the read timeout
    try:
        with ManagerProcess(database_url, workers=1, env={"UPSTREAM_TIMEOUT": "1", "REQUEST_DEADLINE": "3"}) as manager:
            _register_stream_worker(manager, worker.port)
            started = time.monotonic()
            reply = requests.post(manager.url + "/v1/chat/completions", json=STREAM, timeout=30)
            took = time.monotonic() - started
            print(f"endless stream: ended after {took:.2f} s")
            assert reply.status_code == 200
            assert '"error"' in reply.text
            assert 3 - 0.5 <= took <= 3 + 1
            deadline = time.monotonic() + 2
            while not worker.closed_at and time.monotonic() < deadline:
                time.sleep(0.05)
            assert worker.closed_at
    finally:
        worker.close()
