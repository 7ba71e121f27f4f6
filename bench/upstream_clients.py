"""What one upstream call costs in CPU with each HTTP client the manager could use on its hot path.

    .venv/bin/python bench/upstream_clients.py [--calls 20000]

Starts the nginx mock of run.py and POSTs the seed body to its instant location in a loop, one keep-alive
connection, with:

- operategpt's UpstreamClient.send (requests.Session, stream=True, capped read): what the manager does today;
- requests.Session.post, plain;
- urllib3's HTTPConnectionPool.urlopen, with the pool looked up once per upstream;
- http.client.HTTPConnection, kept alive.

Prints CPU microseconds per call (process time, one thread, so the GIL is not in the way) and wall time.
The py-spy profile of run.py puts the upstream call at 40 % of the manager's CPU under load; this says how
much of that each replacement removes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadbench import mock
from loadbench.mock import MockUpstream

from operategpt.core.upstream import UpstreamClient

BODY = {"input": "who are you?", "model_name": "bench-seed"}


def measure(name: str, call: Callable[[], bytes], calls: int) -> None:
    for _ in range(200):
        call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:<46} {1e6 * cpu / calls:8.1f} µs CPU/call {1e6 * wall / calls:8.1f} µs wall/call")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="operategpt-bench-") as tmp:
        upstream = MockUpstream(Path(tmp)).start()
        try:
            url = upstream.base + mock.INSTANT
            payload = json.dumps(BODY, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json"}

            client = UpstreamClient(pool_size=64, connect_timeout=5, read_timeout=120, max_bytes=16 << 20)
            measure("operategpt UpstreamClient.send (requests)",
                    lambda: client.send("POST", url, body=BODY, timeout=120).body, args.calls)

            session = requests.Session()
            session.trust_env = False
            measure("requests.Session.post", lambda: session.post(url, data=payload, headers=headers).content,
                    args.calls)

            pool = urllib3.HTTPConnectionPool("127.0.0.1", upstream.port, maxsize=64, retries=False)
            timeout = urllib3.Timeout(connect=5, read=120)

            def via_urllib3() -> bytes:
                response = pool.urlopen("POST", mock.INSTANT, body=payload, headers=headers, redirect=False,
                                        timeout=timeout, preload_content=False)
                try:
                    return response.read()
                finally:
                    response.release_conn()

            measure("urllib3 HTTPConnectionPool.urlopen", via_urllib3, args.calls)

            connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=120)

            def via_http_client() -> bytes:
                connection.request("POST", mock.INSTANT, body=payload, headers=headers)
                return connection.getresponse().read()

            measure("http.client.HTTPConnection (kept alive)", via_http_client, args.calls)
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
