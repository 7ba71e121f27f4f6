"""UpstreamClient against real servers on loopback: what it sends, what it reads, and how each failure is classified."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from werkzeug.wrappers import Request, Response

from operategpt.errors import UpstreamError, UpstreamTimeout
from operategpt.gateway.retry import RetryPolicy
from operategpt.http.allowlist import HostAllowlist
from operategpt.http.client import UpstreamClient
from tests.support.servers import FakeUpstream, free_port, json_reply


class _Worker:
    def __init__(self, retry_on_timeout: bool = False):
        self.retry_on_timeout = retry_on_timeout


def fails_over(error: UpstreamError, retry_on_timeout: bool = False) -> bool:
    """What the gateway's retry policy makes of the failure the client names."""
    return RetryPolicy(max_retries=2).fails_over(error, _Worker(retry_on_timeout))


def make_client(**overrides) -> UpstreamClient:
    settings = {"pool_size": 4, "connect_timeout": 1.0, "read_timeout": 2.0, "max_bytes": 1000, **overrides}
    return UpstreamClient(**settings)


class _KeepAliveHandler(BaseHTTPRequestHandler):
    """GET /port answers the client's port, so which connection the request came on; GET /events sends an event
    every 20 ms for 5 s, or until the client goes away. Connections are kept alive (FakeUpstream closes them)."""

    protocol_version = "HTTP/1.1"
    server: KeepAliveServer

    def do_GET(self) -> None:
        if self.path == "/port":
            port = str(self.client_address[1]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(port)))
            self.end_headers()
            self.wfile.write(port)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for _ in range(250):
                self.wfile.write(b"c\r\ndata: tick\n\n\r\n")
                time.sleep(0.02)
        except OSError:
            self.server.client_left.set()

    def log_message(self, *args: object) -> None:
        pass


class KeepAliveServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _KeepAliveHandler)
        self.client_left = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def keep_alive() -> Iterator[KeepAliveServer]:
    server = KeepAliveServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client() -> Iterator[UpstreamClient]:
    upstream = make_client()
    yield upstream
    upstream.close()


