"""/metrics sums every gunicorn process (prometheus_client multiprocess mode); logs are JSON with LOG_FORMAT=json."""

from __future__ import annotations

import json
import re

import requests

from tests.support.servers import FakeUpstream, ManagerProcess, json_reply


def test_metrics_sum_over_processes_and_json_logs(database_url, tmp_path):
    log_path = tmp_path / "manager.log"
    with FakeUpstream(lambda r: json_reply("ok")) as up, log_path.open("w") as log, \
            ManagerProcess(database_url, workers=3, env={"LOG_FORMAT": "json", "LOG_LEVEL": "info"},
                           stderr=log) as manager:
        assert requests.post(manager.url + "/api/server/register", json={
            "model_name": "m", "req_url_template": up.url("/g"), "body": {"p": "{USER_PROMPT}"}},
            timeout=10).status_code == 200
        for _ in range(60):  # new connections: spread over the processes
            assert requests.post(manager.url + "/api/v1/chat/completions", json={"input": "x", "model_name": "m"},
                                 timeout=10).status_code == 200
        text = requests.get(manager.url + "/metrics", timeout=10).text
    total = sum(float(value) for value in re.findall(
        r'^operategpt_upstream_attempts_total\{model="m",outcome="ok",worker="\d+"\} (\S+)$', text, re.M))
    assert total == 60
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    requests_logged = [line for line in lines if line.get("logger") == "operategpt.access"]
    assert len([line for line in requests_logged if line["route"] == "/api/v1/chat/completions"]) == 60
    assert len({line["pid"] for line in requests_logged}) > 1
