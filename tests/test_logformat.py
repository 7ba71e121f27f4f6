"""How both servers log: the one logging dict, its settings, and the gunicorn logger that skips unkept access lines."""

from __future__ import annotations

import json
import logging
import logging.config
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from operategpt.deploy.logformat import GunicornLogger, log_format, log_level, logging_config
from operategpt.settings import ConfigError


def _logger() -> GunicornLogger:
    config = Config()
    config.set("logconfig_dict", {"version": 1, "disable_existing_loggers": False})
    return GunicornLogger(config)


def test_access_lines_are_skipped_while_gunicorn_access_is_below_info(monkeypatch):
    logger = _logger()
    built = []
    monkeypatch.setattr(logger, "atoms", lambda *args: built.append(args) or {})
    logger.access_log.setLevel(logging.WARNING)
    logger.access(SimpleNamespace(status="200 OK"), None, {}, None)
    assert built == []

    logger.access_log.setLevel(logging.INFO)
    logger.access(SimpleNamespace(status="200 OK"), None, {}, None)
    assert len(built) == 1


def test_one_logging_dict_text_or_json(capsys):
    try:
        logging.config.dictConfig(logging_config("info", "json"))
        logging.getLogger("operategpt.test").info("hello %s", "there", extra={"fields": {"request_id": "r1"}})
        entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (entry["level"], entry["logger"], entry["msg"], entry["request_id"]) == (
            "info", "operategpt.test", "hello there", "r1",
        )

        logging.config.dictConfig(logging_config("info", "text"))
        logging.getLogger("operategpt.test").info("hello", extra={"fields": {"request_id": "r2"}})
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.endswith(" INFO operategpt.test: hello request_id=r2")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "root": {"level": "WARNING", "handlers": []}})


def test_gunicorn_access_lines_only_when_debugging():
    assert logging_config("info")["loggers"]["gunicorn.access"]["level"] == "WARNING"
    assert logging_config("warning")["loggers"]["gunicorn.access"]["level"] == "WARNING"
    assert logging_config("debug")["loggers"]["gunicorn.access"]["level"] == "DEBUG"
    assert logging_config("debug")["loggers"]["gunicorn.error"]["level"] == "DEBUG"


def test_log_level_and_format_are_checked():
    assert (log_level({}), log_format({})) == ("info", "text")
    assert (log_level({"LOG_LEVEL": "DEBUG"}), log_format({"LOG_FORMAT": "JSON"})) == ("debug", "json")
    with pytest.raises(ConfigError, match="LOG_LEVEL must be one of"):
        log_level({"LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="LOG_FORMAT must be text or json, got 'xml'"):
        log_format({"LOG_FORMAT": "xml"})
