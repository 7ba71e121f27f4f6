"""The shipped gunicorn settings: what they read from the environment, their hooks, and bad values."""

from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from operategpt.deploy.run import Server
from tests.support.servers import ROOT, free_port

# The variables the settings read; a test's environment holds only the ones it sets.
OURS = ("GUNICORN_", "LOG_", "LLM_", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "HEALTH_")


def settings_module(monkeypatch, tmp_path, **env: str):
    for name in list(os.environ):
        if name.startswith(OURS):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # or importing the settings makes a directory
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("operategpt.deploy.gunicorn_conf", None)
    try:
        return importlib.import_module("operategpt.deploy.gunicorn_conf")
    finally:
        sys.modules.pop("operategpt.deploy.gunicorn_conf", None)


def test_a_worker_freezes_what_it_loaded_out_of_the_garbage_collectors_sight(monkeypatch, tmp_path):
    settings = settings_module(monkeypatch, tmp_path)
    assert gc.get_freeze_count() == 0
    try:
        settings.post_worker_init(worker=None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_gunicorn_variables_are_read(monkeypatch, tmp_path):
    settings = settings_module(
        monkeypatch, tmp_path, GUNICORN_WORKERS="3", GUNICORN_THREADS="7", GUNICORN_TIMEOUT="0",
        GUNICORN_GRACEFUL_TIMEOUT="4", GUNICORN_KEEPALIVE="9", LOG_LEVEL="DEBUG", LOG_FORMAT="json",
    )
    assert (settings.workers, settings.threads, settings.timeout, settings.graceful_timeout, settings.keepalive) == (
        3, 7, 0, 4, 9,
    )
    assert settings.loglevel == "debug"
    assert settings.logconfig_dict["formatters"]["main"]["()"] == "operategpt.deploy.logformat.JsonFormatter"
    # The runner of `operategpt serve` takes them as gunicorn does from gunicorn.conf.py.
    cfg = Server(lambda: None, settings).cfg
    assert (cfg.workers, cfg.threads, cfg.timeout, cfg.graceful_timeout, cfg.keepalive) == (3, 7, 0, 4, 9)
    assert cfg.logger_class.__name__ == "GunicornLogger"
    assert cfg.settings["on_starting"].get() is settings.on_starting


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GUNICORN_WORKERS", "abc", "GUNICORN_WORKERS must be an integer, got 'abc'"),
        ("GUNICORN_WORKERS", "0", "GUNICORN_WORKERS must be >= 1, got 0"),
        ("GUNICORN_THREADS", "many", "GUNICORN_THREADS must be an integer, got 'many'"),
        ("GUNICORN_TIMEOUT", "2m", "GUNICORN_TIMEOUT must be an integer, got '2m'"),
        ("GUNICORN_GRACEFUL_TIMEOUT", "1.5", "GUNICORN_GRACEFUL_TIMEOUT must be an integer, got '1.5'"),
        ("GUNICORN_KEEPALIVE", "-1", "GUNICORN_KEEPALIVE must be >= 0, got -1"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be text or json, got 'xml'"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of debug, info, warning, error, critical, got 'loud'"),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_it(monkeypatch, tmp_path, name, value, message):
    with pytest.raises(SystemExit) as exited:
        settings_module(monkeypatch, tmp_path, **{name: value})
    assert exited.value.code == f"configuration error: {message}"


def test_a_bad_manager_setting_stops_the_master_with_one_line(monkeypatch, tmp_path):
    settings = settings_module(monkeypatch, tmp_path)
    monkeypatch.setenv("HEALTH_CHECK_INTERVAL", "often")
    with pytest.raises(SystemExit) as exited:
        settings.on_starting(server=None)
    assert exited.value.code == "configuration error: HEALTH_CHECK_INTERVAL must be a number, got 'often'"


def _one_line_error(command: list[str], cwd: Path, **env: str) -> str:
    environment = {name: value for name, value in os.environ.items() if not name.startswith(OURS)}
    environment.update(
        {"PYTHONPATH": str(ROOT), "LLM_MANAGE_SERVER_HOST": "127.0.0.1", "LLM_MANAGE_SERVER_PORT": str(free_port()),
         "DATABASE_URL": f"sqlite:///{cwd / 'registry.db'}", **env}
    )
    done = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("name", ["GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_KEEPALIVE"])
def test_gunicorn_wsgi_app_with_a_bad_value_says_so_in_one_line(tmp_path, name):
    # As an operator runs it: gunicorn reads gunicorn.conf.py from the checkout it is started in.
    line = _one_line_error([sys.executable, "-m", "gunicorn", "wsgi:app"], ROOT, **{name: "abc"},
                           DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}")
    assert line == f"configuration error: {name} must be an integer, got 'abc'"


def test_operategpt_serve_with_a_bad_value_says_so_in_one_line(tmp_path):
    script = Path(sys.executable).parent / "operategpt"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from operategpt.cli import main; main()"]
    line = _one_line_error([*command, "serve"], tmp_path, GUNICORN_WORKERS="abc")
    assert "GUNICORN_WORKERS must be an integer, got 'abc'" in line
