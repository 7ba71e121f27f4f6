"""Property-based fuzzing with schemathesis against the live manager's /openapi.json: no 5xx, replies as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.support.servers import FakeUpstream, ManagerProcess, json_reply

SECRET = "fuzz-secret"
MAX_EXAMPLES = int(os.environ.get("OPERATEGPT_FUZZ_EXAMPLES", "100"))


def test_schemathesis_finds_no_server_error_and_no_undocumented_reply(database_url, tmp_path):
    # Random registrations must not point the manager at random hosts: only this loopback upstream is allowed,
    # and it answers every template and OpenAI call, so completions succeed or fail with a documented 4xx.
    def upstream(request):
        return json_reply({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                           "id": "x", "object": "chat.completion", "created": 0, "model": "m"})

    env = {"MANAGER_ADMIN_TOKEN": SECRET, "MANAGER_API_KEYS": SECRET, "UPSTREAM_ALLOWED_HOSTS": "127.0.0.1",
           "LLM_NAME": "fuzzed", "HEALTH_CHECKS": "false"}
    with FakeUpstream(upstream) as up, ManagerProcess(database_url, workers=2, env=env) as manager:
        headers = {"Authorization": f"Bearer {SECRET}"}
        assert requests.post(manager.url + "/api/server/register", headers=headers, json={
            "model_name": "fuzzed", "req_url_template": up.url("/g"), "body": {"p": "{USER_PROMPT}"},
            "response_extract": "choices[0].message.content"}, timeout=10).status_code == 200
        report = tmp_path / "junit.xml"
        result = subprocess.run(
            [str(Path(sys.executable).parent / "st"), "run", manager.url + "/openapi.json",
             "--checks", "all", "--exclude-checks", "ignored_auth,positive_data_acceptance",
             "-H", f"Authorization: Bearer {SECRET}", "--max-examples", str(MAX_EXAMPLES),
             "--workers", "2", "--seed", os.environ.get("OPERATEGPT_FUZZ_SEED", "7"),
             "--report", "junit", "--report-junit-path", str(report),
             "--suppress-health-check", "all", "--no-color"],
            capture_output=True, text=True, timeout=600,
        )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[result.stdout.find("FAILURES"):]
