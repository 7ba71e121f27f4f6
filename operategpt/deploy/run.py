"""Runs a WSGI app under gunicorn from Python, with a gunicorn settings module (never Flask's dev server)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from gunicorn.app.base import BaseApplication


class _Server(BaseApplication):
    def __init__(self, factory: Callable[[], Any], settings: ModuleType, overrides: dict[str, Any]):
        self._factory = factory
        self._settings = settings
        self._overrides = overrides
        super().__init__()

    def load_config(self) -> None:
        values = {name: getattr(self._settings, name) for name in dir(self._settings) if not name.startswith("_")}
        values.update(self._overrides)
        for name, value in values.items():
            if name in self.cfg.settings and value is not None:
                self.cfg.set(name, value)

    def load(self) -> Any:
        return self._factory()


def run(factory: Callable[[], Any], settings: ModuleType, **overrides: Any) -> None:
    _Server(factory, settings, overrides).run()
