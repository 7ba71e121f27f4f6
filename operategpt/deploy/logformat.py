"""Log formatters: LOG_FORMAT=json gives one JSON object a line; text appends a record's fields as key=value."""

from __future__ import annotations

import json
import logging

from gunicorn.glogging import Logger as GunicornBaseLogger


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
    it; the manager writes its own access line (operategpt.access) and sets gunicorn.access to WARNING.
    """

    def access(self, resp, req, environ, request_time):
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)
