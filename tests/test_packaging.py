"""The package as pip installs it, not as the checkout runs it.

A wheel built from the checkout carries the Alembic migrations and the status page template; the
checkout installed (non-editable, with its dependencies) into a fresh virtualenv outside the
checkout migrates its default SQLite registry (in the user's data directory: there is no checkout and no
`.env` to put it beside) from an empty directory and serves `/ready` 200 from there.
Slow: about a minute, most of it pip installing the dependencies (from its cache).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.support.servers import free_port

CHECKOUT = Path(__file__).resolve().parents[1]
MIGRATIONS = "operategpt/gateway/registry/migrations"
SHIPPED_DATA = (
    f"{MIGRATIONS}/env.py",
    f"{MIGRATIONS}/script.py.mako",
    f"{MIGRATIONS}/versions/0001_initial.py",
    "operategpt/web/templates/status.html",
)
# What pip needs to reach its index and cache, and what any process needs; nothing that configures the
# manager (DATABASE_URL, OPERATEGPT_*, …) or points Python at the checkout (PYTHONPATH, VIRTUAL_ENV).
KEPT = {"HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "USER", "LOGNAME",
        "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"}
READY_WITHIN = 60.0

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's PATH (less any directory inside the checkout, e.g. an activated .venv), locale, home and
    pip settings; nothing else."""
    env = {name: value for name, value in os.environ.items() if name in KEPT or name.startswith("PIP_")}
    env["PATH"] = os.pathsep.join(
        entry for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not Path(entry).resolve().is_relative_to(CHECKOUT)
    ) or os.defpath
    env.update(extra)
    return env


def run(args: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} exited {done.returncode}\n"
        f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
    )
    return done


def test_a_wheel_built_from_the_checkout_carries_the_migrations_and_templates(tmp_path):
    out = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, CHECKOUT],
        cwd=tmp_path, env=clean_env(), timeout=300)
    [wheel] = out.glob("operategpt-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [name for name in SHIPPED_DATA if name not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    # setuptools builds in the checkout's build/ and never empties it: a module left there by an older
    # layout would ship in the wheel although the tree no longer has it.
    stale = sorted(name for name in names if name.startswith("operategpt/") and not (CHECKOUT / name).is_file())
    assert not stale, f"{wheel.name} carries files the checkout does not have (stale build/? remove it): {stale}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv outside the checkout with the checkout pip-installed into it (not editable)."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    env = clean_env()
    run([sys.executable, "-m", "venv", venv], cwd=venv.parent, env=env, timeout=120)
    run([venv / "bin/python", "-m", "pip", "install", "--quiet", CHECKOUT], cwd=venv.parent, env=env, timeout=600)
    return venv


def test_the_installed_package_migrates_and_serves_from_an_empty_directory(installed, tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    port = free_port()
    xdg = tmp_path / "xdg"
    env = clean_env(LLM_MANAGE_SERVER_HOST="127.0.0.1", LLM_MANAGE_SERVER_PORT=str(port),
                    GUNICORN_WORKERS="1", HEALTH_CHECKS="false", XDG_DATA_HOME=str(xdg))

    # The installed copy is what runs: imported from the venv's site-packages, never the checkout.
    where = run([installed / "bin/python", "-c", "import operategpt; print(operategpt.__file__)"],
                cwd=workdir, env=env, timeout=60).stdout.strip()
    assert Path(where).resolve().is_relative_to(installed.resolve()), where
    assert not Path(where).resolve().is_relative_to(CHECKOUT), where

    upgraded = run([installed / "bin/operategpt", "db", "upgrade"], cwd=workdir, env=env, timeout=120)
    registry = xdg / "operategpt/data/operategpt.db"
    assert f"{registry} is at the latest revision" in upgraded.stdout
    assert registry.is_file(), sorted(str(p) for p in tmp_path.rglob("*"))
    assert list(workdir.iterdir()) == []
    # The command line finds it from any directory, as the server run from workdir does below.
    listed = run([installed / "bin/operategpt", "workers", "list"], cwd=tmp_path, env=env, timeout=60)
    assert listed.stdout == f"no workers registered in {registry}\n"

    stderr_path = tmp_path / "serve.stderr"
    with open(stderr_path, "wb") as stderr:
        server = subprocess.Popen([str(installed / "bin/operategpt"), "serve"], cwd=workdir, env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_WITHIN
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code
            except requests.ConnectionError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        outcome = f"exited with status {server.poll()}" if server.poll() is not None else f"/ready answered {status}"
        assert status == 200, (
            f"installed operategpt serve not ready within {READY_WITHIN:.0f} s: {outcome}; "
            f"its stderr:\n{stderr_path.read_text(errors='replace')[-4000:]}"
        )
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, stderr_path.read_text(errors="replace")[-4000:]


def test_the_installed_commands_read_the_working_directorys_dotenv(installed, tmp_path):
    # README: settings come from the environment or a .env file in the working directory. An installed
    # package lives in site-packages, so python-dotenv's default search (upward from the calling module's
    # file) would never find it there.
    workdir = tmp_path / "with-dotenv"
    workdir.mkdir()
    (workdir / ".env").write_text("OPERATEGPT_DATA_DIR=from-dotenv\n")
    run([installed / "bin/operategpt", "db", "upgrade"], cwd=workdir, env=clean_env(), timeout=120)
    assert (workdir / "from-dotenv/operategpt.db").is_file(), sorted(str(p) for p in workdir.rglob("*"))
