"""The per-app state the routes share: settings, the backend, and a count of answers served."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from flask import Flask, current_app

from operategpt.llmserver.backends.base import Backend
from operategpt.llmserver.config import ServerSettings

EXTENSION_KEY = "llmserver"


@dataclass
class ServerState:
    settings: ServerSettings
    backend: Backend
    served: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_served(self) -> None:
        with self._lock:
            self.served += 1

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION_KEY] = self


def get_state() -> ServerState:
    return current_app.extensions[EXTENSION_KEY]
