"""Running the inference server under gunicorn: `main()` is what `python operategpt/llms/llmserver.py`
and `operategpt llmserver` call.

One gthread worker: a local model is loaded once per process and serves one request at a time,
so more processes would only multiply the memory; the threads hold queued requests and streams.
Registration with the manager lives in the gunicorn master (the `when_ready` hook starts it), not in
the worker: the master outlives worker restarts, so a restarted worker does not flap the listing, and
on SIGTERM/SIGINT/SIGQUIT the master takes the server offline *before* it stops the worker, so the
manager stops routing here while in-flight requests finish.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from dotenv import find_dotenv, load_dotenv
from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from operategpt.llmserver.app import create_app
from operategpt.llmserver.config import ServerSettings
from operategpt.llmserver.registration import Registrar, local_health_check
from operategpt.settings import ConfigError

logger = logging.getLogger(__name__)

# How long the worker may stay silent; loading a large GGUF happens before it first reports in.
WORKER_TIMEOUT = 600
GRACEFUL_TIMEOUT = 30


class _Arbiter(Arbiter):
    """gunicorn's master, leaving the manager's listing before it stops serving."""

    app: LLMServerApplication

    def handle_term(self) -> None:
        self.app.before_stop()
        super().handle_term()

    def handle_int(self) -> None:
        self.app.before_stop()
        super().handle_int()

    def handle_quit(self) -> None:
        self.app.before_stop()
        super().handle_quit()


class LLMServerApplication(BaseApplication):
    """gunicorn configured from `ServerSettings` in code (no gunicorn.conf.py, no command line)."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.registrar = Registrar(settings, ready_check=local_health_check(settings)) if settings.manager_url else None
        super().__init__()

    def gunicorn_options(self) -> dict[str, Any]:
        host = self.settings.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return {
            "bind": f"{host}:{self.settings.port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": self.settings.server_threads,
            "timeout": WORKER_TIMEOUT,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "loglevel": self.settings.log_level,
            "logconfig_dict": logging_config(self.settings.log_level),
            "proc_name": f"operategpt-llmserver-{self.settings.llm_name}",
            # Several gunicorns on one machine would share the default control socket path.
            "control_socket_disable": True,
            "when_ready": self._when_ready,
            "on_exit": self._on_exit,
        }

    def load_config(self) -> None:
        assert self.cfg is not None
        for key, value in self.gunicorn_options().items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app(self.settings)

    def run(self) -> None:
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:
            raise SystemExit(f"llmserver: {exc}") from None

    def before_stop(self) -> None:
        if self.registrar is not None:
            self.registrar.stop()

    def _when_ready(self, arbiter: Arbiter) -> None:
        logger.info(
            "serving %s (%s backend) on %s, advertised as %s",
            self.settings.llm_name,
            self.settings.backend,
            self.settings.port,
            self.settings.public_url,
        )
        if self.registrar is not None:
            self.registrar.start()

    def _on_exit(self, arbiter: Arbiter) -> None:
        # A no-op after a signal (before_stop ran); covers a master that halts for other reasons.
        self.before_stop()


def serve(settings: ServerSettings) -> None:
    """Run the server in the foreground until it is signalled to stop."""
    LLMServerApplication(settings).run()


def logging_config(level: str) -> dict[str, Any]:
    """One format for gunicorn's messages and ours, on stderr; access lines only when debugging."""
    level = level.upper()
    console = {"level": level, "handlers": ["console"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": console,
            "gunicorn.access": {**console, "level": "DEBUG" if level == "DEBUG" else "WARNING"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}},
    }


def main() -> None:
    """Entry point: load `.env` (the real environment wins), read settings, serve."""
    load_dotenv(find_dotenv(usecwd=True), override=False)
    try:
        settings = ServerSettings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"llmserver: configuration error: {exc}") from None
    logging.config.dictConfig(logging_config(settings.log_level))
    if not settings.manager_url:
        logger.info("LLM_MANAGER_URL is not set: not registering with a manager")
    serve(settings)
