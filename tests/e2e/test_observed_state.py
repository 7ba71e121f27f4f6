"""One truthful state: a worker killed mid-traffic is `cooling_down` in the listing, the CLI and the status page
alike; restarted, a passing probe ends the cooldown, so it is `healthy` and gets traffic within one interval."""

from __future__ import annotations

import requests
from click.testing import CliRunner

from operategpt import cli
from tests.support.servers import FakeUpstream, ManagerProcess, json_reply, wait_until

INTERVAL = 1.0
ENV = {"HEALTH_CHECK_INTERVAL": str(INTERVAL), "HEALTH_CHECK_TIMEOUT": "0.5", "HEALTH_LEASE_TTL": "3",
       "PASSIVE_FAILURE_THRESHOLD": "1", "COOLDOWN_SECONDS": "60", "HEALTH_UNHEALTHY_THRESHOLD": "100"}


def test_a_restarted_worker_is_cooling_down_everywhere_then_healthy_and_routed(database_url):
    flaky = FakeUpstream(lambda request: json_reply({"who": "flaky"})).start()
    with FakeUpstream(lambda request: json_reply({"who": "steady"})) as steady, \
            ManagerProcess(database_url, workers=2, env=ENV) as manager:
        for up in (flaky, steady):
            assert requests.post(manager.url + "/api/server/register", json={
                "model_name": "m", "req_url_template": up.url("/g"), "body": {"p": "{USER_PROMPT}"},
                "response_extract": "who"}, timeout=10).status_code == 200

        def complete() -> str:
            reply = requests.post(manager.url + "/api/v1/chat/completions", json={"input": "x", "model_name": "m"},
                                  timeout=10)
            assert reply.status_code == 200, reply.text  # the failure fails over to the steady worker
            return reply.json()["result"]

        def listed() -> dict:
            data = requests.get(manager.url + "/api/server/workers", timeout=10).json()["data"]
            return next(worker for worker in data if worker["req_url_template"] == flaky.url("/g"))

        assert "flaky" in {complete() for _ in range(20)}
        flaky.stop()  # killed mid-traffic
        assert wait_until(lambda: complete() and listed()["state"] == "cooling_down", timeout=10)
        row = listed()
        assert row["cooldown_until"] is not None and row["last_error_source"] == "request"
        assert "connect" in row["last_error"].lower() or "refused" in row["last_error"].lower()

        shown = CliRunner().invoke(cli.main, ["workers", "list"], env={"DATABASE_URL": database_url})
        assert shown.exit_code == 0, shown.output
        [line] = [line for line in shown.output.splitlines() if flaky.url("/g") in line]
        assert "cooling_down" in line.split()
        page = requests.get(manager.url + "/", timeout=10).text
        assert 'class="status status-cooling_down">cooling_down<' in page

        restarted = FakeUpstream(lambda request: json_reply({"who": "flaky"}), port=flaky.port).start()
        try:
            # Readmitted by a probe (within an interval or two), long before the 60 s cooldown would have ended.
            assert wait_until(lambda: listed()["state"] == "healthy", timeout=20)
            assert listed()["cooldown_until"] is None
            assert "flaky" in {complete() for _ in range(20)}
        finally:
            restarted.stop()
