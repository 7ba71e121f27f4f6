"""The shipped gunicorn settings for the manager, read from the environment (`gunicorn.conf.py` imports them).

Worker class gthread: each process holds GUNICORN_THREADS requests in flight, which an LLM
call (seconds to minutes) needs; its timeout is a liveness heartbeat, not a request limit.
A streamed reply holds its thread until the stream ends. The defaults (2 processes per CPU, 512
threads each) hold well over 1,000 slow requests or streams at once on 2 cores, with room for the
connections not to spread evenly over the processes (bench/run.py); a thread is started only when
needed and adds about 60 KiB of RSS.
Migrations run once in the master before any worker forks.
"""

import gc
import glob
import os
import shutil
import tempfile

from dotenv import find_dotenv, load_dotenv

from operategpt.deploy.logformat import LOGGER_CLASS, log_format, log_level, logging_config
from operategpt.settings import DEFAULT_THREADS, ConfigError, env_int

# gunicorn itself does not read .env; the real environment wins. Searched from the working directory (up):
# from this module's own place, an installed package would look in site-packages.
load_dotenv(find_dotenv(usecwd=True))


def _configuration_error(exc: ConfigError) -> SystemExit:
    # gunicorn prints a traceback for any Exception its configuration file raises; a SystemExit it lets through,
    # and Python prints its message alone: one line naming the variable, for `gunicorn wsgi:app` and
    # `operategpt serve` alike.
    return SystemExit(f"configuration error: {exc}")


def _int(name: str, default: int, minimum: int) -> int:
    try:
        return env_int(os.environ, name, default, minimum)
    except ConfigError as exc:
        raise _configuration_error(exc) from None


_host = os.environ.get("LLM_MANAGE_SERVER_HOST", "127.0.0.1").strip("[] ")
_port = os.environ.get("LLM_MANAGE_SERVER_PORT", "8007")
# An IPv6 address goes in brackets, or gunicorn takes what follows its last colon for the port.
bind = f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"
# Two processes per usable CPU: a process runs Python on one core at a time (the GIL), so with one or two per
# core a core sits idle whenever its process waits; on 2 cores 4 processes served about 20 % more than 2 (bench/run.py).
workers = _int("GUNICORN_WORKERS", 2 * len(os.sched_getaffinity(0)), 1)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = _int("GUNICORN_THREADS", DEFAULT_THREADS, 1)
timeout = _int("GUNICORN_TIMEOUT", 120, 0)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30, 0)
keepalive = _int("GUNICORN_KEEPALIVE", 5, 0)
backlog = 2048
# gunicorn 27 puts every instance's control socket at one path in $HOME; several managers (and an
# llmserver) on one machine would fight over it, and nothing here uses it.
control_socket_disable = True
try:
    loglevel = log_level(os.environ)
    logconfig_dict = logging_config(loglevel, log_format(os.environ))
except ConfigError as _exc:
    raise _configuration_error(_exc) from None
logger_class = LOGGER_CLASS

# prometheus_client's multiprocess mode: every worker writes its metrics here and /metrics sums them.
# Set before any worker imports prometheus_client (and after the settings are read: a bad one leaves nothing behind).
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="operategpt-metrics-")


def on_starting(server):
    from operategpt.settings import Settings

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        on_exit(server)  # gunicorn does not run it for a master that never started
        raise _configuration_error(exc) from None
    if settings.auto_migrate:
        from operategpt.gateway.registry.db import upgrade

        upgrade(settings.database_url)
    # Metrics of a previous run would otherwise be summed with this one's.
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)


def post_worker_init(worker):
    # What the worker has loaded (modules, the app, its settings) lives as long as the process: frozen, it is out of
    # the garbage collector's sight, and a full collection stops walking its ~100,000 objects, 60-70 ms with the GIL
    # held each time, which every request in the process waited for (bench/run.py; docs/benchmarks.md).
    gc.freeze()


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
