"""The shipped gunicorn settings for the manager, read from the environment (`gunicorn.conf.py` imports them).

Worker class gthread: each process holds GUNICORN_THREADS requests in flight, which an LLM
call (seconds to minutes) needs; its timeout is a liveness heartbeat, not a request limit.
Migrations run once in the master before any worker forks.
"""

import os

from dotenv import load_dotenv

load_dotenv()  # gunicorn itself does not read .env; the real environment wins.

bind = f"{os.environ.get('LLM_MANAGE_SERVER_HOST', '127.0.0.1')}:{os.environ.get('LLM_MANAGE_SERVER_PORT', '8007')}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "64"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
backlog = 2048
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": loglevel.upper(), "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "WARNING", "handlers": ["console"], "propagate": False},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}},
}


def on_starting(server):
    from operategpt.config import Settings
    from operategpt.manager.db import upgrade

    settings = Settings.from_env()
    if settings.auto_migrate:
        upgrade(settings.database_url)
