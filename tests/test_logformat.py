"""The gunicorn logger the shipped settings use: access lines are built only when something keeps them."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from gunicorn.config import Config

from operategpt.deploy.logformat import GunicornLogger


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