def serve_once(reply: bytes) -> int:
    """A raw server that reads one request, answers `reply` verbatim and closes: for replies no framework sends."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with listener, listener.accept()[0] as conn:
            conn.recv(65536)
            conn.sendall(reply)

    threading.Thread(target=answer, daemon=True).start()
    return listener.getsockname()[1]


# What the worker gets


def test_sends_compact_utf8_json_with_the_headers_a_worker_relies_on(client):
    with FakeUpstream(lambda r: json_reply({"ok": True})) as up:
        reply = client.send("POST", up.url("/gen?q=1"), body={"prompt": "héllo", "n": [1, 2]},
                            headers={"X-Api-Key": "k"})
    assert (reply.status, json.loads(reply.body), reply.content_type) == (200, {"ok": True}, "application/json")
    [seen] = up.seen
    assert (seen.method, seen.path, seen.query) == ("POST", "/gen", "q=1")
    assert seen.body == '{"prompt":"héllo","n":[1,2]}'.encode()
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Content-Length"] == str(len(seen.body))
    assert seen.headers["Host"] == f"127.0.0.1:{up.port}"
    assert seen.headers["Accept-Encoding"] == "gzip, deflate"
    assert seen.headers["User-Agent"].startswith("operategpt/")
    assert seen.headers["X-Api-Key"] == "k"


def test_the_callers_headers_win_whatever_their_case_and_get_sends_no_body(client):
    with FakeUpstream(lambda r: json_reply("ok")) as up:
        client.send("PUT", up.url("/p"), body={"a": 1}, headers={"content-type": "text/plain", "user-agent": "me"})
        client.send("GET", up.url("/g"), body={"ignored": True})
    put, get = up.seen
    assert put.headers["Content-Type"] == "text/plain"
    assert put.headers["User-Agent"] == "me"
    assert get.body == b""
    assert "Content-Type" not in get.headers and "Content-Length" not in get.headers


def test_credentials_in_the_url_are_sent_as_basic_authorization(client):
    with FakeUpstream(lambda r: json_reply("ok")) as up:
        client.send("GET", f"http://user:pa%40ss@127.0.0.1:{up.port}/")
    assert up.seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"user:pa@ss").decode()


def test_sequential_calls_share_one_kept_alive_connection(client, keep_alive):
    ports = {client.send("GET", keep_alive.url + "/port").body for _ in range(5)}
    assert len(ports) == 1


def test_concurrent_calls_beyond_the_pool_size_open_extra_connections_instead_of_waiting():
    upstream = make_client(pool_size=2)

    def slow(request: Request) -> Response:
        time.sleep(0.3)
        return json_reply("ok")

    with FakeUpstream(slow) as up, ThreadPoolExecutor(16) as threads:
        started = time.monotonic()
        replies = list(threads.map(lambda _: upstream.send("GET", up.url("/")).body, range(16)))
        elapsed = time.monotonic() - started
    assert replies == [b'"ok"'] * 16
    assert elapsed < 1.5  # 16 calls of 0.3 s taking turns on 2 connections would take 2.4 s


# Replies


def test_gzip_replies_are_decoded(client):
    def gzipped(request: Request) -> Response:
        return Response(gzip.compress(b'{"answer": 42}'), headers={"Content-Encoding": "gzip"})

    with FakeUpstream(gzipped) as up:
        assert client.send("GET", up.url("/")).body == b'{"answer": 42}'


def test_replies_larger_than_max_bytes_are_refused_whether_declared_chunked_or_compressed(client):
    replies = {
        "/declared": lambda: Response(b"x" * 1001),
        "/exact": lambda: Response(b"x" * 1000),
        "/chunked": lambda: Response(b"x" * 100 for _ in range(11)),
        "/compressed": lambda: Response(gzip.compress(b"x" * 5000), headers={"Content-Encoding": "gzip"}),
    }
    with FakeUpstream(lambda r: replies[r.path]()) as up:
        assert client.send("GET", up.url("/exact")).body == b"x" * 1000
        for path in ("/declared", "/chunked", "/compressed"):
            with pytest.raises(UpstreamError, match=f"reply from worker at http://127.0.0.1:{up.port} is larger "
                                                    "than 1000 bytes") as refused:
                client.send("GET", up.url(path))
            assert not fails_over(refused.value)
        assert client.send("GET", up.url("/exact")).body == b"x" * 1000  # the client is still usable


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (408, True), (429, True),
                                                   (400, False), (401, False), (404, False)])
def test_non_2xx_replies_fail_and_only_those_another_worker_may_not_give_are_retryable(client, status, retryable):
    with FakeUpstream(lambda r: Response("went wrong", status=status)) as up, pytest.raises(UpstreamError) as failed:
        client.send("POST", up.url("/"), body={})
    assert failed.value.message == f"worker at http://127.0.0.1:{up.port} answered HTTP {status}: went wrong"
    assert fails_over(failed.value) is retryable


def test_redirects_are_not_followed(client):
    redirect = Response("", status=302, headers={"Location": "/elsewhere"})
    with FakeUpstream(lambda r: redirect) as up, pytest.raises(UpstreamError, match=r"answered HTTP 302$") as failed:
        client.send("GET", up.url("/"))
    assert not fails_over(failed.value)
    assert [seen.path for seen in up.seen] == ["/"]


def test_credentials_a_worker_echoes_are_masked(client):
    def echo(request: Request) -> Response:
        return Response(f"bad key {request.headers['Authorization']}", status=401)

    with FakeUpstream(echo) as up, pytest.raises(UpstreamError) as failed:
        client.send("GET", up.url("/"), headers={"Authorization": "Bearer sk-live-123456"})
    assert failed.value.message.endswith("answered HTTP 401: bad key Bearer ****")


# Failures before a reply


def test_a_refused_connection_is_retryable(client):
    port = free_port()
    with pytest.raises(UpstreamError) as failed:
        client.send("GET", f"http://127.0.0.1:{port}/")
    assert failed.value.message == f"could not reach worker at http://127.0.0.1:{port}: connection refused"
    assert fails_over(failed.value)


def test_an_unresolvable_host_is_retryable(client):
    with pytest.raises(UpstreamError, match="host name could not be resolved") as failed:
        client.send("GET", "http://no-such-host.invalid/")
    assert fails_over(failed.value)


def test_a_slow_reply_is_a_timeout_after_sending_retried_only_for_a_worker_that_opted_in(client):
    def slow(request: Request) -> Response:
        time.sleep(0.5)
        return json_reply("late")

    with FakeUpstream(slow) as up, pytest.raises(UpstreamTimeout) as failed:
        client.send("GET", up.url("/"), timeout=0.1)
    assert failed.value.message == f"worker at http://127.0.0.1:{up.port} did not answer within 0.1 s"
    assert failed.value.sent
    assert not fails_over(failed.value)
    assert fails_over(failed.value, retry_on_timeout=True)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose connects hang: a listener that never accepts, its backlog full."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        address = listener.getsockname()
        queued = []
        try:
            for _ in range(8):
                try:
                    queued.append(socket.create_connection(address, timeout=0.2))
                except TimeoutError:
                    break
            else:
                pytest.skip("connects beyond a full backlog do not hang on this system")
            yield address[1]
        finally:
            for sock in queued:
                sock.close()


def test_a_connect_that_hangs_is_a_retryable_timeout(unanswered_port):
    upstream = make_client(connect_timeout=0.2)
    with pytest.raises(UpstreamTimeout) as failed:
        upstream.send("GET", f"http://127.0.0.1:{unanswered_port}/")
    assert failed.value.message == f"timed out connecting to worker at http://127.0.0.1:{unanswered_port}"
    assert fails_over(failed.value)


def test_a_reply_cut_short_is_retryable(client):
    port = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    with pytest.raises(UpstreamError) as failed:
        client.send("GET", f"http://127.0.0.1:{port}/")
    assert failed.value.message == (f"could not reach worker at http://127.0.0.1:{port}: "
                                    "connection closed before the reply was complete")
    assert fails_over(failed.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/", "http://127.0.0.1:port/", "http:///path",
                                 "http://bad host/", "ftp://127.0.0.1/", "127.0.0.1:80/path", ""])
def test_an_invalid_url_is_a_clean_error(client, url):
    with pytest.raises(UpstreamError, match=r": invalid URL$") as failed:
        client.send("GET", url)
    assert not fails_over(failed.value)


@pytest.mark.parametrize("headers", [{"X-A": "a\r\nX-Injected: 1"}, {"X-A": "a\r\n folded"}, {"X-A": " leading"},
                                     {"X-A": "nul\x00"}, {"X-A": "€"}, {"X:A": "a"}, {"X A": "a"}])
def test_header_injection_is_refused_before_anything_is_sent(client, headers):
    refused = pytest.raises(UpstreamError, match=r": invalid header value$")
    with FakeUpstream(lambda r: json_reply("ok")) as up, refused as failed:
        client.send("GET", up.url("/"), headers=headers)
    assert not fails_over(failed.value)
    assert up.seen == []


def test_the_allowlist_is_checked_on_the_address_connected_to():
    with FakeUpstream(lambda r: json_reply("ok")) as up:
        inside = make_client(allowlist=HostAllowlist(["127.0.0.0/8"]))
        assert inside.send("GET", f"http://localhost:{up.port}/").body == b'"ok"'
        outside = make_client(allowlist=HostAllowlist(["10.0.0.0/8"]))
        with pytest.raises(UpstreamError) as refused:
            outside.send("GET", f"http://localhost:{up.port}/")
    assert refused.value.message == (f"refused to call worker at http://localhost:{up.port}: localhost resolves "
                                     "to 127.0.0.1, outside UPSTREAM_ALLOWED_HOSTS")
    assert not fails_over(refused.value)
    assert len(up.seen) == 1


# Streams


def test_a_streamed_chunk_is_passed_on_before_the_reply_ends(client):
    go_on = threading.Event()

    def events(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            yield b"data: first\n\n"
            go_on.wait(5)
            yield b"data: [DONE]\n\n"

        return Response(body(), content_type="text/event-stream")

    with FakeUpstream(events) as up:
        stream = client.open_stream("POST", up.url("/"), body={"stream": True})
        chunks = iter(stream)
        assert (stream.status, stream.content_type) == (200, "text/event-stream")
        assert next(chunks) == b"data: first\n\n"  # while the worker is still waiting to send the rest
        go_on.set()
        assert b"".join(chunks) == b"data: [DONE]\n\n"
        stream.close()


def test_closing_a_stream_early_drops_its_connection_and_frees_its_place_in_the_pool(keep_alive):
    upstream = make_client(pool_size=1)
    for _ in range(3):
        stream = upstream.open_stream("GET", keep_alive.url + "/events")
        assert next(iter(stream)) == b"data: tick\n\n"
        stream.close()
    assert keep_alive.client_left.wait(5)  # the worker saw the client go away
    ports = {upstream.send("GET", keep_alive.url + "/port").body for _ in range(3)}
    assert len(ports) == 1  # the pool's one place was not lost to the dropped connections


def test_a_stream_fails_like_send_until_its_headers_are_in(client):
    overloaded = Response("overloaded", status=503)
    with FakeUpstream(lambda r: overloaded) as up, pytest.raises(UpstreamError, match="answered HTTP 503") as failed:
        client.open_stream("POST", up.url("/"), body={})
    assert fails_over(failed.value)


def test_reading_a_whole_stream_is_capped(client):
    with FakeUpstream(lambda r: Response(b"x" * 100 for _ in range(11))) as up:
        stream = client.open_stream("GET", up.url("/"))
        with pytest.raises(UpstreamError, match="larger than 1000 bytes"):
            stream.read()
