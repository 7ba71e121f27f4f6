"""Times one active health round over N workers, half of them black holes.

    .venv/bin/python bench/health_round.py [--workers 1000] [--timeout 3]

Black holes, all on loopback: a listening socket that accepts and never answers (probed by
GET health_url) and a socket whose backlog is full, so the kernel drops the SYNs (probed by
TCP connect). The other half are a live HTTP server (health_url) and a listening port (TCP).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert

from operategpt.gateway.health import HealthMonitor
from operategpt.gateway.registry import Registry
from operategpt.gateway.registry.db import Database, upgrade
from operategpt.gateway.registry.models import Worker, utcnow
from operategpt.gateway.table import RoutingTable
from operategpt.settings import Settings
from tests.support.servers import FakeUpstream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from werkzeug.wrappers import Response

    silent = socket.create_server(("127.0.0.1", 0), backlog=4096)
    full = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = [socket.socket() for _ in range(4)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(full.getsockname())
    listening = socket.create_server(("127.0.0.1", 0), backlog=4096)
    with tempfile.TemporaryDirectory() as tmp, FakeUpstream(lambda r: Response("ok")) as live:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        db = Database(url)
        now = utcnow()
        rows = []
        for i in range(args.workers):
            kind = i % 4
            if kind == 0:
                target, health = f"http://127.0.0.1:{silent.getsockname()[1]}/w{i}", \
                    f"http://127.0.0.1:{silent.getsockname()[1]}/health"
            elif kind == 1:
                target, health = f"http://127.0.0.1:{full.getsockname()[1]}/w{i}", None
            elif kind == 2:
                target, health = live.url(f"/w{i}"), live.url("/health")
            else:
                target, health = f"http://127.0.0.1:{listening.getsockname()[1]}/w{i}", None
            rows.append({"model_name": f"m{i % 10}", "req_url_template": target, "health_url": health, "owner": "",
                         "req_type": "POST", "body": {"p": "{USER_PROMPT}"}, "headers": {}, "response_extract": "",
                         "api_format": "template", "model_type": "chat", "weight": 1, "priority": 0,
                         "created_at": now, "updated_at": now, "status": "unknown", "consecutive_failures": 0,
                         "passive_failures": 0})
        with db.write() as session:
            session.execute(insert(Worker), rows)
        settings = Settings.from_env({}, database_url=url, health_check_timeout=args.timeout,
                                     health_unhealthy_threshold=1, health_lease_ttl=args.timeout + 20)
        monitor = HealthMonitor(settings, Registry(db), RoutingTable(db, 1.0))
        print(f"{args.workers} workers, half black holes, HEALTH_CHECK_TIMEOUT={args.timeout:g} s")
        for n in range(args.rounds):
            started = time.perf_counter()
            report = monitor.run_round()
            elapsed = time.perf_counter() - started
            print(f"round {n + 1}: {elapsed:.2f} s ({elapsed / args.timeout:.2f} x timeout); "
                  f"{report.healthy} healthy, {report.unhealthy} unhealthy")
        db.dispose()


if __name__ == "__main__":
    main()
