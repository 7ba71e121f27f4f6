"""The manager as production runs it: `gunicorn wsgi:app` from the repository root, so the shipped
gunicorn.conf.py (and through it operategpt/deploy/gunicorn_conf.py) decides workers, threads and timeouts.

Only what a deployment must say anyway is set here: where the database is, which port, the log level. The
GUNICORN_* variables pass through from the bench's own environment, so a setting can be tried without
editing a file: `GUNICORN_THREADS=512 .venv/bin/python bench/run.py`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .procs import children, cpu_seconds, free_port, rss_mib, stop_process, thread_count

ROOT = Path(__file__).resolve().parents[2]
# What the shipped gunicorn_conf.py reads; shown in the report so a table says what it measured.
GUNICORN_KNOBS = ("GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_WORKER_CLASS", "GUNICORN_KEEPALIVE")


@functools.cache
def shipped_settings() -> dict[str, Any]:
    """What the shipped gunicorn.conf.py resolves to in this environment.

    Read in a child process: the file has import-time side effects (it loads .env, and may create a metrics
    directory and export its path) that must not leak into the bench or into the manager it starts.
    """
    names = ("workers", "worker_class", "threads", "keepalive", "timeout")
    code = (
        "import json, runpy, sys\n"
        f"settings = runpy.run_path({str(ROOT / 'gunicorn.conf.py')!r})\n"
        f"json.dump({{name: settings.get(name) for name in {names!r}}}, sys.stdout)\n"
    )
    with tempfile.TemporaryDirectory(prefix="operategpt-bench-conf-") as scratch:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": scratch}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    if done.returncode:
        raise RuntimeError(f"reading gunicorn.conf.py failed: {done.stderr[-500:]}")
    return dict(json.loads(done.stdout))


def gunicorn_command() -> list[str]:
    script = Path(sys.executable).parent / "gunicorn"
    return [str(script), "wsgi:app"] if script.exists() else [sys.executable, "-m", "gunicorn", "wsgi:app"]


class Manager:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "manager.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.requests_served = 0  # requests the bench has sent through it, for the memory figure

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": f"sqlite:///{self.workdir / 'registry.db'}",
            "OPERATEGPT_DATA_DIR": str(self.workdir / "data"),
            "LLM_MANAGE_SERVER_HOST": "127.0.0.1",
            "LLM_MANAGE_SERVER_PORT": str(self.port),
            "LOG_LEVEL": "warning",
            # A developer's .env must not change what is measured: no credentials, admin routes on loopback.
            "MANAGER_ADMIN_TOKEN": "",
            "MANAGER_API_KEYS": "",
            "MANAGER_API_KEYS_FILE": "",
        })
        return env

    def start(self) -> Manager:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            gunicorn_command(), cwd=ROOT, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the manager exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, _ = self.call("GET", "/api/server/workers?model_name=bench-none", timeout=1)
                if status == 200 and len(self.worker_pids()) >= self.expected_workers():
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the manager did not start within 60 s; see {self.log_path}")

    @staticmethod
    def expected_workers() -> int:
        return int(shipped_settings()["workers"])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, timeout=15)

    # -- the API, for set-up (the load itself is wrk's) -----------------------------------------------

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                return exc.code, json.loads(payload)
            except ValueError:
                return exc.code, payload.decode(errors="replace")

    def register(self, worker: dict[str, Any]) -> dict[str, Any]:
        status, reply = self.call("POST", "/api/server/register", worker)
        if status != 200:
            raise RuntimeError(f"registering {worker['model_name']} answered {status}: {reply}")
        return reply

    # -- processes ------------------------------------------------------------------------------

    def master_pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the manager is not running")
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return children(self.master_pid())

    def rss(self) -> dict[int, float]:
        """MiB resident, by worker pid."""
        return {pid: rss_mib(pid) for pid in self.worker_pids()}

    def threads(self) -> dict[int, int]:
        return {pid: thread_count(pid) for pid in self.worker_pids()}

    def memory_summary(self) -> str:
        threads = self.threads()
        return ", ".join(f"{mib:.1f} MiB/{threads.get(pid, 0)} thr" for pid, mib in sorted(self.rss().items()))

    def cpu(self) -> float:
        """CPU seconds used so far by the master and its workers."""
        return sum(cpu_seconds(pid) for pid in [self.master_pid(), *self.worker_pids()])

    def log_lines(self, needle: str) -> int:
        try:
            return sum(needle in line for line in self.log_path.read_text(errors="replace").splitlines())
        except OSError:
            return 0
