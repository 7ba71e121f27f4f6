"""`make run`: the manager and an llmserver registered with it, started and stopped as one foreground command.

    python -m operategpt.deploy.pair

Each server runs in its own session, so a Ctrl-C at the terminal (SIGINT to the foreground process group)
reaches only this process, which stops them in order: the llmserver first, so it takes itself offline
while the manager still answers, then the manager. When both got the terminal's SIGINT at once the manager
was gone before the llmserver could leave, and its row stayed behind as `healthy`. Either server exiting by
itself stops the other. The llmserver registers under `LLM_NAME`, which is also the manager's default model
(a seed completion without `model_name` asks the model that is running).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from types import FrameType

import requests
from dotenv import find_dotenv, load_dotenv

logger = logging.getLogger(__name__)

SCRIPTS = Path(__file__).resolve().parents[1] / "llms"
READY_TIMEOUT = 120.0
# Each server's own graceful stop (gunicorn's graceful timeout, 30 s, plus the llmserver's offline call) fits.
STOP_TIMEOUT = 45.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def manager_url(env: dict[str, str]) -> str:
    """How the llmserver reaches the manager on this machine, from LLM_MANAGE_SERVER_HOST and _PORT."""
    host = env.get("LLM_MANAGE_SERVER_HOST", "127.0.0.1").strip().strip("[]") or "127.0.0.1"
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{env.get('LLM_MANAGE_SERVER_PORT', '8007').strip() or '8007'}"


class Pair:
    """The two processes and the order they stop in."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.url = manager_url(env)
        self.manager: subprocess.Popen[bytes] | None = None
        self.llmserver: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None
        self._wake = threading.Event()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        self._wake.set()

    def run(self) -> int:
        """Start both, wait for a stop signal or either to exit, stop both; the exit status."""
        self.manager = self._start(SCRIPTS / "worker_manager.py", {})
        if not self._wait_until_ready():
            return self._stop_all(failed=None if self.stop_signal is not None else self.manager)
        name = self.env.get("LLM_NAME", "")
        logger.info("manager ready on %s; starting the llmserver (%s), which registers with it", self.url, name)
        self.llmserver = self._start(SCRIPTS / "llmserver.py", {"LLM_MANAGER_URL": self.url})
        while self.stop_signal is None:
            for proc in (self.llmserver, self.manager):
                if proc.poll() is not None:
                    return self._stop_all(failed=proc)
            self._wake.wait(0.2)
        return self._stop_all()

    def _start(self, script: Path, extra: dict[str, str]) -> subprocess.Popen[bytes]:
        # A session of its own: the terminal's Ctrl-C goes to this process alone, which decides the order.
        return subprocess.Popen([sys.executable, str(script)], env={**self.env, **extra}, start_new_session=True)

    def _wait_until_ready(self) -> bool:
        assert self.manager is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while self.stop_signal is None and self.manager.poll() is None and time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            self._wake.wait(0.2)
        if self.manager.poll() is None and self.stop_signal is None:
            logger.error("the manager did not answer %s/ready within %.0f s", self.url, READY_TIMEOUT)
        return False

    def _stop_all(self, failed: subprocess.Popen[bytes] | None = None) -> int:
        # SIGINT is forwarded as SIGINT (gunicorn's quick stop, what Ctrl-C asks for); anything else as SIGTERM.
        sig = signal.SIGINT if self.stop_signal == signal.SIGINT else signal.SIGTERM
        if failed is not None and failed.returncode is not None:
            which = "manager" if failed is self.manager else "llmserver"
            logger.error("the %s exited with status %s; stopping the other", which, failed.returncode)
        else:
            logger.info("stopping the llmserver (it leaves the manager's listing), then the manager")
        _stop(self.llmserver, sig, "llmserver")
        _stop(self.manager, sig, "manager")
        if failed is not None:
            return failed.returncode or 1
        return 0


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        logger.error("the %s did not stop within %.0f s; killing it", name, STOP_TIMEOUT)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    load_dotenv(find_dotenv(usecwd=True), override=False)
    logging.basicConfig(level=logging.INFO, format="make run: %(message)s")
    pair = Pair(dict(os.environ))
    for signum in STOP_SIGNALS:
        signal.signal(signum, pair.on_signal)
    raise SystemExit(pair.run())


if __name__ == "__main__":
    main()
