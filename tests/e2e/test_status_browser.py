"""The status page in a real browser: headless Chromium against a live manager with a healthy and a dead worker.

Needs Debian's `chromium` package (`make test` installs it as root); without it the test fails rather
than skips, so a CI run cannot pass without the browser having looked at the page.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.db import query
from tests.support.servers import FakeUpstream, ManagerProcess, free_port, json_reply, wait_until
from tests.web.test_status_page import worker_tables

SCREENSHOT_COPY = Path("/tmp/operategpt-status.png")
HEALTH_ENV = {
    "HEALTH_CHECK_INTERVAL": "0.5",
    "HEALTH_CHECK_TIMEOUT": "0.4",
    "HEALTH_LEASE_TTL": "1.5",
    "HEALTH_UNHEALTHY_THRESHOLD": "1",
    "REGISTRY_SYNC_INTERVAL": "0.5",
}


def chromium(user_data_dir: Path, *args: str) -> str:
    """Run headless Chromium once; returns its stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed; install it with "
                    "`apt-get install -y chromium` (Debian's package; `make test-deps` does this as root)")
    done = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={user_data_dir}", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_status_page_in_headless_chromium(database_url, tmp_path):
    dead_url = f"http://127.0.0.1:{free_port()}/api/generate"
    with FakeUpstream(lambda request: json_reply({"data": {"items": [{"attributes": {"answer": "hi"}}]}})) as live, \
            ManagerProcess(database_url, env=HEALTH_ENV) as manager:
        live_url = live.url("/api/generate")
        for url in (live_url, dead_url):
            reply = requests.post(manager.url + "/api/server/register", json={
                "model_name": "chatglm2-6b", "req_url_template": url, "owner": "operategpt",
                "body": {"input": "{USER_PROMPT}"}, "response_extract": "data.items[].attributes.answer",
            }, timeout=10)
            assert reply.status_code == 200, reply.text

        def checked() -> bool:
            return dict(query(database_url, "select req_url_template, status from workers")) == {
                live_url: "healthy", dead_url: "unhealthy"}

        assert wait_until(checked, timeout=20), query(database_url, "select * from workers")
        for _ in range(3):
            assert requests.post(manager.url + "/api/v1/chat/completions",
                                 json={"input": "who are you?", "model_name": "chatglm2-6b"}, timeout=10).ok

        page = manager.url + "/"
        dom = chromium(tmp_path / "profile", "--dump-dom", page)
        screenshot = tmp_path / "status.png"
        chromium(tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,900", "--hide-scrollbars",
                 page)

    rows = {row["URL"]: row for row in worker_tables(dom).models["chatglm2-6b"]}
    assert rows[live_url]["status"] == "healthy"
    assert rows[dead_url]["status"] == "unhealthy"
    assert rows[dead_url]["last error"]
    assert int(rows[live_url]["calls since start"]) == 3
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    print(f"status page screenshot: {screenshot} (copied to {SCREENSHOT_COPY})")
