"""Acceptance: `make run` in a terminal, the bundled SmolLM2 behind the manager, stopped with Ctrl-C.

`make run` runs in a pseudo-terminal of its own, so Ctrl-C is what a terminal sends: SIGINT to the whole
foreground process group (make and everything it started in that group). The registry is a temporary SQLite
file and both ports are free ones; the rest is what an operator gets.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import requests

from tests.support.db import query
from tests.support.servers import ROOT, free_port, wait_until

VENV = Path(sys.prefix)
pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
    pytest.mark.skipif(not (VENV / "bin/.local-installed").is_file(),
                       reason="make run needs the venv of `make install-local`"),
]


class Terminal:
    """A command run in a pseudo-terminal, its output collected; `ctrl_c()` types Ctrl-C."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a session leader whose controlling terminal is the pty
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.status: int | None = None

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return status
            time.sleep(0.1)
        return None

    def kill(self) -> None:
        if self.status is None:
            with suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.wait(10)
        os.close(self.fd)


def kill_leftovers(marker: str) -> list[int]:
    """SIGKILL every process whose environment holds `marker` (the servers run in sessions of their own)."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ.split(b"\0"):
            with suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


@pytest.fixture
def make_run(tmp_path) -> Iterator[tuple[Terminal, str, int, int]]:
    manager_port, llm_port = free_port(), free_port()
    database_url = "sqlite:///" + str(tmp_path / "registry.db")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "MANAGER_", "DATABASE_URL"))},
        "DATABASE_URL": database_url,
        "LLM_MANAGE_SERVER_PORT": str(manager_port),
        "LLM_SERVER_PORT": str(llm_port),
        # Other tests may share the cores; llama.cpp threads spin-wait badly on oversubscribed ones.
        "LLM_THREADS": "1",
        "GUNICORN_WORKERS": "2",
        "HEALTH_CHECK_INTERVAL": "1",
    }
    # -o install-local: the venv is there already (and the test's own, VENV); only the run recipe is tested.
    terminal = Terminal(["make", "--no-print-directory", "-o", "install-local", "run", f"VENV={VENV}"], env, ROOT)
    try:
        yield terminal, database_url, manager_port, llm_port
    finally:
        terminal.kill()
        # Whatever make run left running (nothing, when the test passes) must not outlive the test.
        leftovers = kill_leftovers(f"DATABASE_URL={database_url}")
        assert leftovers == [], f"make run left processes {leftovers} running:\n{terminal.text()[-3000:]}"


def first_token(url: str, body: dict) -> tuple[float, int]:
    """Seconds to the first content event of a streamed completion, and how many content events came."""
    started = time.monotonic()
    first, events = None, 0
    with requests.post(f"{url}/v1/chat/completions", json={**body, "stream": True}, stream=True, timeout=120) as reply:
        assert reply.status_code == 200, reply.text
        for line in reply.iter_lines():
            if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                events += 1
                first = first if first is not None else time.monotonic() - started
    assert first is not None
    return first, events


def test_make_run_serves_the_bundled_model_streaming_and_ctrl_c_leaves_no_row(make_run) -> None:
    terminal, database_url, manager_port, llm_port = make_run
    manager, llmserver = f"http://127.0.0.1:{manager_port}", f"http://127.0.0.1:{llm_port}"

    def listed() -> list:
        try:
            return requests.get(f"{manager}/api/server/workers", timeout=2).json()["data"]
        except (requests.RequestException, ValueError, KeyError):
            return []

    assert wait_until(lambda: bool(listed()), timeout=120), terminal.text()[-3000:]
    [row] = listed()
    assert (row["model_name"], row["req_url_template"], row["api_format"]) == (
        "smollm2", f"{llmserver}/v1/chat/completions", "openai")

    # The running model is the manager's default: a seed completion without model_name.
    seed = requests.post(f"{manager}/api/v1/chat/completions", json={"input": "Say hello."}, timeout=120)
    assert seed.status_code == 200, seed.text
    assert seed.json()["success"] is True and seed.json()["result"].strip()

    chat = {"model": "smollm2", "messages": [{"role": "user", "content": "Tell me about the sea."}],
            "temperature": 0, "max_tokens": 64}
    direct = [first_token(llmserver, chat) for _ in range(2)]
    through = [first_token(manager, chat) for _ in range(2)]
    # Streamed through, token by token (the first-token figures are bench/llm_first_token.py's, not asserted here).
    assert all(events >= 32 for _, events in direct + through), (direct, through)

    limited = requests.post(f"{manager}/v1/chat/completions", json={**chat, "max_tokens": 20}, timeout=120).json()
    assert limited["usage"]["completion_tokens"] == 20
    assert limited["choices"][0]["finish_reason"] == "length"

    started = time.monotonic()
    terminal.ctrl_c()
    assert terminal.wait(60) is not None, terminal.text()[-3000:]
    stopped_in = time.monotonic() - started
    assert query(database_url, "select model_name, req_url_template from workers") == [], terminal.text()[-3000:]
    assert stopped_in < 20, f"make run took {stopped_in:.1f} s to stop:\n{terminal.text()[-3000:]}"
    assert "took smollm2" in terminal.text() and "offline in the manager" in terminal.text()
    assert "Traceback" not in terminal.text(), terminal.text()[-3000:]


def test_an_llmserver_that_cannot_start_stops_the_manager_too(tmp_path) -> None:
    database_url = "sqlite:///" + str(tmp_path / "registry.db")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "MANAGER_", "DATABASE_URL"))},
        "DATABASE_URL": database_url,
        "LLM_MANAGE_SERVER_PORT": str(free_port()),
        "LLM_SERVER_PORT": str(free_port()),
        "GUNICORN_WORKERS": "1",
        "LLM_NAME": "smollm2",
        "LLM_MODEL_PATH": str(tmp_path / "missing.gguf"),
    }
    try:
        done = subprocess.run([sys.executable, "-m", "operategpt.deploy.pair"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=90)
    finally:
        leftovers = kill_leftovers(f"DATABASE_URL={database_url}")
    assert leftovers == []
    assert done.returncode != 0
    assert "missing.gguf" in done.stderr and "the llmserver exited with status" in done.stderr, done.stderr
