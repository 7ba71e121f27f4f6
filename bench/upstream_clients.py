"""What one upstream call costs in CPU: the manager's UpstreamClient against the bare clients it is built on.

    .venv/bin/python bench/upstream_clients.py [--calls 20000] [--rounds 10] [--standard-headers]

Starts the nginx mock of run.py and POSTs the seed body to its instant location in a loop, one keep-alive
connection, with:

- operategpt's UpstreamClient.send (urllib3 pools, JSON encoding, header checks, capped read, classified
  failures): what the manager does on every request;
- urllib3's HTTPConnectionPool.urlopen, with the pool looked up once and the body encoded once: the floor
  for UpstreamClient, which is built on it;
- http.client.HTTPConnection, kept alive: the floor for anything built on the standard library.

All three parse reply headers with operategpt.http.headerparse, which importing the manager's client installs
for the process; `--standard-headers` puts http.client's own parser (the email package) back, for comparison.

Prints CPU microseconds per call (process time, one thread, so the GIL is not in the way) and wall time. The
clients take turns, `--rounds` times, so a load change on a shared machine hits them alike; the best round is
the figure to compare (the median shows how noisy the machine was).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadbench import mock
from loadbench.mock import MockUpstream

from operategpt.http import headerparse as httpheaders
from operategpt.http.client import UpstreamClient

BODY = {"input": "who are you?", "model_name": "bench-seed"}


def measure(clients: dict[str, Callable[[], object]], calls: int, rounds: int) -> dict[str, float]:
    """Best CPU µs per call of each client; prints best and median CPU, and wall time of the best round."""
    per_round = max(1, calls // rounds)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    for call in clients.values():
        for _ in range(200):
            call()
    for _ in range(rounds):
        for name, call in clients.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            samples[name].append((1e6 * cpu / per_round, 1e6 * wall / per_round))
    best = {}
    for name, rows in samples.items():
        cpu, wall = min(rows)
        median = statistics.median(row[0] for row in rows)
        print(f"{name:<42} {cpu:7.1f} µs CPU/call (median {median:7.1f}) {wall:7.1f} µs wall/call")
        best[name] = cpu
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000, help="calls per client, over all rounds")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--standard-headers", action="store_true",
                        help="parse reply headers with http.client's own parser (the email package)")
    args = parser.parse_args()
    if args.standard_headers:
        httpheaders.uninstall()
    with tempfile.TemporaryDirectory(prefix="operategpt-bench-") as tmp:
        upstream = MockUpstream(Path(tmp)).start()
        try:
            url = upstream.base + mock.INSTANT
            payload = json.dumps(BODY, separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json"}

            client = UpstreamClient(pool_size=64, connect_timeout=5, read_timeout=120, max_bytes=16 << 20)

            pool = urllib3.HTTPConnectionPool("127.0.0.1", upstream.port, maxsize=64, retries=False)
            timeout = urllib3.Timeout(connect=5, read=120)

            def via_urllib3() -> bytes:
                response = pool.urlopen("POST", mock.INSTANT, body=payload, headers=headers, redirect=False,
                                        timeout=timeout, preload_content=False)
                try:
                    return response.read()
                finally:
                    response.release_conn()

            connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=120)

            def via_http_client() -> bytes:
                connection.request("POST", mock.INSTANT, body=payload, headers=headers)
                return connection.getresponse().read()

            best = measure({
                "operategpt UpstreamClient.send": lambda: client.send("POST", url, body=BODY, timeout=120),
                "urllib3 HTTPConnectionPool.urlopen": via_urllib3,
                "http.client.HTTPConnection (kept alive)": via_http_client,
            }, args.calls, args.rounds)
            ratio = best["operategpt UpstreamClient.send"] / best["urllib3 HTTPConnectionPool.urlopen"]
            print(f"UpstreamClient.send costs {ratio:.2f}x the bare urllib3 pool")
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
