"""How both servers log: one logging dict (`logging_config`), its formatters, and gunicorn's logger.

LOG_FORMAT=json gives one JSON object a line; text (the default) appends a record's fields as key=value.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from gunicorn.glogging import Logger as GunicornBaseLogger

from operategpt.settings import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
# The gunicorn setting that makes gunicorn log through GunicornLogger.
LOGGER_CLASS = "operategpt.deploy.logformat.GunicornLogger"


def log_level(env: Mapping[str, str]) -> str:
    """LOG_LEVEL, lower case (default info); ConfigError for a level logging does not know."""
    level = (env.get("LOG_LEVEL") or "info").strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {env.get('LOG_LEVEL')!r}")
    return level


def log_format(env: Mapping[str, str]) -> str:
    """LOG_FORMAT, lower case (default text); ConfigError for anything but text or json."""
    value = (env.get("LOG_FORMAT") or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be text or json, got {env.get('LOG_FORMAT')!r}")
    return value


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """The logging dict of both servers (gunicorn's `logconfig_dict`, or `logging.config.dictConfig`'s).

    gunicorn's messages and ours in one format, on stderr. gunicorn's own access lines only when debugging:
    the manager writes its own access line (operategpt.access), and building one costs CPU per request.
    """
    level = level.upper()
    console = {"level": level, "handlers": ["console"], "propagate": False}
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": console,
            "gunicorn.access": {**console, "level": "DEBUG" if level == "DEBUG" else "WARNING"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}},
        "formatters": {"main": {"()": f"{formatter.__module__}.{formatter.__qualname__}", "format": TEXT_FORMAT}},
    }


class JsonFormatter(logging.Formatter):
    """LOG_FORMAT=json: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """The default format, with a request's fields as key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        return text


class GunicornLogger(GunicornBaseLogger):
    """gunicorn's logger, minus the cost of access lines nobody keeps.

    With a logconfig, gunicorn builds every access line (a dozen formatted atoms) before its logger drops
    it; `logging_config` sets gunicorn.access to WARNING unless debugging.
    """

    def access(self, resp, req, environ, request_time):
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)
