"""Running the inference server under gunicorn: `main()` is what `python operategpt/llms/llmserver.py`
and `operategpt llmserver` call.

One gthread worker: a local model is loaded once per process and serves one request at a time,
so more processes would only multiply the memory; the threads hold queued requests and streams.
Registration with the manager lives in the gunicorn master (the `when_ready` hook starts it), not in
the worker: the master outlives worker restarts, so a restarted worker does not flap the listing, and
on SIGTERM/SIGINT/SIGQUIT the master takes the server offline *before* it stops the worker (the
runner's `before_stop`), so the manager stops routing here while in-flight requests finish.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Callable
from typing import Any

from dotenv import find_dotenv, load_dotenv
from gunicorn.arbiter import Arbiter

from operategpt.deploy.logformat import LOGGER_CLASS, logging_config
from operategpt.deploy.run import run
from operategpt.llmserver.app import create_app
from operategpt.llmserver.config import ServerSettings
from operategpt.llmserver.registration import Registrar, local_health_check
from operategpt.settings import ConfigError

logger = logging.getLogger(__name__)

# How long the worker may stay silent; loading a large GGUF happens before it first reports in.
WORKER_TIMEOUT = 600
GRACEFUL_TIMEOUT = 30


def gunicorn_settings(settings: ServerSettings, **hooks: Callable[..., Any]) -> dict[str, Any]:
    """gunicorn's settings for `settings` (no gunicorn.conf.py, no command line), with gunicorn hooks by name."""
    host = settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return {
        "bind": f"{host}:{settings.port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": settings.server_threads,
        "timeout": WORKER_TIMEOUT,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "loglevel": settings.log_level,
        "logconfig_dict": logging_config(settings.log_level, settings.log_format),
        "logger_class": LOGGER_CLASS,
        "proc_name": f"operategpt-llmserver-{settings.llm_name}",
        # Several gunicorns on one machine would share the default control socket path.
        "control_socket_disable": True,
        **hooks,
    }


def serve(settings: ServerSettings) -> None:
    """Run the server in the foreground until it is signalled to stop."""
    registrar = Registrar(settings, ready_check=local_health_check(settings)) if settings.manager_url else None

    def leave() -> None:
        if registrar is not None:
            registrar.stop()

    def when_ready(arbiter: Arbiter) -> None:
        logger.info(
            "serving %s (%s backend) on %s, advertised as %s",
            settings.llm_name,
            settings.backend,
            settings.port,
            settings.public_url,
        )
        if registrar is not None:
            registrar.start()

    def on_exit(arbiter: Arbiter) -> None:
        # A no-op after a stop signal (before_stop left already); covers a master that halts for other reasons.
        leave()

    run(
        lambda: create_app(settings),
        gunicorn_settings(settings, when_ready=when_ready, on_exit=on_exit),
        name="llmserver",
        before_stop=leave,
    )


def main() -> None:
    """Entry point: load `.env` (the real environment wins), read settings, serve."""
    load_dotenv(find_dotenv(usecwd=True), override=False)
    try:
        settings = ServerSettings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"llmserver: configuration error: {exc}") from None
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    if not settings.manager_url:
        logger.info("LLM_MANAGER_URL is not set: not registering with a manager")
    serve(settings)
